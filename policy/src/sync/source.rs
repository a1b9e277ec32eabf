//! Where `policy sync` reads its policy: a file, a directory holding `policy.yaml` (a Kubernetes
//! ConfigMap mount, whose `..data` symlink swaps are followed), or an `http://` URL fetched with
//! `If-None-Match`, so an unchanged policy costs a 304.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{ETAG, HOST, IF_NONE_MATCH};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

/// The file a directory source must hold.
pub const DIR_FILE: &str = "policy.yaml";
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Dir(PathBuf),
    Url(Uri),
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, String> {
        if s.starts_with("http://") {
            let uri: Uri = s
                .parse()
                .map_err(|e| format!("\"{s}\" is not a URL: {e}"))?;
            return Ok(Source::Url(uri));
        }
        if s.starts_with("https://") {
            return Err("https sources are not supported yet; serve the policy over http on a trusted network or mount it as a file".into());
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
    Unchanged,
    Changed(String),
}

/// Reads a source, remembering what it last saw so that "unchanged" is cheap to tell.
pub struct Fetcher {
    source: Source,
    last: Option<String>,
    etag: Option<String>,
}

impl Fetcher {
    pub fn new(source: Source) -> Self {
        Fetcher {
            source,
            last: None,
            etag: None,
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    pub async fn fetch(&mut self) -> Result<Fetched, String> {
        let text = match self.source.clone() {
            Source::File(p) => read(&p)?,
            Source::Dir(d) => read(&d.join(DIR_FILE))?,
            Source::Url(uri) => match tokio::time::timeout(FETCH_TIMEOUT, self.get(uri.clone()))
                .await
                .map_err(|_| format!("fetching {uri} timed out"))??
            {
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
    async fn get(&mut self, uri: Uri) -> Result<Option<String>, String> {
        let host = uri.host().ok_or_else(|| format!("{uri} has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{uri}: {e}"))?;
        tokio::spawn(connection);
        let mut request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(HOST, uri.authority().map_or(host, |a| a.as_str()));
        if let (Some(etag), Some(_)) = (&self.etag, &self.last) {
            request = request.header(IF_NONE_MATCH, etag.as_str());
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{uri}: {e}"))?;
        match response.status() {
            StatusCode::NOT_MODIFIED => Ok(None),
            StatusCode::OK => {
                let etag = response
                    .headers()
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("{uri}: {e}"))?
                    .to_bytes();
                let text = String::from_utf8(body.to_vec())
                    .map_err(|_| format!("{uri}: the policy is not UTF-8 text"))?;
                self.etag = etag;
                Ok(Some(text))
            }
            status => Err(format!("{uri} answered {status}")),
        }
    }
}

fn read(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
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

        let source = Source::parse(d.to_str().unwrap()).unwrap();
        assert_eq!(source, Source::Dir(d.to_owned()));
        let mut fetcher = Fetcher::new(source);
        assert_eq!(fetcher.fetch().await, Ok(Fetched::Changed("first".into())));
        assert_eq!(fetcher.fetch().await, Ok(Fetched::Unchanged));

        std::fs::create_dir(d.join("..2026_2")).unwrap();
        std::fs::write(d.join("..2026_2/policy.yaml"), "second").unwrap();
        symlink("..2026_2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        std::fs::remove_dir_all(d.join("..2026_1")).unwrap();
        assert_eq!(fetcher.fetch().await, Ok(Fetched::Changed("second".into())));
    }

    #[test]
    fn sources_are_told_apart() {
        assert!(matches!(
            Source::parse("http://cfg.internal/p.yaml"),
            Ok(Source::Url(_))
        ));
        assert!(Source::parse("https://cfg.internal/p.yaml").is_err());
        assert_eq!(
            Source::parse("/no/such/policy.yaml"),
            Ok(Source::File("/no/such/policy.yaml".into()))
        );
    }
}
