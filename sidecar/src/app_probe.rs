//! The app's own kubelet probes, run by the sidecar on the kubelet's behalf.
//!
//! In strict mode every port the app serves is behind mTLS, and the kubelet has no certificate,
//! so its plaintext probe of a served port would be refused. `palisade inject` therefore rewrites
//! each `httpGet`, `tcpSocket` and `grpc` probe to `GET /app-health/<container>/<kind>` on the
//! sidecar's read-only listener (excluded from the redirect), and hands the sidecar the original
//! probes ([`AppProbe`], in `PALISADE_APP_PROBES`). The sidecar runs the original against the app
//! over loopback, as the kubelet would have: same path, headers, scheme and timeout; HTTPS without
//! checking the app's certificate (the kubelet does not check it either); gRPC through the
//! standard health service. The kubelet gets 200 or 503 and a line saying why, never the app's
//! body. Nothing else of the app is reachable this way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, TE, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_admin::NotReady;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Longest an app probe may run: a longer `timeoutSeconds` is cut to this, because the read-only
/// listener closes every connection after 30 s.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(25);

/// What the app's gRPC health answer may weigh; more is a failed probe.
const MAX_GRPC_ANSWER: usize = 16 * 1024;

/// One of the app's probes, as Kubernetes writes it (`httpGet`, `tcpSocket` or `grpc`, and
/// `timeoutSeconds`), with its port as a number: the handler part of a container's probe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppProbe {
    /// An HTTP(S) GET; 200 to 399 passes.
    #[serde(default)]
    pub http_get: Option<HttpGet>,
    /// A TCP connection; connecting passes.
    #[serde(default)]
    pub tcp_socket: Option<TcpSocket>,
    /// `grpc.health.v1.Health/Check`; SERVING passes.
    #[serde(default)]
    pub grpc: Option<Grpc>,
    /// The kubelet's timeout for the probe (default 1 s, as Kubernetes'); at most [`MAX_TIMEOUT`].
    #[serde(default = "one_second")]
    pub timeout_seconds: u32,
}

fn one_second() -> u32 {
    1
}

/// `httpGet`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGet {
    /// The path and query (default `/`).
    #[serde(default)]
    pub path: String,
    /// The app's port, on loopback.
    pub port: u16,
    /// `HTTP` (default) or `HTTPS`.
    #[serde(default)]
    pub scheme: Scheme,
    /// Headers sent with the request; they replace the kubelet's defaults of the same name
    /// (`Host`, `User-Agent`, `Accept`).
    #[serde(default)]
    pub http_headers: Vec<HttpHeader>,
}

/// `httpGet.scheme`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Scheme {
    /// Plain HTTP/1.1.
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP/1.1 over TLS, the app's certificate not checked (as the kubelet does).
    #[serde(rename = "HTTPS")]
    Https,
}

/// One of `httpGet.httpHeaders`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHeader {
    /// The header's name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// `tcpSocket`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSocket {
    /// The app's port, on loopback.
    pub port: u16,
}

/// `grpc`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grpc {
    /// The app's port, on loopback (gRPC over HTTP/2 without TLS, as the kubelet speaks it).
    pub port: u16,
    /// The service name asked about; empty asks about the server as a whole.
    #[serde(default)]
    pub service: Option<String>,
}

impl AppProbe {
    /// The app's port this probe connects to.
    pub fn port(&self) -> u16 {
        match (&self.http_get, &self.tcp_socket, &self.grpc) {
            (Some(h), _, _) => h.port,
            (_, Some(t), _) => t.port,
            (_, _, Some(g)) => g.port,
            _ => 0,
        }
    }

    /// Why the probe cannot be run, if it cannot: not exactly one handler, port 0, a header or
    /// path that is not HTTP.
    pub fn check(&self) -> Result<(), String> {
        let handlers = [
            self.http_get.is_some(),
            self.tcp_socket.is_some(),
            self.grpc.is_some(),
        ];
        if handlers.iter().filter(|h| **h).count() != 1 {
            return Err("give exactly one of httpGet, tcpSocket and grpc".into());
        }
        if self.port() == 0 {
            return Err("port 0 is not a port".into());
        }
        if let Some(h) = &self.http_get {
            if h.path.len() > 2048 || h.request_target().parse::<hyper::Uri>().is_err() {
                return Err(format!("httpGet.path {:?} is not an HTTP path", h.path));
            }
            for header in &h.http_headers {
                hyper::header::HeaderName::from_bytes(header.name.as_bytes())
                    .map_err(|_| format!("{:?} is not an HTTP header name", header.name))?;
                hyper::header::HeaderValue::from_str(&header.value).map_err(|_| {
                    format!("the value of header {:?} is not sendable", header.name)
                })?;
            }
        }
        if let Some(service) = self.grpc.as_ref().and_then(|g| g.service.as_ref()) {
            if service.len() > 1024 {
                return Err("grpc.service is longer than 1,024 bytes".into());
            }
        }
        Ok(())
    }

