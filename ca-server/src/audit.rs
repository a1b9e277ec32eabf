//! The audit trail: one JSON line for every issuance and every refusal of a sign or renew request,
//! on stdout (after the `listening` line) or appended to a file. Peer-supplied strings go through
//! JSON escaping, so a hostile one cannot forge a line; they are also cut to a bounded length.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;
use time::OffsetDateTime;

/// Longest peer-supplied string written to the audit line.
const MAX_FIELD: usize = 256;

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Standard output, one line per event.
    Stdout,
    /// Appended to a file (created 0600 if missing).
    File(PathBuf),
}

/// One audit event.
#[derive(Debug, Serialize)]
pub struct AuditEvent {
    /// RFC 3339 time of the decision.
    pub time: String,
    /// `issued` or `refused`.
    pub event: &'static str,
    /// `sign` or `renew`.
    pub endpoint: &'static str,
    /// The TCP peer.
    pub client: String,
    /// `join_token`, `service_account`, `mtls` or `none`.
    pub credential: &'static str,
    /// Who the credential says the caller is: the token's hash prefix, `namespace/serviceaccount`
    /// with the pod, or the presented certificate's ID and serial.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The SPIFFE ID issued, or asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Serial of the certificate issued (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// NotAfter of the certificate issued (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// The refusal's code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    /// The refusal's sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AuditEvent {
    /// An event of `endpoint` from `client`, with the rest to fill in.
    pub fn new(event: &'static str, endpoint: &'static str, client: SocketAddr) -> Self {
        AuditEvent {
            time: rfc3339(OffsetDateTime::now_utc()),
            event,
            endpoint,
            client: client.to_string(),
            credential: "none",
            subject: None,
            spiffe_id: None,
            serial: None,
            not_after: None,
            code: None,
            reason: None,
        }
    }
}

/// Writes audit lines; a failure to write is logged and counted, never fatal to the request.
pub struct AuditLog {
    sink: Mutex<Box<dyn Write + Send>>,
}

impl AuditLog {
    /// Opens the sink.
    pub fn open(sink: &AuditSink) -> std::io::Result<Self> {
        let writer: Box<dyn Write + Send> = match sink {
            AuditSink::Stdout => Box::new(std::io::stdout()),
            AuditSink::File(path) => {
                use std::os::unix::fs::OpenOptionsExt;
                Box::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(path)?,
                )
            }
        };
        Ok(AuditLog {
            sink: Mutex::new(writer),
        })
    }

    /// Writes one line.
    pub fn write(&self, event: &AuditEvent) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        sink.write_all(&line)?;
        sink.flush()
    }
}

/// A peer-supplied string cut to [`MAX_FIELD`] characters (JSON escaping does the rest).
pub fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_FIELD) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// RFC 3339 in UTC, seconds precision.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
