//! The oracle for the sidecar's configuration loader, in one place: `check` gives a text to
//! `SidecarConfig::from_yaml` and asserts what must hold. A refusal is a syntax error located at a
//! line and column from 1, or an invalid configuration, each with a message (never a read error:
//! nothing is read from disk). A configuration that loads holds what the sidecar relies on when
//! it binds and runs: one usable identity source, a loopback admin address, listeners with unique
//! non-empty names, each inbound listener admitting by exactly one of allow, policy and
//! network_policy (and its allow-list builds), each outbound listener expecting someone, counts
//! that its semaphores can hold and a bounded number of workers.
//!
//! Included by path, so that the two harnesses cannot drift apart, by the libFuzzer target
//! fuzz/fuzz_targets/sidecar_config.rs and by the stable smoke test tests/config_fuzz_smoke.rs
//! (docs/FUZZING.md). It only uses crates both of them depend on.

use std::collections::HashSet;
use std::path::Path;

use palisade_sidecar::config::{MAX_COUNT, MAX_WORKERS};
use palisade_sidecar::{AllowList, ConfigError, SidecarConfig};

/// One text through the loader and the checks; true when the configuration loaded (the smoke
/// test counts them).
pub fn check(text: &str) -> bool {
    match SidecarConfig::from_yaml(text, Path::new("sidecar.yaml")) {
        Ok(config) => {
            assert!(
                config.identity.source().is_some(),
                "loaded without an identity source"
            );
            assert!(config.admin.listen.ip().is_loopback(), "admin off loopback");
            let mut names = HashSet::new();
            for name in config
                .inbound
                .iter()
                .map(|l| &l.name)
                .chain(config.outbound.iter().map(|l| &l.name))
            {
                assert!(
                    !name.is_empty() && names.insert(name),
                    "listener name {name:?} empty or repeated"
                );
            }
            for l in &config.inbound {
                let ways = usize::from(!l.allow.is_empty())
                    + usize::from(l.policy.is_some())
                    + usize::from(l.network_policy.is_some());
                assert_eq!(ways, 1, "listener {} admits by {ways} means", l.name);
                let _ = AllowList::new(l.allow.clone());
            }
            assert!(
                config.outbound.iter().all(|l| !l.expect.is_empty()),
                "an outbound listener expects nobody"
            );
            // The counts become tokio semaphores at start (a panic above 2^61 permits, and
            // `2 * max_connections` permits in use); MAX_COUNT is far below that bound.
            for count in [config.limits.max_connections, config.limits.max_handshakes] {
                assert!(
                    (1..=MAX_COUNT).contains(&count),
                    "a count outside 1..={MAX_COUNT}: {count}"
                );
            }
            assert!(
                config
                    .workers
                    .is_none_or(|w| (1..=MAX_WORKERS).contains(&w)),
                "workers outside 1..={MAX_WORKERS}: {:?}",
                config.workers
            );
            true
        }
        Err(ConfigError::Syntax {
            line,
            column,
            message,
            ..
        }) => {
            assert!(line >= 1 && column >= 1, "located at {line}:{column}");
            assert!(!message.is_empty(), "a syntax error without a message");
            false
        }
        Err(ConfigError::Invalid { message, .. }) => {
            assert!(!message.is_empty(), "a refusal without a message");
            false
        }
        Err(error @ ConfigError::Read { .. }) => panic!("from_yaml read a file: {error}"),
    }
}
