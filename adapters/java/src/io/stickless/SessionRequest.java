package io.stickless;

import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletRequestWrapper;
import jakarta.servlet.http.HttpSession;

/**
 * The request the application sees: its session is the proxy's. The container's own session
 * (and so its {@code JSESSIONID} cookie) is never asked for.
 */
final class SessionRequest extends HttpServletRequestWrapper {
    final SessionState state;

    SessionRequest(HttpServletRequest request, SessionState state) {
        super(request);
        this.state = state;
    }

    @Override
    public HttpSession getSession(boolean create) {
        return state.session(create);
    }

    @Override
    public HttpSession getSession() {
        return state.session(true);
    }

    /** Rotation: {@code X-Session-Rotate: true}; returns a placeholder id (see ProxySession#getId). */
    @Override
    public String changeSessionId() {
        return state.changeSessionId();
    }

    @Override
    public String getRequestedSessionId() {
        return state.requestedId;
    }

    @Override
    public boolean isRequestedSessionIdValid() {
        return state.requestedIdValid();
    }

    @Override
    public boolean isRequestedSessionIdFromCookie() {
        return state.requestedId != null;
    }

    @Override
    public boolean isRequestedSessionIdFromURL() {
        return false;
    }

//javax-only     @Override
//javax-only     @SuppressWarnings("deprecation")
//javax-only     public boolean isRequestedSessionIdFromUrl() {
//javax-only         return false;
//javax-only     }
}
