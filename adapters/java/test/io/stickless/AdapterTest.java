package io.stickless;

import jakarta.servlet.FilterChain;
import jakarta.servlet.FilterConfig;
import jakarta.servlet.ServletContext;
import jakarta.servlet.ServletOutputStream;
import jakarta.servlet.WriteListener;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import jakarta.servlet.http.HttpSession;
import jakarta.servlet.http.HttpSessionBindingEvent;
import jakarta.servlet.http.HttpSessionBindingListener;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.Serializable;
import java.io.Writer;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;

/**
 * The adapter's unit tests, JDK only (no JUnit): {@code java io.stickless.AdapterTest}. The
 * servlet container is played by dynamic proxies; the integration tests (tests/adapter_java.rs)
 * use real Tomcat and Jetty.
 */
public final class AdapterTest {
    private static int passed;
    private static final List<String> failures = new ArrayList<>();

    public static void main(String[] args) throws Exception {
        String flavor = args.length > 0 ? args[0] : "";
        for (Method test : AdapterTest.class.getDeclaredMethods()) {
            if (!test.getName().startsWith("test")) {
                continue;
            }
            LOGS.clear();
            try {
                test.invoke(null);
                passed++;
            } catch (java.lang.reflect.InvocationTargetException e) {
                failures.add(test.getName() + ": " + e.getCause());
                e.getCause().printStackTrace();
            }
        }
        System.out.println("AdapterTest (" + flavor + "): " + passed + " passed, " + failures.size() + " failed");
        for (String failure : failures) {
            System.out.println("  FAILED " + failure);
        }
        System.exit(failures.isEmpty() ? 0 : 1);
    }

    // -------------------------------------------------------------------------------------
    // Codec

    static void testNamesFollowTheCommonScheme() {
        check(Codec.attributeName("cart"), "cart");
        check(Codec.attributeName("userId"), "xuser-49d");
        check(Codec.attributeName("user_id"), "xuser-5fid");
        check(Codec.attributeName("-"), "x-2d");
        check(Codec.attributeName("id"), "x-69d");
        check(Codec.attributeName("é"), "x-c3-a9");
        check(Codec.attributeName("last item"), "xlast-20item");
        for (String key : Arrays.asList("cart", "userId", "user_id", "-", "id", "é", "last item", "a.b", "X")) {
            check(Codec.keyOf(Codec.attributeName(key)), key);
        }
        check(Codec.keyOf("id"), null);
        check(Codec.keyOf("java-created"), null);
        check(Codec.keyOf("x-6"), null);
        check(Codec.keyOf("x-61"), null); // "a" is written "a": not canonical
        check(Codec.keyOf("x-zz"), null);
        check(Codec.keyOf("x-ff"), null); // not UTF-8
        check(Codec.keyOf("user-role"), null);
        char[] longKey = new char[65];
        Arrays.fill(longKey, 'a');
        expectThrows(IllegalArgumentException.class, () -> Codec.attributeName(new String(longKey)));
        expectThrows(IllegalArgumentException.class, () -> Codec.attributeName(""));
        expectThrows(IllegalArgumentException.class, () -> Codec.attributeName("ABCDEFGHIJKLMNOPQRSTUV"));
    }

    static void testValuesRoundTripWithTheirType() throws IOException {
        List<Object> values = Arrays.asList("alice", 3, 4L, 2.5, true, new ArrayList<>(Arrays.asList("a", "b")),
                new TreeMap<>(Collections.singletonMap("k", 1)), new java.math.BigDecimal("19.99"), new int[] {1, 2});
        for (Object value : values) {
            String encoded = Codec.encodeValue(value);
            check(encoded.startsWith("rO0AB"), true);
            check(encoded.matches("[A-Za-z0-9+/=]+"), true);
            Codec.Decoded decoded = Codec.decodeValue(encoded, AdapterTest.class.getClassLoader());
            check(decoded.plain, false);
            check(decoded.value.getClass(), value.getClass());
            check(Codec.encodeValue(decoded.value), encoded);
        }
        Codec.Decoded plain = Codec.decodeValue("alice", null);
        check(plain.plain, true);
        check(plain.value, "alice");
        Codec.Decoded broken = Codec.decodeValue("rO0ABnot-base64", null);
        check(broken.plain, true);
        check(broken.value, "rO0ABnot-base64");
    }

