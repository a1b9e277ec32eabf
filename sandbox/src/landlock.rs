//! Landlock: the files a process may read, write or execute, and the TCP ports it may bind or
//! connect to. Best effort by default: on a kernel without some of it, the caller logs what could
//! not be applied; [`LandlockMode::Required`] makes that an error instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use serde::Deserialize;

use crate::SandboxError;

/// The newest Landlock ABI asked for (7: Linux 6.15); older kernels get what they support.
pub const ABI_WANTED: ABI = ABI::V7;

/// Whether the Landlock sandbox is applied, and how strictly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockMode {
    /// As much as the kernel supports; what it does not is logged.
    #[default]
    BestEffort,
    /// All of it, or the process does not start.
    Required,
    /// None (for debugging; logged as a warning).
    Off,
}

/// What the sandbox allows. Everything else on the file system, every other TCP port to bind
/// or connect to, abstract Unix sockets and signals to processes outside the sandbox are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Files and directories that may be read (beneath a directory: everything in it).
    pub read: Vec<PathBuf>,
    /// Directories beneath which files may also be written, made, renamed and removed.
    pub write: Vec<PathBuf>,
    /// Files that may be executed, and directories beneath which files may be read and mapped
    /// executable (the shared libraries of a program the service runs).
    pub execute: Vec<PathBuf>,
    /// Files that may be read and written but not made or removed (`/dev/null`).
    pub devices: Vec<PathBuf>,
    /// TCP ports that may be bound (0 when a listener asks the kernel for one).
    pub bind: BTreeSet<u16>,
    /// TCP ports that may be connected to; `None`: any.
    pub connect: Option<BTreeSet<u16>>,
}

/// The port of a `host:port` or `http[s]://host[:port]/...` target (to allow connecting to it);
/// `None` when it names none.
pub fn port_of(target: &str) -> Option<u16> {
    let rest = target
        .strip_prefix("https://")
        .or_else(|| target.strip_prefix("http://"));
    let authority = rest.map_or(target, |r| r.split('/').next().unwrap_or(r));
    // `[::1]:8443`: the address's colons are not the port's.
    let port = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:").map(|(_, port)| port),
        None => authority.rsplit_once(':').map(|(_, port)| port),
    };
    match port {
        Some(port) => port.parse().ok(),
        None if target.starts_with("https://") => Some(443),
        None if target.starts_with("http://") => Some(80),
        None => None,
    }
}

/// Files name resolution reads (a service that connects to a host by name).
const RESOLVER_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
];

/// Those of the files name resolution reads that exist here, to allow reading them.
pub fn resolver_files() -> Vec<PathBuf> {
    RESOLVER_FILES
        .iter()
        .map(PathBuf::from)
        .filter(|f| f.exists())
        .collect()
}

/// The directory that holds `path` (the path itself when it is a directory). When that
/// directory does not exist yet (files that appear later, with their directory), the nearest
/// one that does: Landlock allows only what can be opened now, and the service must still be
/// able to read the files once they come. Logged, since it widens what may be read.
pub fn directory_of(path: &Path) -> PathBuf {
    let mut dir = if path.is_dir() {
        path.to_owned()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_owned)
    };
    let wanted = dir.clone();
    while !dir.is_dir() {
        match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(up) => dir = up.to_owned(),
            None => {
                dir = PathBuf::from(".");
                break;
            }
        }
    }
    if dir != wanted {
        tracing::warn!(wanted = %wanted.display(), allowed = %dir.display(), "sandbox: a directory the configuration names does not exist yet; reading is allowed beneath the nearest one that does");
    }
    dir
}

/// Applies `allowed` to this thread and those it starts later; returns (fully enforced,
/// partially enforced). `mode` says whether partial enforcement is an error.
pub(crate) fn apply(allowed: &Allowed, mode: LandlockMode) -> Result<(bool, bool), SandboxError> {
    if mode == LandlockMode::Off {
        return Ok((false, false));
    }
    let level = match mode {
        LandlockMode::Required => CompatLevel::HardRequirement,
        _ => CompatLevel::BestEffort,
    };
    let mut net: landlock::BitFlags<AccessNet> = AccessNet::BindTcp.into();
    if allowed.connect.is_some() {
        net |= AccessNet::ConnectTcp;
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(ABI_WANTED))?
        .handle_access(net)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)?
        .create()?;
    let read = AccessFs::from_read(ABI_WANTED);
    let file_only = AccessFs::from_file(ABI_WANTED);
    let rules = [
        (&allowed.read, read),
        (&allowed.execute, read | AccessFs::Execute),
        (&allowed.devices, AccessFs::ReadFile | AccessFs::WriteFile),
        (&allowed.write, AccessFs::from_all(ABI_WANTED)),
    ];
    for (paths, access) in rules {
        for path in paths {
            // A file gets only the access a file can have.
            let access = if path.is_dir() {
                access
            } else {
                access & file_only
            };
            match PathFd::new(path) {
                Ok(fd) => ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?,
                // A path that does not exist yet (a mount that comes later) cannot be opened:
                // nothing there is allowed then, which fails closed.
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "sandbox: cannot open a path to allow it")
                }
            }
        }
    }
    for &port in &allowed.bind {
        ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::BindTcp))?;
    }
    for &port in allowed.connect.iter().flatten() {
        ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
    }
    let status = ruleset.restrict_self()?;
    let fully = status.ruleset == RulesetStatus::FullyEnforced;
    let partially = status.ruleset == RulesetStatus::PartiallyEnforced;
    if !fully && mode == LandlockMode::Required {
        return Err(SandboxError::NotFullyEnforced(if partially {
            "only part"
        } else {
            "none"
        }));
    }
    Ok((fully, partially))
}

#[cfg(test)]
mod tests {
    use super::port_of;

    #[test]
    fn the_port_of_a_target_is_its_own_or_its_schemes() {
        assert_eq!(port_of("localhost:8443"), Some(8443));
        assert_eq!(port_of("[::1]:8443"), Some(8443));
        assert_eq!(port_of("https://ca.example:9443/v1"), Some(9443));
        assert_eq!(port_of("https://ca.example/v1"), Some(443));
        assert_eq!(port_of("https://[fd00::1]/v1"), Some(443));
        assert_eq!(port_of("https://[fd00::1]:7443"), Some(7443));
        assert_eq!(port_of("http://policy.example"), Some(80));
        assert_eq!(port_of("localhost"), None);
        assert_eq!(port_of("host:notaport"), None);
    }
}
