//! The oracle for the Kubernetes manifest readers, in one place: `check` gives a text to the
//! NetworkPolicy loader and to `inject`. What loads is compiled for each of its nodes (and printed
//! as nftables text) and turned into matrices for IPv4 and IPv6; a failed load must carry errors
//! that say something. What injects must uninject, and inject again to the same text.
//!
//! Included by path, so that the two harnesses cannot drift apart, by the libFuzzer target
//! fuzz/fuzz_targets/kubernetes_manifests.rs and by the stable smoke test
//! tests/manifest_fuzz_smoke.rs (docs/FUZZING.md). It only uses crates both of them depend on.

/// One text through both readers and the checks; true when it loaded as NetworkPolicy input (the
/// smoke test counts them).
pub fn check(text: &str) -> bool {
    let loaded = match palisade_netpol::load_str(text, "fuzz.yaml") {
        Ok(cluster) => {
            let nodes: std::collections::BTreeSet<&str> = cluster
                .inventory
                .pods
                .iter()
                .filter_map(|p| p.node.as_deref())
                .collect();
            for node in nodes {
                let table = palisade_netpol::compile(
                    &cluster,
                    node,
                    palisade_policy::Ruleset::open(Some(node)),
                );
                let _ = palisade_nft::nft_text(&table);
            }
            for family in [
                palisade_policy::addrs::Family::V4,
                palisade_policy::addrs::Family::V6,
            ] {
                let _ = palisade_netpol::matrix(&cluster, palisade_netpol::Proto::Tcp, 80, family)
                    .to_string();
            }
            true
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty(), "a failed load without an error");
            let _ = errors.to_string();
            false
        }
    };
    let settings = palisade_inject::Settings::default();
    if let Ok(injected) = palisade_inject::inject(text, &settings) {
        let back =
            palisade_inject::uninject(&injected.text).expect("uninject takes inject's output");
        let again =
            palisade_inject::inject(&back, &settings).expect("what injected once injects again");
        assert_eq!(again.text, injected.text, "twice is once, on:\n{text}");
    }
    loaded
}
