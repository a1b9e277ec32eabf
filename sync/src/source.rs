//! Where `policy sync` reads its policy: a file, a directory holding `policy.yaml` (a Kubernetes
//! ConfigMap mount, whose `..data` symlink swaps are followed), or a URL fetched with
//! `If-None-Match`, so an unchanged policy costs a 304.
//!
//! A URL is `https://`, its server's certificate checked against a pinned CA bundle (not the
//! system's roots) and its host name, and the node's own certificate (its SVID) presented when
//! one is configured ([`SourceAuth`]); files are read again at each fetch, so a renewed client
//! certificate is used at once. A plain `http://` URL is refused unless allowed explicitly
//! (`--insecure-source`): anyone on the path could push an open policy.
//!
//! Whatever the source, a policy larger than the limit is refused before it is held in memory
//! whole: a `Content-Length` over it is refused at once, and a body is read only up to it.
//!
//! URLs are fetched with palisade-identity-client's [`HttpsClient`], the CA client's: one HTTPS
//! client for the whole project, its bounds (deadline, body size) in one place.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ETAG, IF_NONE_MATCH};
use hyper::{Request, StatusCode, Uri};
use palisade_identity_client::https::{HttpsClient, HttpsError, Options};

/// The file a directory source must hold.
pub const DIR_FILE: &str = "policy.yaml";
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The default limit on a policy's size: a 10,000-rule policy is about 1 MiB of YAML, and loading
/// needs several times the text's size, within the DaemonSet example's 128 MiB.
pub const DEFAULT_MAX_POLICY_BYTES: u64 = 8 * 1024 * 1024;

/// Why a `--source` names no source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Starts with `http://` but does not parse as a URI.
    #[error("\"{text}\" is not a URL: {reason}")]
    BadUrl {
        /// The text as given.
        text: String,
        /// Why the URI parser refused it.
        reason: String,
    },
    /// An `http://` source without `insecure_http`.
    #[error("http:// sources are refused: anyone on the path could push an open policy; serve it over https:// with --source-ca, or pass --insecure-source")]
    Insecure,
    /// An `https://` source without a CA bundle to check its certificate with.
    #[error("an https:// source needs --source-ca, the CA bundle its certificate must chain to")]
    NoCa,
}

/// How URL sources are authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceAuth {
    /// Accept `http://` URLs (no authentication at all).
    pub insecure_http: bool,
    /// The PEM bundle an `https://` server's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// The certificate (chain) and key presented to an `https://` server that asks for one.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// Why a look at the source found no policy; the last good one stays in force.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A file source cannot be opened or read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// The policy is larger than the limit; none of it is used.
    #[error("{name}: the policy is larger than {limit} bytes")]
    TooLarge {
        /// The source, as [`Source::name`] names it.
        name: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The policy is not UTF-8; the source, as [`Source::name`] names it.
    #[error("{0}: the policy is not UTF-8 text")]
    NotUtf8(String),
    /// An http fetch (connect, request and body) took more than 10 seconds.
    #[error("fetching {0} timed out")]
    Timeout(Uri),
    /// The URL names no host to connect to.
    #[error("{0} has no host")]
    NoHost(Uri),
    /// The TCP connection to the http source failed (or its name did not resolve).
    #[error("cannot connect to {host}:{port}: {error}")]
    Connect {
        /// The URL's host.
        host: String,
        /// The URL's port, 443 (`https://`) or 80 (`http://`) when it names none.
        port: u16,
        /// The reason, with the operating system's words.
        error: String,
    },
    /// The TLS configuration's files cannot be used (the CA bundle, the client certificate or
    /// key).
    #[error("{0}")]
    TlsFiles(String),
    /// The TLS handshake with an `https://` source failed (for example, a certificate that does
    /// not chain to the pinned bundle or does not name the host).
    #[error("{uri}: TLS: {reason}")]
    Tls {
        /// The URL fetched.
        uri: Uri,
        /// rustls' reason.
        reason: String,
    },
    /// The HTTP exchange failed after connecting.
    #[error("{uri}: {reason}")]
    Http {
        /// The URL fetched.
        uri: Uri,
        /// hyper's reason.
        reason: String,
    },
    /// The server answered neither 200 nor 304.
    #[error("{uri} answered {status}")]
    Status {
        /// The URL fetched.
        uri: Uri,
        /// The status it answered.
        status: StatusCode,
    },
}

