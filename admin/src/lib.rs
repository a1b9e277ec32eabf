//! The admin server every Palisade service runs on loopback: `GET /live`, `GET /ready`,
//! `GET /metrics` (OpenMetrics or the Prometheus text format, as the `Accept` header asks:
//! [`exposition`]) and, for services that support it, `POST /shutdown` (accepted
//! from loopback only). A service describes itself with [`AdminService`]; [`serve`] does the HTTP.
//! [`serve_read_only`] is the listener a pod or host exposes to Prometheus and the kubelet:
//! `/live`, `/ready`, `/metrics`, and the app probes a service runs for the kubelet
//! ([`AdminService::app_probe`], paths under `/app-health/`).
//!
//! Trust model: every local process can reach a loopback port, and so can a web page open in a
//! browser on the same host (by a plain cross-origin request, or by DNS rebinding a name of its own
//! to 127.0.0.1). So the server answers only requests whose `Host` is a loopback address or
//! `localhost` (rebinding sends the attacker's name) and that carry no `Origin` header (browsers
//! add one to cross-origin requests and to every POST; curl, Prometheus and kubelet probes do
//! not). Local processes are trusted: whoever can run code as a local user can signal the process
//! anyway. A connection must send its request head within [`HEADER_TIMEOUT`], is closed after one
//! response, and at most [`MAX_CONNECTIONS`] are open at once.

#![warn(missing_docs)]

pub mod exposition;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send its request line and headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections open at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest a connection may live, whatever it does (one request, then it is closed).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Connections one address may hold open at once on the read-only listener: anyone in the
/// cluster reaches it, and one client holding every slot would fail the kubelet's probes (and have
/// the app restarted). The kubelet runs a pod's probes from one address, at most three per
/// container at once.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 12;
/// Connections the read-only listener holds at once.
pub const MAX_READ_ONLY_CONNECTIONS: usize = 64;

/// Why a service is not ready: the sentence of the 503 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

impl From<&str> for NotReady {
    fn from(why: &str) -> Self {
        NotReady(why.to_owned())
    }
}

impl From<String> for NotReady {
    fn from(why: String) -> Self {
        NotReady(why)
    }
}

/// An app probe in progress: `Ok` with a line saying what passed (a 200), or why it failed (a
/// 503).
pub type AppProbeFuture = Pin<Box<dyn Future<Output = Result<String, NotReady>> + Send>>;

/// The path prefix of app probes on the read-only listener: `/app-health/<container>/<kind>`.
pub const APP_PROBE_PREFIX: &str = "/app-health/";

/// What a service tells its admin server.
pub trait AdminService: Send + Sync + 'static {
    /// `Ok` when ready; otherwise why not (the 503 body).
    fn ready(&self) -> Result<(), NotReady>;
    /// Lines said after `ready` in a 200: what is in force, but not all as configured (an object
    /// refused while the rest is enforced). None by default.
    fn ready_notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// The metrics in OpenMetrics text (what prometheus_client encodes); the server converts
    /// them when the scraper asks for the Prometheus text format.
    fn metrics(&self) -> String;
    /// Begins a graceful shutdown; `None` when the service does not offer POST /shutdown.
    fn shutdown(&self) -> Option<()> {
        None
    }
    /// A probe of the app that the service runs for the kubelet, named by its path (under
    /// [`APP_PROBE_PREFIX`]) on the read-only listener; `None` (a 404) when there is none of that
    /// name, as by default. `local` is the address the kubelet connected to (the pod's).
    fn app_probe(&self, path: &str, local: SocketAddr) -> Option<AppProbeFuture> {
        let _ = (path, local);
        None
    }
}

