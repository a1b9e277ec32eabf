//! `palisade ca serve`: a trust domain's CA as an HTTPS service (hyper + rustls, TLS 1.3), so
//! that workloads get and renew their X.509-SVIDs themselves while the root key stays offline.
//!
//! - [`CaServer::bind`] then [`BoundCaServer::run`]: the service and its admin server.
//! - `POST /v1/sign` a CSR with a one-time join token ([`palisade_ca::JoinTokens`]) or a
//!   Kubernetes service-account token ([`service_account::ServiceAccountVerifier`]);
//!   `POST /v1/renew` a CSR over mTLS with the current SVID; `GET /v1/bundle`. The wire format is
//!   [`palisade_identity::ca_api`].
//! - [`Refusal`]: every way it says no, with a stable code; [`audit`]: one JSON line per decision.
//!
//! Where a request travels: `lib.rs` (accept, TLS, HTTP) → `handler.rs` (limits, credential,
//! CSR, issue) → `audit.rs`. The signing material is `material.rs`, reloaded from the CA
//! directory; nothing else is shared, so any number of replicas can serve from one directory
//! (join tokens need that directory writable and shared; service-account tokens need nothing).

#![warn(missing_docs)]

pub mod audit;
mod connections;
mod handler;
mod limits;
mod material;
pub mod metrics;
mod refusal;
pub mod sandbox;
pub mod service_account;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioIo, TokioTimer};
use palisade_admin::{AdminService, NotReady};
use palisade_ca::{CaDir, JoinTokens};
use rustls::crypto::CryptoProvider;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use audit::{AuditSink, RefusalBudget};
pub use handler::csr_from_body;
pub use limits::{client_key, client_label, RateLimiter, SigningSlots};
pub use material::{bundle_document, Material, MaterialError, ServerIdentity};
pub use refusal::Refusal;
use service_account::{JwksFetcher, JwksSource, ServiceAccountConfig, ServiceAccountVerifier};

/// Everything `palisade ca serve` is told.
#[derive(Debug, Clone)]
pub struct CaServerConfig {
    /// The CA directory (an issuer made by `ca init-issuer`, or a root).
    pub dir: PathBuf,
    /// Where the HTTPS service listens.
    pub listen: SocketAddr,
    /// Where the admin server (metrics, /live, /ready) listens; loopback.
    pub admin_listen: SocketAddr,
    /// A read-only listener for Prometheus and the kubelet (/live, /ready, /metrics only), on any
    /// address; none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// The service's own identity.
    pub server: ServerIdentity,
    /// Lifetime of the certificates it issues (never past the CA's).
    pub leaf_ttl: Duration,
    /// The join-token store.
    pub tokens_dir: PathBuf,
    /// Kubernetes service-account tokens, when taken.
    pub service_account: Option<ServiceAccountConfig>,
    /// Where audit lines go.
    pub audit: AuditSink,
    /// Limits on what clients may ask.
    pub limits: Limits,
    /// How often the CA directory and the JWKS are read again.
    pub reload_interval: Duration,
}

