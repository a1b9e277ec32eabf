//! The sidecar restricting itself with Landlock before it starts its runtime (and, with
//! [`apply`] and an [`Allowed`] of its own, `ca serve`): it may read only
//! the files its configuration names (each in its directory, so Kubernetes' symlink swaps keep
//! working) and the name-resolution files, write nothing, bind only its listeners' ports, and
//! connect only to the ports it forwards to, connects to, or renews at. With transparent
//! listeners the destinations are any port, so connections are not restricted then. Abstract
//! Unix sockets and signals outside the sidecar are closed too.
//!
//! Landlock restricts the calling thread and the threads it starts later, so
//! `palisade sidecar run` calls [`restrict`] on its only thread, before the runtime exists.
//! Best effort by default: on a kernel without some of it, one log line says what could not be
//! applied; `sandbox: { landlock: required }` makes that an error instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::config::{SandboxMode, SidecarConfig};

/// The newest Landlock ABI asked for (7: Linux 6.15); older kernels get what they support.
const ABI_WANTED: ABI = ABI::V7;

/// Files name resolution reads (connect_to may name a host).
const RESOLVER_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
];

/// What the sandbox allows, computed from a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// Files and directories that may be read (beneath a directory: everything in it).
    pub read: Vec<PathBuf>,
    /// Directories beneath which files may also be written, made, renamed and removed (none for
    /// the sidecar; the CA service's state).
    pub write: Vec<PathBuf>,
    /// TCP ports that may be bound (0 when a listener asks the kernel for one).
    pub bind: BTreeSet<u16>,
    /// TCP ports that may be connected to; `None`: any (transparent listeners).
    pub connect: Option<BTreeSet<u16>>,
}

/// How the restriction went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Everything asked for is enforced.
    pub fully_enforced: bool,
    /// Some of it is (an older kernel); `fully_enforced` is false.
    pub partially_enforced: bool,
    /// What was asked for.
    pub allowed: Allowed,
}

/// Why the sandbox was not applied as required.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Landlock refused the ruleset or a rule.
    #[error("landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// `landlock: required`, and this kernel enforces only part of it (or none).
    #[error("sandbox.landlock is required, but this kernel enforces {0} of it (Landlock ABI {ABI_WANTED:?} wanted)")]
    NotFullyEnforced(&'static str),
}

/// The directory that holds `path` (the path itself when it is a directory). When that
/// directory does not exist yet (files that appear later, with their directory), the nearest
/// one that does: Landlock allows only what can be opened now, and the sidecar must still be
/// able to read the files once they come. Logged, since it widens what may be read.
fn holder(path: &Path) -> PathBuf {
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

/// The port of a `host:port` or `https://host[:port]/...` target.
fn port_of(target: &str) -> Option<u16> {
    let rest = target
        .strip_prefix("https://")
        .or_else(|| target.strip_prefix("http://"));
    let authority = rest.map_or(target, |r| r.split('/').next().unwrap_or(r));
    match authority.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None if target.starts_with("https://") => Some(443),
        None => None,
    }
}

/// What `config` needs, and nothing else.
pub fn allowed(config: &SidecarConfig) -> Allowed {
    let mut read: Vec<PathBuf> = Vec::new();
    let mut add = |p: &Path| {
        let h = holder(p);
        if !read.contains(&h) {
            read.push(h);
        }
    };
    let id = &config.identity;
    for p in [&id.cert, &id.key, &id.bundle].into_iter().flatten() {
        add(p);
    }
    if let Some(ca) = &id.ca {
        add(&ca.bundle);
        for p in [&ca.service_account_token, &ca.join_token_file]
            .into_iter()
            .flatten()
        {
            add(p);
        }
    }
    for l in &config.inbound {
        if let Some(p) = &l.policy {
            add(&p.file);
        }
        for m in l.network_policy.iter().flat_map(|n| &n.manifests) {
            add(m);
        }
    }
    if let Some(t) = &config.transparent {
        add(&t.policy);
    }
    for f in RESOLVER_FILES.iter().map(Path::new).filter(|f| f.exists()) {
        read.push(f.to_owned());
    }

    let mut bind = BTreeSet::new();
    bind.insert(config.admin.listen.port());
    bind.extend(config.inbound.iter().map(|l| l.listen.port()));
    bind.extend(config.outbound.iter().map(|l| l.listen.port()));
    if let Some(t) = &config.transparent {
        bind.extend(t.inbound.iter().chain(&t.outbound).map(|a| a.port()));
    }

    let connect = if config.transparent.is_some() {
        None
    } else {
        let mut ports = BTreeSet::new();
        ports.extend(config.inbound.iter().map(|l| l.forward_to.port()));
        ports.extend(
            config
                .outbound
                .iter()
                .filter_map(|l| port_of(&l.connect_to)),
        );
        ports.extend(id.ca.iter().filter_map(|ca| port_of(&ca.url)));
        Some(ports)
    };
    Allowed {
        read,
        write: Vec::new(),
        bind,
        connect,
    }
}

/// The directory that holds `path`, for other services' sandboxes (see [`holder`]).
pub fn directory_of(path: &Path) -> PathBuf {
    holder(path)
}

/// Restricts this thread, and every thread it starts afterwards, to what `config` needs.
pub fn restrict(config: &SidecarConfig) -> Result<Report, SandboxError> {
    let allowed = allowed(config);
    apply(&allowed, config.sandbox.landlock)
}

/// Applies `allowed` (see [`restrict`]); `mode` says whether partial enforcement is an error.
pub fn apply(allowed: &Allowed, mode: SandboxMode) -> Result<Report, SandboxError> {
    if mode == SandboxMode::Off {
        return Ok(Report {
            fully_enforced: false,
            partially_enforced: false,
            allowed: allowed.clone(),
        });
    }
    let level = match mode {
        SandboxMode::Required => CompatLevel::HardRequirement,
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
    for path in &allowed.read {
        // A file gets the access a file can have; a directory, reading everything beneath it.
        let access = if path.is_dir() {
            read
        } else {
            read & AccessFs::from_file(ABI_WANTED)
        };
        match PathFd::new(path) {
            Ok(fd) => ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?,
            // A directory that does not exist yet (a mount that comes later) cannot be opened:
            // nothing there can be read then, which fails closed.
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "sandbox: cannot open a path to allow reading it")
            }
        }
    }
    for path in &allowed.write {
        match PathFd::new(path) {
            Ok(fd) => {
                ruleset = ruleset.add_rule(PathBeneath::new(fd, AccessFs::from_all(ABI_WANTED)))?
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "sandbox: cannot open a path to allow writing beneath it")
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
    let report = Report {
        fully_enforced: status.ruleset == RulesetStatus::FullyEnforced,
        partially_enforced: status.ruleset == RulesetStatus::PartiallyEnforced,
        allowed: allowed.clone(),
    };
    if !report.fully_enforced && mode == SandboxMode::Required {
        return Err(SandboxError::NotFullyEnforced(
            if report.partially_enforced {
                "only part"
            } else {
                "none"
            },
        ));
    }
    Ok(report)
}