    // -------------------------------------------------------------------------------------
    // The filter

    static void testAnonymousRequestSendsNothing() throws Exception {
        Exchange x = run(new String[0], (req, res) -> {
            check(req.getSession(false), null);
            check(req.getRequestedSessionId(), null);
            check(req.isRequestedSessionIdValid(), false);
            res.getWriter().print("hello");
        });
        check(x.sessionHeaders(), Collections.emptyMap());
    }

    static void testASessionWithoutValuesIsNotCreated() throws Exception {
        Exchange x = run(new String[0], (req, res) -> {
            HttpSession session = req.getSession();
            check(session.isNew(), true);
            check(session.getId().startsWith("new-"), true);
            check(req.getSession(false), session);
        });
        check(x.sessionHeaders(), Collections.emptyMap());
    }

    static void testANewSessionIsCreatedWithItsValues() throws Exception {
        Exchange x = run(new String[0], (req, res) -> req.getSession().setAttribute("userId", 7));
        Map<String, String> headers = x.sessionHeaders();
        check(headers.keySet(), new HashSet<>(Arrays.asList("X-Session-Set-java-created", "X-Session-Set-xuser-49d")));
        check(decode(headers.get("X-Session-Set-xuser-49d")), 7);
        long created = Long.parseLong(headers.get("X-Session-Set-java-created"));
        check(Math.abs(System.currentTimeMillis() - created) < 60_000, true);
    }

    static void testAReadOnlyRequestSendsNothing() throws Exception {
        Exchange x = run(existing(), (req, res) -> {
            HttpSession session = req.getSession(false);
            check(session.getId(), "abc");
            check(session.isNew(), false);
            check(session.getCreationTime(), 1000L);
            check(new HashSet<>(Collections.list(session.getAttributeNames())),
                    new HashSet<>(Arrays.asList("cart", "user", "userId", "seen")));
            check(session.getAttribute("cart"), new ArrayList<>(Arrays.asList("a")));
            check(session.getAttribute("user"), "alice"); // not serialized: a plain string
            check(session.getAttribute("userId"), 7);
            check(session.getAttribute("seen"), new HashSet<>(Arrays.asList("p", "q")));
            check(req.getRequestedSessionId(), "abc");
            check(req.isRequestedSessionIdValid(), true);
            check(res.encodeURL("/x"), "/x");
        });
        check(x.sessionHeaders(), Collections.emptyMap());
    }

    static void testInPlaceChangesAndRemovalsAreSaved() throws Exception {
        Exchange x = run(existing(), (req, res) -> {
            HttpSession session = req.getSession(false);
            @SuppressWarnings("unchecked")
            List<String> cart = (List<String>) session.getAttribute("cart");
            cart.add("b");
            session.removeAttribute("user");
            session.setAttribute("userId", 7); // the same value again: no write
        });
        Map<String, String> headers = x.sessionHeaders();
        check(headers.keySet(), new HashSet<>(Arrays.asList("X-Session-Set-cart", "X-Session-Remove")));
        check(decode(headers.get("X-Session-Set-cart")), Arrays.asList("a", "b"));
        check(headers.get("X-Session-Remove"), "user");
    }

    static void testAPlainValueIsRewrittenOnlyWhenChanged() throws Exception {
        Exchange x = run(existing(), (req, res) -> req.getSession().setAttribute("user", "bob"));
        check(decode(x.sessionHeaders().get("X-Session-Set-user")), "bob");
    }

