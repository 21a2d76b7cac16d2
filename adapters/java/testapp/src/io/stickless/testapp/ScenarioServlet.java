package io.stickless.testapp;

import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServlet;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import jakarta.servlet.http.HttpSession;
import java.io.IOException;
import java.io.PrintWriter;
import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * The stickless Java adapter's test application: plain servlet API calls, nothing that knows
 * about the proxy. Deployed twice per container: with the filter ("app") and without ("plain").
 */
public class ScenarioServlet extends HttpServlet {
    private static final long serialVersionUID = 1L;

    /** Requests parked by /wait until /release (the concurrency scenario). */
    private static final Map<String, CountDownLatch> WAITING = new ConcurrentHashMap<>();

    @Override
    @SuppressWarnings("unchecked")
    protected void service(HttpServletRequest req, HttpServletResponse resp) throws ServletException, IOException {
        String op = req.getPathInfo() == null ? "/show" : req.getPathInfo();
        resp.setContentType("text/plain;charset=UTF-8");
        HttpSession session;
        switch (op) {
            case "/show":
                break;
            case "/login": {
                session = req.getSession();
                session.setAttribute("user", req.getParameter("user"));
                String before = session.getId();
                String after = req.changeSessionId();
                resp.getWriter().println("changed=" + !before.equals(after));
                break;
            }
            case "/cart": {
                session = req.getSession();
                String item = req.getParameter("item");
                List<String> cart = (List<String>) session.getAttribute("cart");
                if (cart == null) {
                    session.setAttribute("cart", new ArrayList<>(Collections.singletonList(item)));
                } else {
                    cart.add(item); // in place: no setAttribute
                }
                Integer count = (Integer) session.getAttribute("count");
                session.setAttribute("count", count == null ? 1 : count + 1);
                Double total = (Double) session.getAttribute("total");
                session.setAttribute("total", (total == null ? 0.0 : total) + 2.5);
                session.setAttribute("lastSeen", Long.parseLong(req.getParameter("at")));
                Map<String, Boolean> flags = (Map<String, Boolean>) session.getAttribute("flags");
                if (flags == null) {
                    flags = new HashMap<>();
                    session.setAttribute("flags", flags);
                }
                flags.put(item, Boolean.TRUE);
                CartItem last = (CartItem) session.getAttribute("last item");
                if (last != null && last.name.equals(item)) {
                    last.quantity++;
                } else {
                    session.setAttribute("last item", new CartItem(item, 1));
                }
                session.setAttribute("price", new BigDecimal("19.99"));
                break;
            }
            case "/rotate": {
                session = req.getSession(false);
                String before = session.getId();
                resp.getWriter().println("rotated-from=" + before + " to=" + req.changeSessionId());
                break;
            }
            case "/logout": {
                session = req.getSession(false);
                if (session != null) {
                    session.invalidate();
                    try {
                        session.getAttribute("user");
                    } catch (IllegalStateException e) {
                        resp.getWriter().println("invalidated=yes");
                    }
                }
                if (req.getParameter("flash") != null) {
                    req.getSession().setAttribute("flash", req.getParameter("flash"));
                }
                break;
            }
            case "/set":
                req.getSession().setAttribute(req.getParameter("key"), req.getParameter("value"));
                break;
            case "/remove":
                req.getSession().removeAttribute(req.getParameter("key"));
                break;
            case "/read": {
                session = req.getSession(false);
                if (session != null) {
                    for (String name : Collections.list(session.getAttributeNames())) {
                        session.getAttribute(name);
                    }
                }
                break;
            }
            case "/wait": {
                // Reads the session, waits until /release, then writes one key.
                session = req.getSession(false);
                CountDownLatch latch = new CountDownLatch(1);
                WAITING.put(req.getParameter("token"), latch);
                try {
                    if (!latch.await(20, TimeUnit.SECONDS)) {
                        resp.sendError(504, "never released");
                        return;
                    }
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                } finally {
                    WAITING.remove(req.getParameter("token"));
                }
                session.setAttribute(req.getParameter("key"), req.getParameter("value"));
                break;
            }
            case "/waiting":
                resp.getWriter().println(WAITING.containsKey(req.getParameter("token")) ? "waiting" : "no");
                return;
            case "/release": {
                CountDownLatch latch = WAITING.get(req.getParameter("token"));
                if (latch != null) {
                    latch.countDown();
                }
                resp.getWriter().println(latch != null ? "released" : "none");
                return;
            }
            case "/flush": {
                // Headers already sent: what was set before the flush is saved, what comes after
                // cannot be and must be logged.
                session = req.getSession();
                session.setAttribute("early", "kept");
                PrintWriter out = resp.getWriter();
                out.println("flushed");
                resp.flushBuffer();
                session.setAttribute("late", "lost");
                return;
            }
            case "/big": {
                // More output than the response buffer holds: the container commits on its own.
                req.getSession().setAttribute("big", "before-overflow");
                PrintWriter out = resp.getWriter();
                char[] line = new char[1023];
                java.util.Arrays.fill(line, 'b');
                for (int i = 0; i < 64; i++) {
                    out.println(line);
                }
                return;
            }
            default:
                resp.sendError(404);
                return;
        }
        show(req, resp.getWriter());
    }

    private static void show(HttpServletRequest req, PrintWriter out) {
        out.println("instance=" + System.getProperty("stickless.instance", "?"));
        HttpSession session = req.getSession(false);
        if (session == null) {
            out.println("session=none");
            return;
        }
        out.println("session=yes");
        out.println("new=" + session.isNew());
        out.println("id=" + session.getId());
        out.println("requested=" + req.getRequestedSessionId());
        out.println("created=" + session.getCreationTime());
        Map<String, Object> sorted = new TreeMap<>();
        for (String name : Collections.list(session.getAttributeNames())) {
            sorted.put(name, session.getAttribute(name));
        }
        for (Map.Entry<String, Object> entry : sorted.entrySet()) {
            Object value = entry.getValue();
            String text = value instanceof Map ? new TreeMap<>((Map<?, ?>) value).toString() : String.valueOf(value);
            out.println("attr " + entry.getKey() + " = " + value.getClass().getName() + " " + text);
        }
    }
}
