//! How refusals reach the log. Anyone who can open a TCP connection can cause one, so:
//! - what the peer supplied (a URI SAN in an error, say) is escaped and cut short before it is
//!   written, so a certificate cannot forge or break log lines;
//! - warnings are limited per reason: at most [`LINES_PER_WINDOW`] per [`WINDOW`], then one line
//!   saying how many were left out. The metric counts every refusal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::ListenerMetrics;
use crate::refusal::Refusal;

/// Longest message written for one refusal, in characters, before escaping.
pub const MAX_MESSAGE_CHARS: usize = 300;
pub const WINDOW: Duration = Duration::from_secs(10);
pub const LINES_PER_WINDOW: u32 = 20;

/// `text` with control and non-ASCII characters escaped (`\n`, `\u{202e}`), cut to `max` chars.
pub fn escape_for_log(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 8);
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

struct Window {
    started: Instant,
    written: u32,
    suppressed: u64,
}

/// Rate-limits refusal warnings, per reason.
#[derive(Default)]
pub(crate) struct RefusalLog {
    windows: Mutex<HashMap<&'static str, Window>>,
}

impl RefusalLog {
    /// Counts a refusal, and logs it unless this reason has used up its lines for now. Identity
    /// refusals are warnings (someone is knocking who should not be); load and network trouble is
    /// for debugging.
    pub fn refuse(
        &self,
        metrics: &ListenerMetrics,
        listener: &str,
        peer: SocketAddr,
        refusal: &Refusal,
    ) {
        let reason = refusal.reason();
        metrics.refused(reason);
        // The sentence is made only for a line that is written: under a flood most are not.
        let message = || escape_for_log(&refusal.to_string(), MAX_MESSAGE_CHARS);
        if !refusal.is_about_identity() {
            // tracing evaluates the arguments only when debug lines are on.
            tracing::debug!(listener, %peer, reason, "refused: {}", message());
            return;
        }
        let Some(suppressed) = self.admit_line(reason, Instant::now()) else {
            return;
        };
        if suppressed > 0 {
            tracing::warn!(
                reason,
                suppressed,
                "left out {suppressed} refusal lines with this reason in the last {WINDOW:?}"
            );
        }
        let spiffe_id = refusal.peer_id().map(|id| id.to_string());
        tracing::warn!(listener, %peer, spiffe_id, reason, "refused: {}", message());
    }

    /// `Some(lines left out in the window just ended)` when a line may be written now.
    fn admit_line(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = windows.entry(reason).or_insert(Window {
            started: now,
            written: 0,
            suppressed: 0,
        });
        let mut left_out = 0;
        if now.duration_since(w.started) >= WINDOW {
            left_out = std::mem::take(&mut w.suppressed);
            w.started = now;
            w.written = 0;
        }
        if w.written < LINES_PER_WINDOW {
            w.written += 1;
            Some(left_out)
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_long_text_cut() {
        let forged = "spiffe://x/a\n2026-12-05T00:00:00Z INFO admitted\r\u{1b}[31m\u{202e}";
        let safe = escape_for_log(forged, 300);
        assert!(
            !safe.chars().any(|c| c.is_control() || !c.is_ascii()),
            "{safe}"
        );
        assert!(
            safe.contains("\\n2026") && safe.contains("\\u{202e}"),
            "{safe}"
        );
        let long = escape_for_log(&"a".repeat(1000), 300);
        assert_eq!(long.len(), 303);
    }

    #[test]
    fn lines_are_limited_per_reason_and_window() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(log.admit_line("not_tls", t0), Some(0));
        }
        assert_eq!(log.admit_line("not_tls", t0), None);
        assert_eq!(log.admit_line("not_tls", t0), None);
        assert_eq!(
            log.admit_line("expired", t0),
            Some(0),
            "another reason has its own lines"
        );
        assert_eq!(log.admit_line("not_tls", t0 + WINDOW), Some(2));
    }
}