    static void testChangeSessionIdRotates() throws Exception {
        Exchange x = run(existing(), (req, res) -> {
            String id = req.changeSessionId();
            check(id.startsWith("new-"), true);
            check(req.getSession(false).getId(), id);
            check(req.getSession(false).getAttribute("user"), "alice");
        });
        check(x.sessionHeaders(), Collections.singletonMap("X-Session-Rotate", "true"));
        run(new String[0], (req, res) -> expectThrows(IllegalStateException.class, req::changeSessionId));
    }

    static void testInvalidateDestroys() throws Exception {
        Exchange x = run(existing(), (req, res) -> {
            HttpSession session = req.getSession(false);
            session.invalidate();
            expectThrows(IllegalStateException.class, () -> session.getAttribute("user"));
            expectThrows(IllegalStateException.class, () -> session.setAttribute("user", "x"));
            expectThrows(IllegalStateException.class, session::invalidate);
            expectThrows(IllegalStateException.class, session::isNew);
            check(req.getSession(false), null);
            check(req.isRequestedSessionIdValid(), false);
        });
        check(x.sessionHeaders(), Collections.singletonMap("X-Session-Invalidate", "true"));
    }

    static void testInvalidateThenWriteKeepsTheNewValues() throws Exception {
        Exchange x = run(existing(), (req, res) -> {
            req.getSession().invalidate();
            HttpSession fresh = req.getSession();
            check(fresh.isNew(), true);
            check(fresh.getAttribute("user"), null);
            fresh.setAttribute("flash", "bye");
        });
        Map<String, String> headers = x.sessionHeaders();
        check(headers.get("X-Session-Rotate"), "true");
        check(new HashSet<>(Arrays.asList(headers.get("X-Session-Remove").split(", "))),
                new HashSet<>(Arrays.asList("cart", "user", "xuser-49d", "seen", "java-created", "other-thing")));
        check(decode(headers.get("X-Session-Set-flash")), "bye");
        check(headers.containsKey("X-Session-Set-java-created"), true);
        check(headers.containsKey("X-Session-Invalidate"), false);
    }

    static void testTheDeltaGoesOutBeforeAFlushAndLaterChangesAreLoggedAsLost() throws Exception {
        Exchange x = run(existing(), (req, res) -> {
            req.getSession().setAttribute("early", "kept");
            res.getWriter().print("hello");
            res.flushBuffer();
            req.getSession().setAttribute("late", "lost");
        });
        check(decode(x.sessionHeaders().get("X-Session-Set-early")), "kept");
        check(x.sessionHeaders().containsKey("X-Session-Set-late"), false);
        check(severe().contains("LOST"), true);
        check(severe().contains("X-Session-Set-late"), true);
    }

    static void testStreamFlushAndCloseWriteTheDeltaFirst() throws Exception {
        Exchange x = run(existing(), (req, res) -> {
            req.getSession().setAttribute("a", 1);
            ServletOutputStream out = res.getOutputStream();
            out.write('x');
            out.flush();
        });
        check(x.committedWith.containsKey("X-Session-Set-a"), true);
        Exchange y = run(existing(), (req, res) -> {
            req.getSession().setAttribute("a", 1);
            res.getWriter().close();
        });
        check(y.committedWith.containsKey("X-Session-Set-a"), true);
        check(severe(), "");
    }

    static void testOutputLargerThanTheBufferWritesTheDeltaFirst() throws Exception {
        Exchange x = run(existing(), (req, res) -> {
            req.getSession().setAttribute("a", 1);
            byte[] big = new byte[FakeResponse.BUFFER * 3];
            res.getOutputStream().write(big);
        });
        check(x.committedWith.containsKey("X-Session-Set-a"), true);
        Exchange y = run(existing(), (req, res) -> {
            req.getSession().setAttribute("a", 1);
            char[] big = new char[FakeResponse.BUFFER * 3];
            res.getWriter().write(big);
        });
        check(y.committedWith.containsKey("X-Session-Set-a"), true);
        check(severe(), "");
    }