/// Serves the admin endpoints until `stop` is cancelled.
pub async fn serve(listener: TcpListener, service: Arc<dyn AdminService>, stop: CancellationToken) {
    serve_with(listener, service, stop, HEADER_TIMEOUT, MAX_CONNECTIONS).await
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// The admin server: loopback only, every endpoint, `POST /shutdown` included ([`decide`]).
    Admin,
    /// A read-only listener that may bind a pod's or host's address, for Prometheus and the
    /// kubelet: `/live`, `/ready`, `/metrics` and nothing else ([`decide_read_only`]).
    ReadOnly,
}

/// Serves `/live`, `/ready` and `/metrics` only, on any address, until `stop` is cancelled:
/// what a scraper in the cluster reaches, while the admin server (with `POST /shutdown`) stays on
/// loopback. The same limits as the admin server.
pub async fn serve_read_only(
    listener: TcpListener,
    service: Arc<dyn AdminService>,
    stop: CancellationToken,
) {
    serve_exposed(
        listener,
        service,
        stop,
        HEADER_TIMEOUT,
        MAX_READ_ONLY_CONNECTIONS,
        Exposure::ReadOnly,
    )
    .await
}

/// [`serve`] with other limits (tests use short ones).
pub async fn serve_with(
    listener: TcpListener,
    service: Arc<dyn AdminService>,
    stop: CancellationToken,
    header_timeout: Duration,
    max_connections: usize,
) {
    serve_exposed(
        listener,
        service,
        stop,
        header_timeout,
        max_connections,
        Exposure::Admin,
    )
    .await
}

async fn serve_exposed(
    listener: TcpListener,
    service: Arc<dyn AdminService>,
    stop: CancellationToken,
    header_timeout: Duration,
    max_connections: usize,
    exposure: Exposure,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    // Per client address, on the read-only listener (the admin server's clients are all local).
    let per_address: Arc<std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>> =
        Arc::default();
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "admin connection refused: too many open");
            continue;
        };
        let client = remote.ip().to_canonical();
        if exposure == Exposure::ReadOnly {
            let mut open = per_address.lock().unwrap_or_else(|e| e.into_inner());
            let held = open.entry(client).or_insert(0);
            if *held >= MAX_CONNECTIONS_PER_ADDRESS {
                tracing::debug!(%remote, "connection refused: too many open from this address");
                continue;
            }
            *held += 1;
        }
        let release = {
            let per_address = per_address.clone();
            move || {
                if exposure == Exposure::ReadOnly {
                    let mut open = per_address.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(held) = open.get_mut(&client) {
                        *held -= 1;
                        if *held == 0 {
                            open.remove(&client);
                        }
                    }
                }
            }
        };
        let service = service.clone();
        // The address the client connected to: for the read-only listener, the pod's.
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req| {
                let service = service.clone();
                async move {
                    Ok::<_, Infallible>(route(req, remote, local, service.as_ref(), exposure).await)
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), handler);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            release();
            drop(slot);
        });
    }
}

/// What a request's head asks of the admin server: all [`decide`] reads, taken from the request
/// by the server, so that the decision is a pure function that tests and the fuzz target
/// (`fuzz/fuzz_targets/admin_request.rs`) can call without a connection.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method, as sent (`GET`; methods are case-sensitive).
    pub method: &'a str,
    /// The URI's path, without its query.
    pub path: &'a str,
    /// The first `Host` header's bytes, if any.
    pub host: Option<&'a [u8]>,
    /// Whether an `Origin` header was sent.
    pub has_origin: bool,
    /// The address the connection came from.
    pub remote: IpAddr,
}

