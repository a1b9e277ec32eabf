//! One-time join tokens: how a workload without an identity proves to `palisade ca serve` that an
//! operator meant it to have one. `palisade ca token` makes a token bound to one SPIFFE ID with an
//! expiry; the CA service consumes it on first use, whatever the outcome.
//!
//! ```text
//! TOKENS/pending/<sha256 of the token>.json   {"spiffe_id": ..., "expires_at": ...}
//! TOKENS/used/<sha256 of the token>.json      the same record, once presented
//! ```
//!
//! Only the token's SHA-256 is stored (a token is 256 random bits, so a fast hash is enough: there
//! is nothing to guess), and the lookup is by that hash, so no comparison of secrets takes place.
//! Consuming is one `rename` from `pending/` to `used/`: of two concurrent uses, also by two
//! replicas sharing the directory, the filesystem lets exactly one rename succeed.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use palisade_identity::files::{create_private_dir, write_atomic, PRIVATE};
use palisade_identity::SpiffeId;

/// Every token starts with this, so that a token pasted in the wrong place is recognisable.
pub const TOKEN_PREFIX: &str = "palisade-join-";
const TOKEN_HEX_LEN: usize = 64;
/// Used records are kept this long after their token's expiry, to tell "reused" from "unknown".
const USED_RECORD_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Why a presented join token is refused.
#[derive(Debug, thiserror::Error)]
pub enum JoinTokenRefusal {
    /// Not of the form `palisade-join-<64 hex digits>`.
    #[error("the join token is not of the form {TOKEN_PREFIX}<64 hex digits>")]
    Malformed,
    /// Never made here (or made so long ago that its record is gone).
    #[error("the join token is not known to this CA")]
    Unknown,
    /// Presented before: a token admits one workload once.
    #[error("the join token has already been used")]
    Reused,
    /// Presented after its expiry (it is consumed all the same).
    #[error("the join token expired at {0}")]
    Expired(OffsetDateTime),
    /// The token store cannot be read or written.
    #[error("the join token store is not usable: {0}")]
    Store(io::Error),
}

impl JoinTokenRefusal {
    /// The stable code the CA service answers with.
    pub fn code(&self) -> &'static str {
        match self {
            JoinTokenRefusal::Malformed => "token_malformed",
            JoinTokenRefusal::Unknown => "token_unknown",
            JoinTokenRefusal::Reused => "token_reused",
            JoinTokenRefusal::Expired(_) => "token_expired",
            JoinTokenRefusal::Store(_) => "token_store_unavailable",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    spiffe_id: String,
    expires_at: i64,
}

/// A directory of join tokens (by default `tokens/` in the CA directory).
#[derive(Debug, Clone)]
pub struct JoinTokens {
    dir: PathBuf,
}

impl JoinTokens {
    /// The token store at `dir` (created when the first token is made).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JoinTokens { dir: dir.into() }
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Makes a token for `id`, valid for `ttl`, stores its hash, and returns the token (the only
    /// time it exists in clear) with its expiry.
    pub fn create(&self, id: &SpiffeId, ttl: Duration) -> io::Result<(String, OffsetDateTime)> {
        let pending = self.dir.join("pending");
        create_private_dir(&pending)?;
        create_private_dir(&self.dir.join("used"))?;
        self.prune_used();
        let mut secret = [0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).map_err(|_| io::Error::other("no randomness"))?;
        let token = format!("{TOKEN_PREFIX}{}", hex(&secret));
        let expires_at = OffsetDateTime::now_utc() + ttl;
        let record = Record {
            spiffe_id: id.to_string(),
            expires_at: expires_at.unix_timestamp(),
        };
        let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        write_atomic(&pending.join(record_name(&token)), &json, PRIVATE)?;
        Ok((token, expires_at))
    }

    /// Consumes `token`: returns the ID it was made for, or why not. A token that exists is used
    /// up by this call even when it turns out to be expired, so it can never be tried twice.
    pub fn consume(&self, token: &str, now: OffsetDateTime) -> Result<SpiffeId, JoinTokenRefusal> {
        let well_formed = token.len() == TOKEN_PREFIX.len() + TOKEN_HEX_LEN
            && token.starts_with(TOKEN_PREFIX)
            && token[TOKEN_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if !well_formed {
            return Err(JoinTokenRefusal::Malformed);
        }
        let name = record_name(token);
        let pending = self.dir.join("pending").join(&name);
        let used = self.dir.join("used").join(&name);
        match std::fs::rename(&pending, &used) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if used.exists() {
                    JoinTokenRefusal::Reused
                } else {
                    JoinTokenRefusal::Unknown
                });
            }
            Err(e) => return Err(JoinTokenRefusal::Store(e)),
        }
        let record: Record = std::fs::read(&used)
            .map_err(JoinTokenRefusal::Store)
            .and_then(|bytes| {
                serde_json::from_slice(&bytes)
                    .map_err(|e| JoinTokenRefusal::Store(io::Error::other(e)))
            })?;
        let expires_at = OffsetDateTime::from_unix_timestamp(record.expires_at)
            .map_err(|e| JoinTokenRefusal::Store(io::Error::other(e)))?;
        if now >= expires_at {
            return Err(JoinTokenRefusal::Expired(expires_at));
        }
        SpiffeId::parse(&record.spiffe_id).map_err(|e| JoinTokenRefusal::Store(io::Error::other(e)))
    }

