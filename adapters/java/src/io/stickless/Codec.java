package io.stickless;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.ObjectInputStream;
import java.io.ObjectOutputStream;
import java.io.ObjectStreamClass;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Base64;

/**
 * The store encoding shared by every stickless adapter (PHP, Node, Python, Java), so that
 * other code can read what this one wrote.
 *
 * <p>Names: an application key {@code k} that matches {@code ^[a-z0-9]{1,64}$} and is not
 * {@code id} is its own attribute name. Any other key becomes {@code "x" + esc(k)}, where esc
 * keeps the UTF-8 bytes {@code [a-z0-9]} and writes every other byte as {@code "-"} and two
 * lower-case hex digits; when no byte needed escaping (only {@code id}) the first byte is
 * escaped anyway, so every escaped name contains a {@code "-"}. Decoding: a name without
 * {@code "-"} is literal; a name with {@code "-"} must start with {@code "x"} and unescape to
 * a key whose canonical encoding is that very name; anything else is not an adapter's.
 *
 * <p>Values: base64 (standard alphabet, no line breaks) of the Java serialization stream, so
 * they start with {@code rO0AB}. A value that is not such a stream (written by another
 * backend, e.g. {@code user: alice}) is read as a plain {@code String}.
 */
final class Codec {
    /** The longest attribute name the proxy accepts. */
    static final int MAX_NAME = 64;

    /** The base64 form of the serialization stream's magic and version, {@code AC ED 00 05}. */
    static final String SERIAL_MAGIC = "rO0AB";

    private Codec() {}

    /**
     * The attribute name for an application key.
     *
     * @throws IllegalArgumentException when the key is empty or its name would be longer than
     *     64 characters (the proxy would refuse it)
     */
    static String attributeName(String key) {
        if (key == null || key.isEmpty()) {
            throw new IllegalArgumentException("stickless: a session attribute needs a non-empty name");
        }
        if (isPlain(key)) {
            return key;
        }
        byte[] bytes = key.getBytes(StandardCharsets.UTF_8);
        boolean anyEscaped = false;
        for (byte b : bytes) {
            if (!literal(b & 0xff)) {
                anyEscaped = true;
                break;
            }
        }
        StringBuilder name = new StringBuilder(1 + bytes.length * 3).append('x');
        for (int i = 0; i < bytes.length; i++) {
            int b = bytes[i] & 0xff;
            if (literal(b) && (anyEscaped || i > 0)) {
                name.append((char) b);
            } else {
                name.append('-').append(HEX[b >> 4]).append(HEX[b & 0xf]);
            }
        }
        if (name.length() > MAX_NAME) {
            throw new IllegalArgumentException("stickless: session attribute name \"" + key
                    + "\" encodes to " + name.length() + " characters, more than the " + MAX_NAME
                    + " the proxy accepts");
        }
        return name.toString();
    }

    /**
     * The application key an attribute name stands for, or {@code null} when the name is not
     * an adapter's (the reserved {@code id}, another adapter's bookkeeping such as
     * {@code java-created}, a non-canonical escape).
     */
    static String keyOf(String name) {
        if (name == null || name.isEmpty() || name.length() > MAX_NAME) {
            return null;
        }
        if (name.indexOf('-') < 0) {
            return isPlain(name) ? name : null;
        }
        if (name.charAt(0) != 'x') {
            return null;
        }
        ByteArrayOutputStream bytes = new ByteArrayOutputStream(name.length());
        for (int i = 1; i < name.length(); i++) {
            char c = name.charAt(i);
            if (c == '-') {
                if (i + 2 >= name.length()) {
                    return null;
                }
                int hi = hex(name.charAt(i + 1));
                int lo = hex(name.charAt(i + 2));
                if (hi < 0 || lo < 0) {
                    return null;
                }
                bytes.write(hi << 4 | lo);
                i += 2;
            } else if (literal(c)) {
                bytes.write(c);
            } else {
                return null;
            }
        }
        String key;
        try {
            key = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes.toByteArray()))
                    .toString();
        } catch (CharacterCodingException e) {
            return null;
        }
        try {
            return name.equals(attributeName(key)) ? key : null;
        } catch (IllegalArgumentException e) {
            return null;
        }
    }

    /** Whether a key is its own attribute name: {@code [a-z0-9]{1,64}}, not {@code id}. */
    static boolean isPlain(String key) {
        int n = key.length();
        if (n == 0 || n > MAX_NAME || key.equals("id")) {
            return false;
        }
        for (int i = 0; i < n; i++) {
            if (!literal(key.charAt(i))) {
                return false;
            }
        }
        return true;
    }

    /** Whether an attribute name is one the proxy accepts: {@code [a-z0-9][a-z0-9-]{0,63}}. */
    static boolean validName(String name) {
        int n = name.length();
        if (n == 0 || n > MAX_NAME || !literal(name.charAt(0))) {
            return false;
        }
        for (int i = 1; i < n; i++) {
            char c = name.charAt(i);
            if (!literal(c) && c != '-') {
                return false;
            }
        }
        return true;
    }

    /**
     * The header value for a session value: base64 of its Java serialization.
     *
     * @throws IOException when the value (or something it references) is not serializable
     */
    static String encodeValue(Object value) throws IOException {
        ByteArrayOutputStream buffer = new ByteArrayOutputStream(256);
        try (ObjectOutputStream out = new ObjectOutputStream(buffer)) {
            out.writeObject(value);
        }
        return Base64.getEncoder().encodeToString(buffer.toByteArray());
    }

    /** A value read from the store, and whether it was a serialized object or plain text. */
    static final class Decoded {
        final Object value;
        /** True when the stored text was not a serialized object and is exposed as is. */
        final boolean plain;
        /** Why a value that looked serialized did not deserialize, else null. */
        final Exception failure;

        Decoded(Object value, boolean plain, Exception failure) {
            this.value = value;
            this.plain = plain;
            this.failure = failure;
        }
    }

    /**
     * Reads a stored value, resolving classes through {@code loader} (the webapp's: the
     * thread's context class loader). Text that is not a serialization stream, or one that
     * does not deserialize, is returned as that text.
     */
    static Decoded decodeValue(String raw, ClassLoader loader) {
        if (!raw.startsWith(SERIAL_MAGIC)) {
            return new Decoded(raw, true, null);
        }
        try {
            byte[] bytes = Base64.getDecoder().decode(raw);
            try (ObjectInputStream in = new LoaderObjectInputStream(new ByteArrayInputStream(bytes), loader)) {
                Object value = in.readObject();
                return new Decoded(value, false, null);
            }
        } catch (IllegalArgumentException | IOException | ClassNotFoundException e) {
            return new Decoded(raw, true, e);
        }
    }

    /** Deserialization with the webapp's class loader rather than the one that loaded this class. */
    private static final class LoaderObjectInputStream extends ObjectInputStream {
        private final ClassLoader loader;

        LoaderObjectInputStream(InputStream in, ClassLoader loader) throws IOException {
            super(in);
            this.loader = loader;
        }

        @Override
        protected Class<?> resolveClass(ObjectStreamClass desc) throws IOException, ClassNotFoundException {
            if (loader != null) {
                try {
                    return Class.forName(desc.getName(), false, loader);
                } catch (ClassNotFoundException e) {
                    // Primitive types and the JDK's own classes: the default lookup below.
                }
            }
            return super.resolveClass(desc);
        }
    }

    private static final char[] HEX = "0123456789abcdef".toCharArray();

    private static boolean literal(int c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    }

    private static int hex(char c) {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        return -1;
    }
}
