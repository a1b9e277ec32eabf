//! The Palisade sidecar: the mTLS data plane beside each workload.
//!
//! One process per workload. Inbound listeners terminate mTLS and admit a peer by the SPIFFE ID
//! in its certificate ([`AllowList`] of [`IdPattern`]s, from `palisade_identity`, or the policy file's
//! decision, `palisade_policy::Admission`), then forward plaintext to the app;
//! outbound listeners take plaintext from the app and originate mTLS to a peer whose ID must
//! match what is expected. Certificate, key and bundle are re-read from files and swapped in
//! without touching open connections.
//!
//! - [`SidecarConfig`]: the YAML configuration.
//! - [`Sidecar`]: bind with [`Sidecar::bind`], then [`BoundSidecar::run`] until shutdown.
//!
//! Where a connection travels: `proxy/` — `accept.rs` (caps, handshake slots, tracking) →
//! `inbound.rs` / `outbound.rs` / `transparent.rs` (handshake with the verifiers of
//! `palisade_identity` and the admission of `admission.rs`; refusals in `refusal/`, logged by
//! `refusal/log.rs`) → `relay.rs` (bytes both ways). Where a certificate travels: `identity/` —
//! `mod.rs` keeps the TLS configs current from files, `ca_source.rs` from the CA service. Where a
//! policy rule travels: `admission.rs`. `admin.rs` and `metrics.rs` report; `sandbox.rs` says
//! what the process may touch.

#![warn(missing_docs)]

mod admin;
mod admission;
pub mod app_probe;
pub mod config;
mod identity;
pub mod metrics;
mod proxy;
mod refusal;
pub mod sandbox;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{ConfigError, SidecarConfig};
pub use identity::{CredentialError, Credentials, ReloadOutcome};
pub use palisade_identity::{AllowList, IdPattern, PatternError};

use crate::admission::{PolicyFiles, PolicyWatcher};
use crate::config::IdentitySource;
use crate::identity::{IdentityWatcher, ListenerTls};
use crate::metrics::{Direction, Metrics};
use crate::proxy::accept::Shared;

/// Why a sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// A listen address could not be bound (in use, not a local address, no permission).
    #[error("cannot listen on {address} for {listener}: {error}")]
    Bind {
        /// Which listener, as the message says it: `the admin server`, `inbound listener "api"`.
        listener: String,
        /// The address it was to listen on.
        address: SocketAddr,
        /// The operating system's reason.
        error: std::io::Error,
    },
}

/// Entry point: binds every listener of a configuration.
pub struct Sidecar;

impl Sidecar {
    /// Binds the admin server and every listener, so that a bad address fails here, before
    /// anything runs, and port 0 can be used (see [`BoundSidecar::addresses`]).
    pub async fn bind(config: SidecarConfig) -> Result<BoundSidecar, SidecarError> {
        let bind = |listener: String, address: SocketAddr| async move {
            listen(address).map_err(|error| SidecarError::Bind {
                listener,
                address,
                error,
            })
        };
        let admin = bind("the admin server".into(), config.admin.listen).await?;
        let metrics_listener = match &config.metrics {
            Some(m) => Some(
                listen_any_family(m.listen).map_err(|error| SidecarError::Bind {
                    listener: "the metrics listener".into(),
                    address: m.listen,
                    error,
                })?,
            ),
            None => None,
        };
        let mut inbound = Vec::new();
        for l in &config.inbound {
            inbound.push(bind(format!("inbound listener \"{}\"", l.name), l.listen).await?);
        }
        let mut outbound = Vec::new();
        for l in &config.outbound {
            outbound.push(bind(format!("outbound listener \"{}\"", l.name), l.listen).await?);
        }
        let transparent = config.transparent.as_ref();
        let transparent_inbound = match transparent.and_then(|t| t.inbound) {
            Some(address) => Some(bind("the transparent inbound listener".into(), address).await?),
            None => None,
        };
        let transparent_outbound = match transparent.and_then(|t| t.outbound) {
            Some(address) => Some(bind("the transparent outbound listener".into(), address).await?),
            None => None,
        };
        Ok(BoundSidecar {
            config: Arc::new(config),
            admin,
            metrics_listener,
            inbound,
            outbound,
            transparent_inbound,
            transparent_outbound,
            metrics: Arc::new(Metrics::new()),
        })
    }
}

/// Connections the kernel may hold for a listener before we accept them. `TcpListener::bind`
/// asks for 128 (the standard library's value): a burst beyond that, while the accept loop waits
/// for a busy runtime, has its SYNs dropped, and the peer retries only after 1 s, which is the
/// whole default `connect_timeout` of a peer sidecar. The kernel caps this at `somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;

fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// [`listen`], except that `[::]` falls back to `0.0.0.0` on a host without IPv6: inject gives
/// every pod `[::]:15020` (both families where the kernel has IPv6) and must not fail where it
/// does not.
fn listen_any_family(address: SocketAddr) -> std::io::Result<TcpListener> {
    let bound = if address.ip() == std::net::Ipv6Addr::UNSPECIFIED {
        listen_dual_stack(address)
    } else {
        listen(address)
    };
    match bound {
        Err(error)
            if address.ip() == std::net::Ipv6Addr::UNSPECIFIED
                && error.raw_os_error() == Some(nix::errno::Errno::EAFNOSUPPORT as i32) =>
        {
            tracing::warn!(%address, "no IPv6 here: the metrics listener takes IPv4 only");
            listen(SocketAddr::from(([0, 0, 0, 0], address.port())))
        }
        other => other,
    }
}

/// `[::]:port` taking IPv4 too whatever the host's `net.ipv6.bindv6only` says (the kubelet may
/// probe the pod's IPv4 address).
fn listen_dual_stack(address: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    TcpListener::from_std(socket.into())
}

/// The addresses a bound sidecar listens on, by listener name.
#[derive(Debug, Clone)]
pub struct Addresses {
    /// The admin server's address.
    pub admin: SocketAddr,
    /// The read-only metrics listener's address, if configured.
    pub metrics: Option<SocketAddr>,
    /// Each inbound listener's name and address, in configuration order.
    pub inbound: Vec<(String, SocketAddr)>,
    /// Each outbound listener's name and address, in configuration order.
    pub outbound: Vec<(String, SocketAddr)>,
    /// The transparent inbound listener's address, if configured.
    pub transparent_inbound: Option<SocketAddr>,
    /// The transparent outbound listener's address, if configured.
    pub transparent_outbound: Option<SocketAddr>,
}

/// A sidecar whose sockets are bound; [`BoundSidecar::run`] serves until shutdown.
pub struct BoundSidecar {
    config: Arc<SidecarConfig>,
    admin: TcpListener,
    metrics_listener: Option<TcpListener>,
    inbound: Vec<TcpListener>,
    outbound: Vec<TcpListener>,
    transparent_inbound: Option<TcpListener>,
    transparent_outbound: Option<TcpListener>,
    metrics: Arc<Metrics>,
}

impl BoundSidecar {
    /// The addresses bound: for a configured port 0, the port the kernel chose.
    pub fn addresses(&self) -> Addresses {
        let addr = |l: &TcpListener| l.local_addr().expect("bound socket has an address");
        Addresses {
            admin: addr(&self.admin),
            metrics: self.metrics_listener.as_ref().map(addr),
            inbound: self
                .config
                .inbound
                .iter()
                .zip(&self.inbound)
                .map(|(c, l)| (c.name.clone(), addr(l)))
                .collect(),
            outbound: self
                .config
                .outbound
                .iter()
                .zip(&self.outbound)
                .map(|(c, l)| (c.name.clone(), addr(l)))
                .collect(),
            transparent_inbound: self.transparent_inbound.as_ref().map(addr),
            transparent_outbound: self.transparent_outbound.as_ref().map(addr),
        }
    }

