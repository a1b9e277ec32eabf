//! Inbound: a peer's sidecar connects with mTLS; its SPIFFE ID is checked against this listener's
//! allow-list during the handshake; admitted, it is relayed in plaintext to the app on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::accept::{accept_loop, Shared};
use crate::config::InboundConfig;
use crate::metrics::ListenerMetrics;
use crate::read_ahead::ReadAhead;
use crate::refusal::Refusal;
use crate::relay::Relay;

/// First byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

pub(crate) async fn serve(
    listener: TcpListener,
    index: usize,
    config: InboundConfig,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
) {
    let config = Arc::new(config);
    let name = config.name.clone();
    accept_loop(
        listener,
        name,
        shared.clone(),
        metrics.clone(),
        move |tcp, peer| {
            let (config, shared, metrics) = (config.clone(), shared.clone(), metrics.clone());
            async move { handle(tcp, peer, index, &config, &shared, &metrics).await }
        },
    )
    .await;
}

async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    index: usize,
    config: &InboundConfig,
    shared: &Shared,
    metrics: &ListenerMetrics,
) -> Result<(), Refusal> {
    let started = Instant::now();
    let configs = shared.store.load_full().ok_or(Refusal::NoCertificate)?;
    let acceptor = TlsAcceptor::from(configs.inbound[index].clone());
    let mut tls = timeout(shared.limits.handshake_timeout, handshake(tcp, acceptor))
        .await
        .map_err(|_| Refusal::HandshakeTimeout)??;
    metrics
        .handshake_seconds
        .observe(started.elapsed().as_secs_f64());
    let peer_id = palisade_ca::peer_spiffe_id(tls.get_ref().1.peer_certificates());
    let target = config.forward_to;
    let mut app = timeout(shared.limits.connect_timeout, TcpStream::connect(target))
        .await
        .map_err(|_| Refusal::ConnectTimeout(target.to_string()))?
        .map_err(|e| Refusal::ConnectFailed(target.to_string(), e))?;
    let _ = app.set_nodelay(true);
    tracing::debug!(listener = config.name, %peer, spiffe_id = ?peer_id.as_ref().map(|i| i.as_str()), "admitted");
    let end = Relay::new(
        &mut tls,
        &mut app,
        shared.relay_limits(),
        metrics.peer_to_app.clone(),
        metrics.app_to_peer.clone(),
    )
    .await;
    metrics.closed(end.reason());
    tracing::debug!(listener = config.name, %peer, end = end.reason(), "closed");
    Ok(())
}

async fn handshake(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
) -> Result<TlsStream<ReadAhead<TcpStream>>, Refusal> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(0) => return Err(Refusal::ClosedEarly),
        Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => return Err(Refusal::NotTls),
        Ok(_) => {}
        Err(e) => return Err(Refusal::Handshake(e)),
    }
    acceptor
        .accept(ReadAhead::new(tcp))
        .await
        .map_err(Refusal::Handshake)
}
