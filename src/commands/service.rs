//! What the long-running commands share (`sidecar run`, `ca serve`, `policy sync`,
//! `cert renew --watch`): the stop signal, the CPU count read before the sandbox closes the
//! cgroup files, and the report of a sandbox check.

use std::io::Write;
use std::process::ExitCode;

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// The CPUs this process may use (its cgroup's quota and affinity), read before the sandbox
/// closes the cgroup files; 1 when unknown.
pub fn available_parallelism() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The report of a sandbox check (`sidecar check-sandbox`; `policy sync --check-sandbox` and
/// `ca serve --check-sandbox`, whose stdout is JSON lines, always as JSON): what the sandbox
/// allows and each attempt; exit 0 when every attempt came out as wanted, 3 when one did not.
pub fn write_check_report(
    report: &palisade_sandbox::Report,
    tries: &[palisade_sandbox::Try],
    output: super::Output,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let allowed = &report.allowed;
    let paths = |list: &[std::path::PathBuf]| {
        list.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
    };
    let seccomp = report.seccomp.name();
    let all_as_wanted = tries.iter().all(palisade_sandbox::Try::as_wanted);
    match output {
        super::Output::Json => {
            let line = serde_json::json!({
                "landlock": report.landlock_status(),
                "seccomp": seccomp,
                "allowed": {
                    "read": paths(&allowed.read),
                    "write": paths(&allowed.write),
                    "execute": paths(&allowed.execute),
                    "bind": allowed.bind,
                    "connect": allowed.connect,
                },
                "tried": tries.iter().map(|t| serde_json::json!({
                    "try": t.what,
                    "refused": t.refused,
                    "as_wanted": t.as_wanted(),
                })).collect::<Vec<_>>(),
                "as_wanted": all_as_wanted,
            });
            writeln!(out, "{line}")?;
        }
        super::Output::Text => {
            writeln!(out, "landlock  {}", report.landlock_status())?;
            writeln!(out, "seccomp   {seccomp}")?;
            let list = |items: Vec<String>| match items.is_empty() {
                true => "-".to_string(),
                false => items.join(", "),
            };
            writeln!(out, "read      {}", list(paths(&allowed.read)))?;
            writeln!(out, "write     {}", list(paths(&allowed.write)))?;
            writeln!(out, "execute   {}", list(paths(&allowed.execute)))?;
            let ports = |ports: &std::collections::BTreeSet<u16>| {
                list(ports.iter().map(u16::to_string).collect())
            };
            writeln!(out, "bind      {}", ports(&allowed.bind))?;
            let connect = match &allowed.connect {
                None => "any port".to_string(),
                Some(set) => ports(set),
            };
            writeln!(out, "connect   {connect}")?;
            for t in tries {
                writeln!(
                    out,
                    "{:<9} {}{}",
                    if t.refused { "refused" } else { "allowed" },
                    t.what,
                    if t.as_wanted() {
                        ""
                    } else {
                        "  <- NOT as the configuration says"
                    }
                )?;
            }
            writeln!(
                out,
                "{}",
                if all_as_wanted {
                    "every attempt came out as the configuration says"
                } else {
                    "an attempt did not come out as the configuration says"
                }
            )?;
        }
    }
    Ok(crate::exit::answer(all_as_wanted))
}
