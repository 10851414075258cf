//! The HTTP/1.1 accept loop both listeners share (the control API and
//! `stowrsd`), hardened against slow, idle and too many clients.
//!
//! - **Connection limit.** A connection takes a slot before it is accepted;
//!   at [`ListenerLimits::max_connections`] the loop stops calling
//!   `accept`, so further clients wait in the kernel's backlog without
//!   costing a descriptor, and are served as soon as a connection closes.
//! - **Header timeout.** The head of a request (request line and headers)
//!   must arrive within [`ListenerLimits::header_timeout`]: on a new
//!   connection counted from the accept, on a kept-alive one from the
//!   first byte of the next request. A client that started a head and did
//!   not finish it gets `408 Request Timeout` naming the limit, then the
//!   connection closes.
//! - **Idle timeout.** A kept-alive connection without a request for
//!   [`ListenerLimits::idle_timeout`] is closed quietly. The same limit
//!   bounds every other wait on the peer: a request body that brings no
//!   data for that long ends with an error the handler sees (and the
//!   connection closes), and a client that does not read its response for
//!   that long is disconnected. Time a handler spends working, and a body
//!   that keeps flowing however slowly or however large, is not limited.
//! - **Addresses.** Each request carries the peer's address
//!   (`ConnectInfo<SocketAddr>`) and the local one ([`LocalAddr`]) in its
//!   extensions.
//! - **Graceful shutdown.** When `shutdown` resolves, no more connections
//!   are accepted, idle ones close, requests in flight finish, and
//!   [`serve`] returns once every connection has ended.
//!
//! The descriptor budget of the process ([`fit_descriptor_limit`]) raises
//! the soft `RLIMIT_NOFILE` to the hard one at start and keeps the
//! connection limits of all listeners below it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client may take to send a request's head: what nginx
/// (`client_header_timeout`, 60 s) and common reverse proxies allow, halved,
/// since our clients are programs on a hospital network, not phones.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may wait for its peer (no request on a kept-alive
/// connection, no data in a request body, a response not read): three
/// minutes, longer than any pause of our own exporter between two parts of
/// a request (it may decompress an object while the request is open).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(180);
/// Connections served at once by one listener. Each costs a descriptor and
/// about 30 KB (bench/hostile.sh), so this bounds what a flood of clients
/// can take: 1024 keeps it near 30 MB, within twice the memory at rest,
/// while the busiest legitimate use (dozens of senders, each with a few
/// concurrent requests) needs far fewer. nginx allows 512 per worker by
/// default. Far below the descriptor limit after [`fit_descriptor_limit`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Descriptors kept free for everything that is not a served connection:
/// exports' outgoing connections, archive files, SQLite, the broker,
/// decoders, logs.
pub const DESCRIPTOR_RESERVE: u64 = 512;
/// After a failed `accept` (out of descriptors, say), the loop waits this
/// long before it tries again, rather than spinning on the error.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// The address a request's connection was accepted on, in the request's
/// extensions, next to axum's [`ConnectInfo`] with the peer's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Time for a request's head to arrive (`--header-timeout`).
    pub header_timeout: Duration,
    /// Time a connection may wait for its peer (`--idle-timeout`).
    pub idle_timeout: Duration,
    /// Connections served at once (`--max-connections`); at least 1.
    pub max_connections: usize,
}