/// What the admin server answers, decided before anything of the service is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 403 with this sentence: what a web page could have sent (see the crate's trust model), or
    /// a shutdown from a non-loopback address.
    Forbidden(&'static str),
    /// `GET`/`HEAD /live`: 200.
    Live,
    /// `GET`/`HEAD /ready`: 200 or 503, as the service says.
    Ready,
    /// `GET /metrics`: the service's metrics.
    Metrics,
    /// `GET`/`HEAD` of a path under [`APP_PROBE_PREFIX`], on the read-only listener: the app
    /// probe of that name, if the service has one (else 404).
    AppProbe,
    /// `POST /shutdown` from loopback: 202, or 404 when the service has no shutdown.
    Shutdown,
    /// 405 on a known path, with this `Allow` header.
    MethodNotAllowed(&'static str),
    /// 404: no such path.
    NotFound,
}

/// The admin server's routing and its checks of `Host`, `Origin` and the client's address, in
/// the order the server applies them: refusals of what a browser could send come first.
pub fn decide(head: &RequestHead<'_>) -> Decision {
    if let Some(why) = from_a_browser(head) {
        return Decision::Forbidden(why);
    }
    match (head.method, head.path) {
        ("GET" | "HEAD", "/live") => Decision::Live,
        ("GET" | "HEAD", "/ready") => Decision::Ready,
        ("GET", "/metrics") => Decision::Metrics,
        ("POST", "/shutdown") if !head.remote.is_loopback() => {
            Decision::Forbidden("shutdown is accepted from loopback only\n")
        }
        ("POST", "/shutdown") => Decision::Shutdown,
        (_, "/shutdown") => Decision::MethodNotAllowed("POST"),
        (_, "/live" | "/ready" | "/metrics") => Decision::MethodNotAllowed("GET, HEAD"),
        _ => Decision::NotFound,
    }
}

/// The read-only listener's routing: `/live`, `/ready`, `/metrics` and the app probes (paths
/// under [`APP_PROBE_PREFIX`]), with any `Host` (it listens on an address a scraper or the
/// kubelet uses), still no `Origin` (what it serves is not for web pages); no `/shutdown` at
/// all.
pub fn decide_read_only(head: &RequestHead<'_>) -> Decision {
    if head.has_origin {
        return Decision::Forbidden(
            "requests with an Origin header (from web pages) are refused\n",
        );
    }
    match (head.method, head.path) {
        ("GET" | "HEAD", "/live") => Decision::Live,
        ("GET" | "HEAD", "/ready") => Decision::Ready,
        ("GET", "/metrics") => Decision::Metrics,
        (_, "/live" | "/ready" | "/metrics") => Decision::MethodNotAllowed("GET, HEAD"),
        ("GET" | "HEAD", path) if path.starts_with(APP_PROBE_PREFIX) => Decision::AppProbe,
        (_, path) if path.starts_with(APP_PROBE_PREFIX) => Decision::MethodNotAllowed("GET, HEAD"),
        _ => Decision::NotFound,
    }
}

/// Whether a request may have come from a web page (see the crate's trust model): a `Host` that
/// is not a loopback address or `localhost`, or any `Origin`.
fn from_a_browser(head: &RequestHead<'_>) -> Option<&'static str> {
    if head.has_origin {
        return Some("requests with an Origin header (from web pages) are refused\n");
    }
    // A Host that is not visible ASCII (as hyper's `to_str` reads it) names no loopback address.
    let host = head.host?;
    let host = if host.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        std::str::from_utf8(host).unwrap_or("")
    } else {
        ""
    };
    // host[:port], [v6][:port]
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(h, _)| h),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (!loopback).then_some("the Host header must be a loopback address or localhost\n")
}