/// Where the policy is read (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A policy file, read whole at each look.
    File(PathBuf),
    /// A directory holding [`DIR_FILE`], such as a ConfigMap mount; the file is opened anew at
    /// each look, so symlink swaps are followed.
    Dir(PathBuf),
    /// An `https://` (or, allowed explicitly, `http://`) URL, fetched with `If-None-Match` once
    /// a policy has been read from it.
    Url(Uri),
}

impl Source {
    /// `https://…` and `http://…` are URLs (checked against `auth`: `http://` only with
    /// `insecure_http`, `https://` only with a CA bundle), an existing directory a directory
    /// source, and anything else a file (which need not exist yet).
    pub fn parse(s: &str, auth: &SourceAuth) -> Result<Source, SourceError> {
        if s.starts_with("http://") && !auth.insecure_http {
            return Err(SourceError::Insecure);
        }
        if s.starts_with("https://") && auth.ca.is_none() {
            return Err(SourceError::NoCa);
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            let uri: Uri =
                s.parse()
                    .map_err(|e: hyper::http::uri::InvalidUri| SourceError::BadUrl {
                        text: s.to_owned(),
                        reason: e.to_string(),
                    })?;
            return Ok(Source::Url(uri));
        }
        let path = PathBuf::from(s);
        Ok(if path.is_dir() {
            Source::Dir(path)
        } else {
            Source::File(path)
        })
    }

    /// How errors name the policy.
    pub fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Dir(d) => d.join(DIR_FILE).display().to_string(),
            Source::Url(u) => u.to_string(),
        }
    }
}

/// What one look at the source found.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The same policy text as at the last successful look, or a 304.
    Unchanged,
    /// Policy text that differs from the last successful look's; the first look's always does.
    Changed(String),
}

/// Reads a source, remembering what it last saw so that "unchanged" is cheap to tell.
pub struct Fetcher {
    source: Source,
    auth: SourceAuth,
    max_bytes: u64,
    last: Option<String>,
    etag: Option<String>,
}

impl Fetcher {
    /// Reads `source` (authenticated by `auth` when it is a URL), refusing a policy larger than
    /// `max_bytes` bytes.
    pub fn new(source: Source, auth: SourceAuth, max_bytes: u64) -> Self {
        Fetcher {
            source,
            auth,
            max_bytes,
            last: None,
            etag: None,
        }
    }

    /// The source it reads.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Looks at the source once. After an error the last policy seen is kept, so that the next
    /// successful look is compared with it.
    pub async fn fetch(&mut self) -> Result<Fetched, FetchError> {
        let text = match self.source.clone() {
            Source::File(p) => read(&p, self.max_bytes)?,
            Source::Dir(d) => read(&d.join(DIR_FILE), self.max_bytes)?,
            Source::Url(uri) => match self.get(uri).await? {
                Some(text) => text,
                None => return Ok(Fetched::Unchanged),
            },
        };
        if self.last.as_ref() == Some(&text) {
            return Ok(Fetched::Unchanged);
        }
        self.last = Some(text.clone());
        Ok(Fetched::Changed(text))
    }