    static void testRedirectAndErrorWriteTheDeltaFirst() throws Exception {
        Exchange x = run(new String[0], (req, res) -> {
            req.getSession().setAttribute("user", "alice");
            res.sendRedirect("/home");
        });
        check(x.committedWith.containsKey("X-Session-Set-user"), true);
        Exchange y = run(new String[0], (req, res) -> {
            req.getSession().setAttribute("user", "alice");
            res.sendError(403);
        });
        check(y.committedWith.containsKey("X-Session-Set-user"), true);
    }

    static void testAChangeAfterAnEarlyWriteButBeforeTheCommitIsStillSent() throws Exception {
        Exchange x = run(existing(), (req, res) -> {
            req.getSession().setAttribute("a", 1);
            res.getWriter().write(new char[FakeResponse.BUFFER / 2]); // over the estimate, not committed
            req.getSession().setAttribute("a", 2);
            req.getSession().removeAttribute("user");
        });
        check(decode(x.sessionHeaders().get("X-Session-Set-a")), 2);
        check(x.sessionHeaders().get("X-Session-Remove"), "user");
        check(severe(), "");
    }

    static void testRefusedValuesFailLoudly() throws Exception {
        run(new String[0], (req, res) -> {
            HttpSession session = req.getSession();
            expectThrows(IllegalArgumentException.class, () -> session.setAttribute("thread", new Object()));
            char[] longKey = new char[70];
            Arrays.fill(longKey, 'k');
            expectThrows(IllegalArgumentException.class, () -> session.setAttribute(new String(longKey), 1));
        });
        Exchange x = run(new String[0], (req, res) -> {
            ArrayList<Object> holder = new ArrayList<>();
            holder.add(new Object());
            req.getSession().setAttribute("holder", holder);
            req.getSession().setAttribute("ok", 1);
        });
        check(x.sessionHeaders().containsKey("X-Session-Set-ok"), true);
        check(x.sessionHeaders().containsKey("X-Session-Set-holder"), false);
        check(severe().contains("holder"), true);
    }

    static void testBindingListenersAreCalled() throws Exception {
        List<String> events = new ArrayList<>();
        run(new String[0], (req, res) -> {
            HttpSession session = req.getSession();
            session.setAttribute("l", new Listener(events, "one"));
            session.setAttribute("l", new Listener(events, "two"));
            session.removeAttribute("l");
            session.setAttribute("m", new Listener(events, "three"));
            session.invalidate();
        });
        check(events, Arrays.asList("bound one", "bound two", "unbound one", "unbound two", "bound three",
                "unbound three"));
    }

    static void testTheHeaderPrefixIsConfigurable() throws Exception {
        Map<String, String> params = Collections.singletonMap("headerPrefix", "X-Sess-");
        Exchange x = run(new String[] {"X-Sess-Id", "abc", "X-Session-user", "ignored"}, params, (req, res) -> {
            check(req.getSession(false).getAttribute("user"), null);
            req.getSession().setAttribute("user", "bob");
        });
        check(x.response.headers.containsKey("X-Sess-Set-user"), true);
    }

    static void testAnIdWithoutAttributesIsASession() throws Exception {
        run(new String[] {"x-session-id", "abc"}, (req, res) -> {
            check(req.getSession(false).getId(), "abc");
            check(Collections.list(req.getSession(false).getAttributeNames()), Collections.emptyList());
        });
    }

    // -------------------------------------------------------------------------------------
    // The fake container

    interface Body {
        void run(HttpServletRequest req, HttpServletResponse res) throws Exception;
    }

    static final class Exchange {
        FakeResponse response;
        /** The session headers at the moment the response committed (or at the end). */
        Map<String, String> committedWith;

        Map<String, String> sessionHeaders() {
            return committedWith;
        }
    }

    /** The request headers of a session the proxy knows ("abc"), as the proxy sends them. */
    static String[] existing() throws IOException {
        HashSet<String> seen = new HashSet<>(1000); // its capacity is serialized too
        seen.add("p");
        seen.add("q");
        return new String[] {
            "X-Session-Id", "abc",
            "X-Session-cart", Codec.encodeValue(new ArrayList<>(Arrays.asList("a"))),
            "X-Session-user", "alice",
            "x-session-xuser-49d", Codec.encodeValue(7),
            "X-Session-seen", Codec.encodeValue(seen),
            "X-Session-java-created", "1000",
            "X-Session-other-thing", "zzz",
        };
    }

