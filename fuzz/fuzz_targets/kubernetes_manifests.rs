//! The Kubernetes manifest readers on arbitrary UTF-8: the NetworkPolicy loader must return the
//! objects or located errors (objects that load must compile for every node and give matrices),
//! and `inject` must inject or refuse with a sentence; what it injects must uninject and inject
//! again to the same text.
//!
//! cargo +nightly fuzz run kubernetes_manifests fuzz/corpus/kubernetes_manifests examples/kubernetes
//! (docs/FUZZING.md). The same checks run on stable in tests/manifest_fuzz_smoke.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match palisade_netpol::load_str(text, "fuzz.yaml") {
        Ok(cluster) => {
            let nodes: std::collections::BTreeSet<&str> = cluster
                .inventory
                .pods
                .iter()
                .filter_map(|p| p.node.as_deref())
                .collect();
            for node in nodes {
                let table =
                    palisade_netpol::compile(&cluster, node, palisade_policy::Ruleset::open(Some(node)));
                let _ = palisade_policy::nft_text(&table);
            }
            let _ = palisade_netpol::matrix(
                &cluster,
                palisade_netpol::Proto::Tcp,
                80,
                palisade_policy::addrs::Family::V4,
            )
            .to_string();
        }
        Err(errors) => assert!(!errors.errors.is_empty(), "an error without a message"),
    }
    let settings = palisade_inject::Settings::default();
    if let Ok(injected) = palisade_inject::inject(text, &settings) {
        let back = palisade_inject::uninject(&injected.text).expect("uninject takes inject's output");
        let again = palisade_inject::inject(&back, &settings).expect("injects again");
        assert_eq!(again.text, injected.text);
    }
});
