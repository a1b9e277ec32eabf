//! Whether a test may run here, written once for every test of the project.
//!
//! - A test that needs root is marked `#[ignore = "needs root: <why>"]`, so `cargo test` shows it
//!   as ignored with its reason, and starts with [`require_root`]: run with `--include-ignored`
//!   (scripts/test does as root) it fails, never passes, where it cannot run.
//! - A test that needs a tool asks [`have`]. When `PALISADE_TEST_STRICT=1` (scripts/test as root,
//!   after installing every tool) a missing tool fails the test; otherwise the test skips, says so
//!   on stderr and appends the reason to `$PALISADE_SKIP_LOG` when set, so that scripts/test can
//!   say how many skipped.

use std::process::Command;

/// Whether a test must fail, not skip, when it lacks a tool: `scripts/test` sets
/// `PALISADE_TEST_STRICT=1` when it runs as root (as CI does), after installing every tool.
pub fn strict() -> bool {
    std::env::var("PALISADE_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// A test that cannot run here: fails under [`strict`], otherwise records why it skips. Returns
/// true so that callers can write `if skipping(..) { return }`.
pub fn skipping(reason: &str) -> bool {
    assert!(
        !strict(),
        "cannot run: {reason} (PALISADE_TEST_STRICT=1: nothing may skip)"
    );
    eprintln!("SKIP: {reason}");
    if let Some(log) = std::env::var_os("PALISADE_SKIP_LOG") {
        use std::io::Write;
        let test = std::thread::current().name().unwrap_or("a test").to_owned();
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(file, "{test}: {reason}");
        }
    }
    true
}

/// Whether a tool is on PATH; when it is not, the test skips, or fails under [`strict`].
pub fn have(tool: &str) -> bool {
    let found = on_path(tool);
    if !found {
        skipping(&format!(
            "{tool} is not installed (scripts/test installs it as root)"
        ));
    }
    found
}

/// Whether a tool is on PATH, silently.
pub fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the test runs as root (effective uid 0), from /proc/self/status.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// The first line of a test marked `#[ignore = "needs root: ..."]`: asked to run (with
/// `--include-ignored`) without root, it fails with `why` instead of passing without testing.
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "this test needs root ({why}); it is ignored by default and runs with --include-ignored \
         as root (scripts/test)"
    );
}
