//! Stamps the binary with the commit it is built from and that commit's date, for `palisade
//! version` and `--version`. The commit's date, not the build's: the same source then builds the
//! same binary, so an image's digest can be reproduced. Outside a git checkout (a source archive)
//! both are "unknown", unless PALISADE_COMMIT and PALISADE_COMMIT_DATE say otherwise.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let commit = from_env("PALISADE_COMMIT")
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = from_env("PALISADE_COMMIT_DATE")
        .or_else(|| git(&["log", "-1", "--format=%cI", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PALISADE_COMMIT={commit}");
    println!("cargo:rustc-env=PALISADE_COMMIT_DATE={date}");
    // Built again when HEAD moves: HEAD itself (a branch switch) and the branch it names. Without
    // a git directory nothing is named, so that cargo's default (run again when any file of the
    // package changes) stays: naming only the variables would never run it again, and a stamp
    // of "unknown" would outlive a later checkout.
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-env-changed=PALISADE_COMMIT");
        println!("cargo:rerun-if-env-changed=PALISADE_COMMIT_DATE");
        println!("cargo:rerun-if-changed=build.rs");
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{reference}");
        }
        println!("cargo:rerun-if-changed={git_dir}/packed-refs");
    }
}
