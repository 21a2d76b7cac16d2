//! Request bodies read whole before an upstream is contacted (a route's `request_buffering`),
//! as nginx's `proxy_request_buffering on`: a client that uploads slowly then holds a proxy
//! task and some memory or disk, not one of the few workers of a PHP-FPM or Tomcat backend.
//!
//! The first `memory_bytes` stay in memory; the rest goes to an unnamed temporary file
//! (`O_TMPFILE` on Linux), which has no name to leave behind, even when the process is killed.
//! The result is replayed from the start by every attempt, so fail-over to the next upstream
//! always has the whole body to send.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, EXPECT, TRAILER, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::task::JoinHandle;

use super::body::Refusal;
use crate::config::RequestBuffering;

/// Writes to the temporary file and reads from it go in pieces of this size: few system calls,
/// and never more than this of a spilled body in memory at once.
const FILE_CHUNK: usize = 64 * 1024;

/// The temporary file failed: our disk's fault, not the client's nor the backend's (500).
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("cannot create a temporary file for a request body in {}", dir.display())]
    Create {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write a request body to its temporary file")]
    Write(#[source] io::Error),
    #[error("cannot read a request body back from its temporary file")]
    Read(#[source] io::Error),
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The client's side of the body failed (connection closed, bad chunk).
    #[error("the client's request body broke off")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Spill(#[from] SpillError),
}

/// A whole request body: the first `memory_bytes` in memory, the rest in a temporary file.
#[derive(Debug)]
pub struct Buffered {
    memory: Bytes,
    spilled: Option<Arc<File>>,
    len: u64,
    /// Whether the client sent a body at all (a `GET` usually does not): only then does the
    /// forwarded request announce one.
    has_body: bool,
}

/// Reads `body` whole, within the route's limits: no byte for `idle` → `Idle` (408); more
/// than `max_bytes` or `route_limit`, whichever is smaller → `TooLarge` (413), refused before
/// reading when the announced length is already too much. `on_spill` runs once the body has
/// outgrown memory and its temporary file is made. Trailers are dropped: a body sent with
/// `Content-Length` cannot carry any.
pub async fn collect<B>(
    mut body: B,
    settings: &RequestBuffering,
    route_limit: Option<u64>,
    idle: Duration,
    on_spill: impl FnOnce(),
) -> Result<Buffered, BufferError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = route_limit.map_or(settings.max_bytes, |route| route.min(settings.max_bytes));
    let announced = body.size_hint().lower();
    if announced > limit {
        return Err(Refusal::TooLarge.into());
    }
    let has_body = !body.is_end_stream();
    // An announced length sizes the buffer once; a chunked body grows it as it comes.
    let mut memory = BytesMut::with_capacity(bounded(announced.min(settings.memory_bytes)));
    let mut len: u64 = 0;
    let mut file: Option<BufWriter<tokio::fs::File>> = None;
    let mut on_spill = Some(on_spill);
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(Refusal::Idle.into()),
            Ok(None) => break,
            Ok(Some(Err(err))) => return Err(BufferError::Client(err.into())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        if len > limit {
            return Err(Refusal::TooLarge.into());
        }
        // Copied rather than kept as received: a client sending one-byte chunks would
        // otherwise make memory_bytes cost many times that in chunk bookkeeping.
        let room = settings.memory_bytes.saturating_sub(memory.len() as u64);
        let kept = data.split_to(bounded(room).min(data.len()));
        memory.extend_from_slice(&kept);
        if data.is_empty() {
            continue;
        }
        let writer = match &mut file {
            Some(writer) => writer,
            None => {
                let made = temporary_file(settings).await?;
                if let Some(on_spill) = on_spill.take() {
                    on_spill();
                }
                file.insert(BufWriter::with_capacity(
                    FILE_CHUNK,
                    tokio::fs::File::from_std(made),
                ))
            }
        };
        writer.write_all(&data).await.map_err(SpillError::Write)?;
    }
    let spilled = match file {
        None => None,
        Some(mut writer) => {
            // The file's writes run in the background; flushing waits for them, and is where
            // a full disk shows.
            writer.flush().await.map_err(SpillError::Write)?;
            Some(Arc::new(writer.into_inner().into_std().await))
        }
    };
    Ok(Buffered {
        memory: memory.freeze(),
        spilled,
        len,
        has_body,
    })
}

/// A length that fits in memory, for sizes already bounded by a `u64` limit.
fn bounded(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// An unnamed file in the configured directory, made on a blocking thread: opening a file
/// may wait on the disk.
async fn temporary_file(settings: &RequestBuffering) -> Result<File, SpillError> {
    let dir = settings.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let at = dir.clone();
    let made = tokio::task::spawn_blocking(move || tempfile::tempfile_in(at))
        .await
        .unwrap_or_else(|joined| Err(io::Error::other(joined)));
    made.map_err(|source| SpillError::Create { dir, source })
}

impl Buffered {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether part of the body is on disk.
    pub fn spilled(&self) -> bool {
        self.spilled.is_some()
    }

    /// Frames the request for the body as it will be sent: `Content-Length` with its exact
    /// length and no `Transfer-Encoding`, which backends that do not take chunked requests
    /// (PHP's built-in server, some FastCGI set-ups) need. No `Trailer`, since trailers are
    /// not forwarded, and no `Expect`: the client's `100-continue` was answered when its body
    /// was read, and a backend has nothing left to agree to.
    pub fn set_framing(&self, headers: &mut HeaderMap) {
        headers.remove(TRANSFER_ENCODING);
        headers.remove(TRAILER);
        headers.remove(EXPECT);
        if self.has_body {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(self.len));
        }
    }
}

/// One reading of a `Buffered` body, from its start.
#[derive(Debug)]
pub struct Replay {
    body: Arc<Buffered>,
    memory_sent: bool,
    /// Where the next read of the file starts. Reads are positional (`pread`): attempts share
    /// the file but no file offset, so none can disturb another's.
    offset: u64,
    reading: Option<JoinHandle<io::Result<Vec<u8>>>>,
}

impl Replay {
    pub fn new(body: Arc<Buffered>) -> Replay {
        Replay {
            body,
            memory_sent: false,
            offset: 0,
            reading: None,
        }
    }

    /// Another reading of the same body, from its start.
    pub fn restart(&self) -> Replay {
        Replay::new(self.body.clone())
    }

    fn remaining(&self) -> u64 {
        let memory = if self.memory_sent {
            0
        } else {
            self.body.memory.len() as u64
        };
        let file = self.body.len - self.body.memory.len() as u64 - self.offset;
        memory + file
    }

    pub fn is_end(&self) -> bool {
        self.remaining() == 0
    }

    pub fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining())
    }

    /// The next piece of the body; `None` at its end.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, SpillError>>> {
        if !self.memory_sent {
            self.memory_sent = true;
            if !self.body.memory.is_empty() {
                return Poll::Ready(Some(Ok(self.body.memory.clone())));
            }
        }
        let Some(file) = &self.body.spilled else {
            return Poll::Ready(None);
        };
        let left = self.remaining();
        if left == 0 {
            return Poll::Ready(None);
        }
        let reading = self.reading.get_or_insert_with(|| {
            let (file, offset) = (file.clone(), self.offset);
            let size = bounded(left).min(FILE_CHUNK);
            tokio::task::spawn_blocking(move || {
                let mut piece = vec![0; size];
                let read = file.read_at(&mut piece, offset)?;
                piece.truncate(read);
                Ok(piece)
            })
        });
        let read = match Pin::new(reading).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(joined) => joined.unwrap_or_else(|joined| Err(io::Error::other(joined))),
        };
        self.reading = None;
        let piece = match read {
            // The file holds fewer bytes than were written to it.
            Ok(piece) if piece.is_empty() => Err(io::ErrorKind::UnexpectedEof.into()),
            other => other,
        };
        Poll::Ready(Some(match piece {
            Ok(piece) => {
                self.offset += piece.len() as u64;
                Ok(Bytes::from(piece))
            }
            Err(err) => Err(SpillError::Read(err)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use http_body::Frame;

    /// A client's body, step by step: data, trailers, a stall (nothing ever again) or an
    /// error.
    enum Step {
        Data(&'static [u8]),
        Owned(Vec<u8>),
        Trailers,
        Stall,
        Fail,
    }

    struct Client {
        steps: VecDeque<Step>,
        announced: Option<u64>,
    }

    fn client(steps: Vec<Step>) -> Client {
        Client {
            steps: steps.into(),
            announced: None,
        }
    }

    impl Body for Client {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            let this = self.get_mut();
            match this.steps.pop_front() {
                None => Poll::Ready(None),
                Some(Step::Data(data)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(data))))),
                Some(Step::Owned(data)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(data))))),
                Some(Step::Trailers) => Poll::Ready(Some(Ok(Frame::trailers(HeaderMap::new())))),
                Some(Step::Stall) => {
                    this.steps.push_front(Step::Stall);
                    Poll::Pending
                }
                Some(Step::Fail) => Poll::Ready(Some(Err(io::ErrorKind::ConnectionReset.into()))),
            }
        }

        fn is_end_stream(&self) -> bool {
            self.steps.is_empty()
        }

        fn size_hint(&self) -> http_body::SizeHint {
            self.announced.map_or_else(
                http_body::SizeHint::default,
                http_body::SizeHint::with_exact,
            )
        }
    }

    fn settings(memory_bytes: u64, max_bytes: u64) -> RequestBuffering {
        RequestBuffering {
            memory_bytes,
            max_bytes,
            temp_dir: None,
        }
    }

    const IDLE: Duration = Duration::from_secs(30);

    async fn read(replay: &mut Replay) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(piece) = std::future::poll_fn(|cx| replay.poll_next(cx)).await {
            out.extend_from_slice(&piece.expect("read back"));
        }
        out
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn small_bodies_stay_in_memory_and_trailers_are_dropped() {
        let mut spills = 0;
        let body = client(vec![
            Step::Data(b"name="),
            Step::Trailers,
            Step::Data(b"alice"),
        ]);
        let buffered = collect(body, &settings(16, 100), None, IDLE, || spills += 1)
            .await
            .expect("buffered");
        assert_eq!((buffered.len(), buffered.spilled(), spills), (10, false, 0));
        let mut replay = Replay::new(Arc::new(buffered));
        assert_eq!(replay.size_hint().exact(), Some(10));
        assert_eq!(read(&mut replay).await, b"name=alice");
        assert!(replay.is_end());
    }

    #[tokio::test]
    async fn the_rest_spills_and_every_attempt_reads_it_all_from_the_start() {
        let whole = pattern(3 * FILE_CHUNK + 17);
        let steps = whole
            .chunks(1000)
            .map(|piece| Step::Owned(piece.to_vec()))
            .collect();
        let mut spills = 0;
        let buffered = collect(client(steps), &settings(4096, 1 << 20), None, IDLE, || {
            spills += 1
        })
        .await
        .expect("buffered");
        assert_eq!((buffered.spilled(), spills), (true, 1));
        assert_eq!(buffered.memory.len(), 4096);
        let first = Replay::new(Arc::new(buffered));
        // An attempt that stopped part-way leaves the next one unaffected.
        let mut cut = first.restart();
        let _ = std::future::poll_fn(|cx| cut.poll_next(cx)).await;
        let _ = std::future::poll_fn(|cx| cut.poll_next(cx)).await;
        for mut attempt in [first.restart(), cut.restart(), first] {
            assert_eq!(attempt.size_hint().exact(), Some(whole.len() as u64));
            assert!(read(&mut attempt).await == whole, "replayed bytes differ");
        }
    }

    #[tokio::test]
    async fn over_the_limit_is_refused_announced_or_not() {
        let smaller = |route, steps| async move {
            collect(client(steps), &settings(4, 10), route, IDLE, || {}).await
        };
        let too_large = |r: Result<Buffered, BufferError>| {
            matches!(r, Err(BufferError::Refused(Refusal::TooLarge)))
        };
        assert!(too_large(
            smaller(None, vec![Step::Data(b"0123456789x")]).await
        ));
        assert!(too_large(
            smaller(Some(5), vec![Step::Data(b"012"), Step::Data(b"345")]).await
        ));
        assert!(smaller(Some(50), vec![Step::Data(b"0123456789")])
            .await
            .is_ok());
        // Announced: refused before a byte is read, even from a client that never sends one.
        let mut announced = client(vec![Step::Stall]);
        announced.announced = Some(11);
        let refused = collect(announced, &settings(4, 10), None, IDLE, || {}).await;
        assert!(too_large(refused));
    }

    #[tokio::test]
    async fn a_pause_past_idle_is_refused() {
        // The client never sends again, so the outcome does not depend on how long it takes.
        let body = client(vec![Step::Data(b"abc"), Step::Stall]);
        let idle = Duration::from_millis(20);
        let refused = collect(body, &settings(4, 10), None, idle, || {}).await;
        assert!(matches!(refused, Err(BufferError::Refused(Refusal::Idle))));
    }

    #[tokio::test]
    async fn client_errors_and_unusable_directories_are_told_apart() {
        let broken = collect(
            client(vec![Step::Data(b"abc"), Step::Fail]),
            &settings(4, 10),
            None,
            IDLE,
            || {},
        )
        .await;
        assert!(matches!(broken, Err(BufferError::Client(_))));
        let mut nowhere = settings(4, 10);
        nowhere.temp_dir = Some(PathBuf::from("/nonexistent/stickless-spill"));
        let failed = collect(
            client(vec![Step::Data(b"0123456789")]),
            &nowhere,
            None,
            IDLE,
            || {},
        )
        .await;
        assert!(
            matches!(failed, Err(BufferError::Spill(SpillError::Create { .. }))),
            "{failed:?}"
        );
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_read_back_fails_the_body_and_says_why() {
        use super::super::body::{BodyFailure, RetryableBody};
        let named = tempfile::NamedTempFile::new().expect("temp file");
        let write_only = std::fs::OpenOptions::new()
            .write(true)
            .open(named.path())
            .expect("open");
        let buffered = Buffered {
            memory: Bytes::from_static(b"abc"),
            spilled: Some(Arc::new(write_only)),
            len: 10,
            has_body: true,
        };
        let body = RetryableBody::buffered(buffered);
        let mut attempt = body.attempt();
        let first = attempt
            .frame()
            .await
            .expect("a frame")
            .expect("memory part");
        assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"abc")));
        assert!(matches!(attempt.frame().await, Some(Err(_))));
        assert!(matches!(
            body.failure(),
            Some(BodyFailure::Spill(SpillError::Read(_)))
        ));
        assert!(body.failure().is_none(), "handed out once");
    }

    #[tokio::test]
    async fn framing_announces_the_exact_length_only_for_a_body() {
        let mut headers = HeaderMap::new();
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(EXPECT, HeaderValue::from_static("100-continue"));
        headers.insert(TRAILER, HeaderValue::from_static("x-checksum"));
        let sent = collect(
            client(vec![Step::Data(b"abc"), Step::Data(b"de")]),
            &settings(4, 10),
            None,
            IDLE,
            || {},
        )
        .await
        .expect("buffered");
        sent.set_framing(&mut headers);
        let left: Vec<_> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.clone()))
            .collect();
        assert_eq!(left, [("content-length", HeaderValue::from(5u64))]);

        let mut headers = HeaderMap::new();
        let none = collect(client(vec![]), &settings(4, 10), None, IDLE, || {})
            .await
            .expect("buffered");
        none.set_framing(&mut headers);
        assert!(headers.is_empty() && none.is_empty());
    }
}