impl Default for ListenerLimits {
    fn default() -> ListenerLimits {
        ListenerLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as servers commonly
/// do, and lowers `limits.max_connections` when `listeners` listeners with
/// that many connections each, plus [`DESCRIPTOR_RESERVE`], would not fit
/// (saying so in the log). Returns the limits to use.
pub fn fit_descriptor_limit(limits: ListenerLimits, listeners: usize) -> ListenerLimits {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(hard) = lim.maximum
        && lim.current.is_some_and(|soft| soft < hard)
    {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => lim.current = Some(hard),
            Err(e) => {
                tracing::warn!(error = %e, soft = ?lim.current, hard, "cannot raise the open-file limit to its hard limit")
            }
        }
    }
    let Some(soft) = lim.current else {
        return limits;
    };
    let per_listener =
        usize::try_from(soft.saturating_sub(DESCRIPTOR_RESERVE) / listeners.max(1) as u64)
            .unwrap_or(usize::MAX)
            .max(1);
    if limits.max_connections > per_listener {
        tracing::warn!(
            requested = limits.max_connections,
            allowed = per_listener,
            open_file_limit = soft,
            listeners,
            "--max-connections lowered to fit the open-file limit (ulimit -n) with {DESCRIPTOR_RESERVE} descriptors kept for exports"
        );
        return ListenerLimits {
            max_connections: per_listener,
            ..limits
        };
    }
    limits
}

/// Serves `app` on `listener` with `limits` until `shutdown` resolves, then
/// closes gracefully. Errors of single connections and of `accept` are
/// logged and never end the loop.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ListenerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let limits = ListenerLimits {
        max_connections: limits.max_connections.max(1),
        ..*limits
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut shutdown = pin!(shutdown);
    loop {
        // A slot first: at the limit nothing more is accepted, so waiting
        // clients stay in the kernel's backlog and cost no descriptor.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?ACCEPT_ERROR_BACKOFF, "cannot accept a connection");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        // Small replies (STOW-RS results, JSON) go out at once.
        let _ = tcp.set_nodelay(true);
        connections.spawn(serve_connection(
            tcp,
            peer,
            app.clone(),
            limits,
            stop.clone(),
            slot,
        ));
    }
    // New clients are refused from here on; the ones served finish.
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Errors of one connection attempt that say nothing about the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Why a connection's watchdog ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    /// A request's head did not arrive in time.
    Header,
    /// No request on a kept-alive connection.
    Idle,
}

/// Where a connection stands, shared by its watchdog, its I/O and its
/// requests.
#[derive(Debug)]
struct ConnState {
    /// Requests whose response has not been sent completely.
    in_flight: usize,
    /// Responses sent so far.
    served: u64,
    /// When the connection was accepted.
    accepted: Instant,
    /// When the last response ended.
    idle_since: Instant,
    /// The first byte read while no request was in flight: a head began.
    head_started: Option<Instant>,
}

impl ConnState {
    /// When the connection expires, and why; `None` while a request is in
    /// flight (its body and response have waits of their own).
    fn deadline(&self, limits: &ListenerLimits) -> Option<(Instant, Expiry)> {
        if self.in_flight > 0 {
            return None;
        }
        if self.served == 0 {
            return Some((self.accepted + limits.header_timeout, Expiry::Header));
        }
        Some(match self.head_started {
            Some(t) => (t + limits.header_timeout, Expiry::Header),
            None => (self.idle_since + limits.idle_timeout, Expiry::Idle),
        })
    }
}

/// The state plus a wake-up for the watchdog when it changes.
#[derive(Debug)]
struct Shared {
    state: Mutex<ConnState>,
    changed: Notify,
    /// Written to the client just before the connection closes.
    farewell: Mutex<Option<Bytes>>,
}

impl Shared {
    fn new() -> Shared {
        let now = Instant::now();
        Shared {
            state: Mutex::new(ConnState {
                in_flight: 0,
                served: 0,
                accepted: now,
                idle_since: now,
                head_started: None,
            }),
            changed: Notify::new(),
            farewell: Mutex::new(None),
        }
    }

    fn state(&self) -> MutexGuard<'_, ConnState> {
        // The state stays consistent whatever panicked while holding it:
        // every update is a single assignment.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bytes_read(&self) {
        let mut s = self.state();
        if s.in_flight == 0 && s.head_started.is_none() {
            s.head_started = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        {
            let mut s = self.state();
            s.in_flight += 1;
            s.head_started = None;
        }
        self.changed.notify_one();
        InFlight(self.clone())
    }
}

