package io.stickless;

import jakarta.servlet.ServletContext;
import jakarta.servlet.http.HttpSession;
import jakarta.servlet.http.HttpSessionBindingEvent;
import jakarta.servlet.http.HttpSessionBindingListener;
import java.io.IOException;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Enumeration;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.logging.Level;

/**
 * The {@link HttpSession} the application gets: its attributes live in the proxy's store and
 * arrive with each request as {@code X-Session-*} headers; values are deserialized on first
 * {@link #getAttribute} only.
 */
final class ProxySession implements HttpSession {
    /** Stands for a value not deserialized yet (never read, so never changed in place). */
    private static final Object NOT_LOADED = new Object();

    private final SessionState state;
    private String id;
    private final boolean fresh;
    private final long creationTime;
    private boolean valid = true;
    private int maxInactiveInterval;

    /** Key to stored text, for the attributes the session came with (keys of this adapter). */
    private final Map<String, String> stored;
    /** Keys whose stored text is not a serialized object: compared as strings. */
    private final Map<String, Boolean> plain = new HashMap<>();
    /** Encodings of a fresh decode of the stored text, where that differs from the text. */
    private final Map<String, String> canonical = new HashMap<>();
    /** The application's view: key to value, or NOT_LOADED. */
    private final Map<String, Object> values = new LinkedHashMap<>();

    private ProxySession(SessionState state, String id, boolean fresh, long creationTime, Map<String, String> stored) {
        this.state = state;
        this.id = id;
        this.fresh = fresh;
        this.creationTime = creationTime;
        this.stored = stored;
        this.maxInactiveInterval = state.maxInactiveInterval;
        for (String key : stored.keySet()) {
            values.put(key, NOT_LOADED);
        }
    }

    /** The session the proxy sent: attributes whose names are this adapter's. */
    static ProxySession existing(SessionState state, String id, Map<String, String> raw) {
        Map<String, String> stored = new LinkedHashMap<>();
        long created = state.requestStart;
        for (Map.Entry<String, String> entry : raw.entrySet()) {
            if (entry.getKey().equals(SessionState.CREATED)) {
                try {
                    created = Long.parseLong(entry.getValue().trim());
                } catch (NumberFormatException e) {
                    // Not ours after all; the request's start stands in.
                }
                continue;
            }
            String key = Codec.keyOf(entry.getKey());
            if (key != null) {
                stored.put(key, entry.getValue());
            }
        }
        return new ProxySession(state, id, false, created, stored);
    }

    /** A session created in this request; the proxy creates it when its first value is set. */
    static ProxySession created(SessionState state, String provisionalId, long now) {
        return new ProxySession(state, provisionalId, true, now, new LinkedHashMap<String, String>());
    }

    // ---------------------------------------------------------------------------------------
    // HttpSession

    @Override
    public synchronized long getCreationTime() {
        check("getCreationTime");
        return creationTime;
    }

    /**
     * The proxy's id; for a session created or rotated in this request, a placeholder
     * ({@code new-…}) until the proxy issues the real id with the response. Like Tomcat's, it
     * answers on an invalidated session too.
     */
    @Override
    public synchronized String getId() {
        return id;
    }

    /**
     * The start of the current request: the proxy does not tell when the previous one came,
     * and recording it would write to the store on every request.
     */
    @Override
    public synchronized long getLastAccessedTime() {
        check("getLastAccessedTime");
        return fresh ? creationTime : state.requestStart;
    }

    @Override
    public ServletContext getServletContext() {
        return state.context;
    }

    /**
     * Kept for this request only: expiry is the proxy's ({@code session.idle_timeout}, capped by
     * {@code session.absolute_timeout}), the same for every session.
     */
    @Override
    public synchronized void setMaxInactiveInterval(int interval) {
        maxInactiveInterval = interval;
    }

    @Override
    public synchronized int getMaxInactiveInterval() {
        return maxInactiveInterval;
    }

    @Override
    public synchronized Object getAttribute(String name) {
        check("getAttribute");
        return load(name);
    }

    @Override
    public synchronized Enumeration<String> getAttributeNames() {
        check("getAttributeNames");
        return Collections.enumeration(new ArrayList<>(values.keySet()));
    }

    @Override
    public void setAttribute(String name, Object value) {
        if (value == null) {
            removeAttribute(name);
            return;
        }
        Object old;
        synchronized (this) {
            check("setAttribute");
            if (name == null) {
                throw new IllegalArgumentException("stickless: setAttribute with a null name");
            }
            if (!(value instanceof Serializable)) {
                throw new IllegalArgumentException("stickless: session attribute \"" + name + "\" is a "
                        + value.getClass().getName() + ", which is not Serializable: it cannot be kept in the"
                        + " proxy's store");
            }
            Codec.attributeName(name); // refuses names too long for the proxy, here and now
            old = values.put(name, value);
        }
        // Outside this session's lock: SessionState locks itself, then sessions.
        state.changed();
        if (value instanceof HttpSessionBindingListener) {
            ((HttpSessionBindingListener) value).valueBound(new HttpSessionBindingEvent(this, name, value));
        }
        if (old != null && old != NOT_LOADED && old != value && old instanceof HttpSessionBindingListener) {
            ((HttpSessionBindingListener) old).valueUnbound(new HttpSessionBindingEvent(this, name, old));
        }
    }