    /// Serves until `shutdown` completes or POST /shutdown is called, then stops accepting, lets
    /// open connections finish for up to `limits.drain_grace`, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let BoundSidecar {
            config,
            admin,
            metrics_listener,
            inbound,
            outbound,
            transparent_inbound,
            transparent_outbound,
            metrics,
        } = self;
        let provider = identity::crypto_provider();
        let shutdown_requested = CancellationToken::new();
        let stop_background = CancellationToken::new();

        // Load the policies and the identity before the first accept, so that a sidecar whose
        // files are in place is ready at once; if they are not, it keeps trying and stays not
        // ready. The two are watched apart: a policy that does not load never holds up a
        // certificate rotation.
        let policies = Arc::new(PolicyFiles::of(&config));
        let policies_for_transparent = policies.clone();
        let mut policy_watcher = PolicyWatcher::new(policies.clone(), metrics.clone());
        policy_watcher.check();
        let tls = ListenerTls::new(&config, policies.clone());
        let identity_watcher = match config.identity.source() {
            Some(IdentitySource::Files(files)) => {
                let mut watcher =
                    IdentityWatcher::new(files, provider.clone(), tls.clone(), metrics.clone());
                watcher.check().await;
                Some(watcher)
            }
            Some(IdentitySource::Ca(ca)) => {
                tokio::spawn(identity::ca_source::run(
                    ca,
                    tls.clone(),
                    provider.clone(),
                    metrics.clone(),
                    config.identity.reload_interval,
                    stop_background.clone(),
                ));
                None
            }
            None => {
                tracing::error!("the configuration names no usable identity source; not ready");
                None
            }
        };
        tokio::spawn(watch_files(
            identity_watcher,
            policy_watcher,
            config.identity.reload_interval,
            stop_background.clone(),
        ));

        tracing::info!(address = %admin.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin listening");
        let admin_state = Arc::new(admin::AdminState {
            metrics: metrics.clone(),
            tls: tls.clone(),
            policies,
            shutdown: shutdown_requested.clone(),
            app_probes: Arc::new(config.app_probes.clone()),
        });
        if let Some(listener) = metrics_listener {
            tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics listening (read-only)");
            tokio::spawn(palisade_admin::serve_read_only(
                listener,
                admin_state.clone(),
                stop_background.clone(),
            ));
        }
        tokio::spawn(palisade_admin::serve(
            admin,
            admin_state,
            stop_background.clone(),
        ));

        let limits = &config.limits;
        let shared = Arc::new(Shared {
            limits: limits.clone(),
            inbound_slots: Arc::new(Semaphore::new(limits.max_connections)),
            outbound_slots: Arc::new(Semaphore::new(limits.max_connections)),
            handshake_slots: Arc::new(Semaphore::new(limits.max_handshakes)),
            refusal_log: Default::default(),
            tracker: TaskTracker::new(),
            stop_accepting: CancellationToken::new(),
        });
        let listeners = TaskTracker::new();
        for ((listener, c), listener_tls) in
            inbound.into_iter().zip(&config.inbound).zip(&tls.inbound)
        {
            let m = metrics.listener(&c.name, Direction::Inbound);
            tracing::info!(listener = c.name, address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), forward_to = %c.forward_to, "inbound listening");
            listeners.spawn(proxy::inbound::serve(
                listener,
                listener_tls.clone(),
                c.clone(),
                shared.clone(),
                m,
            ));
        }
        for ((listener, c), listener_tls) in outbound
            .into_iter()
            .zip(&config.outbound)
            .zip(&tls.outbound)
        {
            let m = metrics.listener(&c.name, Direction::Outbound);
            tracing::info!(listener = c.name, address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), connect_to = c.connect_to, "outbound listening");
            listeners.spawn(proxy::outbound::serve(
                listener,
                listener_tls.clone(),
                c.clone(),
                shared.clone(),
                m,
            ));
        }
        if let Some(t) = &config.transparent {
            let transparent = proxy::transparent::Transparent::new(
                t.clone(),
                tls.clone(),
                policies_for_transparent.clone(),
                provider.clone(),
                config.tls.resumption,
                reserved_ports(&config),
            );
            if let Some(listener) = transparent_inbound {
                let m = metrics.listener("transparent-inbound", Direction::Inbound);
                tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "transparent inbound listening");
                listeners.spawn(proxy::transparent::serve_inbound(
                    listener,
                    transparent.clone(),
                    shared.clone(),
                    m,
                ));
            }
            if let Some(listener) = transparent_outbound {
                let m = metrics.listener("transparent-outbound", Direction::Outbound);
                tracing::info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "transparent outbound listening");
                listeners.spawn(proxy::transparent::serve_outbound(
                    listener,
                    transparent,
                    shared.clone(),
                    m,
                ));
            }
        }
        listeners.close();

        tokio::select! {
            _ = shutdown => {}
            _ = shutdown_requested.cancelled() => {}
        }
        shutdown_requested.cancel();
        metrics.draining.set(1);
        let open = shared.permits_in_use();
        tracing::info!(
            open_connections = open,
            grace_seconds = config.limits.drain_grace.as_secs_f64(),
            "shutting down: no new connections; draining"
        );
        shared.stop_accepting.cancel();
        listeners.wait().await;
        shared.tracker.close();
        if tokio::time::timeout(config.limits.drain_grace, shared.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open_connections = shared.permits_in_use(),
                "drain grace period over; closing the connections still open"
            );
        } else {
            tracing::info!("drained: every connection finished");
        }
        stop_background.cancel();
    }
}

/// The ports the sidecar itself listens on, which a transparent inbound connection is never
/// forwarded to.
fn reserved_ports(config: &SidecarConfig) -> Vec<u16> {
    let transparent = config
        .transparent
        .iter()
        .flat_map(|t| [t.inbound, t.outbound])
        .flatten();
    std::iter::once(config.admin.listen)
        .chain(config.inbound.iter().map(|l| l.listen))
        .chain(config.outbound.iter().map(|l| l.listen))
        .chain(transparent)
        .map(|a| a.port())
        .collect()
}

/// Re-reads the identity and policy files every `interval` until cancelled.
async fn watch_files(
    mut identity: Option<IdentityWatcher>,
    mut policies: PolicyWatcher,
    interval: std::time::Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                policies.check();
                if let Some(identity) = identity.as_mut() {
                    identity.check().await;
                }
            }
        }
    }
}

impl Shared {
    fn permits_in_use(&self) -> usize {
        2 * self.limits.max_connections
            - self.inbound_slots.available_permits()
            - self.outbound_slots.available_permits()
    }
}
