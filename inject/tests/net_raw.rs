//! The NET_RAW hardening keeps inject's two promises on odd shapes a manifest can take (null
//! levels, names written twice, a securityContext that is not a mapping): injecting what
//! uninject gave back gives the same text, and uninject takes away only what inject added.

use palisade_inject::{inject, uninject, Settings};

fn pod(container: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n{container}")
}

fn value(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn inject_after_uninject_is_inject_and_uninject_takes_only_what_inject_added() {
    let settings = Settings::default();
    for container in [
        "  - name: a\n    image: i\n    securityContext: null\n    args: [x]\n",
        "  - name: a\n    image: i\n    securityContext:\n      capabilities: null\n      runAsUser: 7\n",
        "  - name: a\n    image: i\n    securityContext:\n      capabilities:\n        drop: null\n        add: [CHOWN]\n",
        "  - name: a\n    image: i\n    securityContext:\n      capabilities:\n        drop: [KILL]\n",
        "  - name: a\n    image: i\n  - name: a\n    image: i\n    securityContext:\n      capabilities:\n        drop: [NET_RAW]\n",
        "  - name: a\n    image: i\n    securityContext:\n      capabilities:\n        drop: [NET_RAW]\n  - name: a\n    image: i\n",
        "  - name: a\n    image: i\n    securityContext: 3\n",
        // No name (the API server would refuse it; inject does not): found again by position.
        "  - name: null\n    image: i\n",
        "  - image: i\n  - name: b\n    image: i\n",
    ] {
        let input = pod(container);
        let once = inject(&input, &settings).unwrap().text;
        let back = uninject(&once).unwrap();
        assert_eq!(inject(&back, &settings).unwrap().text, once, "{input}");
        assert_eq!(inject(&once, &settings).unwrap().text, once, "{input}");
        // Null levels come back absent, as Kubernetes reads them; everything else as it was.
        let normalized = input
            .replace("    securityContext: null\n", "")
            .replace("      capabilities: null\n", "")
            .replace("        drop: null\n", "");
        assert_eq!(value(&back), value(&normalized), "{input}");
    }
}
