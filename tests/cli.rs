//! The command line as a whole (docs/CLI.md): every command and subcommand's `--help` ends with
//! an example whose lines are whole commands (a wrapped line continues only after ` \`), the
//! completion script loads in bash, man pages come out for every command, the version names the
//! commit, the exit codes mean one thing each, and a reader that closes stdout early ends the
//! command quietly.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// `palisade <path> --help`, at the width clap uses without a terminal and at a narrow one.
fn help(path: &[String], columns: &str) -> String {
    let out = Command::new(BIN)
        .args(path)
        .arg("--help")
        .env("COLUMNS", columns)
        .output()
        .unwrap();
    assert!(out.status.success(), "{path:?} --help: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists under "Commands:".
fn subcommands(help: &str) -> Vec<String> {
    let Some(start) = help.find("\nCommands:\n") else {
        return Vec::new();
    };
    help[start + "\nCommands:\n".len()..]
        .lines()
        .take_while(|l| l.starts_with("  "))
        // A wrapped description is indented further than the two spaces of a name.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every command path, depth first.
fn every_command() -> Vec<Vec<String>> {
    let mut paths = vec![Vec::new()];
    let mut i = 0;
    while i < paths.len() {
        let path = paths[i].clone();
        for name in subcommands(&help(&path, "100")) {
            let mut child = path.clone();
            child.push(name);
            paths.push(child);
        }
        i += 1;
    }
    paths
}

#[test]
fn every_command_and_subcommand_has_a_help_example_of_whole_lines() {
    let paths = every_command();
    assert!(paths.len() > 25, "only {} commands found", paths.len());
    let mut wrong = Vec::new();
    for path in &paths {
        for columns in ["100", "80"] {
            let text = help(path, columns);
            let Some(at) = text.find("\nExample") else {
                wrong.push(format!("palisade {}: no example", path.join(" ")));
                break;
            };
            // The example block: the lines after the heading, up to a blank line.
            let lines: Vec<&str> = text[at + 1..]
                .lines()
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .collect();
            assert!(!lines.is_empty(), "{path:?}: an empty example");
            let mut continued = false;
            for line in &lines {
                let starts_a_command = line.starts_with("  palisade ")
                    || line.starts_with("  cargo ")
                    || line.starts_with("  PALISADE_");
                if !(starts_a_command || continued && line.starts_with("    ")) {
                    wrong.push(format!(
                        "palisade {} at {columns} columns: {line:?} is neither a command nor a continuation",
                        path.join(" ")
                    ));
                }
                continued = line.trim_end().ends_with('\\');
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_bash_completion_script_loads_and_completes_commands() {
    if !have("bash") {
        return;
    }
    let script = format!(
        "source <({BIN} completion bash) || exit 1\n\
         complete -p palisade || exit 1\n\
         COMP_WORDS=(palisade pol); COMP_CWORD=1; COMP_LINE='palisade pol'; COMP_POINT=12\n\
         _palisade palisade pol palisade\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("-F _palisade palisade"),
        "not registered: {stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "policy"),
        "`palisade pol<TAB>` did not complete to policy: {stdout}"
    );
    for shell in ["zsh", "fish"] {
        let out = palisade(&["completion", shell], std::path::Path::new("."));
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
    }
}

#[test]
fn a_man_page_is_written_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    ok(palisade(
        &["man", dir.path().to_str().unwrap()],
        std::path::Path::new("."),
    ));
    for path in every_command() {
        let name = std::iter::once("palisade".to_owned())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join("-");
        let page = dir.path().join(format!("{name}.1"));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".TH"), "{name}: not a man page");
    }
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let json: serde_json::Value =
        serde_json::from_str(&ok(palisade(&["version", "-o", "json"], here))).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    let long = ok(palisade(&["--version"], here));
    let commit = json["commit"].as_str().unwrap();
    assert!(long.contains(commit), "{long}");
    // Built from a git checkout (as here and in CI): the commit is one of its own, and its date
    // is RFC 3339.
    let in_checkout = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .current_dir(here)
        .output()
        .is_ok_and(|o| o.status.success());
    if in_checkout {
        let git = Command::new("git")
            .args(["rev-parse", "--verify", &format!("{commit}^{{commit}}")])
            .current_dir(here)
            .output()
            .unwrap();
        assert!(
            git.status.success(),
            "{commit} is no commit of this checkout"
        );
        let date = json["commit_date"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{date}"
        );
    }
}

/// Runs `palisade args` with its stdout's reader gone after `keep` bytes (none: closed before
/// the command writes anything); returns (exit code, stderr).
fn with_stdout_closed_after(args: &[&str], keep: usize) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    if keep > 0 {
        let mut first = vec![0; keep];
        stdout.read_exact(&mut first).unwrap();
    }
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = wait_bounded(&mut child, Duration::from_secs(30));
    (status, stderr)
}

fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_reader_that_closes_stdout_early_ends_the_command_quietly() {
    // More than a pipe holds (64 KiB), so the command is still writing when the reader goes, as
    // with `| head`.
    let (code, stderr) = with_stdout_closed_after(&["completion", "bash"], 100);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    // And a reader gone before the first write.
    let (code, stderr) = with_stdout_closed_after(
        &[
            "policy",
            "compile",
            "examples/policy/shop.yaml",
            "--host",
            "node-a",
        ],
        0,
    );
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
}

#[test]
fn exit_codes_mean_one_thing_each() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // 2: the command line is wrong.
    let out = palisade(&["policy", "explain", "--no-such-flag"], here);
    assert_eq!(out.status.code(), Some(2));
    // 3: an answer, no. A sidecar that is not there is not ready.
    let out = palisade(
        &[
            "sidecar",
            "probe",
            "--admin",
            &format!("127.0.0.1:{}", free_port()),
        ],
        here,
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // 1: a failure (a policy file that does not exist).
    let out = palisade(&["policy", "check", "no-such-policy.yaml"], here);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}

/// Runs `palisade args` in `dir` and parses its stdout as one JSON document; `code` is the exit
/// code wanted.
fn json_of(args: &[&str], dir: &std::path::Path, code: i32) -> serde_json::Value {
    let out = palisade(args, dir);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON document ({e}):\n{text}"))
}

fn is_rfc3339(value: &serde_json::Value) -> bool {
    value.as_str().is_some_and(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
    })
}

fn is_serial(value: &serde_json::Value) -> bool {
    value.as_str().is_some_and(|s| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// Every command that takes `-o json` is run with it here (the list is checked against the
/// commands' help, so a new one cannot be left out), and what it prints parses as one JSON
/// document with times in RFC 3339 and serial numbers in one format.
#[test]
fn every_command_with_o_json_prints_one_json_document() {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shop = manifest.join("examples/policy/shop.yaml");
    let shop = shop.to_str().unwrap();
    let netpol = manifest.join("examples/kubernetes/netpol");
    let netpol = netpol.to_str().unwrap();
    let ca = TwoLevelCa::new();
    let dir = ca.path();
    let mut covered: Vec<&str> = Vec::new();
    let mut run = |path: &'static str, args: &[&str], code: i32| {
        covered.push(path);
        let mut all: Vec<&str> = path.split(' ').collect();
        all.extend(args);
        all.extend(["-o", "json"]);
        json_of(&all, dir, code)
    };

    let v = run("version", &[], 0);
    assert!(v["commit"].is_string() && v["version"].is_string(), "{v}");

    let v = run("ca init", &["--ca-dir", "r2", "--trust-domain", TD], 0);
    assert_eq!(v["trust_domain"], TD);
    assert!(is_rfc3339(&v["not_after"]), "{v}");
    let v = run("ca init-issuer", &["--root-dir", "r2", "--ca-dir", "i2"], 0);
    assert_eq!(v["bundle_roots"], 1, "{v}");
    assert!(is_rfc3339(&v["not_after"]), "{v}");
    let id = format!("spiffe://{TD}/ns/shop/sa/web");
    let v = run("ca token", &["--ca-dir", "issuer", "--spiffe-id", &id], 0);
    assert!(
        v["token"].as_str().unwrap().starts_with("palisade-join-"),
        "{v}"
    );
    assert!(is_rfc3339(&v["expires"]), "{v}");

    let dirs = ["--root-dir", "r2", "--ca-dir", "i2"];
    let v = run("ca rotate status", &dirs, 0);
    assert_eq!(
        (v["step"].as_str(), v["next_step"].as_str()),
        (Some("none"), Some("prepare"))
    );
    assert_eq!(v["next_step_safe_now"], true, "{v}");
    let v = run(
        "ca rotate prepare",
        &[&dirs[..], &["--leaf-ttl", "1h"]].concat(),
        0,
    );
    assert_eq!(
        (v["step"].as_str(), v["next_step"].as_str()),
        (Some("prepared"), Some("activate"))
    );
    assert_eq!(
        (
            v["bundle_roots"].as_u64(),
            v["next_step_safe_now"].as_bool()
        ),
        (Some(2), Some(false))
    );
    assert!(
        is_rfc3339(&v["prepared_at"]) && is_rfc3339(&v["next_step_safe_from"]),
        "{v}"
    );
    let v = run("ca rotate activate", &[&dirs[..], &["--force"]].concat(), 0);
    assert_eq!(
        (v["step"].as_str(), v["next_step"].as_str()),
        (Some("activated"), Some("retire"))
    );
    assert!(is_rfc3339(&v["activated_at"]), "{v}");
    let v = run("ca rotate retire", &[&dirs[..], &["--force"]].concat(), 0);
    assert_eq!(
        (v["step"].as_str(), v["bundle_roots"].as_u64()),
        (Some("none"), Some(1))
    );

    let issued = run(
        "cert issue",
        &[
            "--ca-dir",
            "issuer",
            "--spiffe-id",
            &id,
            "--svid-dir",
            "web",
        ],
        0,
    );
    assert!(
        is_serial(&issued["serial"]) && is_rfc3339(&issued["not_after"]),
        "{issued}"
    );
    let inspected = run(
        "cert inspect",
        &["web/cert.pem", "--bundle", "web/bundle.pem"],
        0,
    );
    assert_eq!(inspected["serial"], issued["serial"], "one serial format");
    assert_eq!(inspected["spiffe_id"], id.as_str());

    let server = CaProcess::start(&ca.issuer(), &[]);
    let token = ca.token("ns/shop/sa/api", "5m");
    std::fs::write(dir.join("token"), &token).unwrap();
    let bundle = ca.bundle();
    let url = server.url();
    let requested = run(
        "cert request",
        &[
            "--ca",
            &url,
            "--bundle",
            bundle.to_str().unwrap(),
            "--token-file",
            "token",
            "--svid-dir",
            "api",
        ],
        0,
    );
    assert_eq!(
        requested["spiffe_id"],
        format!("spiffe://{TD}/ns/shop/sa/api").as_str()
    );
    assert!(is_serial(&requested["serial"]), "{requested}");
    let renewed = run("cert renew", &["--ca", &url, "--svid-dir", "api"], 0);
    assert!(
        is_serial(&renewed["serial"]) && is_rfc3339(&renewed["not_after"]),
        "{renewed}"
    );
    assert_ne!(renewed["serial"], requested["serial"]);

    let v = run("policy check", &[shop], 0);
    assert_eq!(
        (v["passed"].as_bool(), v["errors"].as_u64()),
        (Some(true), Some(0)),
        "{v}"
    );
    assert!(v["policy"]["segments"].as_u64().unwrap() > 0, "{v}");
    // Errors are diagnostics too, each located.
    std::fs::write(
        dir.join("bad.yaml"),
        "version: 1\nsegments:\n  a: { cidrs: [10.0.0.0/33] }\n",
    )
    .unwrap();
    let v = run("policy check", &["bad.yaml", "--kubernetes", netpol], 1);
    assert_eq!(v["passed"], false, "{v}");
    let first = &v["diagnostics"][0];
    assert_eq!(
        (first["file"].as_str(), first["severity"].as_str()),
        (Some("bad.yaml"), Some("error")),
        "{v}"
    );
    assert!(
        first["line"].as_u64().unwrap() >= 1 && first["column"].as_u64().unwrap() >= 1,
        "{v}"
    );
    assert!(
        v["kubernetes"]["network_policies"].as_u64().unwrap() > 0,
        "{v}"
    );

    let v = run(
        "policy explain",
        &[
            shop,
            "--from",
            "10.10.1.5",
            "--to",
            "10.10.2.7",
            "--port",
            "443",
        ],
        0,
    )
    .to_owned();
    assert_eq!(v["layers"][0]["layer"], "policy", "{v}");
    assert_eq!(v["allowed"], v["layers"][0]["allowed"], "{v}");
    let v = run(
        "policy explain",
        &[
            "--kubernetes",
            netpol,
            "--from",
            "z/a",
            "--to",
            "x/b",
            "--port",
            "80",
        ],
        3,
    );
    assert_eq!(
        (v["allowed"].as_bool(), v["layers"][0]["layer"].as_str()),
        (Some(false), Some("kubernetes")),
        "{v}"
    );
    assert_eq!(v["layers"][0]["to"]["pod"], "x/b", "{v}");
    let v = run(
        "policy matrix",
        &["--kubernetes", netpol, "--port", "80"],
        0,
    );
    let pods = v["pods"].as_array().unwrap().len();
    assert!(pods > 1, "{v}");
    assert_eq!(v["reachable"].as_array().unwrap().len(), pods, "{v}");
    let v = run("policy compile", &[shop, "--host", "node-a"], 0);
    assert!(v["nftables"].is_array(), "{v}");

    let pki = Pki::new();
    pki.issue("payments", "payments", &[]);
    let config = format!(
        "{}inbound:\n  - name: api\n    listen: 127.0.0.1:0\n    forward_to: 127.0.0.1:9\n    allow: [spiffe://{TD}/frontend]\nadmin:\n  listen: 127.0.0.1:0\n",
        pki.identity_yaml("payments"),
    );
    let config_path = pki.path().join("sidecar.yaml");
    std::fs::write(&config_path, config).unwrap();
    let v = run(
        "sidecar check-sandbox",
        &["--config", config_path.to_str().unwrap()],
        0,
    );
    assert!(
        v["tried"].as_array().unwrap().len() > 3 && v["allowed"]["read"].is_array(),
        "{v}"
    );

    // The preflight: one entry per check; a configuration that cannot be read fails its own.
    let v = run("check", &["--sidecar-config", "no-such-sidecar.yaml"], 1);
    let failed: Vec<&serde_json::Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert!(
        v["ok"] == false && failed.iter().any(|c| c["check"] == "sidecar config"),
        "{v}"
    );

    // Every command whose help offers `-o` was run above.
    let offering: Vec<String> = every_command()
        .into_iter()
        .filter(|path| !path.is_empty() && help(path, "100").contains("-o, --output"))
        .map(|path| path.join(" "))
        .collect();
    let missing: Vec<&String> = offering
        .iter()
        .filter(|path| !covered.contains(&path.as_str()))
        .collect();
    assert!(missing.is_empty(), "-o json not run here for {missing:?}");
}

/// An old spelling of a flag still works for one release, and says its new one.
#[test]
fn an_old_spelling_still_works_and_names_the_new_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = palisade(
        &["ca", "init", "--dir", "ca", "--trust-domain", TD],
        tmp.path(),
    );
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--dir is an old spelling in `palisade ca init`: say --ca-dir"),
        "{stderr}"
    );
    assert!(tmp.path().join("ca/ca-cert.pem").exists());
    // The new spelling says nothing on stderr.
    let out = palisade(
        &[
            "cert",
            "issue",
            "--ca-dir",
            "ca",
            "--spiffe-id",
            &format!("spiffe://{TD}/a"),
            "--svid-dir",
            "a",
        ],
        tmp.path(),
    );
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let out = palisade(&["cert", "inspect", "a/cert.pem", "--json"], tmp.path());
    assert!(out.status.success(), "{out:?}");
    let _: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json still prints JSON");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("say -o json"),
        "{out:?}"
    );
}