/// A request in flight; dropped when its response has been sent (or the
/// request was abandoned).
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        {
            let mut s = self.0.state();
            s.in_flight = s.in_flight.saturating_sub(1);
            s.served += 1;
            s.idle_since = Instant::now();
            s.head_started = None;
        }
        self.0.changed.notify_one();
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ListenerLimits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let shared = Arc::new(Shared::new());
    let local = tcp.local_addr().ok();
    let io = TokioIo::new(WatchedIo::new(tcp, shared.clone(), limits.idle_timeout));
    let service_shared = shared.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let in_flight = service_shared.request_started();
        let mut req = req.map(|b| Body::new(StallGuard::new(b, limits.idle_timeout)));
        // Handlers that record who sent what (STOW-RS into the archive,
        // for the export rules' host conditions) read these.
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(local) = local {
            req.extensions_mut().insert(LocalAddr(local));
        }
        let mut app = app.clone();
        async move {
            let resp = tower_service::Service::call(&mut app, req).await;
            resp.map(|r| {
                r.map(|b| {
                    Body::new(Tracked {
                        inner: b,
                        _in_flight: in_flight,
                    })
                })
            })
        }
    });
    let mut builder = http1::Builder::new();
    // The head and idle limits are this module's watchdog's: hyper's own
    // header timer would also run between requests and cut idle
    // connections at the header timeout.
    builder.header_read_timeout(None).keep_alive(true);
    let mut conn = pin!(builder.serve_connection(io, service));
    let mut stopping = false;
    loop {
        let deadline = shared.state().deadline(&limits);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = sleep_until(deadline.map(|d| d.0)), if deadline.is_some() => {
                // The state may have changed since the deadline was taken.
                let now_due = shared.state().deadline(&limits);
                match now_due {
                    Some((at, why)) if at <= Instant::now() => {
                        expire(&shared, peer, why, &limits);
                        return; // dropping the connection closes it
                    }
                    _ => {}
                }
            }
            () = shared.changed.notified() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// Logs why the connection ends and, for a head begun but not finished,
/// leaves a 408 naming the limit to be written as it closes.
fn expire(shared: &Shared, peer: SocketAddr, why: Expiry, limits: &ListenerLimits) {
    let begun = shared.state().head_started.is_some();
    match why {
        Expiry::Idle => {
            tracing::debug!(%peer, timeout = ?limits.idle_timeout, "idle connection closed");
        }
        Expiry::Header => {
            tracing::info!(%peer, timeout = ?limits.header_timeout, begun, "request head not received in time; connection closed");
            if begun {
                let text = format!(
                    "request headers not received within {} s (--header-timeout)\n",
                    limits.header_timeout.as_secs_f64()
                );
                let reply = format!(
                    "HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                *shared.farewell.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Bytes::from(reply));
            }
        }
    }
}

/// The connection's socket: notes when a request head begins, writes the
/// farewell on close, and fails a write the peer has not taken for the
/// idle timeout (a client that does not read its response).
struct WatchedIo {
    inner: TcpStream,
    shared: Arc<Shared>,
    /// Runs while a write waits for the peer to read.
    write_stall: StallTimer,
}

impl Drop for WatchedIo {
    fn drop(&mut self) {
        let farewell = self
            .shared
            .farewell
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(f) = farewell {
            // Without waiting: the socket closes now. A reply too large for
            // the socket's buffer is cut, which only a 408 could be and is not.
            let _ = self.inner.try_write(&f);
        }
    }
}

impl WatchedIo {
    fn new(inner: TcpStream, shared: Arc<Shared>, idle_timeout: Duration) -> WatchedIo {
        WatchedIo {
            inner,
            shared,
            write_stall: StallTimer::new(idle_timeout),
        }
    }

    /// Maps a write's poll: progress disarms the stall timer, waiting arms
    /// it, and a wait past the idle timeout is an error.
    fn watch_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.write_stall.progress();
            return r;
        }
        if self.write_stall.expired(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client did not read the response for {} s (--idle-timeout)",
                    self.write_stall.limit.as_secs_f64()
                ),
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.shared.bytes_read();
        }
        r
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch_write(cx, r)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Measures one wait on the peer: armed when an operation has to wait,
/// disarmed by progress; its `Sleep` is allocated once and reset.
struct StallTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl StallTimer {
    fn new(limit: Duration) -> StallTimer {
        StallTimer {
            limit,
            sleep: None,
            armed: false,
        }
    }

    /// The operation made progress: the next wait starts a new count.
    fn progress(&mut self) {
        self.armed = false;
    }

    /// The operation waits: whether it has waited longer than the limit
    /// (else `cx` is woken when it has).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        if sleep.as_mut().poll(cx).is_ready() {
            self.armed = false;
            return true;
        }
        false
    }
}

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent nothing for the idle timeout in the middle of the body.
    #[error("the request body stalled: no data for {} s (--idle-timeout)", .0.as_secs_f64())]
    Stalled(Duration),
    /// The connection failed or the client sent a malformed body.
    #[error(transparent)]
    Read(BoxError),
}