    @Override
    public void removeAttribute(String name) {
        Object old;
        synchronized (this) {
            check("removeAttribute");
            if (!values.containsKey(name)) {
                return;
            }
            old = values.remove(name);
        }
        state.changed();
        if (old instanceof HttpSessionBindingListener) {
            ((HttpSessionBindingListener) old).valueUnbound(new HttpSessionBindingEvent(this, name, old));
        }
    }

    @Override
    public void invalidate() {
        Map<String, Object> unbound;
        synchronized (this) {
            check("invalidate");
            valid = false;
            unbound = new LinkedHashMap<>(values);
        }
        state.invalidated(this);
        for (Map.Entry<String, Object> entry : unbound.entrySet()) {
            Object value = entry.getValue();
            if (value instanceof HttpSessionBindingListener) {
                ((HttpSessionBindingListener) value).valueUnbound(
                        new HttpSessionBindingEvent(this, entry.getKey(), value));
            }
        }
    }

    @Override
    public synchronized boolean isNew() {
        check("isNew");
        return fresh;
    }

    // The methods Servlet 2.2 deprecated, gone from Servlet 6 but abstract in earlier versions.

    public Object getValue(String name) {
        return getAttribute(name);
    }

    public String[] getValueNames() {
        synchronized (this) {
            check("getValueNames");
            return values.keySet().toArray(new String[0]);
        }
    }

    public void putValue(String name, Object value) {
        setAttribute(name, value);
    }

    public void removeValue(String name) {
        removeAttribute(name);
    }

//javax-only     @Override
//javax-only     @SuppressWarnings("deprecation")
//javax-only     public jakarta.servlet.http.HttpSessionContext getSessionContext() {
//javax-only         return null;
//javax-only     }

    // ---------------------------------------------------------------------------------------
    // For SessionState

    synchronized boolean isValidInternal() {
        return valid;
    }

    synchronized long creationTimeInternal() {
        return creationTime;
    }

    synchronized void changeId(String newId) {
        id = newId;
    }

    /** The names of stored attributes the application removed. */
    synchronized List<String> removedNames() {
        List<String> names = new ArrayList<>();
        for (String key : stored.keySet()) {
            if (!values.containsKey(key)) {
                names.add(Codec.attributeName(key));
            }
        }
        return names;
    }

    /** The values the application may have touched (set, or read and so maybe changed in place). */
    synchronized Map<String, Object> loadedValues() {
        Map<String, Object> loaded = new LinkedHashMap<>();
        for (Map.Entry<String, Object> entry : values.entrySet()) {
            if (entry.getValue() != NOT_LOADED) {
                loaded.put(entry.getKey(), entry.getValue());
            }
        }
        return loaded;
    }

    /**
     * The encoding of {@code value} when it differs from what the store holds for {@code key},
     * null when it is the same (compared by encoding, so in-place changes count).
     */
    synchronized String encodedIfChanged(String key, Object value) throws IOException {
        String raw = stored.get(key);
        if (raw != null && Boolean.TRUE.equals(plain.get(key)) && raw.equals(value)) {
            return null;
        }
        String encoded = Codec.encodeValue(value);
        if (raw == null || Boolean.TRUE.equals(plain.get(key))) {
            return encoded;
        }
        if (encoded.equals(raw)) {
            return null;
        }
        // The same object may serialize differently here than where it was written (hash
        // order of sets and maps): compare with a fresh copy of the stored one, too.
        String again = canonical.get(key);
        if (again == null) {
            Codec.Decoded decoded = Codec.decodeValue(raw, state.loader());
            again = decoded.plain ? raw : Codec.encodeValue(decoded.value);
            canonical.put(key, again);
        }
        return encoded.equals(again) ? null : encoded;
    }

    private Object load(String key) {
        Object value = values.get(key);
        if (value != NOT_LOADED) {
            return value;
        }
        Codec.Decoded decoded = Codec.decodeValue(stored.get(key), state.loader());
        if (decoded.failure != null) {
            SessionState.LOG.log(Level.WARNING, "stickless: session attribute \"" + key + "\" looks serialized but"
                    + " does not deserialize here (" + decoded.failure + "); the application gets its stored"
                    + " text as a String", decoded.failure);
        }
        plain.put(key, decoded.plain);
        values.put(key, decoded.value);
        return decoded.value;
    }

    private void check(String method) {
        if (!valid) {
            throw new IllegalStateException(method + ": the session has already been invalidated");
        }
    }
}