/// What clients may ask of the service, bounded before any signature is made.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sign and renew requests per second per client address (0: no limit).
    pub rate_per_second: f64,
    /// Requests a client may make at once before its rate applies.
    pub burst: u32,
    /// An IPv6 /48 is a second bucket, with this many times `rate_per_second` and `burst`, that
    /// all of its /64s draw from: a request must pass both (see `limits.rs`).
    pub site_rate_multiple: u32,
    /// Signings in progress at once.
    pub max_signing: usize,
    /// How long a request waits for a signing slot before it is told to retry.
    pub signing_wait: Duration,
    /// Connections open at once (both classes; see `connections.rs`).
    pub max_connections: usize,
    /// Of `max_connections`, those only a connection whose client certificate verified to the
    /// bundle can hold (renewals): a flood of unauthenticated connections cannot take them.
    pub reserved_connections: usize,
    /// Connections one client (an IPv4 address, an IPv6 /64) may hold in each class; a new one
    /// beyond replaces its oldest idle one, or is refused when none is idle.
    pub max_connections_per_client: usize,
    /// Reserved connections one SPIFFE ID may hold; a new one beyond replaces its oldest idle
    /// one, or stays general when none is idle.
    pub reserved_connections_per_id: usize,
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for a whole request, head and body together, on a connection without a verified
    /// client certificate (counted from the handshake, and from the previous answer): a
    /// stranger's connection is short, idle or trickling a body.
    pub request_timeout: Duration,
    /// Time for a request's head to arrive on an authenticated (renewal) connection, also how
    /// long such a connection is kept idle.
    pub header_timeout: Duration,
    /// Time for a request's body to arrive.
    pub body_timeout: Duration,
    /// Requests refused on one connection before it is closed (`Connection: close`).
    pub refusals_per_connection: u32,
    /// How many refusal lines the audit trail takes.
    pub audit_refusals: RefusalBudget,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate_per_second: 20.0,
            burst: 40,
            site_rate_multiple: 16,
            max_signing: 256,
            signing_wait: Duration::from_secs(2),
            max_connections: 4096,
            reserved_connections: 1024,
            max_connections_per_client: 64,
            reserved_connections_per_id: 4,
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
            refusals_per_connection: 16,
            audit_refusals: RefusalBudget::default(),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaServerError {
    /// The CA directory does not give a usable CA.
    #[error(transparent)]
    Material(#[from] MaterialError),
    /// The JWKS (file or URL) does not give usable keys.
    #[error(transparent)]
    Jwks(#[from] service_account::JwksError),
    /// The audit file cannot be opened.
    #[error("cannot open the audit log {path}: {error}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// The reason.
        error: std::io::Error,
    },
    /// A listener cannot be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The reason.
        error: std::io::Error,
    },
}

/// What every request handler shares.
pub(crate) struct State {
    dir: CaDir,
    pub(crate) server: ServerIdentity,
    provider: Arc<CryptoProvider>,
    pub(crate) material: ArcSwap<Material>,
    pub(crate) tokens: JoinTokens,
    pub(crate) service_accounts: Option<ServiceAccountVerifier>,
    /// Fetches the JWKS when it comes from a URL.
    jwks_fetcher: Option<JwksFetcher>,
    /// Woken by a token that names a key the CA does not know: fetch the JWKS now (bounded).
    pub(crate) jwks_wanted: tokio::sync::Notify,
    pub(crate) audit: audit::AuditLog,
    pub(crate) metrics: metrics::Metrics,
    pub(crate) rate: RateLimiter,
    pub(crate) slots: SigningSlots,
    pub(crate) leaf_ttl: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) refusals_per_connection: u32,
    pub(crate) log_budget: LogBudgets,
}

/// One log line per kind of flood per interval, with the count left out.
pub(crate) struct LogBudgets {
    pub(crate) refusals: connections::LogBudget,
    pub(crate) audit: connections::LogBudget,
    pub(crate) connections: connections::LogBudget,
}

impl LogBudgets {
    fn new() -> Self {
        let every = Duration::from_secs(10);
        LogBudgets {
            refusals: connections::LogBudget::new(every),
            audit: connections::LogBudget::new(every),
            connections: connections::LogBudget::new(every),
        }
    }
}

impl State {
    /// Why the service cannot sign now, if it cannot.
    pub(crate) fn not_ready(&self) -> Option<String> {
        let material = self.material.load();
        let now = OffsetDateTime::now_utc();
        (now >= material.ca.not_after())
            .then(|| format!("the signing CA expired at {}", material.ca.not_after()))
    }

