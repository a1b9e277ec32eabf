//! The oracle for the admin server's decision, in one place: `check` builds a request head from
//! the input's lines (method, path, Host header or `-` for none, Origin when the line is not
//! empty, client address, loopback when it does not parse; a missing line is empty) and gives it
//! to `palisade_admin::decide`, which must not panic and must keep the trust model, checked
//! against `loopback_host`, written apart from the server's parser: anything with an Origin, or
//! whose Host is not a loopback address or localhost, is refused, with a sentence; only
//! `POST /shutdown` from loopback shuts down.
//!
//! Included by path, so that the two harnesses cannot drift apart, by the libFuzzer target
//! fuzz/fuzz_targets/admin_request.rs and by the stable smoke test tests/admin_fuzz_smoke.rs
//! (docs/FUZZING.md), which also sends raw requests to a real server. It only uses crates both
//! of them depend on.

use std::net::{IpAddr, Ipv4Addr};

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

/// One head through `decide` and the trust model; whether it was refused (the smoke test counts
/// them), or None when the input is no head: a method or path that is not UTF-8, which the
/// server never passes on. The Host line is given as bytes, as the server gives the header.
pub fn check(data: &[u8]) -> Option<bool> {
    let mut lines = data.split(|&b| b == b'\n');
    let method = std::str::from_utf8(lines.next().unwrap_or_default()).ok()?;
    let path = std::str::from_utf8(lines.next().unwrap_or_default()).ok()?;
    let host = match lines.next() {
        None | Some(b"-") => None,
        Some(host) => Some(host),
    };
    let has_origin = lines.next().is_some_and(|o| !o.is_empty());
    let remote = lines
        .next()
        .and_then(|r| std::str::from_utf8(r).ok()?.parse().ok())
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
        assert!(refused, "not refused: {head:?} -> {decision:?}");
    }
    if decision == Decision::Shutdown {
        assert!(
            method == "POST" && path == "/shutdown" && remote.is_loopback(),
            "{head:?} shuts down"
        );
    }
    if let Decision::Forbidden(why) = decision {
        assert!(
            why.ends_with('\n') && why.len() > 1,
            "a refusal without a sentence: {why:?}"
        );
    }
    Some(refused)
}
