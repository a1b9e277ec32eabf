//! The accept loop every listener shares: count the connection, apply the connection cap, hand
//! the socket to a task that the drain waits for, and stop when shutdown begins.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::identity::TlsStore;
use crate::metrics::ListenerMetrics;
use crate::refusal::Refusal;
use crate::relay::RelayLimits;

/// What every connection task needs, shared by all listeners.
pub(crate) struct Shared {
    pub store: TlsStore,
    pub limits: Limits,
    pub permits: Arc<Semaphore>,
    pub tracker: TaskTracker,
    pub stop_accepting: CancellationToken,
}

impl Shared {
    pub fn relay_limits(&self) -> RelayLimits {
        RelayLimits {
            idle_timeout: self.limits.idle_timeout,
            half_close_timeout: self.limits.half_close_timeout,
            buffer_size: self.limits.buffer_size,
        }
    }
}

/// Decrements the active gauge however the connection task ends.
pub(crate) struct ActiveGuard(prometheus_client::metrics::gauge::Gauge);

impl ActiveGuard {
    pub fn new(metrics: &ListenerMetrics) -> Self {
        metrics.active.inc();
        ActiveGuard(metrics.active.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Logs and counts a refusal. Identity refusals are warnings (someone is knocking who should not
/// be); load and network trouble is for debugging, since an attack would otherwise flood the log.
pub(crate) fn refuse(
    metrics: &ListenerMetrics,
    listener: &str,
    peer: SocketAddr,
    refusal: &Refusal,
) {
    metrics.refused(refusal.reason());
    let spiffe_id = refusal.peer_id().map(|id| id.to_string());
    if refusal.is_about_identity() {
        tracing::warn!(listener, %peer, spiffe_id, reason = refusal.reason(), "refused: {refusal}");
    } else {
        tracing::debug!(listener, %peer, reason = refusal.reason(), "refused: {refusal}");
    }
}

/// Accepts until shutdown begins. Each connection runs `handle` in a task the drain waits for,
/// holding a slot of the connection cap and counted as active; a refusal it returns is logged and
/// counted here.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: String,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), Refusal>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shared.stop_accepting.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors or a similar transient condition: back off briefly
                // instead of spinning, and keep serving the connections already open.
                tracing::warn!(listener = name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        metrics.opened.inc();
        let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
            refuse(&metrics, &name, peer, &Refusal::ConnectionLimit);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = handle(stream, peer);
        let (metrics, name) = (metrics.clone(), name.clone());
        shared.tracker.spawn(async move {
            let _active = ActiveGuard::new(&metrics);
            if let Err(refusal) = connection.await {
                refuse(&metrics, &name, peer, &refusal);
            }
            drop(permit);
        });
    }
    tracing::debug!(listener = name, "stopped accepting");
}
