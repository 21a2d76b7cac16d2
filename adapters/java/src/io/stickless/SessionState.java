package io.stickless;

import jakarta.servlet.ServletContext;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Enumeration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.logging.Level;
import java.util.logging.Logger;

/**
 * One request's view of its session: what the proxy sent (the snapshot), the session object
 * the application works on, and the delta between them, written as {@code X-Session-*}
 * response headers before the response commits.
 *
 * <p>One instance per request, shared by the nested passes of a forward, include or error
 * dispatch; never shared between requests (each request works on its own copy, as with any
 * distributed session store).
 */
final class SessionState {
    static final Logger LOG = Logger.getLogger(SessionFilter.class.getName());

    /** The reserved attribute that keeps {@link ProxySession#getCreationTime()}: decimal ms. */
    static final String CREATED = "java-created";

    private static final SecureRandom RANDOM = new SecureRandom();

    /** The header prefix as configured (e.g. {@code X-Session-}), in the case headers use. */
    final String prefix;
    final ServletContext context;
    /** What {@code getMaxInactiveInterval} reports: the proxy's idle timeout, in seconds. */
    final int maxInactiveInterval;
    /** Values larger than this are logged as errors: the proxy will refuse them (502). */
    final int maxValueBytes;
    /** The request's start, for {@code getLastAccessedTime}. */
    final long requestStart = System.currentTimeMillis();
    /** For log lines: method and URI. */
    final String requestLine;

    /** The proxy's id for the session this request carries, or null when it carries none. */
    final String requestedId;
    /** Every prefixed header but the id, by attribute name (lower-case), as received. */
    final Map<String, String> originalRaw;

    /** The session the request came with, once asked for; null until then. */
    private ProxySession original;
    /** Whether the application invalidated the session the request came with. */
    private boolean originalInvalidated;
    /** The session the application uses now (the original, or one created in this request). */
    private ProxySession current;
    /** Whether {@code changeSessionId} was called on the original session. */
    private boolean rotated;

    /** Bumped by every setAttribute, removeAttribute, invalidate, changeSessionId. */
    private int version;
    /** The headers written to the response so far, and the version they reflect. */
    private Map<String, String> emitted = new LinkedHashMap<>();
    private int emittedVersion = -1;
    /** Keys whose values could not be serialized (logged once). */
    private final Set<String> reported = new HashSet<>();
    /** Nesting of filter passes (forward, include, error dispatch) in progress. */
    private int depth;

    private SessionState(String prefix, ServletContext context, int maxInactiveInterval, int maxValueBytes,
            String requestLine, String requestedId, Map<String, String> originalRaw) {
        this.prefix = prefix;
        this.context = context;
        this.maxInactiveInterval = maxInactiveInterval;
        this.maxValueBytes = maxValueBytes;
        this.requestLine = requestLine;
        this.requestedId = requestedId;
        this.originalRaw = originalRaw;
    }

    /** Reads the proxy's {@code X-Session-*} request headers. */
    static SessionState fromRequest(HttpServletRequest request, String prefix, ServletContext context,
            int maxInactiveInterval, int maxValueBytes) {
        String lowerPrefix = prefix.toLowerCase(Locale.ROOT);
        String id = null;
        Map<String, String> raw = new LinkedHashMap<>();
        Enumeration<String> names = request.getHeaderNames();
        while (names != null && names.hasMoreElements()) {
            String header = names.nextElement();
            String lower = header.toLowerCase(Locale.ROOT);
            if (!lower.startsWith(lowerPrefix)) {
                continue;
            }
            String name = lower.substring(lowerPrefix.length());
            String value = request.getHeader(header);
            if (value == null) {
                continue;
            }
            if (name.equals("id")) {
                id = value;
            } else if (Codec.validName(name)) {
                raw.put(name, value);
            }
        }
        if (id == null || id.isEmpty()) {
            // Without an id there is no session, whatever else arrived.
            id = null;
            raw.clear();
        }
        String line = request.getMethod() + " " + request.getRequestURI();
        return new SessionState(prefix, context, maxInactiveInterval, maxValueBytes, line, id, raw);
    }

    // ---------------------------------------------------------------------------------------
    // The application's side (through SessionRequest and ProxySession)

    synchronized ProxySession session(boolean create) {
        if (current != null && current.isValidInternal()) {
            return current;
        }
        if (current == null && requestedId != null && !originalInvalidated) {
            original = ProxySession.existing(this, requestedId, originalRaw);
            current = original;
            return current;
        }
        if (!create) {
            return null;
        }
        current = ProxySession.created(this, provisionalId(), System.currentTimeMillis());
        version++;
        return current;
    }

    synchronized String changeSessionId() {
        ProxySession session = session(false);
        if (session == null) {
            throw new IllegalStateException("changeSessionId: the request has no session");
        }
        if (session == original) {
            rotated = true;
        }
        version++;
        session.changeId(provisionalId());
        return session.getId();
    }

    synchronized void invalidated(ProxySession session) {
        if (session == original) {
            originalInvalidated = true;
        }
        version++;
    }

    synchronized void changed() {
        version++;
    }

    boolean requestedIdValid() {
        synchronized (this) {
            return requestedId != null && !originalInvalidated;
        }
    }

    ClassLoader loader() {
        ClassLoader loader = Thread.currentThread().getContextClassLoader();
        return loader != null ? loader : SessionState.class.getClassLoader();
    }

    /**
     * The id the application sees for a session created, or rotated, in this request: the
     * proxy issues the real one with the response, so until then a placeholder that can never
     * be a proxy id ({@code new-} and 32 hex digits).
     */
    static String provisionalId() {
        byte[] bytes = new byte[16];
        RANDOM.nextBytes(bytes);
        StringBuilder id = new StringBuilder("new-");
        for (byte b : bytes) {
            id.append(Character.forDigit((b >> 4) & 0xf, 16)).append(Character.forDigit(b & 0xf, 16));
        }
        return id.toString();
    }

