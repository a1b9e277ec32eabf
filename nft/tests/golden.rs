//! Golden files: every example policy (`examples/policy/*.yaml`), compiled for each of its hosts
//! and for all hosts at once, and the Kubernetes example (`examples/kubernetes/netpol`) for each
//! of its nodes, as nft text and as nftables JSON, must equal the files under
//! `tests/golden/<policy>/<host>.nft` and `.json` (`all-hosts.*` for `--all-hosts`). The JSON is
//! `serde_json` pretty-printed with a final newline, as `palisade policy compile --format json`
//! prints it.
//!
//! After an intended change to the compiler or to an example, rewrite the files and review the
//! diff:
//!
//! ```text
//! PALISADE_BLESS=1 cargo test -p palisade-nft --test golden
//! git diff tests/golden
//! ```
//!
//! Blessing also removes golden files that no longer correspond to a policy or a host.
//!
//! Then, when running as root with `nft` and `unshare` available, every golden file is checked by
//! the kernel's own parser, in a fresh network namespace so that the machine's firewall is never
//! touched: `unshare -n nft -c -f FILE` and `unshare -n nft -c -j -f FILE`. Otherwise the test
//! prints `SKIP` with the reason.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_nft::{nft_json, nft_text};
use palisade_policy::{compile, load_file};

/// The file stem of the table compiled with every segment local (`--all-hosts`).
const ALL_HOSTS: &str = "all-hosts";

fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_owned()
}

fn example_policies() -> Vec<PathBuf> {
    let dir = root_dir().join("examples/policy");
    let mut out: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    out.sort();
    assert!(out.len() >= 2, "example policies: {out:?}");
    out
}

/// The fail-closed baseline `policy sync` installs when no policy has loaded: a ruleset like
/// the compiled ones, printed and checked the same way.
fn baseline_files() -> Vec<(PathBuf, String)> {
    let dir = root_dir().join("tests/golden/builtin-baseline");
    let ruleset = palisade_policy::Ruleset::baseline();
    let mut json = serde_json::to_string_pretty(&nft_json(&ruleset)).unwrap();
    json.push('\n');
    vec![
        (dir.join("table.nft"), nft_text(&ruleset)),
        (dir.join("table.json"), json),
    ]
}

/// The Kubernetes example (examples/kubernetes/netpol: NetworkPolicies over nine pods on two
/// nodes), compiled for each node without a Palisade policy.
fn netpol_files() -> Vec<(PathBuf, String)> {
    let cluster = palisade_netpol::load_paths(&[root_dir().join("examples/kubernetes/netpol")])
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = root_dir().join("tests/golden/kubernetes-netpol");
    let mut out = Vec::new();
    for node in ["node-1", "node-2"] {
        let ruleset =
            palisade_netpol::compile(&cluster, node, palisade_policy::Ruleset::open(Some(node)));
        let mut json = serde_json::to_string_pretty(&nft_json(&ruleset)).unwrap();
        json.push('\n');
        out.push((dir.join(format!("{node}.nft")), nft_text(&ruleset)));
        out.push((dir.join(format!("{node}.json")), json));
    }
    out
}

/// Every (golden path, expected content) of one policy.
fn expected_files(policy_path: &Path) -> Vec<(PathBuf, String)> {
    let policy = load_file(policy_path).unwrap_or_else(|e| panic!("{e}"));
    let stem = policy_path.file_stem().unwrap().to_str().unwrap();
    let dir = root_dir().join("tests/golden").join(stem);
    let mut targets: Vec<(String, Option<&str>)> = policy
        .hosts
        .iter()
        .map(|h| (h.name.clone(), Some(h.name.as_str())))
        .collect();
    assert!(
        targets.iter().all(|(name, _)| name != ALL_HOSTS),
        "{}: a host named `{ALL_HOSTS}` would collide with the --all-hosts file",
        policy_path.display()
    );
    targets.push((ALL_HOSTS.to_owned(), None));
    let mut out = Vec::new();
    for (name, host) in targets {
        let ruleset = compile(&policy, host).unwrap_or_else(|e| panic!("{e}"));
        let mut json = serde_json::to_string_pretty(&nft_json(&ruleset)).unwrap();
        json.push('\n');
        out.push((dir.join(format!("{name}.nft")), nft_text(&ruleset)));
        out.push((dir.join(format!("{name}.json")), json));
    }
    out
}