/// A request body that fails when no data arrives for the idle timeout
/// while the handler waits for it; a body that keeps flowing, however
/// slowly or large, is never cut.
struct StallGuard<B> {
    inner: B,
    /// Runs while the handler waits for data.
    waiting: StallTimer,
    failed: bool,
}

impl<B> StallGuard<B> {
    fn new(inner: B, idle_timeout: Duration) -> StallGuard<B> {
        StallGuard {
            inner,
            waiting: StallTimer::new(idle_timeout),
            failed: false,
        }
    }
}

impl<B> http_body::Body for StallGuard<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                self.waiting.progress();
                Poll::Ready(r.map(|f| f.map_err(|e| BodyError::Read(e.into()))))
            }
            Poll::Pending => {
                if self.waiting.expired(cx) {
                    self.failed = true;
                    return Poll::Ready(Some(Err(BodyError::Stalled(self.waiting.limit))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted in flight until it has
/// been sent (hyper drops it then).
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    /// A body of `chunks` chunks, each after `gap` (virtual time).
    fn paced(chunks: usize, gap: Duration) -> Body {
        Body::from_stream(stream::unfold(0, move |i| async move {
            if i == chunks {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((Ok::<_, io::Error>(Bytes::from_static(b"0123456789")), i + 1))
        }))
    }

    async fn read(body: Body, idle: Duration) -> Result<usize, axum::Error> {
        let guarded = Body::new(StallGuard::new(body, idle));
        axum::body::to_bytes(guarded, usize::MAX)
            .await
            .map(|b| b.len())
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_flowing_body_is_never_cut() {
        // 100 chunks, each just inside the idle timeout: 9 minutes in all,
        // three times the limit, yet no single wait exceeds it.
        let idle = Duration::from_secs(6);
        let got = read(paced(100, Duration::from_millis(5_400)), idle).await;
        assert_eq!(got.expect("the whole body"), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_without_data_for_the_idle_timeout_fails_naming_it() {
        let idle = Duration::from_secs(6);
        let started = Instant::now();
        let err = read(paced(3, Duration::from_secs(60)), idle)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stalled") && err.contains("6 s") && err.contains("--idle-timeout"),
            "{err}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= idle && waited < idle + Duration::from_secs(1),
            "cut at the idle timeout, not after {waited:?}"
        );
    }

    #[test]
    fn connection_limits_fit_the_open_file_limit() {
        let asked = ListenerLimits {
            max_connections: usize::MAX / 4,
            ..ListenerLimits::default()
        };
        let fitted = fit_descriptor_limit(asked, 2);
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        if let Some(soft) = soft {
            let budget = soft.saturating_sub(DESCRIPTOR_RESERVE) / 2;
            assert_eq!(fitted.max_connections as u64, budget.max(1));
        }
        assert_eq!(fitted.header_timeout, asked.header_timeout);
        // A limit that fits is kept.
        let small = ListenerLimits {
            max_connections: 10,
            ..asked
        };
        assert_eq!(fit_descriptor_limit(small, 2), small);
    }

    #[test]
    fn a_connection_expires_by_its_phase() {
        let l = ListenerLimits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(180),
            max_connections: 10,
        };
        let t0 = Instant::now();
        let mut s = ConnState {
            in_flight: 0,
            served: 0,
            accepted: t0,
            idle_since: t0,
            head_started: None,
        };
        // A new connection: its first head within the header timeout.
        assert_eq!(
            s.deadline(&l),
            Some((t0 + l.header_timeout, Expiry::Header))
        );
        s.head_started = Some(t0 + Duration::from_secs(5));
        assert_eq!(
            s.deadline(&l),
            Some((t0 + l.header_timeout, Expiry::Header))
        );
        // A request in flight: no deadline of the connection's own.
        s.in_flight = 1;
        assert_eq!(s.deadline(&l), None);
        // Kept alive after a response: idle, until a head begins.
        let t1 = t0 + Duration::from_secs(60);
        s = ConnState {
            in_flight: 0,
            served: 1,
            idle_since: t1,
            head_started: None,
            ..s
        };
        assert_eq!(s.deadline(&l), Some((t1 + l.idle_timeout, Expiry::Idle)));
        let t2 = t1 + Duration::from_secs(100);
        s.head_started = Some(t2);
        assert_eq!(
            s.deadline(&l),
            Some((t2 + l.header_timeout, Expiry::Header))
        );
    }
}