    /// GET with `If-None-Match`; `None` on 304.
    async fn get(&mut self, uri: Uri) -> Result<Option<String>, FetchError> {
        let host = uri.host().ok_or_else(|| FetchError::NoHost(uri.clone()))?;
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let options = Options {
            deadline: FETCH_TIMEOUT,
            max_body: self.max_bytes,
            // One fetch per interval: no connection is kept between them.
            keep_alive: false,
            plain_http: false,
        };
        // The TLS configuration is made from the files at each fetch, so that a renewed client
        // certificate is presented at once; `Source::parse` let an http:// URL through only when
        // allowed.
        let client = if https {
            HttpsClient::new(client_config(&self.auth)?, options)
        } else {
            HttpsClient::plain_http(options)
        };
        let mut request = Request::get(uri.clone());
        if let (Some(etag), Some(_)) = (&self.etag, &self.last) {
            request = request.header(IF_NONE_MATCH, etag.as_str());
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| FetchError::Http {
                uri: uri.clone(),
                reason: e.to_string(),
            })?;
        let answer = client.send(request).await.map_err(|e| match e {
            HttpsError::Connect(error) => FetchError::Connect {
                host: host.to_owned(),
                port,
                error,
            },
            HttpsError::Tls { reason, .. } => FetchError::Tls {
                uri: uri.clone(),
                reason,
            },
            HttpsError::Http(reason) => FetchError::Http {
                uri: uri.clone(),
                reason,
            },
            HttpsError::Timeout(_) => FetchError::Timeout(uri.clone()),
            HttpsError::TooLarge { limit } => FetchError::TooLarge {
                name: uri.to_string(),
                limit,
            },
        })?;
        match answer.status {
            StatusCode::NOT_MODIFIED => Ok(None),
            StatusCode::OK => {
                let etag = answer
                    .headers
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let text = String::from_utf8(Vec::from(answer.body))
                    .map_err(|_| FetchError::NotUtf8(uri.to_string()))?;
                self.etag = etag;
                Ok(Some(text))
            }
            status => Err(FetchError::Status { uri, status }),
        }
    }
}

/// The largest CA bundle, certificate or key file read (they are a few kilobytes).
const MAX_TLS_FILE_BYTES: u64 = 1024 * 1024;

