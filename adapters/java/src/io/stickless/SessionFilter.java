package io.stickless;

import jakarta.servlet.AsyncEvent;
import jakarta.servlet.AsyncListener;
import jakarta.servlet.Filter;
import jakarta.servlet.FilterChain;
import jakarta.servlet.FilterConfig;
import jakarta.servlet.ServletContext;
import jakarta.servlet.ServletException;
import jakarta.servlet.ServletRequest;
import jakarta.servlet.ServletRequestWrapper;
import jakarta.servlet.ServletResponse;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;

/**
 * Keeps the application's {@code HttpSession} in the stickless proxy's store: declared first in
 * {@code WEB-INF/web.xml}, it gives every request a session built from the proxy's
 * {@code X-Session-*} request headers and writes what the request changed back as
 * {@code X-Session-Set-*}, {@code -Remove}, {@code -Rotate} and {@code -Invalidate} response
 * headers, before the response commits. The application calls the servlet API unchanged.
 *
 * <p>Init parameters (all optional): {@code headerPrefix} (the proxy's
 * {@code session.header_prefix}, default {@code X-Session-}), {@code maxInactiveInterval}
 * (seconds, what {@code getMaxInactiveInterval} reports; default 1800, the proxy's default
 * idle timeout), {@code maxValueBytes} (the proxy's {@code session.max_value_bytes}, default
 * 4096: larger values are logged as errors).
 *
 * <p>Safety: the filter trusts {@code X-Session-*} request headers as the proxy's, which
 * strips them from clients. The application must be reachable only through the proxy.
 */
public class SessionFilter implements Filter {
    private static final String STATE = SessionState.class.getName();

    private String prefix = "X-Session-";
    private int maxInactiveInterval = 1800;
    private int maxValueBytes = 4096;
    private ServletContext context;

    @Override
    public void init(FilterConfig config) throws ServletException {
        context = config.getServletContext();
        String value = config.getInitParameter("headerPrefix");
        if (value != null && !value.trim().isEmpty()) {
            prefix = value.trim();
        }
        maxInactiveInterval = intParameter(config, "maxInactiveInterval", maxInactiveInterval);
        maxValueBytes = intParameter(config, "maxValueBytes", maxValueBytes);
    }

    @Override
    public void destroy() {
        // Nothing held between requests.
    }

    @Override
    public void doFilter(ServletRequest request, ServletResponse response, FilterChain chain)
            throws IOException, ServletException {
        if (!(request instanceof HttpServletRequest) || !(response instanceof HttpServletResponse)) {
            chain.doFilter(request, response);
            return;
        }
        if (wrapsSessionRequest(request)) {
            // Declared twice (web.xml under another name, and the jar's web-fragment.xml).
            chain.doFilter(request, response);
            return;
        }
        HttpServletRequest httpRequest = (HttpServletRequest) request;
        final HttpServletResponse httpResponse = (HttpServletResponse) response;
        SessionState found = (SessionState) request.getAttribute(STATE);
        if (found == null) {
            found = SessionState.fromRequest(httpRequest, prefix, context, maxInactiveInterval, maxValueBytes);
            request.setAttribute(STATE, found);
        }
        final SessionState state = found;
        state.enter();
        try {
            chain.doFilter(new SessionRequest(httpRequest, state), new SessionResponse(httpResponse, state));
        } finally {
            if (state.exit() == 0) {
                state.write(httpResponse);
                if (request.isAsyncStarted()) {
                    // The async servlet writes through the container's response: what it
                    // changes after this point is checked (and logged if lost) at completion.
                    request.getAsyncContext().addListener(new AsyncListener() {
                        @Override
                        public void onComplete(AsyncEvent event) {
                            state.write(httpResponse);
                        }

                        @Override
                        public void onTimeout(AsyncEvent event) {
                            // onComplete follows.
                        }

                        @Override
                        public void onError(AsyncEvent event) {
                            // onComplete follows.
                        }

                        @Override
                        public void onStartAsync(AsyncEvent event) {
                            event.getAsyncContext().addListener(this);
                        }
                    });
                }
            }
        }
    }

    private static boolean wrapsSessionRequest(ServletRequest request) {
        ServletRequest r = request;
        while (r instanceof ServletRequestWrapper) {
            if (r instanceof SessionRequest) {
                return true;
            }
            r = ((ServletRequestWrapper) r).getRequest();
        }
        return false;
    }

    private static int intParameter(FilterConfig config, String name, int fallback) throws ServletException {
        String value = config.getInitParameter(name);
        if (value == null || value.trim().isEmpty()) {
            return fallback;
        }
        try {
            return Integer.parseInt(value.trim());
        } catch (NumberFormatException e) {
            throw new ServletException("stickless: init-param " + name + " must be an integer, not \"" + value + "\"");
        }
    }
}