    static Exchange run(String[] headers, Body body) throws Exception {
        return run(headers, Collections.<String, String>emptyMap(), body);
    }

    static Exchange run(String[] headers, Map<String, String> params, Body body) throws Exception {
        SessionFilter filter = new SessionFilter();
        filter.init(fake(FilterConfig.class, (method, args) -> {
            switch (method) {
                case "getInitParameter": return params.get((String) args[0]);
                case "getServletContext": return fake(ServletContext.class, (m, a) -> null);
                default: return null;
            }
        }));
        Map<String, String> requestHeaders = new LinkedHashMap<>();
        for (int i = 0; i < headers.length; i += 2) {
            requestHeaders.put(headers[i], headers[i + 1]);
        }
        Map<String, Object> attributes = new LinkedHashMap<>();
        HttpServletRequest request = fake(HttpServletRequest.class, (method, args) -> {
            switch (method) {
                case "getHeaderNames": return Collections.enumeration(requestHeaders.keySet());
                case "getHeader":
                    for (Map.Entry<String, String> h : requestHeaders.entrySet()) {
                        if (h.getKey().equalsIgnoreCase((String) args[0])) {
                            return h.getValue();
                        }
                    }
                    return null;
                case "getAttribute": return attributes.get((String) args[0]);
                case "setAttribute": attributes.put((String) args[0], args[1]); return null;
                case "getMethod": return "GET";
                case "getRequestURI": return "/test";
                case "isAsyncStarted": return false;
                case "getSession":
                case "changeSessionId":
                    throw new AssertionError("the container's own session was asked for");
                default: return null;
            }
        });
        FakeResponse fake = new FakeResponse();
        HttpServletResponse response = fake.proxy();
        FilterChain chain = (req, res) -> {
            try {
                body.run((HttpServletRequest) req, (HttpServletResponse) res);
            } catch (IOException | RuntimeException | Error e) {
                throw e;
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        };
        filter.doFilter(request, response, chain);
        Exchange exchange = new Exchange();
        exchange.response = fake;
        exchange.committedWith = fake.committedWith != null ? fake.committedWith : fake.sessionHeaders();
        return exchange;
    }

    /** A container's response: a small buffer, commits on overflow, flush, redirect, error. */
    static final class FakeResponse {
        static final int BUFFER = 64;
        final Map<String, String> headers = new TreeMap<>(String.CASE_INSENSITIVE_ORDER);
        final ByteArrayOutputStream body = new ByteArrayOutputStream();
        boolean committed;
        Map<String, String> committedWith;

        void commit() {
            if (!committed) {
                committed = true;
                committedWith = sessionHeaders();
            }
        }

        Map<String, String> sessionHeaders() {
            Map<String, String> session = new TreeMap<>();
            for (Map.Entry<String, String> h : headers.entrySet()) {
                if (h.getKey().toLowerCase().startsWith("x-session-")) {
                    session.put(h.getKey(), h.getValue());
                }
            }
            return session;
        }

        final ServletOutputStream stream = new ServletOutputStream() {
            @Override
            public void write(int b) {
                body.write(b);
                if (body.size() > BUFFER) {
                    commit();
                }
            }

            @Override
            public void flush() {
                commit();
            }

            @Override
            public void close() {
                commit();
            }

            @Override
            public boolean isReady() {
                return true;
            }

            @Override
            public void setWriteListener(WriteListener listener) {}
        };

        final PrintWriter writer = new PrintWriter(new Writer() {
            @Override
            public void write(char[] c, int off, int len) throws IOException {
                stream.write(new String(c, off, len).getBytes(StandardCharsets.UTF_8));
            }

            @Override
            public void flush() {
                commit();
            }

            @Override
            public void close() {
                commit();
            }
        });

        HttpServletResponse proxy() {
            return fake(HttpServletResponse.class, (method, args) -> {
                switch (method) {
                    case "setHeader":
                        if (!committed) {
                            if (args[1] == null) {
                                headers.remove((String) args[0]);
                            } else {
                                headers.put((String) args[0], (String) args[1]);
                            }
                        }
                        return null;
                    case "containsHeader": return headers.containsKey((String) args[0]);
                    case "isCommitted": return committed;
                    case "getBufferSize": return BUFFER;
                    case "getCharacterEncoding": return "UTF-8";
                    case "getOutputStream": return stream;
                    case "getWriter": return writer;
                    case "flushBuffer":
                    case "sendRedirect":
                    case "sendError":
                        commit();
                        return null;
                    default: return null;
                }
            });
        }
    }

    static final class Listener implements HttpSessionBindingListener, Serializable {
        private static final long serialVersionUID = 1L;
        final transient List<String> events;
        final String name;

        Listener(List<String> events, String name) {
            this.events = events;
            this.name = name;
        }

        @Override
        public void valueBound(HttpSessionBindingEvent event) {
            events.add("bound " + name);
        }

        @Override
        public void valueUnbound(HttpSessionBindingEvent event) {
            events.add("unbound " + name);
        }
    }

    interface Answer {
        Object answer(String method, Object[] args) throws Throwable;
    }

    @SuppressWarnings("unchecked")
    static <T> T fake(Class<T> type, Answer answer) {
        InvocationHandler handler = (proxy, method, args) -> {
            if (method.getDeclaringClass() == Object.class) {
                switch (method.getName()) {
                    case "equals": return proxy == args[0];
                    case "hashCode": return System.identityHashCode(proxy);
                    default: return type.getSimpleName();
                }
            }
            Object result = answer.answer(method.getName(), args == null ? new Object[0] : args);
            if (result == null && method.getReturnType() == boolean.class) {
                return false;
            }
            if (result == null && method.getReturnType() == int.class) {
                return 0;
            }
            if (result == null && method.getReturnType() == long.class) {
                return 0L;
            }
            return result;
        };
        return (T) Proxy.newProxyInstance(AdapterTest.class.getClassLoader(), new Class<?>[] {type}, handler);
    }

    // -------------------------------------------------------------------------------------
    // Assertions and the log

    static final List<LogRecord> LOGS = Collections.synchronizedList(new ArrayList<LogRecord>());

    static {
        Logger logger = Logger.getLogger(SessionFilter.class.getName());
        logger.setUseParentHandlers(false);
        logger.addHandler(new Handler() {
            @Override
            public void publish(LogRecord record) {
                LOGS.add(record);
            }

            @Override
            public void flush() {}

            @Override
            public void close() {}
        });
    }

    static String severe() {
        StringBuilder text = new StringBuilder();
        synchronized (LOGS) {
            for (LogRecord record : LOGS) {
                if (record.getLevel() == Level.SEVERE) {
                    text.append(record.getMessage()).append('\n');
                }
            }
        }
        return text.toString();
    }

    static Object decode(String encoded) {
        if (encoded == null) {
            throw new AssertionError("no such header");
        }
        Codec.Decoded decoded = Codec.decodeValue(encoded, AdapterTest.class.getClassLoader());
        if (decoded.plain) {
            throw new AssertionError("not a serialized value: " + encoded);
        }
        return decoded.value;
    }

    static void check(Object actual, Object expected) {
        boolean same = actual == null ? expected == null : actual.equals(expected);
        if (!same) {
            throw new AssertionError("expected <" + expected + "> but was <" + actual + ">");
        }
    }

    interface Action {
        void run() throws Exception;
    }

    static void expectThrows(Class<? extends Throwable> type, Action action) {
        try {
            action.run();
        } catch (Throwable t) {
            if (type.isInstance(t)) {
                return;
            }
            throw new AssertionError("expected " + type.getSimpleName() + " but got " + t, t);
        }
        throw new AssertionError("expected " + type.getSimpleName() + ", nothing was thrown");
    }
}
