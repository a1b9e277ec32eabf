//! The one HTTPS client of Palisade's clients: the CA client ([`crate::CaClient`]), `policy
//! sync`'s URL source and the CA benchmark all send their requests through [`HttpsClient`].
//!
//! It is hyper-util's client over hyper-rustls' connector, with the caller's own rustls
//! [`ClientConfig`] (a SPIFFE verifier, or a pinned CA bundle; a client certificate when one is
//! presented): never the system's roots. On top of hyper-util it adds what every caller needs and
//! hyper-util leaves out: one deadline for the whole exchange (resolution, connect, TLS, request
//! and body), a bound on the body read, and errors that tell a connection failure from a TLS one,
//! with rustls' own error kept so that a server of the wrong identity can be told apart.
//!
//! Names are resolved by hyper-util's resolver, the system's (`getaddrinfo`, as
//! `tokio::net::lookup_host` does), and only the URL's port is connected to: the sandboxes'
//! connect rules allow that port alone.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::CONTENT_LENGTH;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_rustls::{DefaultServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;

/// How an [`HttpsClient`] behaves; the same for every request it sends.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The longest a request may take, from resolving the host to the last byte of the body.
    pub deadline: Duration,
    /// The largest body read; a longer one (declared or sent) is [`HttpsError::TooLarge`].
    pub max_body: u64,
    /// Keep a connection open for the next request to the same host. Off, each request has a
    /// connection of its own, closed after the answer: a client that calls every few hours (a
    /// renewer) holds no socket and no TLS buffers in between.
    pub keep_alive: bool,
    /// Accept `http://` URLs too (`policy sync --insecure-source`); otherwise only `https://`.
    pub plain_http: bool,
}

/// What a server answered, its body read whole (within [`Options::max_body`]).
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// No TCP connection: the name did not resolve, or no address accepted a connection.
    #[error("{0}")]
    Connect(String),
    /// The TLS handshake failed.
    #[error("{reason}")]
    Tls {
        /// The reason, rustls' or the socket's.
        reason: String,
        /// rustls' error, when rustls refused (for example the server's certificate).
        rustls: Option<rustls::Error>,
    },
    /// HTTP failed once connected (the server closed, or sent what is not HTTP/1.1).
    #[error("{0}")]
    Http(String),
    /// No complete answer within [`Options::deadline`].
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The body is longer than [`Options::max_body`]; none of it is kept.
    #[error("the body is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
}

/// An HTTPS (HTTP/1.1 over rustls) client with its TLS configuration and bounds.
#[derive(Clone)]
pub struct HttpsClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    options: Options,
}

impl HttpsClient {
    /// A client whose connections use `tls` as it is: its verifier, its client certificate and
    /// its ALPN list (leave it empty, or `http/1.1`: the client speaks HTTP/1.1 only).
    pub fn new(tls: ClientConfig, options: Options) -> HttpsClient {
        let mut http = HttpConnector::new();
        // The connector below checks the scheme; this one only connects.
        http.enforce_http(false);
        // Requests are small and answered at once: do not hold them back for Nagle.
        http.set_nodelay(true);
        // Not hyper-rustls' builder: it refuses a config with ALPN protocols (it would write its
        // own, and none for HTTP/1.1 alone), and the CA client offers `http/1.1` as it always has.
        // The server name is the URL's host, brackets off: it feeds SNI, and the name check of a
        // WebPKI verifier (a SPIFFE verifier checks the ID instead).
        let connector = HttpsConnector::new(
            http,
            tls,
            !options.plain_http,
            Arc::new(DefaultServerNameResolver::default()),
        );
        let mut builder = Client::builder(TokioExecutor::new());
        if options.keep_alive {
            // Idle connections are closed after hyper-util's default idle time, which needs a
            // timer to be kept.
            builder.pool_timer(TokioTimer::new());
        } else {
            builder.pool_max_idle_per_host(0);
        }
        HttpsClient {
            client: builder.build(connector),
            options,
        }
    }

    /// A client for `http://` URLs only (`policy sync --insecure-source`): it trusts no
    /// certificate, so an `https://` URL given to it fails its handshake.
    pub fn plain_http(options: Options) -> HttpsClient {
        let tls = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        HttpsClient::new(
            tls,
            Options {
                plain_http: true,
                ..options
            },
        )
    }

