//! The cluster's JWKS fetched from the API server instead of a file: `GET` the URL with the
//! pod's token, following an OpenID discovery document's `jwks_uri` once; only the roots given
//! are trusted; every answer is bounded in size ([`MAX_JWKS_LEN`]) and time ([`FETCH_DEADLINE`]).
//! The service fetches every [`REFRESH`], and at once when a token names a key it does not know
//! (a rotation), but never twice within [`MIN_REFETCH`]: a caller sending made-up key IDs cannot
//! make the CA hammer the API server.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ACCEPT, AUTHORIZATION, HOST};
use hyper::{Request, StatusCode};
use palisade_identity_client::https::{HttpsClient, Options};

use super::{JwksError, JwksUrl, MAX_JWKS_LEN};

/// How often the keys are fetched when nothing asks sooner (the API server keeps a rotated-out
/// key published for a while, so new tokens are met by a fresh set before old keys leave it).
pub const REFRESH: Duration = Duration::from_secs(300);
/// The least time between two fetches, whatever tokens arrive.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);
/// The longest one request may take.
const FETCH_DEADLINE: Duration = Duration::from_secs(10);
/// The largest token file read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// Fetches the JWKS of one [`JwksUrl`].
pub struct JwksFetcher {
    source: JwksUrl,
    client: HttpsClient,
}

impl JwksFetcher {
    /// A fetcher trusting the roots of `source` (read now; a fetcher is made at start).
    pub fn new(source: &JwksUrl) -> Result<JwksFetcher, JwksError> {
        let fail = |reason: String| JwksError::Fetch {
            url: source.url.clone(),
            reason,
        };
        if !source.url.starts_with("https://") {
            return Err(fail("only https:// URLs are fetched".into()));
        }
        let pem = read_small(&source.roots, MAX_JWKS_LEN).map_err(|e| {
            fail(format!(
                "cannot read the roots {}: {e}",
                source.roots.display()
            ))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let certs = palisade_identity::pem::certificates_from_pem(&pem)
            .map_err(|e| fail(format!("{}: {e}", source.roots.display())))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| fail(format!("{}: {e}", source.roots.display())))?;
        }
        if roots.is_empty() {
            return Err(fail(format!(
                "{} holds no certificate",
                source.roots.display()
            )));
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = HttpsClient::new(
            tls,
            Options {
                deadline: FETCH_DEADLINE,
                max_body: MAX_JWKS_LEN,
                keep_alive: false,
                plain_http: false,
            },
        );
        Ok(JwksFetcher {
            source: source.clone(),
            client,
        })
    }

    /// The JWKS document: the URL's answer, or, when that is a discovery document, its
    /// `jwks_uri`'s (https only, one step).
    pub async fn fetch(&self) -> Result<Vec<u8>, JwksError> {
        let first = self.get(&self.source.url).await?;
        let json: serde_json::Value =
            serde_json::from_slice(&first).map_err(|e| JwksError::Fetch {
                url: self.source.url.clone(),
                reason: format!("not JSON: {e}"),
            })?;
        if json.get("keys").is_some() {
            return Ok(first);
        }
        match json.get("jwks_uri").and_then(serde_json::Value::as_str) {
            Some(uri) if uri.starts_with("https://") => self.get(uri).await,
            _ => Err(JwksError::Fetch {
                url: self.source.url.clone(),
                reason: "neither a JWKS (keys) nor a discovery document with an https jwks_uri"
                    .into(),
            }),
        }
    }

    async fn get(&self, url: &str) -> Result<Vec<u8>, JwksError> {
        let fail = |reason: String| JwksError::Fetch {
            url: url.chars().take(200).collect(),
            reason,
        };
        let uri: hyper::Uri = url.parse().map_err(|_| fail("not a URL".into()))?;
        let authority = uri
            .authority()
            .ok_or_else(|| fail("no host".into()))?
            .to_string();
        let mut request = Request::get(uri)
            .header(HOST, authority)
            .header(ACCEPT, "application/json");
        if let Some(path) = &self.source.token {
            let token = read_small(path, MAX_TOKEN_FILE)
                .map_err(|e| fail(format!("cannot read the token {}: {e}", path.display())))?;
            let token = String::from_utf8_lossy(&token).trim().to_owned();
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| fail(e.to_string()))?;
        let answer = self
            .client
            .send(request)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if answer.status != StatusCode::OK {
            return Err(fail(format!("the server answered {}", answer.status)));
        }
        Ok(answer.body.to_vec())
    }
}

fn read_small(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}