    /// Reads the CA directory and the JWKS again; keeps what it had when they do not load.
    fn reload(&self) {
        let current = self.material.load_full();
        let changed = current.changed(&self.dir);
        let due = OffsetDateTime::now_utc() >= current.server_cert_refresh_at;
        if changed || due {
            match Material::load(&self.dir, &self.server, &self.provider) {
                Ok(material) => {
                    if changed {
                        tracing::info!(
                            issuer_not_after = %palisade_identity::rfc3339(material.ca.not_after()),
                            bundle_roots = material.roots,
                            "loaded new CA material; new certificates are signed with it"
                        );
                    }
                    self.publish_gauges(&material);
                    self.material.store(Arc::new(material));
                    self.metrics.reload("ca", true);
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot load the CA directory; keeping the CA in use");
                    self.metrics.reload("ca", false);
                }
            }
        }
        if let Some(accounts) = &self.service_accounts {
            match accounts.reload() {
                Ok(true) => {
                    tracing::info!("loaded new service-account signing keys");
                    self.metrics.reload("jwks", true);
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot load the JWKS; keeping the keys in use");
                    self.metrics.reload("jwks", false);
                }
            }
        }
    }

    /// Puts fetched keys in use; a failed fetch or a document without usable keys keeps the
    /// keys in use.
    fn jwks_fetched(&self, fetched: Result<Vec<u8>, service_account::JwksError>) {
        let Some(accounts) = &self.service_accounts else {
            return;
        };
        match fetched.and_then(|bytes| accounts.replace(bytes)) {
            Ok(true) => {
                tracing::info!("fetched new service-account signing keys");
                self.metrics.reload("jwks", true);
            }
            Ok(false) => self.metrics.reload("jwks", true),
            Err(error) => {
                tracing::warn!(%error, "cannot fetch the JWKS; keeping the keys in use");
                self.metrics.reload("jwks", false);
            }
        }
    }

    fn publish_gauges(&self, material: &Material) {
        self.metrics
            .issuer_expiry_seconds
            .set(material.ca.not_after().unix_timestamp());
        self.metrics
            .root_expiry_seconds
            .set(material.root_not_after.unix_timestamp());
        self.metrics.bundle_roots.set(material.roots as i64);
    }
}

struct Admin(Arc<State>);

impl AdminService for Admin {
    fn ready(&self) -> Result<(), NotReady> {
        match self.0.not_ready() {
            None => Ok(()),
            Some(why) => Err(NotReady(why)),
        }
    }

    fn metrics(&self) -> String {
        self.0.metrics.encode()
    }
}

/// The CA service, before it is bound.
pub struct CaServer;

/// The CA service with its listeners bound, ready to [`run`](BoundCaServer::run).
pub struct BoundCaServer {
    state: Arc<State>,
    api: TcpListener,
    admin: TcpListener,
    metrics: Option<TcpListener>,
    limits: Limits,
    reload_interval: Duration,
}

impl CaServer {
    /// Loads the CA, the JWKS and the audit sink and binds both listeners: every startup
    /// error is reported here, before anything is served.
    pub async fn bind(config: CaServerConfig) -> Result<BoundCaServer, CaServerError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let dir = CaDir::new(&config.dir);
        let material = Material::load(&dir, &config.server, &provider)?;
        // From a file, read now; from a URL, fetched now (the CA does not start without keys:
        // it would refuse every service-account token until the first fetch).
        let (service_accounts, jwks_fetcher) = match config.service_account.clone() {
            None => (None, None),
            Some(sa) => match &sa.jwks {
                JwksSource::File(_) => (Some(ServiceAccountVerifier::load(sa)?), None),
                JwksSource::Url(url) => {
                    let fetcher = JwksFetcher::new(url)?;
                    let keys = fetcher.fetch().await?;
                    (
                        Some(ServiceAccountVerifier::with_keys(sa, keys)?),
                        Some(fetcher),
                    )
                }
            },
        };
        let audit = audit::AuditLog::open_with(&config.audit, config.limits.audit_refusals.clone())
            .map_err(|error| CaServerError::Audit {
                path: match &config.audit {
                    AuditSink::File(path) => path.clone(),
                    AuditSink::Stdout => "stdout".into(),
                },
                error,
            })?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| CaServerError::Bind { addr, error })
        };
        let api = bind(config.listen).await?;
        let admin = bind(config.admin_listen).await?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let limits = config.limits.clone();
        let state = Arc::new(State {
            dir,
            server: config.server.clone(),
            provider,
            material: ArcSwap::from_pointee(material),
            tokens: JoinTokens::new(&config.tokens_dir),
            service_accounts,
            jwks_fetcher,
            jwks_wanted: tokio::sync::Notify::new(),
            audit,
            metrics: metrics::Metrics::new(),
            rate: RateLimiter::new(limits.rate_per_second, limits.burst)
                .with_site_multiple(limits.site_rate_multiple),
            slots: SigningSlots::new(limits.max_signing, limits.signing_wait),
            leaf_ttl: config.leaf_ttl,
            body_timeout: limits.body_timeout,
            refusals_per_connection: limits.refusals_per_connection.max(1),
            log_budget: LogBudgets::new(),
        });
        state.publish_gauges(&state.material.load());
        Ok(BoundCaServer {
            state,
            api,
            admin,
            metrics,
            limits,
            reload_interval: config.reload_interval,
        })
    }
}

