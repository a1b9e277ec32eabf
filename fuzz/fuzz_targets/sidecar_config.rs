//! The sidecar's configuration loader on arbitrary UTF-8: `SidecarConfig::from_yaml` must return
//! a configuration or a located error, never panic. A configuration that loads must hold what the
//! sidecar relies on when it binds and runs: one usable identity source, a loopback admin address,
//! listeners with unique non-empty names, each inbound listener admitting by exactly one of
//! allow, policy and network_policy, each outbound listener expecting someone.
//!
//! cargo +nightly fuzz run sidecar_config fuzz/corpus/sidecar_config fuzz/seeds/sidecar_config
//! (docs/FUZZING.md). The same checks run on stable in tests/config_fuzz_smoke.rs.
#![no_main]

use std::collections::HashSet;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use palisade_sidecar::{AllowList, ConfigError, SidecarConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match SidecarConfig::from_yaml(text, Path::new("sidecar.yaml")) {
        Ok(config) => {
            assert!(config.identity.source().is_some(), "no identity source");
            assert!(config.admin.listen.ip().is_loopback());
            let mut names = HashSet::new();
            for name in config
                .inbound
                .iter()
                .map(|l| &l.name)
                .chain(config.outbound.iter().map(|l| &l.name))
            {
                assert!(!name.is_empty() && names.insert(name), "listener {name:?}");
            }
            for l in &config.inbound {
                let ways = usize::from(!l.allow.is_empty())
                    + usize::from(l.policy.is_some())
                    + usize::from(l.network_policy.is_some());
                assert_eq!(ways, 1, "listener {} admits by {ways} means", l.name);
                let _ = AllowList::new(l.allow.clone());
            }
            assert!(config.outbound.iter().all(|l| !l.expect.is_empty()));
            // The counts become tokio semaphores (a panic at start above 2^61 permits).
            let most = palisade_sidecar::config::MAX_COUNT;
            assert!((1..=most).contains(&config.limits.max_connections));
            assert!((1..=most).contains(&config.limits.max_handshakes));
        }
        Err(ConfigError::Syntax {
            line,
            column,
            message,
            ..
        }) => assert!(line >= 1 && column >= 1 && !message.is_empty()),
        Err(ConfigError::Invalid { message, .. }) => assert!(!message.is_empty()),
        Err(ConfigError::Read { .. }) => panic!("from_yaml read a file"),
    }
});
