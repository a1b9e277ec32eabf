//! How Palisade's long-running processes restrict themselves before they start their runtime:
//! the sidecar (`sidecar run`), the CA service (`ca serve`) and the host agent (`policy sync`).
//!
//! Two layers, applied in this order by [`restrict`] on the process's only thread (both apply
//! to the calling thread and every thread or child it starts later):
//!
//! - [`landlock`]: which files may be read, written or executed and which TCP ports may be
//!   bound or connected to ([`Allowed`]), computed by each service from its configuration.
//! - [`seccomp`]: an allow-list of system calls ([`Syscalls`]: the set every Palisade service
//!   needs, plus what a service adds, such as running `nft`), and the socket families allowed.
//!
//! [`check`] applies the same restrictions and tries what they must forbid, for
//! `palisade sidecar check-sandbox` and `palisade policy sync --check-sandbox`.
//!
//! Main types: [`Allowed`], [`Syscalls`], [`SandboxConfig`], [`Report`], [`SandboxError`].

#![warn(missing_docs)]

pub mod check;
pub mod landlock;
pub mod seccomp;

pub use check::{check, Try};
pub use landlock::{
    directory_of, elf_interpreter, names_a_host, port_of, resolver_files, Allowed, LandlockMode,
};
pub use seccomp::{SeccompMode, SocketKind, Syscalls};

use serde::Deserialize;

/// How a service restricts itself (`sandbox:` in the sidecar's configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Landlock: `best_effort` (default: what the kernel supports, one log line for the rest),
    /// `required` (refuse to start unless all of it is enforced) or `off`.
    #[serde(default)]
    pub landlock: LandlockMode,
    /// The system call allow-list: `enforce` (default: any other call fails with EPERM),
    /// `log` (other calls are allowed and logged by the kernel's audit) or `off`.
    #[serde(default)]
    pub seccomp: SeccompMode,
}

/// What was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Everything Landlock was asked for is enforced.
    pub landlock_fully_enforced: bool,
    /// Some of it is (an older kernel); `landlock_fully_enforced` is false.
    pub landlock_partially_enforced: bool,
    /// The seccomp filter is installed (in `mode`).
    pub seccomp: SeccompMode,
    /// What Landlock was asked to allow.
    pub allowed: Allowed,
}

impl Report {
    /// "fully enforced", "partially enforced" or "not enforced", for log lines and reports.
    pub fn landlock_status(&self) -> &'static str {
        if self.landlock_fully_enforced {
            "fully enforced"
        } else if self.landlock_partially_enforced {
            "partially enforced"
        } else {
            "not enforced"
        }
    }
}

/// Why a restriction could not be applied as configured.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Landlock refused the ruleset or a rule.
    #[error("landlock: {0}")]
    Landlock(#[from] ::landlock::RulesetError),
    /// `landlock: required`, and this kernel enforces only part of it (or none).
    #[error("Landlock is required (sandbox.landlock: required, or --landlock required), but this kernel enforces {0} of it (Landlock ABI {wanted:?} wanted)", wanted = landlock::ABI_WANTED)]
    NotFullyEnforced(&'static str),
    /// The seccomp filter could not be built or installed.
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccomp::SeccompError),
}

/// Restricts this thread, and every thread and process it starts afterwards: Landlock to
/// `allowed`, then the system calls to `syscalls`. Call it before any other thread exists.
pub fn restrict(
    allowed: &Allowed,
    syscalls: &Syscalls,
    config: SandboxConfig,
) -> Result<Report, SandboxError> {
    let (fully, partially) = landlock::apply(allowed, config.landlock)?;
    seccomp::apply(syscalls, config.seccomp)?;
    Ok(Report {
        landlock_fully_enforced: fully,
        landlock_partially_enforced: partially,
        seccomp: config.seccomp,
        allowed: allowed.clone(),
    })
}

/// One log line saying what [`restrict`] applied (or what it could not), for `service`.
pub fn log_report(service: &str, report: &Report) {
    // Counts and one line per entry (writes and connects at info, the rest at debug), never a
    // list printed into one field: a JSON log pipeline gets numbers and strings it can query
    // (`check-sandbox -o json` prints the lists whole).
    let allowed = &report.allowed;
    let seccomp = report.seccomp.name();
    if report.landlock_fully_enforced {
        tracing::info!(
            read = allowed.read.len(),
            write = allowed.write.len(),
            execute = allowed.execute.len(),
            bind = allowed.bind.len(),
            connect = allowed.connect.as_ref().map_or(0, |ports| ports.len()),
            connect_any_port = allowed.connect.is_none(),
            seccomp,
            "sandbox: Landlock enforced for the {service}"
        );
        for path in &allowed.read {
            tracing::debug!(path = %path.display(), "sandbox: may read");
        }
        // What it may change and where it may connect stay in the service's default log.
        for path in &allowed.write {
            tracing::info!(path = %path.display(), "sandbox: may write");
        }
        for path in &allowed.execute {
            tracing::debug!(path = %path.display(), "sandbox: may execute");
        }
        for port in &allowed.bind {
            tracing::debug!(port, "sandbox: may bind");
        }
        for port in allowed.connect.iter().flatten() {
            tracing::info!(port, "sandbox: may connect");
        }
    } else {
        tracing::warn!(
            seccomp,
            "sandbox: this kernel leaves Landlock {} for the {service} (an older Landlock ABI, or sandbox.landlock: off)",
            report.landlock_status()
        );
    }
    if report.seccomp == SeccompMode::Off {
        tracing::warn!("sandbox: seccomp is off for the {service}: every system call is allowed");
    }
}
