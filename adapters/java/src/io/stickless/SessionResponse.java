package io.stickless;

import jakarta.servlet.ServletOutputStream;
import jakarta.servlet.WriteListener;
import jakarta.servlet.http.HttpServletResponse;
import jakarta.servlet.http.HttpServletResponseWrapper;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.charset.Charset;
import java.util.Locale;

/**
 * The response the application writes to. Before anything that may commit it (flushBuffer,
 * a flush or close of its stream or writer, sendRedirect, sendError, writing as much as the
 * buffer holds or the declared Content-Length), the session delta computed so far goes into
 * the headers; what changes after the commit is logged as lost.
 */
final class SessionResponse extends HttpServletResponseWrapper {
    private final SessionState state;
    /** The response the filter was given: session headers go there directly (see write). */
    private final HttpServletResponse base;
    private GuardedStream stream;
    private GuardedWriter writer;
    /** Bytes (or, for the writer, an upper bound of bytes) written so far. */
    private long written;
    private long contentLength = -1;
    /** Set once the output may have filled the buffer: every write checks from then on. */
    private boolean full;

    SessionResponse(HttpServletResponse response, SessionState state) {
        super(response);
        this.state = state;
        this.base = response;
    }

    /** Writes the session delta into the headers (an included servlet's setHeader is ignored). */
    void beforeCommit() {
        if (!base.isCommitted()) {
            state.write(base);
        }
    }

    /** Called before {@code n} more bytes go to the container's buffer. */
    void beforeWrite(long n) {
        written += n;
        if (!full) {
            int size = getBufferSize();
            if (written >= size || (contentLength >= 0 && written >= contentLength)) {
                full = true;
                beforeCommit();
            }
        } else if (state.changedSinceWrite()) {
            beforeCommit();
        }
    }

    @Override
    public ServletOutputStream getOutputStream() throws IOException {
        if (stream == null) {
            stream = new GuardedStream(super.getOutputStream());
        }
        return stream;
    }

    @Override
    public PrintWriter getWriter() throws IOException {
        if (writer == null) {
            PrintWriter delegate = super.getWriter();
            writer = new GuardedWriter(delegate, maxBytesPerChar(getCharacterEncoding()));
        }
        return writer;
    }

    @Override
    public void flushBuffer() throws IOException {
        beforeCommit();
        super.flushBuffer();
    }

    @Override
    public void sendError(int sc, String msg) throws IOException {
        beforeCommit();
        super.sendError(sc, msg);
    }

    @Override
    public void sendError(int sc) throws IOException {
        beforeCommit();
        super.sendError(sc);
    }

    @Override
    public void sendRedirect(String location) throws IOException {
        beforeCommit();
        super.sendRedirect(location);
    }

    @Override
    public void reset() {
        super.reset();
        state.forgetWritten();
        written = 0;
        full = false;
        contentLength = -1;
    }

    @Override
    public void resetBuffer() {
        super.resetBuffer();
        written = 0;
        full = false;
    }

    @Override
    public void setContentLength(int len) {
        super.setContentLength(len);
        contentLength = len;
    }

    @Override
    public void setContentLengthLong(long len) {
        super.setContentLengthLong(len);
        contentLength = len;
    }

    @Override
    public void setHeader(String name, String value) {
        super.setHeader(name, value);
        noteLength(name, value);
    }

    @Override
    public void addHeader(String name, String value) {
        super.addHeader(name, value);
        noteLength(name, value);
    }

    @Override
    public void setIntHeader(String name, int value) {
        super.setIntHeader(name, value);
        noteLength(name, Integer.toString(value));
    }

    @Override
    public void addIntHeader(String name, int value) {
        super.addIntHeader(name, value);
        noteLength(name, Integer.toString(value));
    }

    /** No session id in URLs, ever: the proxy's cookie carries it. */
    @Override
    public String encodeURL(String url) {
        return url;
    }

    @Override
    public String encodeRedirectURL(String url) {
        return url;
    }

//javax-only     @Override
//javax-only     @SuppressWarnings("deprecation")
//javax-only     public String encodeUrl(String url) {
//javax-only         return url;
//javax-only     }
//javax-only
//javax-only     @Override
//javax-only     @SuppressWarnings("deprecation")
//javax-only     public String encodeRedirectUrl(String url) {
//javax-only         return url;
//javax-only     }

    private void noteLength(String name, String value) {
        if (name != null && value != null && name.toLowerCase(Locale.ROOT).equals("content-length")) {
            try {
                contentLength = Long.parseLong(value.trim());
            } catch (NumberFormatException e) {
                // The container will complain about it, not us.
            }
        }
    }

    private static int maxBytesPerChar(String encoding) {
        try {
            return (int) Math.ceil(Charset.forName(encoding == null ? "ISO-8859-1" : encoding)
                    .newEncoder().maxBytesPerChar());
        } catch (RuntimeException e) {
            return 4;
        }
    }

    private final class GuardedStream extends ServletOutputStream {
        private final ServletOutputStream delegate;

        GuardedStream(ServletOutputStream delegate) {
            this.delegate = delegate;
        }

        @Override
        public void write(int b) throws IOException {
            beforeWrite(1);
            delegate.write(b);
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            beforeWrite(len);
            delegate.write(b, off, len);
        }

        @Override
        public void flush() throws IOException {
            beforeCommit();
            delegate.flush();
        }

        @Override
        public void close() throws IOException {
            beforeCommit();
            delegate.close();
        }

        @Override
        public boolean isReady() {
            return delegate.isReady();
        }

        @Override
        public void setWriteListener(WriteListener listener) {
            delegate.setWriteListener(listener);
        }
    }

    private final class GuardedWriter extends PrintWriter {
        private final PrintWriter delegate;
        private final int bytesPerChar;

        GuardedWriter(PrintWriter delegate, int bytesPerChar) {
            super(delegate, false);
            this.delegate = delegate;
            this.bytesPerChar = bytesPerChar;
        }

        @Override
        public void write(int c) {
            beforeWrite(bytesPerChar);
            delegate.write(c);
        }

        @Override
        public void write(char[] buf, int off, int len) {
            beforeWrite((long) len * bytesPerChar);
            delegate.write(buf, off, len);
        }

        @Override
        public void write(String s, int off, int len) {
            beforeWrite((long) len * bytesPerChar);
            delegate.write(s, off, len);
        }

        @Override
        public void println() {
            write(System.lineSeparator());
        }

        @Override
        public void flush() {
            beforeCommit();
            delegate.flush();
        }

        @Override
        public void close() {
            beforeCommit();
            delegate.close();
        }

        @Override
        public boolean checkError() {
            return delegate.checkError();
        }
    }
}