    /// Drops used records long past their expiry (best effort: a failure only leaves files).
    fn prune_used(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("used")) else {
            return;
        };
        let cutoff = (OffsetDateTime::now_utc() - USED_RECORD_RETENTION).unix_timestamp();
        for entry in entries.flatten() {
            let stale = std::fs::read(entry.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
                .is_some_and(|record| record.expires_at < cutoff);
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn record_name(token: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    format!("{}.json", hex(digest.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn a_token_admits_its_id_once() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = JoinTokens::new(dir.path());
        let wanted = id("spiffe://example.org/ns/shop/sa/frontend");
        let (token, _) = tokens.create(&wanted, Duration::from_secs(600)).unwrap();
        let now = OffsetDateTime::now_utc();
        assert_eq!(tokens.consume(&token, now).unwrap(), wanted);
        assert!(matches!(
            tokens.consume(&token, now),
            Err(JoinTokenRefusal::Reused)
        ));
        // Only the hash is on disk.
        for sub in ["pending", "used"] {
            for entry in std::fs::read_dir(dir.path().join(sub)).unwrap() {
                let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                assert!(!text.contains(&token[TOKEN_PREFIX.len()..]));
            }
        }
    }

    #[test]
    fn an_expired_token_is_refused_and_used_up() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = JoinTokens::new(dir.path());
        let (token, expires) = tokens
            .create(&id("spiffe://example.org/a"), Duration::from_secs(60))
            .unwrap();
        let later = expires + Duration::from_secs(1);
        assert!(matches!(
            tokens.consume(&token, later),
            Err(JoinTokenRefusal::Expired(_))
        ));
        assert!(matches!(
            tokens.consume(&token, later),
            Err(JoinTokenRefusal::Reused)
        ));
    }

    #[test]
    fn unknown_and_malformed_tokens_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = JoinTokens::new(dir.path());
        let now = OffsetDateTime::now_utc();
        let unknown = format!("{TOKEN_PREFIX}{}", "0".repeat(64));
        assert!(matches!(
            tokens.consume(&unknown, now),
            Err(JoinTokenRefusal::Unknown)
        ));
        for bad in [
            "",
            "palisade-join-",
            "palisade-join-../../etc/passwd",
            &unknown.to_uppercase(),
        ] {
            assert!(
                matches!(tokens.consume(bad, now), Err(JoinTokenRefusal::Malformed)),
                "{bad}"
            );
        }
    }

    #[test]
    fn of_many_concurrent_uses_exactly_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = JoinTokens::new(dir.path());
        let (token, _) = tokens
            .create(&id("spiffe://example.org/a"), Duration::from_secs(600))
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let wins: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..16)
                .map(|_| scope.spawn(|| tokens.consume(&token, now).is_ok()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap() as usize)
                .sum()
        });
        assert_eq!(wins, 1);
    }
}