    /// How long the probe may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_seconds.max(1).into()).min(MAX_TIMEOUT)
    }

    /// Runs the probe against the app on loopback. `pod` is the address the kubelet reached the
    /// sidecar on (the pod's), which the kubelet would have named in `Host`.
    pub async fn run(&self, pod: IpAddr) -> Result<String, NotReady> {
        let timeout = self.timeout();
        match tokio::time::timeout(timeout, self.attempt(pod)).await {
            Ok(outcome) => outcome.map_err(NotReady),
            Err(_) => Err(NotReady(format!(
                "the app did not answer on port {} within {} s",
                self.port(),
                timeout.as_secs()
            ))),
        }
    }

    async fn attempt(&self, pod: IpAddr) -> Result<String, String> {
        let app = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port()));
        // Loopback first; an app listening on the pod's address only (as the kubelet reaches it)
        // refuses loopback, and is asked there. (The sidecar's own connections pass the redirect.)
        let stream = match TcpStream::connect(app).await {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && !pod.is_loopback()
                    && !pod.is_unspecified() =>
            {
                TcpStream::connect(SocketAddr::new(pod, app.port())).await
            }
            other => other,
        }
        .map_err(|e| format!("cannot connect to the app on port {}: {e}", app.port()))?;
        if let Some(h) = &self.http_get {
            let status = match h.scheme {
                Scheme::Http => http_get(stream, h, pod).await?,
                Scheme::Https => {
                    let tls = tokio_rustls::TlsConnector::from(insecure_client_config())
                        .connect(
                            rustls_pki_types::ServerName::IpAddress(app.ip().into()),
                            stream,
                        )
                        .await
                        .map_err(|e| {
                            format!("TLS with the app on port {} failed: {e}", app.port())
                        })?;
                    http_get(tls, h, pod).await?
                }
            };
            // As the kubelet judges it (it follows redirects; here a redirect passes as it is).
            if (200..400).contains(&status.as_u16()) {
                Ok(format!("the app answered {status} on port {}", h.port))
            } else {
                Err(format!("the app answered {status} on port {}", h.port))
            }
        } else if let Some(g) = &self.grpc {
            grpc_health(stream, g).await
        } else {
            Ok(format!(
                "the app accepted a connection on port {}",
                app.port()
            ))
        }
    }
}

impl HttpGet {
    fn request_target(&self) -> String {
        if self.path.starts_with('/') {
            self.path.clone()
        } else {
            format!("/{}", self.path)
        }
    }
}

async fn http_get<S>(io: S, probe: &HttpGet, pod: IpAddr) -> Result<StatusCode, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP with the app on port {} failed: {e}", probe.port))?;
    let connection = tokio::spawn(connection);
    let mut request = Request::get(probe.request_target())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    // What the kubelet sends by default; a header of the probe's with one of these names
    // replaces it, others are added (a name given twice is sent twice, as by the kubelet).
    let host = SocketAddr::new(pod, probe.port).to_string();
    for (name, value) in [
        (HOST, host.as_str()),
        (USER_AGENT, "kube-probe/palisade"),
        (ACCEPT, "*/*"),
    ] {
        if !probe
            .http_headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name.as_str()))
        {
            headers.insert(name, value.parse().map_err(|_| "bad header".to_owned())?);
        }
    }
    for header in &probe.http_headers {
        let name = hyper::header::HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|e| e.to_string())?;
        let value = header.value.parse().map_err(|_| "bad header".to_owned())?;
        headers.append(name, value);
    }
    let answer = sender.send_request(request).await;
    connection.abort();
    answer
        .map(|response| response.status())
        .map_err(|e| format!("HTTP with the app on port {} failed: {e}", probe.port))
}

/// `grpc.health.v1.Health/Check` over HTTP/2 without TLS (what the kubelet's gRPC probe does),
/// the request and answer encoded here: one length-prefixed protobuf message each way, with one
/// field (`service`; `status`), which does not warrant a protobuf code generator in the sidecar.
async fn grpc_health(stream: TcpStream, probe: &Grpc) -> Result<String, String> {
    let failed = |e: &dyn std::fmt::Display| {
        format!(
            "gRPC health check of the app on port {} failed: {e}",
            probe.port
        )
    };
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| failed(&e))?;
    let connection = tokio::spawn(connection);
    let request = Request::post(format!(
        "http://127.0.0.1:{}/grpc.health.v1.Health/Check",
        probe.port
    ))
    .header(CONTENT_TYPE, "application/grpc")
    .header(TE, "trailers")
    .header(USER_AGENT, "kube-probe/palisade")
    .body(Full::new(Bytes::from(health_check_request(
        probe.service.as_deref().unwrap_or(""),
    ))))
    .map_err(|e| failed(&e))?;
    let outcome = async {
        let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
        if response.status() != StatusCode::OK {
            return Err(failed(&format!("HTTP status {}", response.status())));
        }
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_GRPC_ANSWER)
            .collect()
            .await
            .map_err(|e| failed(&e))?;
        // A "trailers-only" answer (an error) carries grpc-status in its headers.
        let grpc_status = body
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| parts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if grpc_status != "0" {
            return Err(failed(&format!("grpc-status {grpc_status:?}")));
        }
        match serving_status(&body.to_bytes()) {
            Some(1) => Ok(format!(
                "the app's gRPC health service on port {} says SERVING",
                probe.port
            )),
            Some(status) => Err(format!(
                "the app's gRPC health service on port {} says {}",
                probe.port,
                match status {
                    0 => "UNKNOWN",
                    2 => "NOT_SERVING",
                    3 => "SERVICE_UNKNOWN",
                    _ => "an unknown status",
                }
            )),
            None => Err(failed(&"the answer is not a HealthCheckResponse")),
        }
    }
    .await;
    connection.abort();
    outcome
}