/// The first line where two texts differ, for the failure message.
fn first_difference(expected: &str, actual: &str) -> String {
    let (mut e, mut a) = (expected.lines(), actual.lines());
    for n in 1.. {
        match (e.next(), a.next()) {
            (None, None) => return "they differ only in line endings".into(),
            (x, y) if x == y => continue,
            (x, y) => return format!("line {n}: golden {x:?}, compiled {y:?}"),
        }
    }
    unreachable!()
}

#[test]
fn golden_files_match_and_nft_accepts_them() {
    let bless = std::env::var_os("PALISADE_BLESS").is_some_and(|v| v == "1");
    let golden_root = root_dir().join("tests/golden");
    let mut failures = Vec::new();
    let mut all_files: Vec<PathBuf> = Vec::new();
    let mut dirs = BTreeSet::new();
    let groups: Vec<_> = example_policies()
        .iter()
        .map(|p| expected_files(p))
        .chain(std::iter::once(baseline_files()))
        .chain(std::iter::once(netpol_files()))
        .collect();
    for files in groups {
        let dir = files[0].0.parent().unwrap().to_owned();
        if bless {
            fs::create_dir_all(&dir).unwrap();
            // Files of hosts that are gone.
            let keep: BTreeSet<&PathBuf> = files.iter().map(|(p, _)| p).collect();
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if !keep.contains(&path) {
                    fs::remove_file(&path).unwrap();
                    println!("removed {}", path.display());
                }
            }
        }
        for (path, content) in &files {
            if bless {
                if fs::read_to_string(path).ok().as_deref() != Some(content.as_str()) {
                    fs::write(path, content).unwrap();
                    println!("blessed {}", path.display());
                }
            } else {
                match fs::read_to_string(path) {
                    Err(e) => failures.push(format!("{}: {e}", path.display())),
                    Ok(golden) if golden != *content => failures.push(format!(
                        "{} differs from the compiled table: {}",
                        path.display(),
                        first_difference(&golden, content)
                    )),
                    Ok(_) => {}
                }
            }
            all_files.push(path.clone());
        }
        dirs.insert(dir);
    }
    // Golden files or directories that no example produces.
    for entry in fs::read_dir(&golden_root).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() && !dirs.contains(&path) {
            if bless {
                fs::remove_dir_all(&path).unwrap();
                println!("removed {}", path.display());
            } else {
                failures.push(format!("{} has no example policy", path.display()));
            }
        } else if path.is_dir() {
            for file in fs::read_dir(&path).unwrap() {
                let file = file.unwrap().path();
                if !all_files.contains(&file) {
                    failures.push(format!("{} belongs to no host", file.display()));
                }
            }
        }
    }
    if !failures.is_empty() {
        failures.push(
            "if the change is intended: PALISADE_BLESS=1 cargo test -p palisade-nft --test golden"
                .into(),
        );
    }
    println!("{} golden files", all_files.len());

    match nft_checker() {
        // Fails instead under scripts/test as root (palisade_test_support::skip).
        Err(reason) => {
            palisade_test_support::skip::skipping(&format!("the nft -c checks: {reason}"));
        }
        Ok(nft) => {
            for path in &all_files {
                let json = path.extension().is_some_and(|e| e == "json");
                let mut cmd = Command::new("unshare");
                cmd.arg("-n").arg(&nft).arg("-c");
                if json {
                    cmd.arg("-j");
                }
                let out = cmd.arg("-f").arg(path).output().unwrap();
                if !out.status.success() {
                    failures.push(format!(
                        "unshare -n nft -c{} -f {}: {}{}",
                        if json { " -j" } else { "" },
                        path.display(),
                        String::from_utf8_lossy(&out.stderr),
                        String::from_utf8_lossy(&out.stdout)
                    ));
                }
            }
            println!("nft -c accepted {} files", all_files.len());
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The path of `nft` when the checks can run here: as root, with `nft` and a working
/// `unshare -n`; otherwise why not.
fn nft_checker() -> Result<PathBuf, String> {
    if !palisade_test_support::skip::is_root() {
        return Err("not root".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let nft = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
        .ok_or("nft is not installed (Debian: apt-get install nftables)")?;
    match Command::new("unshare").args(["-n", "true"]).output() {
        Ok(o) if o.status.success() => Ok(nft),
        Ok(o) => Err(format!(
            "unshare -n fails here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("unshare: {e}")),
    }
}
