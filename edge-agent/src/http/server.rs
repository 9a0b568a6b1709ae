//! The accept loop: hyper's HTTP/1 connections with a timer, so that a
//! socket cannot be held open for nothing.
//!
//! `axum::serve` builds its connections without a timer, which turns
//! hyper's header timeout off: anyone who reaches the port could open
//! sockets, send nothing, and keep them until the process runs out of file
//! descriptors (and then the cameras and the broker cannot reconnect). Here
//! every connection has
//! - a header timeout (`http.header_timeout_s`): the whole request head
//!   within this long of the connection opening or of the previous
//!   response, so it also ends idle keep-alive connections;
//! - an idle timeout (`http.idle_timeout_s`): nothing read or written for
//!   this long, at any point of a request, and the connection is dropped (a
//!   stalled upload, a client that stops reading its answer);
//! - a place among at most `http.max_connections`: one more is answered
//!   `503` at once and closed, never queued, so the count of descriptors the
//!   listener holds is bounded.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// The listener's limits, from the `[http]` section.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Limits {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
}

impl Limits {
    /// From `http.header_timeout_s`, `http.idle_timeout_s` and
    /// `http.max_connections` (validated with the config).
    pub(crate) fn from_config(h: &crate::config::Http) -> Limits {
        let secs = |s: f64| Duration::try_from_secs_f64(s).unwrap_or(Duration::from_secs(10));
        Limits {
            header_timeout: secs(h.header_timeout_s),
            idle_timeout: secs(h.idle_timeout_s),
            max_connections: h.max_connections.max(1),
        }
    }
}

/// Accepts until `shutdown`, then gives open connections a few seconds to
/// finish their responses.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: wait for one to come back
                // instead of spinning on the error.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.http.connections_refused.inc();
            refuse(&stream, limits.max_connections);
            continue;
        };
        tokio::spawn(connection(stream, app.clone(), limits, metrics.clone(), shutdown.clone(), permit));
    }
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(5), permits.acquire_many(all)).await;
}

/// The answer past the connection limit: written without waiting (a fresh
/// socket's send buffer takes it whole) and the socket closed.
fn refuse(stream: &TcpStream, max: usize) {
    let body = format!("too many connections: http.max_connections ({max}) are open; try again shortly\n");
    let mut answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in super::SECURITY_HEADERS {
        answer.push_str(&format!("{name}: {value}\r\n"));
    }
    answer.push_str("\r\n");
    answer.push_str(&body);
    let _ = stream.try_write(answer.as_bytes());
}

/// One connection, from accept to close; holds its place (`_permit`) and
/// the open-connections gauge while it lives.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    _permit: OwnedSemaphorePermit,
) {
    let _open = Open::new(&metrics);
    let _ = stream.set_nodelay(true);
    let activity = Activity::new();
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_at = activity.last() + limits.idle_timeout;
        tokio::select! {
            done = conn.as_mut() => {
                match done {
                    Err(e) if e.is_timeout() => metrics.http.timeouts.with_label_values(&["header"]).inc(),
                    Err(e) => tracing::debug!(error = %e, "HTTP connection ended with an error"),
                    Ok(()) => {}
                }
                return;
            }
            _ = shutdown.wait(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(idle_at.into()) => {
                if activity.last().elapsed() >= limits.idle_timeout {
                    metrics.http.timeouts.with_label_values(&["idle"]).inc();
                    return;
                }
            }
        }
    }
}

/// Counts an open connection for as long as it lives.
struct Open(prometheus::IntGauge);

impl Open {
    fn new(metrics: &Metrics) -> Open {
        metrics.http.connections.inc();
        Open(metrics.http.connections.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// When a connection last moved a byte either way.
#[derive(Clone)]
struct Activity {
    since: Instant,
    nanos: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity { since: Instant::now(), nanos: Arc::new(AtomicU64::new(0)) }
    }

    fn touch(&self) {
        self.nanos.store(self.since.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.since + Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// The socket, stamping [`Activity`] on every byte read or written.
struct Watched {
    inner: TcpStream,
    activity: Activity,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
