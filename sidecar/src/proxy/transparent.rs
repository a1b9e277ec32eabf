//! Transparent listeners: connections that the pod's redirect table (`palisade sidecar
//! redirect`) sends here, carried on to where they were going.
//!
//! ```text
//! app ──connect(peer-pod:8080)──► [nat output: redirect] ──► outbound listener
//!      original destination (SO_ORIGINAL_DST) = peer-pod:8080
//!      policy: peer-pod's address is in segment "payments" ─► expect its identities
//!      mTLS to peer-pod:8080 as this workload (our UID is exempt from the redirect)
//!                       ──► [peer pod: nat prerouting: redirect] ──► its inbound listener
//!      original destination port 8080 ─► admitted by the policy for port 8080
//!      plaintext to 127.0.0.1:8080 (the app)
//! ```
//!
//! A TLS configuration is made per original port (inbound) and per set of expected identities
//! (outbound), from the credentials in use, and kept until the credentials change; admission
//! reads the current policy at each handshake, so a new policy needs no rebuild.
//! Plaintext peers (inbound) and destinations in no segment with identities (outbound) are
//! refused in `strict` mode, passed through in plaintext in `permissive` mode.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use rustls::crypto::CryptoProvider;
use rustls::sign::SingleCertAndKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use palisade_identity::IdPattern;
use palisade_policy::model::Endpoint;

use crate::admission::PolicyFiles;
use crate::config::{
    InboundConfig, OutboundConfig, PolicyAdmission, TransparentConfig, TransparentMode,
};
use crate::identity::{
    Credentials, InboundListenerTls, InboundTls, ListenerTls, OutboundListenerTls, OutboundTls,
};
use crate::metrics::ListenerMetrics;
use crate::proxy::accept::{accept_loop, Shared, Slots};
use crate::proxy::inbound::starts_with_tls;
use crate::proxy::local_addrs::{canonical, LocalAddresses};
use crate::proxy::relay::{end_connections, Relay};
use crate::refusal::Refusal;

/// Where a redirected connection was going, from the socket the redirect handed us.
pub fn original_destination(tcp: &TcpStream) -> std::io::Result<SocketAddr> {
    let socket = socket2::SockRef::from(tcp);
    // A dual-stack listener ([::]) accepts IPv4 connections as v4-mapped addresses; their
    // original destination is kept by the IPv4 table.
    let original = match tcp.local_addr()? {
        SocketAddr::V6(local) if local.ip().to_ipv4_mapped().is_none() => {
            socket.original_dst_v6()?
        }
        _ => socket.original_dst_v4()?,
    };
    let original = original
        .as_socket()
        .ok_or_else(|| std::io::Error::other("the original destination is not an IP address"))?;
    // A connection made to the listener itself was not redirected: its "original destination"
    // is the listener, and carrying it there would connect the sidecar to itself, again and
    // again.
    let local = tcp.local_addr()?;
    let same_port = original.port() == local.port();
    let same_ip = canonical(original.ip()) == canonical(local.ip());
    if same_port && (same_ip || original.ip().is_loopback() || original.ip().is_unspecified()) {
        return Err(std::io::Error::other(
            "the connection was not redirected here (its destination is this listener)",
        ));
    }
    Ok(original)
}

/// TLS configurations made on demand, and what they need.
pub(crate) struct Transparent {
    config: TransparentConfig,
    listener_tls: Arc<ListenerTls>,
    policies: Arc<PolicyFiles>,
    provider: Arc<CryptoProvider>,
    resumption: bool,
    /// Ports of the sidecar's own listeners and admin server: never forwarded to.
    reserved_ports: Vec<u16>,
    /// The pod's own addresses: the only destinations an inbound connection is carried to.
    local: LocalAddresses,
    inbound: Mutex<HashMap<u16, Made<InboundTls>>>,
    outbound: Mutex<HashMap<Vec<String>, Made<OutboundTls>>>,
}

/// A TLS configuration and the credentials it was made from (remade when they change).
type Made<T> = (Arc<Credentials>, Arc<T>);

impl Transparent {
    pub(crate) fn new(
        config: TransparentConfig,
        listener_tls: Arc<ListenerTls>,
        policies: Arc<PolicyFiles>,
        provider: Arc<CryptoProvider>,
        resumption: bool,
        reserved_ports: Vec<u16>,
    ) -> Arc<Self> {
        Arc::new(Transparent {
            reserved_ports,
            local: LocalAddresses::new(),
            config,
            listener_tls,
            policies,
            provider,
            resumption,
            inbound: Mutex::default(),
            outbound: Mutex::default(),
        })
    }

