//! The admin server, on loopback only: `/live`, `/ready` (200 only while a valid, unexpired
//! certificate is loaded and shutdown has not begun), `/metrics` (Prometheus text) and
//! `POST /shutdown` (from loopback only), which starts the same drain as SIGTERM.

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

use crate::identity::{holds_valid_certificate, TlsStore};
use crate::metrics::Metrics;

pub(crate) struct AdminState {
    pub metrics: Arc<Metrics>,
    pub store: TlsStore,
    /// Cancelled when shutdown begins, by a signal or by POST /shutdown.
    pub shutdown: CancellationToken,
}

pub(crate) async fn serve(listener: TcpListener, state: Arc<AdminState>, stop: CancellationToken) {
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
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(req, remote, &state)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(req: Request<Incoming>, remote: SocketAddr, state: &AdminState) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET | &Method::HEAD, "/ready") => {
            if state.shutdown.is_cancelled() {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: shutting down\n",
                )
            } else if holds_valid_certificate(&state.store) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: no valid certificate loaded\n",
                )
            }
        }
        (&Method::GET, "/metrics") => Response::builder()
            .header(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Full::new(Bytes::from(state.metrics.encode())))
            .expect("static response"),
        (&Method::POST, "/shutdown") => {
            if !remote.ip().is_loopback() {
                return text(
                    StatusCode::FORBIDDEN,
                    "shutdown is accepted from loopback only\n",
                );
            }
            tracing::info!(%remote, "shutdown requested through the admin server");
            state.shutdown.cancel();
            text(
                StatusCode::ACCEPTED,
                "shutting down: draining connections\n",
            )
        }
        (_, "/live" | "/ready" | "/metrics" | "/shutdown") => {
            let allow = if req.uri().path() == "/shutdown" {
                "POST"
            } else {
                "GET, HEAD"
            };
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(ALLOW, allow.parse().expect("static header"));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /live, /ready, /metrics or POST /shutdown\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response")
}