    /// Sends `request` (its URI absolute: `https://host[:port]/path`; hyper-util adds `Host`)
    /// and reads the answer whole, within the deadline and the body bound.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer, HttpsError> {
        let deadline = self.options.deadline;
        tokio::time::timeout(deadline, self.send_unbounded_in_time(request))
            .await
            .map_err(|_| HttpsError::Timeout(deadline))?
    }

    async fn send_unbounded_in_time(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<Answer, HttpsError> {
        let limit = self.options.max_body;
        let response = self.client.request(request).await.map_err(classify)?;
        let (parts, body) = response.into_parts();
        // A declared length over the limit is refused before a byte of the body is read.
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(HttpsError::TooLarge { limit });
        }
        let body = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    HttpsError::TooLarge { limit }
                } else {
                    HttpsError::Http(chain(&*e))
                }
            })?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// hyper-util's error, told apart by what failed. Its own text ("client error (Connect)") says
/// little: the sentence is made of its causes.
fn classify(error: hyper_util::client::legacy::Error) -> HttpsError {
    let Some(cause) = error.source() else {
        return HttpsError::Http(error.to_string());
    };
    if !error.is_connect() {
        return HttpsError::Http(chain(cause));
    }
    if let Some(tls) = find_rustls(cause) {
        return HttpsError::Tls {
            reason: tls.to_string(),
            rustls: Some(tls.clone()),
        };
    }
    // hyper-rustls hands on the TCP connector's own error as it is (hyper-util's `ConnectError`,
    // not exported: resolution or TCP), and wraps every failure of its own, the handshake's, in
    // an `io::Error`.
    if cause.is::<std::io::Error>() {
        HttpsError::Tls {
            reason: chain(cause),
            rustls: None,
        }
    } else {
        HttpsError::Connect(chain(cause))
    }
}

/// The rustls error within `error`, however deep: `io::Error` hides its inner error from
/// `source()`, so it is looked into with `get_ref()`.
fn find_rustls<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e rustls::Error> {
    if let Some(tls) = error.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    if let Some(inner) = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if let Some(tls) = find_rustls(inner) {
            return Some(tls);
        }
    }
    error.source().and_then(find_rustls)
}

/// `error` and its causes, "outer: inner", each said once.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn options(max_body: u64) -> Options {
        Options {
            deadline: Duration::from_secs(5),
            max_body,
            keep_alive: false,
            plain_http: true,
        }
    }

    /// A server that answers every connection with `answer`, whatever it was asked.
    async fn serve(answer: &'static [u8]) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = [0u8; 1024];
                    let _ = s.read(&mut head).await;
                    let _ = s.write_all(answer).await;
                });
            }
        });
        addr
    }

    fn get(addr: std::net::SocketAddr) -> Request<Full<Bytes>> {
        Request::get(format!("http://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn a_body_within_the_bound_is_read_and_one_past_it_is_refused() {
        let addr = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await;
        let answer = HttpsClient::plain_http(options(5))
            .send(get(addr))
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(&answer.body[..], b"hello");
        let refused = HttpsClient::plain_http(options(4))
            .send(get(addr))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, HttpsError::TooLarge { limit: 4 }),
            "{refused}"
        );

        let chunked =
            serve(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
                .await;
        let refused = HttpsClient::plain_http(options(4))
            .send(get(chunked))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, HttpsError::TooLarge { limit: 4 }),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error_and_silence_a_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let free = listener.local_addr().unwrap();
        drop(listener);
        let refused = HttpsClient::plain_http(options(10))
            .send(get(free))
            .await
            .unwrap_err();
        assert!(matches!(refused, HttpsError::Connect(_)), "{refused:?}");
        assert!(
            refused.to_string().contains("onnection refused"),
            "{refused}"
        );

        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let client = HttpsClient::plain_http(Options {
            deadline: Duration::from_millis(300),
            ..options(10)
        });
        let late = client.send(get(addr)).await.unwrap_err();
        assert!(matches!(late, HttpsError::Timeout(_)), "{late:?}");
        drop(silent);
    }

    #[tokio::test]
    async fn a_plain_server_behind_an_https_url_is_a_tls_error() {
        let addr = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let request = Request::get(format!("https://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let error = HttpsClient::plain_http(options(10))
            .send(request)
            .await
            .unwrap_err();
        assert!(matches!(error, HttpsError::Tls { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn an_http_url_is_refused_unless_plain_http_is_allowed() {
        let addr = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let client = HttpsClient::plain_http(options(10));
        let https_only = HttpsClient::new(
            no_roots(),
            Options {
                plain_http: false,
                ..options(10)
            },
        );
        assert!(client.send(get(addr)).await.is_ok());
        let error = https_only.send(get(addr)).await.unwrap_err();
        assert!(
            error.to_string().contains("unsupported scheme http"),
            "{error}"
        );
    }

    fn no_roots() -> ClientConfig {
        let mut config = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        // As the CA client's: the connector keeps it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}