/// A gRPC message (uncompressed, length-prefixed) holding `HealthCheckRequest { service }`.
fn health_check_request(service: &str) -> Vec<u8> {
    let mut message = Vec::new();
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = vec![0];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend(message);
    framed
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `HealthCheckResponse.status` from one length-prefixed, uncompressed gRPC message (0,
/// UNKNOWN, when the field is absent, as protobuf defaults it); None when it is not one.
fn serving_status(framed: &[u8]) -> Option<u64> {
    let (&compressed, rest) = framed.split_first()?;
    let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..)?;
    if compressed != 0 || message.len() != length {
        return None;
    }
    let mut status = 0;
    let mut at = 0;
    while at < message.len() {
        let key = varint(message, &mut at)?;
        match key & 7 {
            0 => {
                let value = varint(message, &mut at)?;
                if key >> 3 == 1 {
                    status = value;
                }
            }
            1 => at = at.checked_add(8)?,
            2 => {
                let len = usize::try_from(varint(message, &mut at)?).ok()?;
                at = at.checked_add(len)?;
            }
            5 => at = at.checked_add(4)?,
            _ => return None,
        }
    }
    (at == message.len()).then_some(status)
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(value);
        }
    }
    None
}

/// TLS to the app on loopback without checking its certificate, as the kubelet's HTTPS probe
/// does: the app's certificate names the service, not 127.0.0.1, and may be self-signed. The
/// handshake's signatures are still verified.
fn insecure_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the default provider supports the default versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_messages_are_encoded_and_read_as_protobuf_does() {
        assert_eq!(health_check_request(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            health_check_request("shop"),
            vec![0, 0, 0, 0, 6, 0x0a, 4, b's', b'h', b'o', b'p']
        );
        // status: SERVING (field 1, varint 1)
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        // empty message: the default, UNKNOWN
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0));
        // an unknown field before it is skipped
        assert_eq!(
            serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 2]),
            Some(2)
        );
        // compressed, truncated, wrong length
        assert_eq!(serving_status(&[1, 0, 0, 0, 2, 0x08, 1]), None);
        assert_eq!(serving_status(&[0, 0, 0, 0, 3, 0x08, 1]), None);
        assert_eq!(serving_status(&[0, 0, 0]), None);
        assert_eq!(serving_status(&[0, 0, 0, 0, 1, 0x08]), None);
    }

    #[test]
    fn a_probe_needs_exactly_one_handler_a_port_and_sendable_headers() {
        let parse = |json: &str| serde_json_free_parse(json).and_then(|p| p.check().map(|_| p));
        assert!(parse(r#"{"httpGet": {"path": "/healthz", "port": 8080}}"#).is_ok());
        assert!(parse(r#"{"tcpSocket": {"port": 5432}, "timeoutSeconds": 3}"#).is_ok());
        assert!(parse(r#"{"grpc": {"port": 9555}}"#).is_ok());
        for bad in [
            r#"{}"#,
            r#"{"httpGet": {"port": 80}, "tcpSocket": {"port": 80}}"#,
            r#"{"tcpSocket": {"port": 0}}"#,
            r#"{"httpGet": {"port": 80, "path": "/a b"}}"#,
            r#"{"httpGet": {"port": 80, "httpHeaders": [{"name": "bad name", "value": "x"}]}}"#,
            r#"{"httpGet": {"port": 80, "httpHeaders": [{"name": "X", "value": "a\nb"}]}}"#,
            r#"{"httpGet": {"port": 80, "host": "10.0.0.1"}}"#,
            r#"{"exec": {"command": ["true"]}}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
        let long = AppProbe {
            http_get: None,
            tcp_socket: Some(TcpSocket { port: 1 }),
            grpc: None,
            timeout_seconds: 600,
        };
        assert_eq!(long.timeout(), MAX_TIMEOUT);
    }

    fn serde_json_free_parse(json: &str) -> Result<AppProbe, String> {
        // JSON is YAML: the sidecar reads PALISADE_APP_PROBES with serde_yaml.
        serde_yaml::from_str(json).map_err(|e| e.to_string())
    }
}
