//! The HTTPS server: TLS with a certificate read again when its files change, one path, bounds
//! on everything a client sends before it is answered.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use palisade_inject::Settings;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::review::{review_value, ReviewError};

/// The largest AdmissionReview read: the API server's own request limit is 3 MiB, and a review
/// carries the object (and, on update, the old one).
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// How long a request may take to arrive in full, and its TLS handshake: the API server's default
/// webhook timeout is 10 s.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 256;
/// Reviews read and answered at once; others wait (within [`REQUEST_TIMEOUT`]) before their body
/// is read. Each may hold its body, its JSON and inject's output, about 9 MiB at the largest, so
/// memory stays near 10 MiB + 8 x 9 MiB however many connections are open (docs/INSTALL.md).
pub const MAX_REVIEWS_IN_FLIGHT: usize = 8;
/// How often the certificate's files are looked at for a change (cert-manager and the kubelet
/// replace them in place).
const RELOAD_CHECK: Duration = Duration::from_secs(10);
/// How long an idle kept-alive connection stays open.
const IDLE: Duration = Duration::from_secs(90);

/// Where the webhook listens and what it injects.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The HTTPS address the API server calls.
    pub listen: SocketAddr,
    /// PEM: the serving certificate (with its chain), for the Service's DNS name.
    pub cert: PathBuf,
    /// PEM: its key.
    pub key: PathBuf,
    /// The read-only listener (/live, /ready, /metrics), if any.
    pub metrics_listen: Option<SocketAddr>,
    /// What inject adds, as `palisade inject` takes it.
    pub settings: Settings,
}

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// An address could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// The certificate or key cannot be used.
    #[error("{path}: {message}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Entry point: [`Webhook::bind`], then [`BoundWebhook::run`].
pub struct Webhook;

/// A webhook with its listeners bound and its certificate loaded.
pub struct BoundWebhook {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: Arc<State>,
}

struct State {
    settings: Settings,
    reviews: Semaphore,
    tls: Arc<rustls::ServerConfig>,
    metrics: Metrics,
}

impl Webhook {
    /// Loads the certificate and binds the listeners: every startup error is reported here.
    pub async fn bind(config: WebhookConfig) -> Result<BoundWebhook, WebhookError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let resolver = Arc::new(ReloadingCert::load(
            config.cert.clone(),
            config.key.clone(),
            provider.clone(),
            RELOAD_CHECK,
        )?);
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| WebhookError::Certificate {
                path: config.cert.clone(),
                message: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|error| WebhookError::Bind { addr, error })
        };
        let listener = bind(config.listen).await?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        Ok(BoundWebhook {
            listener,
            metrics_listener,
            state: Arc::new(State {
                settings: config.settings,
                reviews: Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
                tls: Arc::new(tls),
                metrics: Metrics::new(),
            }),
        })
    }
}

impl BoundWebhook {
    /// The HTTPS address, and the read-only listener's.
    pub fn addresses(&self) -> (SocketAddr, Option<SocketAddr>) {
        (
            self.listener
                .local_addr()
                .expect("a bound listener has an address"),
            self.metrics_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok()),
        )
    }

    /// Serves until `shutdown` completes; open requests get a moment to finish.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let stop = CancellationToken::new();
        let metrics = self.metrics_listener.map(|listener| {
            tokio::spawn(palisade_admin::serve_read_only(
                listener,
                Arc::new(Admin(self.state.clone())),
                stop.clone(),
            ))
        });
        let connections = tokio_util::task::TaskTracker::new();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.state.tls.clone());
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let accept = async {
            loop {
                let (tcp, remote) = match self.listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    self.state.metrics.connections_refused.inc();
                    continue;
                };
                let state = self.state.clone();
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let tls =
                        match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(error)) => {
                                state.metrics.handshake_failures.inc();
                                tracing::debug!(%remote, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                state.metrics.handshake_failures.inc();
                                return;
                            }
                        };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(req, remote, &state).await) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(REQUEST_TIMEOUT)
                        .serve_connection(TokioIo::new(tls), service);
                    let _ = tokio::time::timeout(IDLE, connection).await;
                    drop(slot);
                });
            }
        };
        tokio::select! {
            _ = shutdown => {}
            _ = accept => {}
        }
        stop.cancel();
        connections.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    remote: SocketAddr,
    state: &State,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/inject" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: the webhook is POST /inject\n",
        );
    }
    if req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: POST /inject\n",
        );
    }
    // A turn first, then the body: only MAX_REVIEWS_IN_FLIGHT bodies are held at once. The turn
    // is kept until the answer is made.
    let read = async {
        let turn = state.reviews.acquire().await.ok();
        let body = Limited::new(req.into_body(), MAX_BODY).collect().await;
        (turn, body)
    };
    let (_turn, body) = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Ok((turn, body)) => (turn, Ok(body)),
        Err(elapsed) => (None, Err(elapsed)),
    };
    let body = match body {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(error)) => {
            state.metrics.reviewed("bad_request");
            let too_large = error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the review is larger than 3 MiB\n",
                )
            } else {
                text(
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read\n",
                )
            };
        }
        Err(_) => {
            state.metrics.reviewed("bad_request");
            return text(
                StatusCode::REQUEST_TIMEOUT,
                "the review did not arrive within 10 s\n",
            );
        }
    };
    // Parsed once: for the answer and for the log line.
    let parsed = serde_json::from_slice::<serde_json::Value>(&body)
        .map_err(|e| ReviewError::NotJson(e.to_string()));
    match parsed.and_then(|request| review_value(&request, &state.settings).map(|r| (request, r))) {
        Ok((request, (answer, outcome))) => {
            state.metrics.reviewed(outcome.as_str());
            let request = &request["request"];
            let object = &request["object"]["metadata"];
            // Peer-supplied strings are logged escaped (Debug).
            tracing::info!(
                outcome = outcome.as_str(),
                uid = ?request["uid"].as_str().unwrap_or(""),
                kind = ?request["kind"]["kind"].as_str().unwrap_or(""),
                namespace = ?request["namespace"].as_str().unwrap_or(""),
                name = ?object["name"].as_str().or(object["generateName"].as_str()).unwrap_or(""),
                "admission review answered"
            );
            Response::builder()
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(answer.to_string())))
                .expect("static response")
        }
        Err(error) => {
            state.metrics.reviewed("bad_request");
            tracing::warn!(%remote, %error, "not an admission review");
            text(StatusCode::BAD_REQUEST, &format!("{error}\n"))
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("static response")
}