    fn permissive(&self) -> bool {
        self.config.mode == TransparentMode::Permissive
    }

    /// The server config for connections whose original port is `port`.
    fn inbound_tls(&self, port: u16) -> Result<Arc<InboundTls>, Refusal> {
        let credentials = self
            .listener_tls
            .credentials()
            .ok_or(Refusal::NoCertificate)?;
        let mut cache = self.inbound.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made_from, tls)) = cache.get(&port) {
            if Arc::ptr_eq(made_from, &credentials) {
                return Ok(tls.clone());
            }
        }
        let listener = InboundConfig {
            name: "transparent".into(),
            listen: self
                .config
                .inbound
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            forward_to: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            allow: Vec::new(),
            policy: Some(PolicyAdmission {
                file: self.config.policy.clone(),
                port: Some(port),
            }),
            network_policy: None,
            alpn: Vec::new(),
        };
        let own_cert = Arc::new(SingleCertAndKey::from(credentials.certified_key.clone()));
        let tls = InboundListenerTls::new(listener, self.resumption, self.policies.clone())
            .build(&credentials, &own_cert, &self.provider)
            .map_err(Refusal::after_handshake)?;
        let tls = Arc::new(tls);
        // Only authenticated-looking traffic (a TLS record) gets here, but keep it bounded.
        if cache.len() >= 1024 {
            cache.clear();
        }
        cache.insert(port, (credentials, tls.clone()));
        Ok(tls)
    }

    /// The client config for a connection to `ip`: `None` when the policy names no identity for
    /// it (no segment holds it, or those that do have no identities).
    fn outbound_tls(&self, ip: IpAddr) -> Result<Option<Arc<OutboundTls>>, Refusal> {
        let policy = self
            .policies
            .current(&self.config.policy)
            .ok_or(Refusal::NoPolicy)?;
        let expect: Vec<IdPattern> = policy
            .segments_of(&Endpoint::Address(ip))
            .into_iter()
            .flat_map(|i| policy.segments[i].identities.iter().map(|(p, _)| p.clone()))
            .collect();
        if expect.is_empty() {
            return Ok(None);
        }
        let key: Vec<String> = expect.iter().map(|p| p.to_string()).collect();
        let credentials = self
            .listener_tls
            .credentials()
            .ok_or(Refusal::NoCertificate)?;
        let mut cache = self.outbound.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((made_from, tls)) = cache.get(&key) {
            if Arc::ptr_eq(made_from, &credentials) {
                return Ok(Some(tls.clone()));
            }
        }
        let listener = OutboundConfig {
            name: "transparent".into(),
            listen: self
                .config
                .outbound
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            connect_to: ip.to_string(),
            expect,
            allow_non_loopback: true,
            alpn: Vec::new(),
        };
        let own_cert = Arc::new(SingleCertAndKey::from(credentials.certified_key.clone()));
        let tls = OutboundListenerTls::new(listener, self.resumption)
            .build(&credentials, &own_cert, &self.provider)
            .map_err(Refusal::after_handshake)?;
        let tls = Arc::new(tls);
        // Bounded: one entry per distinct set of expected identities in the policy.
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(key, (credentials, tls.clone()));
        Ok(Some(tls))
    }
}

/// The app on this pod: the address and port the peer was connecting to, when that is one of the
/// pod's own addresses (our UID is exempt from the redirect, so this connection is not caught
/// again). Never loopback: what listens on loopback only (the sidecar's own outbound listeners,
/// its admin server, an app's debug port) must not become reachable from the network through
/// the sidecar; and never another host: a neighbour that routes a packet for elsewhere through
/// the pod must not get a relay past the node's table. The redirect table captures only packets
/// for the pod's own addresses; this holds even under an older table that captured everything.
fn app_address(original: SocketAddr, local: &LocalAddresses) -> Result<SocketAddr, Refusal> {
    if local.contains(original.ip()) {
        Ok(SocketAddr::new(canonical(original.ip()), original.port()))
    } else {
        Err(Refusal::DestinationNotLocal(original))
    }
}

