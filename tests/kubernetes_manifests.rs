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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The version of kubernetes-validate that `scripts/test` installs.
const VALIDATOR_VERSION: &str = "1.37.0";
/// The oldest Kubernetes the examples are meant for and the newest whose schemas the validator has.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Refuses a key that appears twice in one mapping, with one line naming it and where it is.
const DUPLICATE_KEYS: &str = r#"
import sys, yaml
class Loader(yaml.SafeLoader):
    pass
def mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, "key %r appears twice in one mapping" % (key,), key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)
Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
try:
    with open(sys.argv[1]) as f:
        list(yaml.load_all(f, Loader=Loader))
except yaml.YAMLError as e:
    print(" ".join(str(e).split()))
    sys.exit(1)
"#;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_bin(name: &str) -> PathBuf {
    root().join("target/kubernetes-venv/bin").join(name)
}

/// The validator, or None (the test then skips, or fails under strict).
fn validator() -> Option<PathBuf> {
    let tool = venv_bin("kubernetes-validate");
    let found = Command::new(&tool)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if found.as_deref() == Some(VALIDATOR_VERSION) {
        return Some(tool);
    }
    common::skipping(&format!(
        "target/kubernetes-venv has no kubernetes-validate {VALIDATOR_VERSION} (found: {}; scripts/test makes it)",
        found.as_deref().unwrap_or("none")
    ));
    None
}

/// Writes the documents of argv[1] to argv[2], each `List` replaced by its items; prints how
/// many Lists there were (0 also when the file is not YAML: the validator then reads it as it is
/// and says so).
const EXPAND_LISTS: &str = r#"
import sys, yaml
docs, lists = [], 0
try:
    for d in yaml.safe_load_all(open(sys.argv[1])):
        if isinstance(d, dict) and d.get("kind") == "List":
            lists += 1
            docs.extend(d.get("items") or [])
        elif d is not None:
            docs.append(d)
except yaml.YAMLError:
    lists = 0
if lists:
    yaml.safe_dump_all(docs, open(sys.argv[2], "w"))
print(lists)
"#;

/// Every `.yaml` or `.yml` file under `dir`, at any depth, sorted.
fn manifests(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn run(cmd: &mut Command) -> (String, String, bool, bool) {
    let (output, timed_out) = common::run_bounded(cmd, b"", Duration::from_secs(120));
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.success(),
        timed_out,
    )
}

/// What is wrong with one file, one line each: empty when every document of it validates against
/// every version of [`KUBERNETES_VERSIONS`].
fn problems(validator: &Path, file: &Path) -> Vec<String> {
    // kubernetes-validate has no schema for `kind: List` (what `kubectl get -o yaml` prints):
    // its items are validated instead, written out one document each.
    let expanded = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(venv_bin("python"));
    cmd.args(["-c", EXPAND_LISTS])
        .arg(file)
        .arg(expanded.path());
    let (stdout, stderr, success, _) = run(&mut cmd);
    assert!(
        success,
        "cannot expand the Lists of {}: {stdout}{stderr}",
        file.display()
    );
    let lists = stdout.trim() != "0";
    let validated: &Path = if lists { expanded.path() } else { file };
    let mut cmd = Command::new(validator);
    cmd.arg("--strict");
    for version in KUBERNETES_VERSIONS {
        cmd.args(["--kubernetes-version", version]);
    }
    cmd.arg(validated);
    let (stdout, stderr, success, timed_out) = run(&mut cmd);
    let mut problems = Vec::new();
    // kubernetes-validate exits 0 when it has no schema for a kind or apiVersion (a typo in either
    // is only a warning), so every line but a pass is a problem.
    let mut passed = 0;
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("INFO ") && line.contains(" passed for resource ") {
            passed += 1;
        } else {
            problems.push(line.to_owned());
        }
    }
    if timed_out {
        problems.push("kubernetes-validate took more than 120 s".to_owned());
    }
    if !success {
        // A crash is a Python traceback: its end says what went wrong. A file that does not
        // validate exits non-zero too, with the ERROR lines above and nothing on stderr.
        let lines: Vec<&str> = stderr.trim().lines().collect();
        let tail = lines[lines.len().saturating_sub(12)..].join("\n");
        if !tail.is_empty() || problems.is_empty() {
            problems.push(format!("kubernetes-validate exited non-zero. {tail}"));
        }
    }
    if passed == 0 {
        problems.push("no Kubernetes object was validated (an empty file?)".to_owned());
    }

    let mut cmd = Command::new(venv_bin("python"));
    cmd.args(["-c", DUPLICATE_KEYS]).arg(file);
    let (stdout, stderr, success, timed_out) = run(&mut cmd);
    if !success || timed_out {
        problems.push(format!("{}{}", stdout.trim(), stderr.trim()));
    }
    problems
}

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
