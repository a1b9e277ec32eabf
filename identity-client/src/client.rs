//! Talking to `palisade ca serve`: one TLS 1.3 connection per call (through the one
//! [`HttpsClient`]), the server checked by its SPIFFE ID against the bundle we hold, our current
//! SVID presented when renewing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use palisade_identity::ca_api::{
    ErrorResponse, SignResponse, BEARER_SCHEME, BUNDLE_PATH, JOIN_TOKEN_SCHEME, RENEW_PATH,
    SIGN_PATH, SPIFFE_ID_HEADER,
};
use palisade_identity::{ExactId, SpiffeId, SpiffeServerVerifier, TrustBundleSet};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::https::{HttpsClient, HttpsError, Options};

/// Longest answer read from the CA (a chain and a bundle are a few KiB).
const MAX_RESPONSE_BYTES: u64 = 256 * 1024;

/// How a workload proves who it is when it has no certificate yet.
#[derive(Clone)]
pub enum Credential {
    /// A one-time join token from `palisade ca token`.
    JoinToken(String),
    /// A Kubernetes service-account token (a JWT).
    ServiceAccountToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        match self {
            Credential::JoinToken(_) => f.write_str("JoinToken(..)"),
            Credential::ServiceAccountToken(_) => f.write_str("ServiceAccountToken(..)"),
        }
    }
}

/// Why a call to the CA failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA's URL is not `https://host[:port]`.
    #[error("the CA URL must be https://host[:port], not {0:?}")]
    BadUrl(String),
    /// No TCP connection: the host name did not resolve, or no address of it accepted one.
    #[error("cannot connect to the CA at {authority}: {error}")]
    Connect {
        /// host:port.
        authority: String,
        /// The reason (resolution or TCP, with the operating system's words).
        error: String,
    },
    /// The TLS handshake failed for another reason than the server's identity.
    #[error("TLS with the CA failed: {0}")]
    Tls(String),
    /// The server's certificate does not verify to our bundle, or is not the CA's ID: a wrong
    /// `--ca-id` or bundle, or a root rotation this client missed.
    #[error("the server is not the CA we trust: {0}")]
    ServerIdentity(String),
    /// The CA did not answer in time.
    #[error("the CA did not answer within {0:?}")]
    Timeout(Duration),
    /// HTTP failed.
    #[error("HTTP with the CA failed: {0}")]
    Http(String),
    /// The CA refused, with its code and sentence.
    #[error("the CA refused ({code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The stable code.
        code: String,
        /// The CA's sentence.
        message: String,
    },
    /// The CA's answer is not what the protocol says.
    #[error("the CA's answer is not usable: {0}")]
    BadResponse(String),
    /// No valid certificate to renew with, and no credential to start again.
    #[error("no valid certificate to renew with and no credential to bootstrap with")]
    NoCredential,
    /// The credential file cannot be read.
    #[error("cannot read the credential {path}: {error}")]
    Credential {
        /// The file.
        path: std::path::PathBuf,
        /// The reason.
        error: std::io::Error,
    },
    /// Our own key or certificate cannot be used for TLS.
    #[error("our certificate or key cannot be used: {0}")]
    OwnCredentials(rustls::Error),
}