    // ---------------------------------------------------------------------------------------
    // The delta

    /**
     * The response headers that bring the stored session to what the application made of it;
     * empty when the request changed nothing.
     */
    synchronized Map<String, String> delta() {
        Map<String, String> headers = new LinkedHashMap<>();
        ProxySession now = current != null && current.isValidInternal() ? current : null;
        if (requestedId != null && originalInvalidated) {
            Map<String, String> sets = now == null ? new LinkedHashMap<String, String>() : sets(now);
            if (sets.isEmpty()) {
                headers.put(prefix + "Invalidate", "true");
                return headers;
            }
            // Destroyed, then written again (logout with a message): a new id, none of the old
            // attributes, the new ones.
            headers.put(prefix + "Rotate", "true");
            if (!originalRaw.isEmpty()) {
                headers.put(prefix + "Remove", String.join(", ", originalRaw.keySet()));
            }
            headers.put(prefix + "Set-" + CREATED, Long.toString(now.creationTimeInternal()));
            headers.putAll(sets);
            return headers;
        }
        if (requestedId != null) {
            if (rotated) {
                headers.put(prefix + "Rotate", "true");
            }
            if (original == null) {
                return headers;
            }
            List<String> removed = original.removedNames();
            if (!removed.isEmpty()) {
                headers.put(prefix + "Remove", String.join(", ", removed));
            }
            headers.putAll(sets(original));
            return headers;
        }
        if (now != null) {
            Map<String, String> sets = sets(now);
            if (!sets.isEmpty()) {
                headers.put(prefix + "Set-" + CREATED, Long.toString(now.creationTimeInternal()));
                headers.putAll(sets);
            }
        }
        return headers;
    }

    /** {@code Set-<name>} headers for the values of {@code session} that differ from the store. */
    private Map<String, String> sets(ProxySession session) {
        Map<String, String> headers = new LinkedHashMap<>();
        for (Map.Entry<String, Object> entry : session.loadedValues().entrySet()) {
            String key = entry.getKey();
            String name = Codec.attributeName(key);
            String encoded;
            try {
                encoded = session.encodedIfChanged(key, entry.getValue());
            } catch (IOException e) {
                if (reported.add(key)) {
                    LOG.log(Level.SEVERE, "stickless: session attribute \"" + key + "\" is not serializable and is"
                            + " NOT saved (" + requestLine + "): " + e, e);
                }
                continue;
            }
            if (encoded == null) {
                continue;
            }
            if (encoded.length() > maxValueBytes && reported.add(key)) {
                LOG.severe("stickless: session attribute \"" + key + "\" encodes to " + encoded.length()
                        + " bytes, more than session.max_value_bytes (" + maxValueBytes + "): the proxy will"
                        + " answer 502 and keep the session unchanged (" + requestLine + ")");
            }
            headers.put(prefix + "Set-" + name, encoded);
        }
        return headers;
    }

    // ---------------------------------------------------------------------------------------
    // Writing the delta to the response

    int enter() {
        synchronized (this) {
            return ++depth;
        }
    }

    int exit() {
        synchronized (this) {
            return --depth;
        }
    }

    /** Whether the session changed (through a call, not in place) since the last write. */
    synchronized boolean changedSinceWrite() {
        return version != emittedVersion;
    }

    /** After {@code response.reset()}: the headers written so far are gone. */
    synchronized void forgetWritten() {
        emitted = new LinkedHashMap<>();
        emittedVersion = -1;
    }

    /**
     * Brings the response's session headers up to date with the session, while it can: on a
     * response already committed, any difference is logged as lost at SEVERE level.
     */
    synchronized void write(HttpServletResponse response) {
        Map<String, String> desired = delta();
        int writtenVersion = version;
        if (desired.equals(emitted)) {
            emittedVersion = writtenVersion;
            return;
        }
        List<String> lost = new ArrayList<>();
        if (response.isCommitted()) {
            lost.addAll(difference(emitted, desired));
        } else {
            for (Map.Entry<String, String> header : desired.entrySet()) {
                if (!header.getValue().equals(emitted.get(header.getKey()))) {
                    response.setHeader(header.getKey(), header.getValue());
                    if (!response.containsHeader(header.getKey())) {
                        lost.add(header.getKey());
                    }
                }
            }
            for (String stale : emitted.keySet()) {
                if (!desired.containsKey(stale)) {
                    // Servlet 6 containers remove a header set to null; older ones may not.
                    try {
                        response.setHeader(stale, null);
                    } catch (RuntimeException e) {
                        // Checked just below.
                    }
                    if (response.containsHeader(stale)) {
                        lost.add(stale + " (already written, cannot be withdrawn)");
                    }
                }
            }
        }
        emitted = desired;
        emittedVersion = writtenVersion;
        if (!lost.isEmpty()) {
            LOG.severe("stickless: session changes made after the response was committed are LOST ("
                    + requestLine + "): " + lost + ". Change the session before flushing or writing more than"
                    + " the response buffer, or raise the buffer size (response.setBufferSize).");
        }
    }

    /** Header names (not values: they may be secrets) that differ between two header sets. */
    private static List<String> difference(Map<String, String> before, Map<String, String> after) {
        List<String> names = new ArrayList<>();
        Map<String, String> all = new HashMap<>(before);
        all.putAll(after);
        for (String name : all.keySet()) {
            String a = before.get(name);
            String b = after.get(name);
            if (a == null ? b != null : !a.equals(b)) {
                names.add(name);
            }
        }
        java.util.Collections.sort(names);
        return names;
    }
}
