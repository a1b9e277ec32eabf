//! The admin server's decision on arbitrary request heads: the input's lines are the method, the
//! path, the Host header (`-` for none), whether an Origin header came (a non-empty line), and the
//! client's address (loopback when it does not parse). `palisade_admin::decide` must not panic,
//! and must keep the trust model: anything with an Origin, or whose Host is not a loopback
//! address or localhost, is refused; only `POST /shutdown` from loopback shuts down.
//!
//! cargo +nightly fuzz run admin_request fuzz/corpus/admin_request fuzz/seeds/admin_request
//! (docs/FUZZING.md). tests/admin_fuzz_smoke.rs runs the same checks on stable, and sends
//! mutated raw requests to a real admin server.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use palisade_admin::{decide, Decision, RequestHead};

/// Host is loopback as the trust model says it, written apart from the server's parser: the
/// name before an optional port, or inside brackets for IPv6.
fn loopback_host(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    if host
        .bytes()
        .any(|b| !(b == b'\t' || (32..127).contains(&b)))
    {
        return false;
    }
    let name = if let Some(inside) = host.strip_prefix('[') {
        match inside.find(']') {
            Some(end) => &inside[..end],
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let mut next = || std::str::from_utf8(lines.next().unwrap_or_default()).ok();
    let (Some(method), Some(path)) = (next(), next()) else {
        return;
    };
    let host_line = next();
    let host = match host_line {
        None | Some("-") => None,
        Some(host) => Some(host.as_bytes()),
    };
    let has_origin = next().is_some_and(|o| !o.is_empty());
    let remote = next()
        .and_then(|r| r.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let head = RequestHead {
        method,
        path,
        host,
        has_origin,
        remote,
    };
    let decision = decide(&head);
    let refused = matches!(decision, Decision::Forbidden(_));
    if has_origin || host.is_some_and(|h| !loopback_host(h)) {
        assert!(refused, "{head:?} -> {decision:?}");
    }
    if decision == Decision::Shutdown {
        assert!(method == "POST" && path == "/shutdown" && remote.is_loopback());
    }
    if let Decision::Forbidden(why) = decision {
        assert!(why.ends_with('\n') && why.len() > 1);
    }
});