impl ClientError {
    /// Whether trying again later may succeed: the CA was unreachable, busy, or limiting us.
    /// A refusal of the credential or the certificate will not change by retrying.
    pub fn is_temporary(&self) -> bool {
        match self {
            ClientError::Refused { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            ClientError::BadUrl(_)
            | ClientError::OwnCredentials(_)
            | ClientError::NoCredential
            | ClientError::ServerIdentity(_) => false,
            _ => true,
        }
    }

    /// The CA's code, if it refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one CA service.
#[derive(Clone)]
pub struct CaClient {
    host: String,
    port: u16,
    server_id: SpiffeId,
    bundles: Arc<TrustBundleSet>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    timeout: Duration,
}

impl CaClient {
    /// A client of the CA at `url` (`https://host[:port]`, port 443 by default), which must
    /// present an SVID for `server_id` that verifies to `bundles`.
    pub fn new(
        url: &str,
        server_id: SpiffeId,
        bundles: Arc<TrustBundleSet>,
    ) -> Result<CaClient, ClientError> {
        let bad = || ClientError::BadUrl(url.chars().take(200).collect());
        let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
        let plain_path = matches!(uri.path(), "" | "/") && uri.query().is_none();
        let no_userinfo = uri.authority().is_some_and(|a| !a.as_str().contains('@'));
        if uri.scheme_str() != Some("https") || !plain_path || !no_userinfo {
            return Err(bad());
        }
        let host = uri.host().ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // The name only feeds SNI (the server is checked by its SPIFFE ID, not by this name), but
        // a host that is no server name cannot be connected to at all: a permanent error, now.
        ServerName::try_from(host.to_owned()).map_err(|_| bad())?;
        let port = uri.port_u16().unwrap_or(443);
        Ok(CaClient {
            host: host.to_owned(),
            port,
            server_id,
            bundles,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            timeout: Duration::from_secs(10),
        })
    }

    /// The same client trusting other roots (after a bundle update).
    pub fn with_bundles(&self, bundles: Arc<TrustBundleSet>) -> CaClient {
        CaClient {
            bundles,
            ..self.clone()
        }
    }

    /// The ID the CA must present.
    pub fn server_id(&self) -> &SpiffeId {
        &self.server_id
    }

    /// `POST /v1/sign`: a certificate for the key of `csr_der`, granted by `credential`; when
    /// `expect` is given, the CA refuses unless the credential is for that ID.
    pub async fn sign(
        &self,
        csr_der: &[u8],
        credential: &Credential,
        expect: Option<&SpiffeId>,
    ) -> Result<SignResponse, ClientError> {
        let authorization = match credential {
            Credential::JoinToken(t) => format!("{JOIN_TOKEN_SCHEME} {t}"),
            Credential::ServiceAccountToken(t) => format!("{BEARER_SCHEME} {}", t.trim()),
        };
        let config = self.tls_config(None)?;
        let body = self
            .call(
                config,
                Method::POST,
                SIGN_PATH,
                Some((csr_der, authorization)),
                expect,
            )
            .await?;
        parse_sign_response(&body)
    }

    /// `POST /v1/renew`: a certificate for the key of `csr_der`, for the identity of the
    /// certificate we present (`chain`, `key`).
    pub async fn renew(
        &self,
        csr_der: &[u8],
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<SignResponse, ClientError> {
        let config = self.tls_config(Some((chain, key)))?;
        let body = self
            .call(
                config,
                Method::POST,
                RENEW_PATH,
                Some((csr_der, String::new())),
                None,
            )
            .await?;
        parse_sign_response(&body)
    }

    /// `GET /v1/bundle`: the roots the CA serves now, PEM.
    pub async fn bundle(&self) -> Result<Vec<u8>, ClientError> {
        let config = self.tls_config(None)?;
        self.call(config, Method::GET, BUNDLE_PATH, None, None)
            .await
            .map(|b| b.to_vec())
    }

    fn tls_config(
        &self,
        client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<ClientConfig, ClientError> {
        let verifier = SpiffeServerVerifier::new(
            self.bundles.clone(),
            Arc::new(ExactId(self.server_id.clone())),
        );
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(ClientError::OwnCredentials)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match client_auth {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(ClientError::OwnCredentials)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    async fn call(
        &self,
        config: ClientConfig,
        method: Method,
        path: &str,
        body: Option<(&[u8], String)>,
        expect: Option<&SpiffeId>,
    ) -> Result<Bytes, ClientError> {
        let authority = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        // A connection per call, none kept: a renewer calls every few hours, and holding a
        // socket and its TLS state in between would cost the sidecar's idle memory for nothing.
        let client = HttpsClient::new(
            config,
            Options {
                deadline: self.timeout,
                max_body: MAX_RESPONSE_BYTES,
                keep_alive: false,
                plain_http: false,
            },
        );
        let mut request = Request::builder()
            .method(method)
            .uri(format!("https://{authority}{path}"));
        if let Some(id) = expect {
            request = request.header(SPIFFE_ID_HEADER, id.as_str());
        }
        let body = match body {
            Some((bytes, authorization)) => {
                if !authorization.is_empty() {
                    request = request.header(AUTHORIZATION, authorization);
                }
                request = request.header(CONTENT_TYPE, "application/pkcs10");
                Full::new(Bytes::copy_from_slice(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        let answer = client.send(request).await.map_err(|e| match e {
            HttpsError::Connect(error) => ClientError::Connect {
                authority: authority.clone(),
                error,
            },
            HttpsError::Tls { reason, rustls } => tls_error(reason, rustls),
            HttpsError::Http(reason) => ClientError::Http(reason),
            HttpsError::Timeout(_) => ClientError::Timeout(self.timeout),
            e @ HttpsError::TooLarge { .. } => ClientError::BadResponse(e.to_string()),
        })?;
        let (status, bytes) = (answer.status, answer.body);
        if status == StatusCode::OK {
            return Ok(bytes);
        }
        match serde_json::from_slice::<ErrorResponse>(&bytes) {
            Ok(refusal) => Err(ClientError::Refused {
                status: status.as_u16(),
                code: refusal.error.code,
                message: refusal.error.message,
            }),
            Err(_) => Err(ClientError::Refused {
                status: status.as_u16(),
                code: format!("http_{}", status.as_u16()),
                message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            }),
        }
    }
}

fn parse_sign_response(body: &[u8]) -> Result<SignResponse, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::BadResponse(e.to_string()))
}

/// Our verifier's reason, when the handshake failed over the server's certificate: a permanent
/// [`ClientError::ServerIdentity`]; any other TLS failure may pass.
fn tls_error(reason: String, tls: Option<rustls::Error>) -> ClientError {
    let identity = tls.and_then(|tls| match palisade_identity::peer_error(&tls) {
        Some(peer) => Some(peer.to_string()),
        None => matches!(tls, rustls::Error::InvalidCertificate(_)).then(|| tls.to_string()),
    });
    match identity {
        Some(reason) => ClientError::ServerIdentity(reason),
        None => ClientError::Tls(reason),
    }
}