async fn route(
    req: Request<Incoming>,
    remote: SocketAddr,
    local: SocketAddr,
    service: &dyn AdminService,
    exposure: Exposure,
) -> Response<Full<Bytes>> {
    let head = RequestHead {
        method: req.method().as_str(),
        path: req.uri().path(),
        host: req.headers().get(HOST).map(|v| v.as_bytes()),
        has_origin: req.headers().contains_key(ORIGIN),
        remote: remote.ip(),
    };
    let decision = match exposure {
        Exposure::Admin => decide(&head),
        Exposure::ReadOnly => decide_read_only(&head),
    };
    match decision {
        Decision::Forbidden(why) => text(StatusCode::FORBIDDEN, why.into()),
        Decision::Live => text(StatusCode::OK, "live\n".into()),
        Decision::Ready => match service.ready() {
            Ok(()) => {
                let notes: String = service
                    .ready_notes()
                    .iter()
                    .map(|note| format!("note: {}\n", note.escape_debug()))
                    .collect();
                text(StatusCode::OK, format!("ready\n{notes}"))
            }
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        Decision::Metrics => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = exposition::negotiate(accept);
            Response::builder()
                .header(CONTENT_TYPE, format.content_type())
                .body(Full::new(Bytes::from(exposition::render(
                    &service.metrics(),
                    format,
                ))))
                .expect("static response")
        }
        Decision::AppProbe => match service.app_probe(req.uri().path(), local) {
            Some(probe) => match probe.await {
                Ok(passed) => text(StatusCode::OK, format!("{passed}\n")),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            None => text(
                StatusCode::NOT_FOUND,
                "not found: no such app probe\n".into(),
            ),
        },
        Decision::Shutdown => match service.shutdown() {
            Some(()) => {
                tracing::info!(%remote, "shutdown requested through the admin server");
                text(
                    StatusCode::ACCEPTED,
                    "shutting down: draining connections\n".into(),
                )
            }
            None => text(
                StatusCode::NOT_FOUND,
                "this service has no /shutdown\n".into(),
            ),
        },
        Decision::MethodNotAllowed(allow) => {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
            );
            response
                .headers_mut()
                .insert(ALLOW, allow.parse().expect("static header"));
            response
        }
        Decision::NotFound => text(
            StatusCode::NOT_FOUND,
            match exposure {
                Exposure::Admin => "not found: try /live, /ready, /metrics or POST /shutdown\n",
                Exposure::ReadOnly => {
                    "not found: this listener serves /live, /ready, /metrics and /app-health/...\n"
                }
            }
            .into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("static response")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    struct Fake;
    impl AdminService for Fake {
        fn ready(&self) -> Result<(), NotReady> {
            Ok(())
        }
        fn metrics(&self) -> String {
            String::new()
        }
        fn shutdown(&self) -> Option<()> {
            Some(())
        }
        fn app_probe(&self, path: &str, local: SocketAddr) -> Option<AppProbeFuture> {
            let outcome = match path {
                "/app-health/web/readyz" => Ok(format!("passed (asked at {local})")),
                "/app-health/web/livez" => Err(NotReady("the app answered 500".into())),
                _ => return None,
            };
            Some(Box::pin(async move { outcome }))
        }
    }

    /// Starts a server on a runtime of its own; returns its address.
    fn start(header_timeout: Duration, max_connections: usize) -> SocketAddr {
        start_exposed(header_timeout, max_connections, Exposure::Admin)
    }

    fn start_exposed(
        header_timeout: Duration,
        max_connections: usize,
        exposure: Exposure,
    ) -> SocketAddr {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                serve_exposed(
                    listener,
                    Arc::new(Fake),
                    CancellationToken::new(),
                    header_timeout,
                    max_connections,
                    exposure,
                )
                .await;
            });
        });
        rx.recv().unwrap()
    }

    fn request(addr: SocketAddr, head: &str) -> String {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// App probes: only on the read-only listener, 200 or 503 as the service's probe says, 404
    /// for a probe it does not have; the admin server does not serve them.
    #[test]
    fn app_probes_are_served_on_the_read_only_listener_only() {
        let read_only = start_exposed(HEADER_TIMEOUT, 8, Exposure::ReadOnly);
        let get = |addr, path: &str| {
            request(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: 10.1.2.3:15020\r\n\r\n"),
            )
        };
        let passed = get(read_only, "/app-health/web/readyz");
        assert!(passed.starts_with("HTTP/1.1 200"), "{passed}");
        assert!(
            passed.contains(&format!("asked at {read_only}")),
            "{passed}"
        );
        let failed = get(read_only, "/app-health/web/livez");
        assert!(failed.starts_with("HTTP/1.1 503"), "{failed}");
        assert!(failed.ends_with("the app answered 500\n"), "{failed}");
        let unknown = get(read_only, "/app-health/db/readyz");
        assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
        let post = request(
            read_only,
            "POST /app-health/web/readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let admin = start(HEADER_TIMEOUT, 8);
        let on_admin = request(
            admin,
            "GET /app-health/web/readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        );
        assert!(on_admin.starts_with("HTTP/1.1 404"), "{on_admin}");
    }

    /// One address cannot hold every slot of the read-only listener (the kubelet's probes must
    /// get through whatever one pod of the cluster does): its connections beyond the cap are
    /// closed at once, and a slot it gives back is usable again.
    #[test]
    fn one_address_holds_at_most_its_share_of_the_read_only_listener() {
        let addr = start_exposed(
            HEADER_TIMEOUT,
            MAX_READ_ONLY_CONNECTIONS,
            Exposure::ReadOnly,
        );
        let mut held: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // Accepted in order: the last of them is counted once the server has it.
        std::thread::sleep(Duration::from_millis(300));
        let refused = request(addr, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            refused, "",
            "a connection beyond the address's share was served"
        );
        held.pop();
        std::thread::sleep(Duration::from_millis(300));
        let served = request(addr, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
        drop(held);
    }

    /// The read-only listener answers a scraper whatever Host it names (it may listen on the
    /// pod's address), never shuts down, and still refuses what a web page sends.
    #[test]
    fn the_read_only_listener_serves_probes_and_metrics_to_any_host_and_nothing_else() {
        let addr = start_exposed(HEADER_TIMEOUT, 8, Exposure::ReadOnly);
        for path in ["/live", "/ready", "/metrics"] {
            let answer = request(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: 10.1.2.3:15090\r\n\r\n"),
            );
            assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        }
        let answer = request(
            addr,
            "POST /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = request(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: 10.1.2.3\r\nOrigin: http://evil.example\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        // The admin server, by contrast, refuses that Host.
        let admin = start(HEADER_TIMEOUT, 8);
        let answer = request(
            admin,
            "GET /metrics HTTP/1.1\r\nHost: 10.1.2.3:15090\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    }

    /// Review finding 10: a request head that never ends is cut off, not kept open.
    #[test]
    fn a_partial_request_is_closed_after_the_header_timeout() {
        let addr = start(Duration::from_millis(300), 8);
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow:")
            .unwrap();
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        let read = s.read_to_end(&mut out);
        assert!(
            read.is_ok() && started.elapsed() < Duration::from_secs(4),
            "the connection stayed open: {read:?}"
        );
    }

    #[test]
    fn connections_beyond_the_cap_are_closed_at_once() {
        let addr = start(Duration::from_secs(30), 2);
        let _held: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let reply = request(addr, "GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        assert_eq!(reply, "", "a third connection must be closed unanswered");
        drop(_held);
        std::thread::sleep(Duration::from_millis(200));
        let reply = request(addr, "GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }

    #[test]
    fn requests_a_web_page_could_send_are_refused() {
        let addr = start(Duration::from_secs(5), 8);
        for head in [
            "POST /shutdown HTTP/1.1\r\nHost: 127.0.0.1:15000\r\nOrigin: http://evil.example\r\nContent-Length: 0\r\n\r\n",
            "POST /shutdown HTTP/1.1\r\nHost: rebind.evil.example:15000\r\nContent-Length: 0\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n",
        ] {
            let reply = request(addr, head);
            assert!(reply.starts_with("HTTP/1.1 403"), "{head:?}: {reply}");
        }
        for host in ["127.0.0.1:15000", "localhost", "[::1]:15000", "LOCALHOST:1"] {
            let reply = request(addr, &format!("GET /live HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert!(reply.starts_with("HTTP/1.1 200"), "{host}: {reply}");
        }
        let reply = request(
            addr,
            "POST /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(reply.starts_with("HTTP/1.1 202"), "{reply}");
    }
}
