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
    /// Files that may be executed and read (a program the service runs, and its loader).
    pub execute: Vec<PathBuf>,
    /// Files that may be read and written but not made or removed (`/dev/null`).
    pub devices: Vec<PathBuf>,
    /// TCP ports that may be bound (0 when a listener asks the kernel for one).
    pub bind: BTreeSet<u16>,
    /// TCP ports that may be connected to; `None`: any.
    pub connect: Option<BTreeSet<u16>>,
}

/// The host and the port text of a `host:port` or `http[s]://host[:port]/...` target.
fn host_and_port(target: &str) -> (&str, Option<&str>) {
    let rest = target
        .strip_prefix("https://")
        .or_else(|| target.strip_prefix("http://"));
    let authority = rest.map_or(target, |r| r.split('/').next().unwrap_or(r));
    // `[::1]:8443`: the address's colons are not the port's.
    match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, rest)) => (host, rest.strip_prefix(':')),
            None => (bracketed, None),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    }
}

/// Whether a target names a host rather than an address: connecting to it needs name
/// resolution, which may go to a DNS server over TCP port 53 (answers too large for UDP).
pub fn names_a_host(target: &str) -> bool {
    let (host, _) = host_and_port(target);
    !host.is_empty() && host.parse::<std::net::IpAddr>().is_err()
}

/// The port of a `host:port` or `http[s]://host[:port]/...` target (to allow connecting to it);
/// `None` when it names none.
pub fn port_of(target: &str) -> Option<u16> {
    match host_and_port(target).1 {
        Some(port) => port.parse().ok(),
        None if target.starts_with("https://") => Some(443),
        None if target.starts_with("http://") => Some(80),
        None => None,
    }
}

/// The dynamic loader a program names (its ELF `PT_INTERP`), with symlinks resolved: executing
/// a program makes the kernel execute its loader too, so both need the Execute right, while the
/// shared libraries the loader maps need only reading. `None` for a static or non-ELF program
/// (or one this reader does not understand: 64-bit little-endian ELF only).
pub fn elf_interpreter(program: &Path) -> Option<PathBuf> {
    let elf = std::fs::read(program).ok()?;
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    // "\x7fELF", 64-bit, little-endian.
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (table, entry_size, entries) = (
        usize::try_from(u64_at(0x20)?).ok()?,
        usize::from(u16_at(0x36)?),
        usize::from(u16_at(0x38)?),
    );
    const PT_INTERP: u32 = 3;
    let header = (0..entries)
        .map(|i| table + i * entry_size)
        .find(|&at| u32_at(at) == Some(PT_INTERP))?;
    let (offset, size) = (
        usize::try_from(u64_at(header + 8)?).ok()?,
        usize::try_from(u64_at(header + 32)?).ok()?,
    );
    let name = elf.get(offset..offset.checked_add(size)?)?;
    let name = std::str::from_utf8(name.strip_suffix(b"\0").unwrap_or(name)).ok()?;
    std::fs::canonicalize(name).ok()
}

/// Files name resolution reads (a service that connects to a host by name).
const RESOLVER_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
];

/// What to allow reading for name resolution: each of its files that exists here, or, for one
/// that is a symlink (systemd-resolved's `/etc/resolv.conf` -> `/run/systemd/resolve/...`), the
/// directory of its target. A Landlock rule on a file holds that file, not its name, and the
/// resolver replaces its file by renaming a new one into that directory: a rule on the old file
/// would refuse every lookup after the first change.
pub fn resolver_files() -> Vec<PathBuf> {
    let mut allowed: Vec<PathBuf> = Vec::new();
    for file in RESOLVER_FILES.iter().map(Path::new).filter(|f| f.exists()) {
        let path = if file.is_symlink() {
            match std::fs::canonicalize(file)
                .ok()
                .and_then(|t| t.parent().map(Path::to_owned))
            {
                Some(dir) => dir,
                None => continue,
            }
        } else {
            file.to_owned()
        };
        if !allowed.contains(&path) {
            allowed.push(path);
        }
    }
    allowed
}

/// The directory that holds `path` (the path itself when it is a directory). When that
/// directory does not exist yet (files that come later, with their directory), its parent if
/// that exists and is not `/`: Landlock allows only what can be opened now, and a directory made
/// later is most often made in one that exists. Logged, since it widens what may be read. No
/// further: climbing on could reach `/`; a path neither exists for stays unreadable (its rule
/// cannot be made, which fails closed) until the service restarts.
pub fn directory_of(path: &Path) -> PathBuf {
    let dir = if path.is_dir() {
        path.to_owned()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_owned)
    };
    if dir.is_dir() {
        return dir;
    }
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Some(PathBuf::from(".")),
        Some(p) => Some(p.to_owned()),
        None => None,
    };
    match parent.filter(|p| p.is_dir() && p != Path::new("/")) {
        Some(parent) => {
            tracing::warn!(wanted = %dir.display(), allowed = %parent.display(), "sandbox: a directory the configuration names does not exist yet; reading is allowed beneath its parent");
            parent
        }
        None => {
            tracing::warn!(wanted = %dir.display(), "sandbox: a directory the configuration names does not exist, nor does its parent: nothing there can be read until restart");
            dir
        }
    }
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
    use std::path::{Path, PathBuf};

    use super::{directory_of, elf_interpreter, names_a_host, port_of};

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

    #[test]
    fn a_missing_directory_widens_one_level_and_never_to_the_root() {
        let tmp = std::env::temp_dir().join(format!("palisade-dir-of-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        assert_eq!(directory_of(&tmp.join("policy.yaml")), tmp);
        assert_eq!(directory_of(&tmp.join("later/policy.yaml")), tmp);
        let deep = tmp.join("a/b/policy.yaml");
        assert_eq!(
            directory_of(&deep),
            tmp.join("a/b"),
            "not widened past one level"
        );
        assert_eq!(
            directory_of(Path::new("/no-such-dir/policy.yaml")),
            PathBuf::from("/no-such-dir"),
            "never the root"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn a_target_names_a_host_unless_it_is_an_address() {
        assert!(names_a_host("ledger.shop.svc:8443"));
        assert!(names_a_host("https://ca.example/v1"));
        assert!(names_a_host("localhost:8443"));
        assert!(!names_a_host("127.0.0.1:8443"));
        assert!(!names_a_host("[::1]:8443"));
        assert!(!names_a_host("https://[fd00::1]/v1"));
        assert!(!names_a_host("https://10.0.0.1:9443"));
    }

    #[test]
    fn the_loader_of_a_dynamic_program_is_found() {
        let loader = elf_interpreter(&std::env::current_exe().unwrap())
            .expect("a test binary is linked dynamically");
        assert!(loader.is_absolute() && loader.is_file(), "{loader:?}");
        assert_eq!(
            elf_interpreter(std::path::Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/Cargo.toml"
            ))),
            None
        );
    }
}
