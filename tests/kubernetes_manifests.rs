//! Every Kubernetes manifest under `examples/kubernetes/` (every document of every `.yaml` file,
//! in any subdirectory) validates against the API schemas of Kubernetes 1.30 and of 1.37, in strict
//! mode: an unknown field is an error, as is a wrong type or a missing required field. The
//! validator is `kubernetes-validate` from PyPI, which ships the schemas (nothing is fetched while
//! the test runs); `scripts/test` installs it in `target/kubernetes-venv`. A key written twice in
//! one mapping is refused too, since the validator's YAML reader silently keeps the last one.
//!
//! What the schemas leave open is not checked: enumerations (a port's `protocol`), quantities, that
//! a selector matches its template's labels, admission (Pod Security) and anything else decided by
//! the API server or the kubelet.

mod common;

use common::kubernetes::*;

#[test]
fn every_kubernetes_manifest_validates_against_the_api_schemas() {
    let Some(validator) = validator() else { return };
    let dir = root().join("examples/kubernetes");
    let files = manifests(&dir);
    for expected in [
        "palisade-sync-daemonset.yaml",
        "ca/ca.yaml",
        "ca/frontend.yaml",
    ] {
        assert!(
            files.contains(&dir.join(expected)),
            "examples/kubernetes/{expected} was not found among {files:?}"
        );
    }
    let mut failures = Vec::new();
    for file in &files {
        let name = file.strip_prefix(root()).unwrap_or(file).display();
        for problem in problems(&validator, file) {
            failures.push(format!("{name}: {problem}"));
        }
    }
    assert!(
        failures.is_empty(),
        "the manifests under examples/kubernetes ({} files) do not validate (kubernetes-validate {VALIDATOR_VERSION}, Kubernetes {KUBERNETES_VERSIONS:?}, strict):\n{}",
        files.len(),
        failures.join("\n")
    );
}

/// The check above can fail: each of these defects is reported, and a good file is not.
#[test]
fn the_validation_refuses_a_broken_manifest() {
    let Some(validator) = validator() else { return };
    let good = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: shop\ndata:\n  a: \"1\"\n";
    let pod = |container: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{ name: x }}\nspec:\n  containers:\n    - name: x\n      image: x\n{container}"
        )
    };
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("good", good.to_owned(), None),
        (
            "unknown field",
            pod("      securityContext: { readOnlyRootFileSystem: true }\n"),
            Some("'readOnlyRootFileSystem' was unexpected"),
        ),
        (
            "wrong type",
            pod("      ports: [{ containerPort: \"8443\" }]\n"),
            Some("is not of type 'integer'"),
        ),
        (
            "unknown apiVersion",
            good.replace("apiVersion: v1", "apiVersion: v2"),
            Some("Couldn't find schema"),
        ),
        (
            "second document",
            format!("{good}---\n{}", good.replace("\ndata:", "\ndate:")),
            Some("'date' was unexpected"),
        ),
        (
            "duplicate key",
            format!("{good}kind: ConfigMap\n"),
            Some("key 'kind' appears twice"),
        ),
        (
            "not YAML",
            "kind: [ConfigMap\n".to_owned(),
            Some("Couldn't parse YAML"),
        ),
        ("empty", String::new(), Some("no Kubernetes object")),
    ];
    for (name, text, expected) in cases {
        let path = tmp.path().join(format!("{}.yaml", name.replace(' ', "-")));
        std::fs::write(&path, text).unwrap();
        let found = problems(&validator, &path);
        match expected {
            None => assert!(found.is_empty(), "{name}: {found:#?}"),
            Some(expected) => assert!(
                found.iter().any(|p| p.contains(expected)),
                "{name}: expected a problem with {expected:?}, got {found:#?}"
            ),
        }
    }
}
