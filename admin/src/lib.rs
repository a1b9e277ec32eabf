//! The admin server every Palisade service runs on loopback: `GET /live`, `GET /ready`,
//! `GET /metrics` (Prometheus text) and, for services that support it, `POST /shutdown` (accepted
//! from loopback only). A service describes itself with [`AdminService`]; [`serve`] does the HTTP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a service tells its admin server.
pub trait AdminService: Send + Sync + 'static {
    /// `Ok` when ready; otherwise why not (the 503 body).
    fn ready(&self) -> Result<(), String>;
    /// The Prometheus text exposition.
    fn metrics(&self) -> String;
    /// Begins a graceful shutdown; `None` when the service does not offer POST /shutdown.
    fn shutdown(&self) -> Option<()> {
        None
    }
}

/// Serves the admin endpoints until `stop` is cancelled.
pub async fn serve(listener: TcpListener, service: Arc<dyn AdminService>, stop: CancellationToken) {
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
        let service = service.clone();
        tokio::spawn(async move {
            let handler = hyper::service::service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(route(req, remote, service.as_ref())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), handler)
                .await;
        });
    }
}

fn route(
    req: Request<Incoming>,
    remote: SocketAddr,
    service: &dyn AdminService,
) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/live") => text(StatusCode::OK, "live\n".into()),
        (&Method::GET | &Method::HEAD, "/ready") => match service.ready() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        (&Method::GET, "/metrics") => Response::builder()
            .header(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(service.metrics())))
            .expect("static response"),
        (&Method::POST, "/shutdown") => {
            if !remote.ip().is_loopback() {
                return text(
                    StatusCode::FORBIDDEN,
                    "shutdown is accepted from loopback only\n".into(),
                );
            }
            match service.shutdown() {
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
            }
        }
        (_, "/live" | "/ready" | "/metrics" | "/shutdown") => {
            let allow = if req.uri().path() == "/shutdown" {
                "POST"
            } else {
                "GET, HEAD"
            };
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
            );
            response
                .headers_mut()
                .insert(ALLOW, allow.parse().expect("static header"));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /live, /ready, /metrics or POST /shutdown\n".into(),
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
