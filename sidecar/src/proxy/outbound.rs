//! Outbound: the app connects in plaintext on loopback; the sidecar connects to the peer's
//! sidecar at once (so server-speaks-first protocols work), originates mTLS with this workload's
//! certificate, checks that the peer's SPIFFE ID is one this listener expects, then relays.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::config::OutboundConfig;
use crate::identity::{OutboundListenerTls, OutboundTls};
use crate::metrics::ListenerMetrics;
use crate::proxy::accept::{accept_loop, Shared, Slots};
use crate::proxy::inbound::HANDSHAKE_BUDGET;
use crate::proxy::read_ahead::ReadAhead;
use crate::proxy::relay::{end_connections, Relay};
use crate::refusal::Refusal;

pub(crate) async fn serve(
    listener: TcpListener,
    listener_tls: Arc<OutboundListenerTls>,
    config: OutboundConfig,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
) {
    let server_name = server_name_of(&config.connect_to);
    let config = Arc::new(config);
    let name = config.name.clone();
    let slots = Slots {
        connections: shared.outbound_slots.clone(),
        handshakes: None,
    };
    accept_loop(
        listener,
        name,
        shared.clone(),
        metrics.clone(),
        slots,
        move |app, _peer, _no_handshake_slot| {
            let (config, shared, metrics) = (config.clone(), shared.clone(), metrics.clone());
            let (server_name, listener_tls) = (server_name.clone(), listener_tls.clone());
            async move {
                let tls_config = listener_tls.current().ok_or(Refusal::NoCertificate)?;
                handle(
                    app,
                    tls_config,
                    server_name,
                    &config.connect_to,
                    &config.name,
                    &shared,
                    &metrics,
                )
                .await
            }
        },
    )
    .await;
}

/// One outbound connection, its TLS configuration and destination decided: by the listener
/// (explicit), or by the connection's original destination and the policy (transparent).
pub(crate) async fn handle(
    mut app: TcpStream,
    tls_config: Arc<OutboundTls>,
    server_name: ServerName<'static>,
    target: &str,
    name: &str,
    shared: &Shared,
    metrics: &ListenerMetrics,
) -> Result<(), Refusal> {
    let connector = TlsConnector::from(tls_config.config.clone());
    let target = &target.to_owned();
    let started = Instant::now();
    let tcp = timeout(shared.limits.connect_timeout, connect(target))
        .await
        .map_err(|_| Refusal::ConnectTimeout(target.clone()))?
        .map_err(|e| Refusal::ConnectFailed(target.clone(), e))?;
    let _ = tcp.set_nodelay(true);
    let transport = ReadAhead::handshaking(tcp, HANDSHAKE_BUDGET);
    let exhausted = transport.budget_exhausted();
    let mut tls = timeout(
        shared.limits.handshake_timeout,
        connector.connect(server_name.clone(), transport),
    )
    .await
    .map_err(|_| {
        if exhausted.load(std::sync::atomic::Ordering::Relaxed) {
            Refusal::HandshakeTooLarge(HANDSHAKE_BUDGET)
        } else {
            Refusal::HandshakeTimeout
        }
    })?
    .map_err(Refusal::Handshake)?;
    tls_config
        .recheck_resumed(tls.get_ref().1, &server_name)
        .map_err(Refusal::after_handshake)?;
    tls.get_mut().0.handshake_done();
    metrics
        .handshake_seconds
        .observe(started.elapsed().as_secs_f64());
    metrics.key_exchange(tls.get_ref().1);
    let end = Relay::new(
        &mut app,
        &mut tls,
        shared.relay_limits(),
        metrics.app_to_peer.clone(),
        metrics.peer_to_app.clone(),
    )
    .await;
    end_connections(&end, &mut tls, &app).await;
    metrics.closed(end.reason());
    tracing::debug!(
        listener = name,
        end = end.reason(),
        error = end.error().map(tracing::field::display),
        "closed"
    );
    Ok(())
}

/// `host:port` with a literal address connects without a lookup; a name is resolved each time,
/// so DNS changes are followed.
pub(crate) async fn connect(target: &str) -> std::io::Result<TcpStream> {
    match target.parse::<SocketAddr>() {
        Ok(addr) => TcpStream::connect(addr).await,
        Err(_) => TcpStream::connect(target).await,
    }
}

/// The TLS server name sent as SNI. SVIDs are checked by SPIFFE ID, not by this name, so it only
/// has to be well-formed: the host of `connect_to`, or a fixed name when that is not usable.
pub(crate) fn server_name_of(connect_to: &str) -> ServerName<'static> {
    let host = connect_to
        .rsplit_once(':')
        .map_or(connect_to, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("palisade.invalid").expect("valid DNS name"))
}
