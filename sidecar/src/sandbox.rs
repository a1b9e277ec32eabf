//! What the sidecar's sandbox allows, computed from its configuration (palisade-sandbox applies
//! it): it may read only the files its configuration names (each in its directory, so
//! Kubernetes' symlink swaps keep working) and the name-resolution files, write and execute
//! nothing, bind only its listeners' ports, and connect only to the ports it forwards to,
//! connects to, or renews at. With transparent listeners the destinations are any port, so
//! connections are not restricted then. Its system calls are those of any Palisade service
//! ([`Syscalls::service`]): no program is run, nothing written; its sockets are TCP and netlink's
//! routing family, plus UDP only when its configuration names a host to resolve.
//!
//! Landlock and seccomp restrict the calling thread and the threads it starts later, so
//! `palisade sidecar run` calls [`restrict`] on its only thread, before the runtime exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use palisade_sandbox::{directory_of, names_a_host, port_of, resolver_files, Allowed, Syscalls};
pub use palisade_sandbox::{Report, SandboxError};

use crate::config::SidecarConfig;

/// What `config` needs, and nothing else.
pub fn allowed(config: &SidecarConfig) -> Allowed {
    let mut read: Vec<PathBuf> = Vec::new();
    let mut add = |p: &Path| {
        let h = directory_of(p);
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
    read.extend(resolver_files());

    let mut bind = BTreeSet::new();
    bind.insert(config.admin.listen.port());
    bind.extend(config.metrics.iter().map(|m| m.listen.port()));
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
        // The app's probes, run for the kubelet on loopback.
        ports.extend(config.app_probes.values().map(|p| p.port()));
        // A target named by host may need DNS over TCP (an answer too large for UDP).
        if looks_up_names(config) {
            ports.insert(53);
        }
        Some(ports)
    };
    Allowed {
        read,
        bind,
        connect,
        ..Allowed::default()
    }
}

/// Whether the sidecar resolves a name: an outbound target or the CA's URL names a host.
/// (Transparent destinations are addresses.)
fn looks_up_names(config: &SidecarConfig) -> bool {
    let targets = config.outbound.iter().map(|l| l.connect_to.as_str());
    targets
        .chain(config.identity.ca.iter().map(|ca| ca.url.as_str()))
        .any(names_a_host)
}

/// The system calls the sidecar may make: those of any service, and UDP (the resolver's) only
/// when it looks a name up.
pub fn syscalls(config: &SidecarConfig) -> Syscalls {
    if looks_up_names(config) {
        Syscalls::service().resolver()
    } else {
        Syscalls::service()
    }
}

/// Restricts this thread, and every thread it starts afterwards, to what `config` needs.
pub fn restrict(config: &SidecarConfig) -> Result<Report, SandboxError> {
    palisade_sandbox::restrict(&allowed(config), &syscalls(config), config.sandbox)
}
