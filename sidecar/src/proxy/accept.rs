//! The accept loop every listener shares: count the connection, take a slot of its direction's
//! connection cap (and, inbound, of the handshake budget), hand the socket to a task that the
//! drain waits for, and stop when shutdown begins.
//!
//! Inbound and outbound connections have separate caps, so peers flooding the inbound port cannot
//! take the app's own outbound connections away; inbound connections still in their handshake
//! (not yet authenticated) also hold one of `max_handshakes` slots, given back when the handshake
//! ends, so unauthenticated sockets cannot fill the inbound cap either.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::metrics::ListenerMetrics;
use crate::proxy::relay::RelayLimits;
use crate::refusal::log::RefusalLog;
use crate::refusal::Refusal;

/// What every connection task needs, shared by all listeners.
pub(crate) struct Shared {
    pub limits: Limits,
    pub inbound_slots: Arc<Semaphore>,
    pub outbound_slots: Arc<Semaphore>,
    pub handshake_slots: Arc<Semaphore>,
    pub refusal_log: RefusalLog,
    pub tracker: TaskTracker,
    pub stop_accepting: CancellationToken,
}

/// The slots a listener's connections take.
pub(crate) struct Slots {
    pub connections: Arc<Semaphore>,
    /// Held from accept to the end of the handshake (inbound only).
    pub handshakes: Option<Arc<Semaphore>>,
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

/// Accepts until shutdown begins. Each connection runs `handle` in a task the drain waits for,
/// holding a slot of `slots` and counted as active; `handle` gets the handshake slot, if any, to
/// give back when its handshake ends. A refusal it returns is logged and counted here.
pub(crate) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: String,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
    slots: Slots,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Option<OwnedSemaphorePermit>) -> Fut,
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
        let Ok(permit) = slots.connections.clone().try_acquire_owned() else {
            shared
                .refusal_log
                .refuse(&metrics, &name, peer, &Refusal::ConnectionLimit);
            continue;
        };
        let handshake = match &slots.handshakes {
            None => None,
            Some(handshakes) => match handshakes.clone().try_acquire_owned() {
                Ok(slot) => Some(slot),
                Err(_) => {
                    shared
                        .refusal_log
                        .refuse(&metrics, &name, peer, &Refusal::HandshakeLimit);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = handle(stream, peer, handshake);
        let (metrics, name, task_shared) = (metrics.clone(), name.clone(), shared.clone());
        shared.tracker.spawn(async move {
            let _active = ActiveGuard::new(&metrics);
            if let Err(refusal) = connection.await {
                task_shared
                    .refusal_log
                    .refuse(&metrics, &name, peer, &refusal);
            }
            drop(permit);
        });
    }
    tracing::debug!(listener = name, "stopped accepting");
}
