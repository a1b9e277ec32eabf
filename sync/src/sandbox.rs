//! What `policy sync` may do once it has restricted itself (palisade-sandbox applies it): read
//! its policy source, its Kubernetes manifests, its baseline and the files that authenticate an
//! https:// source; run `nft` (and `conntrack` with `revoke_established`) and their loader, which
//! means reading the system's shared libraries and the few files nft reads; bind its admin port;
//! connect only to the source's port. It writes no file: the table goes to the kernel through
//! nft's netlink socket. Its system calls: a service's, plus running and waiting for programs
//! (the filter applies to nft too, which makes only calls on that list).
//!
//! With this and CAP_NET_ADMIN (ambient, so nft gets it) as its only capability, the agent runs
//! as a non-root user: docs/SECURITY.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use palisade_sandbox::{
    directory_of, elf_interpreter, names_a_host, resolver_files, Allowed, Syscalls,
};

use crate::source::Source;
use crate::SyncConfig;

/// The programs the agent runs.
const NFT: &str = "nft";
const CONNTRACK: &str = "conntrack";

/// Where shared libraries live (those that exist may be read, which is all mapping them needs).
const LIBRARY_DIRS: &[&str] = &["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib"];

/// What the dynamic loader and nft read besides libraries: the loader's cache, iproute2's name
/// tables (realms, device groups), conntrack labels, and the protocol and service names (with
/// NSS's configuration) that nft prints: without them it lists `meta l4proto 6` where it was
/// given `tcp`, and every read-back would look like drift.
const PROGRAM_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/iproute2",
    "/usr/share/iproute2",
    "/usr/lib/iproute2",
    "/etc/connlabel.conf",
    "/etc/nsswitch.conf",
    "/etc/protocols",
    "/etc/services",
];

/// Where `program` is found on `PATH`, as the process that runs it will find it.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The programs `config` makes the agent run, where they were found.
pub fn programs(config: &SyncConfig) -> Vec<PathBuf> {
    let mut names = vec![NFT];
    if config.revoke_established {
        names.push(CONNTRACK);
    }
    names.into_iter().filter_map(find_program).collect()
}

/// What `config` needs, with the admin server on `admin`.
pub fn allowed(config: &SyncConfig, admin: SocketAddr) -> Allowed {
    let mut read: Vec<PathBuf> = Vec::new();
    let mut add = |p: &Path| {
        let dir = directory_of(p);
        if !read.contains(&dir) {
            read.push(dir);
        }
    };
    let mut connect = std::collections::BTreeSet::new();
    match &config.source {
        Some(Source::File(path)) | Some(Source::Dir(path)) => add(path),
        Some(Source::Url(uri)) => {
            let default = if uri.scheme_str() == Some("http") {
                80
            } else {
                443
            };
            connect.insert(uri.port_u16().unwrap_or(default));
            // By name: DNS may answer over TCP when the answer is too large for UDP.
            if looks_up_names(config) {
                connect.insert(53);
            }
        }
        None => {}
    }
    for path in &config.kubernetes {
        add(path);
    }
    for path in config.baseline.iter().chain(&config.source_auth.ca) {
        add(path);
    }
    if let Some((cert, key)) = &config.source_auth.client {
        add(cert);
        add(key);
    }
    if matches!(config.source, Some(Source::Url(_))) {
        read.extend(resolver_files());
    }
    read.extend(
        PROGRAM_FILES
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists()),
    );
    // The programs and their loaders may be executed; the libraries only read (mapping a
    // library needs no Execute right, and an executable right on /usr/lib would let every
    // program there run with the agent's capability).
    let mut execute: Vec<PathBuf> = Vec::new();
    for program in programs(config) {
        let loader = elf_interpreter(&program);
        for path in std::iter::once(program).chain(loader) {
            if !execute.contains(&path) {
                execute.push(path);
            }
        }
    }
    read.extend(
        LIBRARY_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.is_dir()),
    );
    Allowed {
        read,
        execute,
        devices: ["/dev/null", "/dev/urandom"]
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect(),
        bind: [admin.port()].into(),
        connect: Some(connect),
        ..Allowed::default()
    }
}

/// Whether the agent resolves a name: its source is a URL that names a host.
fn looks_up_names(config: &SyncConfig) -> bool {
    matches!(&config.source, Some(Source::Url(uri)) if uri
        .host()
        .is_some_and(|h| names_a_host(h.trim_matches(['[', ']']))))
}

/// The system calls the agent (and the programs it runs) may make: those of a service, running
/// programs, netlink's netfilter family (`nft`, `conntrack`), and UDP only when it looks a name
/// up.
pub fn syscalls(config: &SyncConfig) -> Syscalls {
    let syscalls = Syscalls::service().spawn().netfilter();
    if looks_up_names(config) {
        syscalls.resolver()
    } else {
        syscalls
    }
}