impl BoundCaServer {
    /// The HTTPS service's address and the admin server's.
    pub fn addresses(&self) -> (SocketAddr, SocketAddr) {
        (
            self.api
                .local_addr()
                .expect("a bound listener has an address"),
            self.admin
                .local_addr()
                .expect("a bound listener has an address"),
        )
    }

    /// The read-only metrics listener's address, if one was asked for.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    /// Serves until `shutdown` completes, then stops accepting and gives open requests a moment.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let stop = CancellationToken::new();
        let admin = tokio::spawn(palisade_admin::serve(
            self.admin,
            Arc::new(Admin(self.state.clone())),
            stop.clone(),
        ));
        let metrics = self.metrics.map(|listener| {
            tokio::spawn(palisade_admin::serve_read_only(
                listener,
                Arc::new(Admin(self.state.clone())),
                stop.clone(),
            ))
        });
        let reloader = {
            let state = self.state.clone();
            let stop = stop.clone();
            let interval = self.reload_interval;
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(interval) => {}
                    }
                    let state = state.clone();
                    // File reads and a signature: off the request threads.
                    let _ = tokio::task::spawn_blocking(move || state.reload()).await;
                }
            })
        };
        // The JWKS from a URL: every REFRESH, and when a token names an unknown key, never twice
        // within MIN_REFETCH.
        let jwks = {
            let state = self.state.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let Some(fetcher) = &state.jwks_fetcher else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(service_account::REFRESH) => {}
                        _ = state.jwks_wanted.notified() => {}
                    }
                    let fetched = fetcher.fetch().await;
                    state.jwks_fetched(fetched);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(service_account::MIN_REFETCH) => {}
                    }
                }
            })
        };
        // Refusals left out of the audit trail are summarized when their window ends, also when
        // the flood has stopped.
        let summaries = {
            let state = self.state.clone();
            let stop = stop.clone();
            let every = self
                .limits
                .audit_refusals
                .window
                .max(Duration::from_millis(100));
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(every) => {}
                    }
                    if let Err(error) = state.audit.summarize(false) {
                        state.metrics.audit_write_failures.inc();
                        tracing::error!(%error, "cannot write the audit trail's summary of left-out refusals");
                    }
                }
            })
        };
        let connections = tokio_util::task::TaskTracker::new();
        let accept = accept_loop(
            self.api,
            self.state.clone(),
            self.limits,
            stop.clone(),
            connections.clone(),
        );
        tokio::select! {
            _ = shutdown => {}
            _ = accept => {}
        }
        stop.cancel();
        connections.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
        let _ = admin.await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        let _ = reloader.await;
        let _ = jwks.await;
        let _ = summaries.await;
        if let Err(error) = self.state.audit.summarize(true) {
            tracing::error!(%error, "cannot write the audit trail's summary of left-out refusals");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    limits: Limits,
    stop: CancellationToken,
    connections: tokio_util::task::TaskTracker,
) {
    let admission = Arc::new(connections::Admission::new(
        limits.max_connections,
        limits.reserved_connections,
        limits.max_connections_per_client,
        limits.reserved_connections_per_id,
        state.metrics.connections_in("general"),
        state.metrics.connections_in("authenticated"),
    ));
    loop {
        let (stream, client) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match admission.admit(client.ip()) {
            Ok((slot, shed)) => {
                for crowding in shed {
                    state
                        .metrics
                        .connection(&state.metrics.connections_shed, crowding.label());
                    log_crowding(&state, client, crowding, "closed an idle connection");
                }
                slot
            }
            Err(crowding) => {
                state
                    .metrics
                    .connection(&state.metrics.connections_refused, crowding.label());
                log_crowding(&state, client, crowding, "refused a connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let limits = limits.clone();
        let stop = stop.clone();
        connections.spawn(serve_connection(state, limits, stop, stream, client, slot));
    }
}

fn log_crowding(state: &State, client: SocketAddr, crowding: connections::Crowding, what: &str) {
    if let Some(left_out) = state.log_budget.connections.take() {
        tracing::warn!(
            client = %limits::client_label(limits::client_key(client.ip())),
            reason = crowding.label(),
            left_out,
            "{what}: {crowding} (left_out: lines like this one not logged since the last)"
        );
    }
}

/// One connection: the handshake, then HTTP/1.1 with the timeouts of its class, until it ends,
/// the service stops, or it is shed to make room.
async fn serve_connection(
    state: Arc<State>,
    limits: Limits,
    stop: CancellationToken,
    stream: tokio::net::TcpStream,
    client: SocketAddr,
    slot: connections::Slot,
) {
    let shed = slot.shed().clone();
    let acceptor = tokio_rustls::TlsAcceptor::from(state.material.load().tls.clone());
    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream));
    let tls = tokio::select! {
        _ = shed.cancelled() => return,
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%client, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%client, "TLS handshake timed out");
                state
                    .metrics
                    .connection(&state.metrics.connections_closed, "handshake_timeout");
                return;
            }
        },
    };
    let chain: handler::PeerChain = Arc::new(handler::Peer::new(
        tls.get_ref()
            .1
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
    ));
    // A client certificate that verifies to the bundle now (the verification is kept for the
    // connection's renewals) moves the connection into the reserved class, if its client and
    // its SPIFFE ID have room there.
    let verified = if chain.presented() {
        chain.verify(&state.material.load_full()).ok()
    } else {
        None
    };
    let authenticated = match verified {
        Some(id) => match slot.authenticate(&id.to_string()) {
            Ok(shed) => {
                for crowding in shed {
                    state
                        .metrics
                        .connection(&state.metrics.connections_shed, crowding.label());
                    log_crowding(
                        &state,
                        client,
                        crowding,
                        "closed an idle reserved connection",
                    );
                }
                true
            }
            Err(crowding) => {
                tracing::debug!(%client, reason = crowding.label(), "an authenticated connection stays in the general class");
                false
            }
        },
        None => false,
    };
    let header_timeout = if authenticated {
        limits.header_timeout
    } else {
        limits.request_timeout
    };
    let slot = Arc::new(slot);
    let conn = Arc::new(handler::Conn::new(
        chain,
        slot.clone(),
        authenticated,
        (!authenticated).then_some(limits.request_timeout),
    ));
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req| {
            let state = state.clone();
            let conn = conn.clone();
            async move {
                let Some(_busy) = conn.start() else {
                    // Shed a moment ago: nothing is started, the connection is closing.
                    return Ok::<_, std::convert::Infallible>(handler::refusal_response(
                        &Refusal::Busy,
                    ));
                };
                let response = handler::handle(state, req, client, conn.clone()).await;
                conn.ready_again();
                Ok(response)
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
            Ok(())
        }
        _ = shed.cancelled() => {
            // Idle, or reading a body (never shed while the service works on a request): closes
            // at once; bounded all the same.
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), connection).await;
            Ok(())
        }
    };
    if let Err(error) = ended {
        if error.is_timeout() {
            state
                .metrics
                .connection(&state.metrics.connections_closed, "request_timeout");
        }
    }
    drop(slot);
}
