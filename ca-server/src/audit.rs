//! The audit trail: one JSON line for every issuance and every refusal of a sign or renew request,
//! on stdout (after the `listening` line) or appended to a file. Peer-supplied strings go through
//! JSON escaping, so a hostile one cannot forge a line; they are also cut to a bounded length.
//!
//! Issuances are always written, and an issuance whose line cannot be written is not delivered
//! (the handler refuses it with `audit_unavailable`: a CA does not issue what it cannot account
//! for). Refusals are rate limited: in each window, at most `per_client` lines per client
//! ([`client_key`](crate::limits::client_key)) and `total` lines in all; the others are counted,
//! and when the window ends one `refusals_left_out` line per client and code says how many were
//! left out, for the first `summaries` (client, code) pairs of the window; the refusals of any
//! further ones are folded into a single `other clients` line with a count per code. So a window
//! costs at most `total + summaries + 1` lines, however many addresses a flood comes from. The
//! metrics count every refusal either way.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
            time: palisade_identity::rfc3339(OffsetDateTime::now_utc()),
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

/// How many refusal lines the audit trail takes.
#[derive(Debug, Clone)]
pub struct RefusalBudget {
    /// The window the counts below are per.
    pub window: Duration,
    /// Refusal lines per client per window.
    pub per_client: u32,
    /// Refusal lines per window from all clients together.
    pub total: u32,
    /// Summary lines per window, one per (client, code); the refusals of further pairs are
    /// summarized in one `other clients` line.
    pub summaries: u32,
}

impl Default for RefusalBudget {
    fn default() -> Self {
        RefusalBudget {
            window: Duration::from_secs(10),
            per_client: 20,
            total: 1000,
            summaries: 100,
        }
    }
}

/// The line that stands for refusals left out in a window.
#[derive(Debug, Serialize)]
struct LeftOutEvent {
    time: String,
    event: &'static str,
    /// The client's address (`10.0.0.7`, `2001:db8::/64`), or `other clients` beyond the
    /// number of (client, code) pairs summarized one by one.
    client: String,
    /// The refusals' code; for `other clients`, `several` when there is more than one (see
    /// `codes`).
    code: &'static str,
    count: u64,
    /// For `other clients`: the count of each code.
    #[serde(skip_serializing_if = "Option::is_none")]
    codes: Option<BTreeMap<&'static str, u64>>,
    window_seconds: u64,
    reason: String,
}

struct Window {
    started: Instant,
    total: u32,
    written: HashMap<IpAddr, u32>,
    /// At most `summaries` entries.
    left_out: HashMap<(IpAddr, &'static str), u64>,
    /// The rest, by code (codes are a closed set).
    other: BTreeMap<&'static str, u64>,
}

impl Window {
    fn new(now: Instant) -> Self {
        Window {
            started: now,
            total: 0,
            written: HashMap::new(),
            left_out: HashMap::new(),
            other: BTreeMap::new(),
        }
    }
}

/// What became of a refusal's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// It was written.
    Yes,
    /// It was left out (counted for the window's summary).
    LeftOut,
}

/// Writes audit lines.
pub struct AuditLog {
    sink: Mutex<Box<dyn Write + Send>>,
    budget: RefusalBudget,
    window: Mutex<Window>,
}

impl AuditLog {
    /// Opens the sink, with the default refusal budget.
    pub fn open(sink: &AuditSink) -> std::io::Result<Self> {
        Self::open_with(sink, RefusalBudget::default())
    }