/// The client side of an `https://` fetch, from `auth`'s files as they are now: only the pinned
/// bundle's CAs are trusted (never the system's), and the node's certificate is presented when
/// configured.
fn client_config(auth: &SourceAuth) -> Result<rustls::ClientConfig, FetchError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, path: &std::path::Path, why: String| {
        FetchError::TlsFiles(format!("{what} {}: {why}", path.display()))
    };
    let ca = auth.ca.as_ref().ok_or_else(|| {
        FetchError::TlsFiles("an https:// source needs a CA bundle (--source-ca)".into())
    })?;
    let pem = read(ca, MAX_TLS_FILE_BYTES)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| bad("the CA bundle", ca, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| bad("the CA bundle", ca, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("the CA bundle", ca, "it holds no certificate".into()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| FetchError::TlsFiles(e.to_string()))?
    .with_root_certificates(roots);
    let config = match &auth.client {
        None => builder.with_no_client_auth(),
        Some((cert_path, key_path)) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(read(cert_path, MAX_TLS_FILE_BYTES)?.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad("the client certificate", cert_path, e.to_string()))?;
            if certs.is_empty() {
                return Err(bad(
                    "the client certificate",
                    cert_path,
                    "it holds no certificate".into(),
                ));
            }
            let key = PrivateKeyDer::from_pem_slice(read(key_path, MAX_TLS_FILE_BYTES)?.as_bytes())
                .map_err(|e| bad("the client key", key_path, e.to_string()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad("the client certificate", cert_path, e.to_string()))?
        }
    };
    Ok(config)
}

fn read(path: &std::path::Path, max_bytes: u64) -> Result<String, FetchError> {
    use std::io::Read;
    let cannot = |error| FetchError::Read {
        path: path.to_owned(),
        error,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > max_bytes {
        return Err(FetchError::TooLarge {
            name: path.display().to_string(),
            limit: max_bytes,
        });
    }
    String::from_utf8(bytes).map_err(|_| FetchError::NotUtf8(path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A Kubernetes ConfigMap mount: `policy.yaml -> ..data/policy.yaml`, `..data -> ..<stamp>`,
    /// swapped by renaming a new `..data` link over the old one.
    #[tokio::test]
    async fn a_directory_source_follows_configmap_symlink_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..2026_1")).unwrap();
        std::fs::write(d.join("..2026_1/policy.yaml"), "first").unwrap();
        symlink("..2026_1", d.join("..data")).unwrap();
        symlink("..data/policy.yaml", d.join(DIR_FILE)).unwrap();

        let source = Source::parse(d.to_str().unwrap(), &SourceAuth::default()).unwrap();
        assert_eq!(source, Source::Dir(d.to_owned()));
        let mut fetcher = Fetcher::new(source, SourceAuth::default(), DEFAULT_MAX_POLICY_BYTES);
        assert_eq!(
            fetcher.fetch().await.unwrap(),
            Fetched::Changed("first".into())
        );
        assert_eq!(fetcher.fetch().await.unwrap(), Fetched::Unchanged);

        std::fs::create_dir(d.join("..2026_2")).unwrap();
        std::fs::write(d.join("..2026_2/policy.yaml"), "second").unwrap();
        symlink("..2026_2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..2026_1")).unwrap();
        assert_eq!(
            fetcher.fetch().await.unwrap(),
            Fetched::Changed("second".into())
        );
    }

    /// Review finding 5: a policy server that sends without end (or announces 1.5 GB) is cut off
    /// at the limit instead of being read whole.
    #[tokio::test]
    async fn an_http_policy_over_the_limit_is_refused_without_reading_it_whole() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            for content_length in [Some(1_500_000_000u64), None] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut head = [0u8; 1024];
                let _ = s.read(&mut head).await;
                let header = match content_length {
                    Some(n) => format!("HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n"),
                    None => "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".into(),
                };
                s.write_all(header.as_bytes()).await.unwrap();
                // At most 64 MiB, so the test ends even if the client never stops reading.
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                for _ in 0..1024 {
                    let data = if content_length.is_some() {
                        &chunk.as_bytes()[chunk.find('\n').unwrap() + 1..][..64 * 1024]
                    } else {
                        chunk.as_bytes()
                    };
                    if s.write_all(data).await.is_err() {
                        break;
                    }
                    counter.fetch_add(64 * 1024, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        let insecure = SourceAuth {
            insecure_http: true,
            ..SourceAuth::default()
        };
        let source = Source::parse(&format!("http://{addr}/policy.yaml"), &insecure).unwrap();
        let mut fetcher = Fetcher::new(source, insecure, 1024 * 1024);
        let declared = fetcher.fetch().await.unwrap_err();
        assert!(
            matches!(declared, FetchError::TooLarge { limit: 1048576, .. }),
            "{declared}"
        );
        let streamed = fetcher.fetch().await.unwrap_err();
        assert!(
            matches!(streamed, FetchError::TooLarge { limit: 1048576, .. }),
            "{streamed}"
        );
        let total = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            total < 32 * 1024 * 1024,
            "the fetcher kept reading: {total} bytes sent"
        );
    }

    #[test]
    fn a_file_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, "x".repeat(2000)).unwrap();
        let e = read(&file, 1000).unwrap_err();
        assert!(e.to_string().contains("larger than 1000 bytes"), "{e}");
        assert_eq!(read(&file, 2000).unwrap().len(), 2000);
    }

    #[test]
    fn sources_are_told_apart_and_urls_must_be_authenticated_or_allowed() {
        let none = SourceAuth::default();
        let insecure = SourceAuth {
            insecure_http: true,
            ..SourceAuth::default()
        };
        let pinned = SourceAuth {
            ca: Some("/etc/palisade/policy-ca.pem".into()),
            ..SourceAuth::default()
        };
        assert_eq!(
            Source::parse("http://cfg.internal/p.yaml", &none),
            Err(SourceError::Insecure)
        );
        assert!(matches!(
            Source::parse("http://cfg.internal/p.yaml", &insecure),
            Ok(Source::Url(_))
        ));
        assert_eq!(
            Source::parse("https://cfg.internal/p.yaml", &insecure),
            Err(SourceError::NoCa)
        );
        assert!(matches!(
            Source::parse("https://cfg.internal/p.yaml", &pinned),
            Ok(Source::Url(_))
        ));
        assert_eq!(
            Source::parse("/no/such/policy.yaml", &none),
            Ok(Source::File("/no/such/policy.yaml".into()))
        );
    }
}