pub(crate) async fn serve_inbound(
    listener: TcpListener,
    transparent: Arc<Transparent>,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
) {
    let slots = Slots {
        connections: shared.inbound_slots.clone(),
        handshakes: Some(shared.handshake_slots.clone()),
    };
    accept_loop(
        listener,
        "transparent-inbound".into(),
        shared.clone(),
        metrics.clone(),
        slots,
        move |tcp, peer, handshake_slot| {
            let (transparent, shared, metrics) = (transparent.clone(), shared.clone(), metrics.clone());
            async move {
                let original = original_destination(&tcp).map_err(Refusal::NoOriginalDestination)?;
                if transparent.reserved_ports.contains(&original.port()) {
                    return Err(Refusal::NoOriginalDestination(std::io::Error::other(format!(
                        "port {} is one of the sidecar's own", original.port()
                    ))));
                }
                // Checked before anything else, a plaintext pass-through included.
                let target = app_address(original, &transparent.local)?;
                // Is it TLS at all? Asked before anything is built for the port, so a scan of
                // ports costs no TLS configuration.
                let tls = starts_with_tls(&tcp, &shared).await?;
                if transparent.permissive() && !tls {
                    // Plaintext is not a handshake: its slot goes back at once.
                    drop(handshake_slot);
                    tracing::info!(%peer, port = original.port(), "plaintext peer passed through (permissive mode)");
                    return pass_through(tcp, &target.to_string(), &shared, &metrics, Flow::Inbound).await;
                }
                if !tls {
                    return Err(Refusal::NotTls);
                }
                let tls_config = transparent.inbound_tls(original.port())?;
                crate::proxy::inbound::handle(
                    tcp,
                    peer,
                    tls_config,
                    target,
                    "transparent-inbound",
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

pub(crate) async fn serve_outbound(
    listener: TcpListener,
    transparent: Arc<Transparent>,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
) {
    let slots = Slots {
        connections: shared.outbound_slots.clone(),
        handshakes: None,
    };
    accept_loop(
        listener,
        "transparent-outbound".into(),
        shared.clone(),
        metrics.clone(),
        slots,
        move |app, _peer, _no_handshake_slot| {
            let (transparent, shared, metrics) = (transparent.clone(), shared.clone(), metrics.clone());
            async move {
                let original = original_destination(&app).map_err(Refusal::NoOriginalDestination)?;
                let target = original.to_string();
                match transparent.outbound_tls(original.ip())? {
                    Some(tls_config) => {
                        let server_name = crate::proxy::outbound::server_name_of(&target);
                        crate::proxy::outbound::handle(
                            app,
                            tls_config,
                            server_name,
                            &target,
                            "transparent-outbound",
                            &shared,
                            &metrics,
                        )
                        .await
                    }
                    None if transparent.permissive() => {
                        tracing::info!(destination = %original, "destination in no segment passed through in plaintext (permissive mode)");
                        pass_through(app, &target, &shared, &metrics, Flow::Outbound).await
                    }
                    None => Err(Refusal::DestinationNotInPolicy(original.ip())),
                }
            }
        },
    )
    .await;
}

/// Which way a passed-through connection goes, for the byte counters.
#[derive(Clone, Copy)]
enum Flow {
    /// A peer to the app.
    Inbound,
    /// The app to a destination.
    Outbound,
}

/// Permissive mode: plaintext relayed as it is, counted as `plaintext_passthrough`.
async fn pass_through(
    mut from: TcpStream,
    target: &str,
    shared: &Shared,
    metrics: &ListenerMetrics,
    flow: Flow,
) -> Result<(), Refusal> {
    let mut to = timeout(
        shared.limits.connect_timeout,
        crate::proxy::outbound::connect(target),
    )
    .await
    .map_err(|_| Refusal::ConnectTimeout(target.to_owned()))?
    .map_err(|e| Refusal::ConnectFailed(target.to_owned(), e))?;
    let _ = to.set_nodelay(true);
    let (forward, back) = match flow {
        Flow::Inbound => (metrics.peer_to_app.clone(), metrics.app_to_peer.clone()),
        Flow::Outbound => (metrics.app_to_peer.clone(), metrics.peer_to_app.clone()),
    };
    let end = Relay::new(&mut from, &mut to, shared.relay_limits(), forward, back).await;
    end_connections(&end, &mut to, &from).await;
    metrics.closed("plaintext_passthrough");
    Ok(())
}
