//! Validating Kubernetes manifests offline: `kubernetes-validate` from PyPI (it ships the API
//! schemas; `scripts/test` installs it in `target/kubernetes-venv`), strict, against the oldest
//! and the newest Kubernetes we support, plus a check that no key appears twice in one mapping.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The version of kubernetes-validate that `scripts/test` installs.
pub const VALIDATOR_VERSION: &str = "1.37.0";
/// The oldest Kubernetes the examples are meant for and the newest whose schemas the validator has.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

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

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn venv_bin(name: &str) -> PathBuf {
    root().join("target/kubernetes-venv/bin").join(name)
}

/// The validator, or None (the test then skips, or fails under strict).
pub fn validator() -> Option<PathBuf> {
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
    super::skipping(&format!(
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
pub fn manifests(dir: &Path) -> Vec<PathBuf> {
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

pub fn run_tool(cmd: &mut Command) -> (String, String, bool, bool) {
    let (output, timed_out) = super::run_bounded(cmd, b"", Duration::from_secs(120));
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        output.status.success(),
        timed_out,
    )
}

/// What is wrong with one file, one line each: empty when every document of it validates against
/// every version of [`KUBERNETES_VERSIONS`].
pub fn problems(validator: &Path, file: &Path) -> Vec<String> {
    // kubernetes-validate has no schema for `kind: List` (what `kubectl get -o yaml` prints):
    // its items are validated instead, written out one document each.
    let expanded = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(venv_bin("python"));
    cmd.args(["-c", EXPAND_LISTS])
        .arg(file)
        .arg(expanded.path());
    let (stdout, stderr, success, _) = run_tool(&mut cmd);
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
    let (stdout, stderr, success, timed_out) = run_tool(&mut cmd);
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
    let (stdout, stderr, success, timed_out) = run_tool(&mut cmd);
    if !success || timed_out {
        problems.push(format!("{}{}", stdout.trim(), stderr.trim()));
    }
    problems
}