struct Admin(Arc<State>);

impl palisade_admin::AdminService for Admin {
    fn ready(&self) -> Result<(), palisade_admin::NotReady> {
        Ok(())
    }

    fn metrics(&self) -> String {
        self.0.metrics.encode()
    }
}

/// The serving certificate, read again when its files change (looked at every
/// [`RELOAD_CHECK`] at most, on a handshake); a change that does not load keeps the old one.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    check_every: Duration,
    current: RwLock<Arc<CertifiedKey>>,
    checked: Mutex<(Instant, Option<SystemTime>)>,
}

impl ReloadingCert {
    fn load(
        cert: PathBuf,
        key: PathBuf,
        provider: Arc<rustls::crypto::CryptoProvider>,
        check_every: Duration,
    ) -> Result<ReloadingCert, WebhookError> {
        let loaded = certified_key(&cert, &key, &provider)?;
        let stamp = modified(&cert, &key);
        Ok(ReloadingCert {
            cert,
            key,
            provider,
            check_every,
            current: RwLock::new(Arc::new(loaded)),
            checked: Mutex::new((Instant::now(), stamp)),
        })
    }

    fn reload_if_changed(&self) {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.0.elapsed() < self.check_every {
            return;
        }
        checked.0 = Instant::now();
        let stamp = modified(&self.cert, &self.key);
        if stamp == checked.1 {
            return;
        }
        match certified_key(&self.cert, &self.key, &self.provider) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
                checked.1 = stamp;
                tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(%error, "the changed serving certificate does not load; keeping the old one")
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.reload_if_changed();
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// The later of the two files' modification times (a kubelet-mounted Secret changes both).
fn modified(cert: &PathBuf, key: &PathBuf) -> Option<SystemTime> {
    let time = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    time(cert).max(time(key))
}

fn certified_key(
    cert: &PathBuf,
    key: &PathBuf,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, WebhookError> {
    let bad = |path: &PathBuf, message: String| WebhookError::Certificate {
        path: path.clone(),
        message,
    };
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| bad(path, e.to_string()));
    let chain = palisade_identity::pem::certificates_from_pem(&read(cert)?)
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in it".into()));
    }
    let der = palisade_identity::pem::private_key_from_pem(&read(key)?)
        .ok_or_else(|| bad(key, "no private key in it".into()))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| bad(key, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| bad(key, format!("not the certificate's key: {e}")))?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        // Replaced by rename, as the kubelet swaps a Secret's files.
        for (path, text) in [(&c, cert.pem()), (&k, key.serialize_pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        (c, k)
    }

    fn served(resolver: &ReloadingCert) -> Vec<u8> {
        resolver.reload_if_changed();
        let current = resolver.current.read().unwrap().clone();
        current.cert[0].to_vec()
    }

    /// A new certificate is served once its files change; a broken one is not, and the old one
    /// stays; a key that is not the certificate's is refused at start.
    #[test]
    fn the_serving_certificate_is_read_again_when_its_files_change() {
        let dir = tempfile::tempdir().unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert, key) = write_pair(dir.path(), "one.example");
        let resolver =
            ReloadingCert::load(cert.clone(), key.clone(), provider.clone(), Duration::ZERO)
                .unwrap();
        let first = served(&resolver);
        assert_eq!(
            served(&resolver),
            first,
            "unchanged files, same certificate"
        );
        // File times have a granularity: make sure the new ones differ.
        std::thread::sleep(Duration::from_millis(20));
        write_pair(dir.path(), "two.example");
        let second = served(&resolver);
        assert_ne!(second, first, "the new certificate is served");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&cert, "not a certificate").unwrap();
        assert_eq!(served(&resolver), second, "a broken file keeps the old one");
        // Another pair's key with this certificate: refused at start.
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = write_pair(other.path(), "three.example");
        write_pair(dir.path(), "four.example");
        let mismatch = ReloadingCert::load(cert, other_key, provider, Duration::ZERO);
        assert!(matches!(mismatch, Err(WebhookError::Certificate { .. })));
    }
}