    /// Opens the sink, taking refusal lines within `budget`.
    pub fn open_with(sink: &AuditSink, budget: RefusalBudget) -> std::io::Result<Self> {
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
            budget,
            window: Mutex::new(Window::new(Instant::now())),
        })
    }

    /// Writes one line, always (issuances).
    pub fn write(&self, event: &AuditEvent) -> std::io::Result<()> {
        self.write_line(event)
    }

    fn write_line(&self, event: &impl Serialize) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        sink.write_all(&line)?;
        sink.flush()
    }

    /// Writes a refusal's line if `client`'s budget and the total budget of the window allow,
    /// else counts it for the window's summary. A window that has ended is summarized first.
    pub fn refusal(&self, event: &AuditEvent, client: IpAddr) -> std::io::Result<Written> {
        let key = crate::limits::client_key(client);
        let write = {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            self.roll(&mut window, Instant::now())?;
            let written = window.written.get(&key).copied().unwrap_or(0);
            if written < self.budget.per_client && window.total < self.budget.total {
                window.total += 1;
                // Bounded: `total` entries at most.
                *window.written.entry(key).or_default() += 1;
                true
            } else {
                let code = event.code.unwrap_or("unknown");
                let summaries = self.budget.summaries as usize;
                if window.left_out.len() < summaries || window.left_out.contains_key(&(key, code)) {
                    *window.left_out.entry((key, code)).or_default() += 1;
                } else {
                    *window.other.entry(code).or_default() += 1;
                }
                false
            }
        };
        if write {
            self.write_line(event)?;
            Ok(Written::Yes)
        } else {
            Ok(Written::LeftOut)
        }
    }

    /// Writes the summary of the window if it has ended, and starts a new one (called on a timer,
    /// so that a flood that stops is summarized too, and at shutdown with `force`).
    pub fn summarize(&self, force: bool) -> std::io::Result<()> {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if force {
            window.started = now
                .checked_sub(self.budget.window)
                .unwrap_or(window.started);
        }
        self.roll(&mut window, now)
    }

    fn roll(&self, window: &mut Window, now: Instant) -> std::io::Result<()> {
        if now.saturating_duration_since(window.started) < self.budget.window {
            return Ok(());
        }
        let ended = std::mem::replace(window, Window::new(now));
        let seconds = self.budget.window.as_secs().max(1);
        let mut left_out: Vec<_> = ended.left_out.into_iter().collect();
        left_out.sort_by_key(|((client, code), _)| (*client, *code));
        let mut lines: Vec<_> = left_out
            .into_iter()
            .map(|((client, code), count)| (crate::limits::client_label(client), code, count, None))
            .collect();
        if !ended.other.is_empty() {
            let count = ended.other.values().sum();
            let code = match ended.other.keys().collect::<Vec<_>>()[..] {
                [one] => *one,
                _ => "several",
            };
            lines.push(("other clients".into(), code, count, Some(ended.other)));
        }
        let mut result = Ok(());
        for (client, code, count, codes) in lines {
            let line = LeftOutEvent {
                time: palisade_identity::rfc3339(OffsetDateTime::now_utc()),
                event: "refusals_left_out",
                reason: format!(
                    "left out {count} {code} refusals from {client} in the last {seconds} s"
                ),
                client,
                code,
                count,
                codes,
                window_seconds: seconds,
            };
            if let Err(error) = self.write_line(&line) {
                result = Err(error);
            }
        }
        result
    }
}

