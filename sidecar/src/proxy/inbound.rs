//! Inbound: a peer's sidecar connects with mTLS; its SPIFFE ID is checked against this listener's
//! admission during the handshake; admitted, it is relayed in plaintext to the app on loopback.
//!
//! Until the handshake is over the peer is a stranger: it holds one of `max_handshakes` slots,
//! must send its first byte within `first_byte_timeout` and finish within `handshake_timeout`,
//! may send at most [`HANDSHAKE_BUDGET`] bytes, and gets no read-ahead or relay buffer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::InboundConfig;
use crate::identity::{InboundListenerTls, InboundTls};
use crate::metrics::ListenerMetrics;
use crate::proxy::accept::{accept_loop, Shared, Slots};
use crate::proxy::read_ahead::ReadAhead;
use crate::proxy::relay::{end_connections, Relay};
use crate::refusal::Refusal;

/// First byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Most bytes read from a peer before its handshake is done. A TLS 1.3 client sends a ClientHello
/// (under 2 KiB, a little more with a post-quantum key share), its certificate chain (an SVID and
/// an intermediate are about 1.5 KiB) and two short messages; this leaves room for chains of
/// several certificates while keeping what rustls buffers for a stranger small. (Application data
/// right behind the Finished message may fill the rest; the handshake completes all the same.)
pub const HANDSHAKE_BUDGET: usize = 16 * 1024;

pub(crate) async fn serve(
    listener: TcpListener,
    listener_tls: Arc<InboundListenerTls>,
    config: InboundConfig,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
) {
    let config = Arc::new(config);
    let name = config.name.clone();
    let slots = Slots {
        connections: shared.inbound_slots.clone(),
        handshakes: Some(shared.handshake_slots.clone()),
    };
    accept_loop(
        listener,
        name,
        shared.clone(),
        metrics.clone(),
        slots,
        move |tcp, peer, handshake_slot| {
            let (config, shared, metrics) = (config.clone(), shared.clone(), metrics.clone());
            let listener_tls = listener_tls.clone();
            async move {
                let tls_config = listener_tls.current().ok_or(Refusal::NoCertificate)?;
                handle(
                    tcp,
                    peer,
                    tls_config,
                    config.forward_to,
                    &config.name,
                    &shared,
                    &metrics,
                    handshake_slot,
                )
                .await
            }
        },
    )
    .await;
}

/// One inbound connection, its TLS configuration and app address decided: by the listener
/// (explicit), or by the connection's original destination (transparent).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    tls_config: Arc<InboundTls>,
    target: SocketAddr,
    name: &str,
    shared: &Shared,
    metrics: &ListenerMetrics,
    handshake_slot: Option<OwnedSemaphorePermit>,
) -> Result<(), Refusal> {
    let started = Instant::now();
    let transport = ReadAhead::handshaking(tcp, HANDSHAKE_BUDGET);
    let exhausted = transport.budget_exhausted();
    let mut tls = timeout(
        shared.limits.handshake_timeout,
        handshake(transport, &tls_config, shared),
    )
    .await
    .map_err(|_| {
        if exhausted.load(Ordering::Relaxed) {
            Refusal::HandshakeTooLarge(HANDSHAKE_BUDGET)
        } else {
            Refusal::HandshakeTimeout
        }
    })??;
    // The peer is authenticated: its slot goes back, and reads may use large buffers.
    drop(handshake_slot);
    tls.get_mut().0.handshake_done();
    metrics
        .handshake_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.key_exchange(tls.get_ref().1);
    let peer_id = palisade_identity::peer_spiffe_id(tls.get_ref().1.peer_certificates());
    let mut app = timeout(shared.limits.connect_timeout, TcpStream::connect(target))
        .await
        .map_err(|_| Refusal::ConnectTimeout(target.to_string()))?
        .map_err(|e| Refusal::ConnectFailed(target.to_string(), e))?;
    let _ = app.set_nodelay(true);
    tracing::debug!(listener = name, %peer, spiffe_id = peer_id.as_ref().map(|i| i.as_str()), "admitted");
    let end = Relay::new(
        &mut tls,
        &mut app,
        shared.relay_limits(),
        metrics.peer_to_app.clone(),
        metrics.app_to_peer.clone(),
    )
    .await;
    end_connections(&end, &mut tls, &app).await;
    metrics.closed(end.reason());
    tracing::debug!(listener = name, %peer, end = end.reason(), error = end.error().map(tracing::field::display), "closed");
    Ok(())
}

/// Whether the client's first byte is a TLS handshake record, waiting at most the first-byte
/// timeout for it; nothing is read.
pub(crate) async fn starts_with_tls(tcp: &TcpStream, shared: &Shared) -> Result<bool, Refusal> {
    let mut first = [0u8; 1];
    match timeout(shared.limits.first_byte_timeout, tcp.peek(&mut first)).await {
        Err(_) => Err(Refusal::FirstByteTimeout),
        Ok(Ok(0)) => Err(Refusal::ClosedEarly),
        Ok(Ok(_)) => Ok(first[0] == TLS_HANDSHAKE_RECORD),
        Ok(Err(e)) => Err(Refusal::Handshake(e)),
    }
}

async fn handshake(
    transport: ReadAhead<TcpStream>,
    tls_config: &InboundTls,
    shared: &Shared,
) -> Result<TlsStream<ReadAhead<TcpStream>>, Refusal> {
    if !starts_with_tls(transport.get_ref(), shared).await? {
        return Err(Refusal::NotTls);
    }
    let acceptor = TlsAcceptor::from(tls_config.config.clone());
    let tls = acceptor
        .accept(transport)
        .await
        .map_err(Refusal::Handshake)?;
    tls_config
        .recheck_resumed(tls.get_ref().1)
        .map_err(Refusal::after_handshake)?;
    Ok(tls)
}
