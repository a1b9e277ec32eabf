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