/// A peer-supplied string cut to [`MAX_FIELD`] characters (JSON escaping does the rest).
pub fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_FIELD) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(budget: RefusalBudget) -> (AuditLog, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open_with(&AuditSink::File(dir.path().join("audit")), budget).unwrap();
        (log, dir)
    }

    fn lines(dir: &tempfile::TempDir) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.path().join("audit"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn refused(client: &str, code: &'static str) -> AuditEvent {
        let mut event = AuditEvent::new("refused", "sign", client.parse().unwrap());
        event.code = Some(code);
        event
    }

    #[test]
    fn refusals_beyond_the_budget_are_counted_and_summarized_per_client_and_code() {
        let (log, dir) = log(RefusalBudget {
            window: Duration::from_secs(3600),
            per_client: 3,
            total: 5,
            summaries: 100,
        });
        let a: IpAddr = "10.0.0.7".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let mut written = 0;
        for i in 0..100 {
            let code = if i % 2 == 0 {
                "rate_limited"
            } else {
                "csr_invalid"
            };
            if log.refusal(&refused("10.0.0.7:1", code), a).unwrap() == Written::Yes {
                written += 1;
            }
        }
        assert_eq!(written, 3);
        // Another client has its own budget, within the total.
        let b_written = (0..10)
            .filter(|_| {
                log.refusal(&refused("[2001:db8::1]:1", "no_credential"), b)
                    .unwrap()
                    == Written::Yes
            })
            .count();
        assert_eq!(b_written, 2, "the total (5) is reached");
        assert_eq!(lines(&dir).len(), 5);
        log.summarize(true).unwrap();
        let all = lines(&dir);
        let summaries: Vec<_> = all
            .iter()
            .filter(|l| l["event"] == "refusals_left_out")
            .collect();
        assert_eq!(summaries.len(), 3, "{summaries:#?}");
        let count = |client: &str, code: &str| {
            summaries
                .iter()
                .find(|l| l["client"] == client && l["code"] == code)
                .map(|l| l["count"].as_u64().unwrap())
        };
        assert_eq!(
            count("10.0.0.7", "rate_limited").unwrap() + count("10.0.0.7", "csr_invalid").unwrap(),
            97
        );
        assert_eq!(count("2001:db8::/64", "no_credential"), Some(8));
        assert!(summaries[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("left out "));
        // A new window: the budget is back.
        assert_eq!(
            log.refusal(&refused("10.0.0.7:1", "rate_limited"), a)
                .unwrap(),
            Written::Yes
        );
    }

    #[test]
    fn summary_lines_are_capped_per_window_and_the_rest_fold_into_one_other_clients_line() {
        let (log, dir) = log(RefusalBudget {
            window: Duration::from_secs(3600),
            per_client: 1,
            total: 10,
            summaries: 100,
        });
        // A flood rotating /64s: 500 of them, two codes each, two refusals per pair.
        let mut sent = 0u64;
        for i in 0..500u32 {
            let client = format!("[2001:db8:0:{i:x}::1]:1");
            let ip: IpAddr = format!("2001:db8:0:{i:x}::1").parse().unwrap();
            for code in ["rate_limited", "csr_invalid", "rate_limited", "csr_invalid"] {
                log.refusal(&refused(&client, code), ip).unwrap();
                sent += 1;
            }
        }
        log.summarize(true).unwrap();
        let all = lines(&dir);
        let written = all.iter().filter(|l| l["event"] == "refused").count();
        assert_eq!(written, 10);
        let summaries: Vec<_> = all
            .iter()
            .filter(|l| l["event"] == "refusals_left_out")
            .collect();
        assert_eq!(summaries.len(), 101, "100 pairs and one line for the rest");
        let other = summaries.last().unwrap();
        assert_eq!(other["client"], "other clients");
        assert_eq!(other["code"], "several");
        let counted: u64 = summaries.iter().map(|l| l["count"].as_u64().unwrap()).sum();
        assert_eq!(
            counted + written as u64,
            sent,
            "every refusal is accounted for"
        );
        let by_code = other["codes"].as_object().unwrap();
        assert_eq!(
            by_code.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
            other["count"].as_u64().unwrap()
        );
        assert!(by_code.contains_key("rate_limited") && by_code.contains_key("csr_invalid"));
        assert!(summaries[..100]
            .iter()
            .all(|l| l["client"] != "other clients" && l.get("codes").is_none()));
    }

    #[test]
    fn an_unwritable_sink_is_an_error_not_silence() {
        let log = AuditLog::open(&AuditSink::File("/dev/full".into())).unwrap();
        let event = AuditEvent::new("issued", "sign", "10.0.0.1:1".parse().unwrap());
        assert!(log.write(&event).is_err());
    }
}
