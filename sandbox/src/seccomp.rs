//! The system call allow-list: every Palisade service needs the calls of a tokio program that
//! reads files, serves TCP and TLS and resolves names ([`Syscalls::service`]); a service adds
//! what else it does ([`Syscalls::spawn`] for `policy sync`, which runs `nft` and `conntrack`,
//! whose calls the filter must allow too since a child inherits it; [`Syscalls::state`] for the
//! CA service, which writes its state). Sockets may be made only of the kinds named
//! ([`SocketKind`]): family, type and protocol are all checked, because Landlock's port rules
//! hold for plain TCP only. An MPTCP, SCTP or raw socket, UDP where no name is looked up, and
//! Unix sockets (a path such as a container runtime's socket is a door out that no port rule
//! covers) are refused to every service.
//!
//! A call outside the list fails with EPERM rather than killing the process: a rarely taken path
//! that needs a call we did not foresee then fails like any refused operation (logged, counted,
//! the connection closed) instead of taking every other connection down, and the refusal holds
//! either way. `seccomp: log` allows such calls and has the kernel log them (the audit log), to
//! find one.

use std::collections::{BTreeMap, BTreeSet};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;

/// Whether the allow-list is installed, and what happens to other calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// Calls outside the list fail with EPERM.
    #[default]
    Enforce,
    /// Calls outside the list are allowed and logged by the kernel (to find a missing one).
    Log,
    /// No filter (for debugging; logged as a warning).
    Off,
}

impl SeccompMode {
    /// `enforce`, `log` or `off`, as the configuration spells it.
    pub fn name(self) -> &'static str {
        match self {
            SeccompMode::Enforce => "enforce",
            SeccompMode::Log => "log",
            SeccompMode::Off => "off",
        }
    }
}

/// Why the filter was not installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// This architecture has no filter (seccompiler knows x86_64, aarch64 and riscv64).
    #[error("no system call filter for the {0} architecture")]
    Architecture(&'static str),
    /// The filter could not be compiled or installed.
    #[error("{0}")]
    Filter(#[from] seccompiler::Error),
    /// The filter could not be compiled.
    #[error("{0}")]
    Compile(#[from] seccompiler::BackendError),
}

/// A set of allowed system calls and socket kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscalls {
    calls: BTreeSet<i64>,
    sockets: BTreeSet<SocketKind>,
}

/// A kind of socket a service may make. `socket()` is refused for every other (family, type,
/// protocol): the filter reads all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SocketKind {
    /// TCP over IPv4 or IPv6, protocol 0 or IPPROTO_TCP: the only kind Landlock's bind and
    /// connect rules cover. Not MPTCP (IPPROTO_MPTCP is a SOCK_STREAM socket that Landlock
    /// does not see), SCTP or raw.
    Tcp,
    /// UDP over IPv4 or IPv6: the resolver's queries, for a service that looks names up. The
    /// filter cannot see where a datagram goes (the address is in memory), so this is allowed
    /// only where a name is looked up, and the service's TCP stays limited to port 53 for DNS.
    Udp,
    /// Netlink, routing family: reading the host's addresses (glibc before resolving a name,
    /// the sidecar when it checks an original destination). Changing them needs CAP_NET_ADMIN.
    NetlinkRoute,
    /// Netlink, netfilter family: `nft` and `conntrack` (the host agent).
    NetlinkNetfilter,
}

/// TCP Fast Open as a send flag: sendto/sendmsg with it connect a TCP socket without connect(),
/// so Landlock's connect rule never sees the connection (its hook is on connect()). Refused: no
/// Palisade service uses Fast Open.
const MSG_FASTOPEN: u64 = libc::MSG_FASTOPEN as u64;

/// The TCP option that turns a TCP socket into another protocol's (an "upper layer protocol" such
/// as SMC), out of Landlock's sight; kTLS too, which Palisade does not use. Refused.
const TCP_ULP: u64 = 31;

/// The socket type's bits in socket()'s second argument (SOCK_NONBLOCK and SOCK_CLOEXEC are
/// flags above them): the kernel's SOCK_TYPE_MASK.
const SOCK_TYPE_MASK: u64 = 0xf;

impl SocketKind {
    /// The (family, type, protocol) triples of this kind, `None` for any value.
    fn triples(self) -> Vec<(i32, Option<i32>, Option<i32>)> {
        let inet = |ty: i32, protocol: i32| {
            [libc::AF_INET, libc::AF_INET6]
                .into_iter()
                .flat_map(move |family| {
                    [
                        (family, Some(ty), Some(0)),
                        (family, Some(ty), Some(protocol)),
                    ]
                })
                .collect::<Vec<_>>()
        };
        match self {
            SocketKind::Tcp => inet(libc::SOCK_STREAM, libc::IPPROTO_TCP),
            SocketKind::Udp => inet(libc::SOCK_DGRAM, libc::IPPROTO_UDP),
            SocketKind::NetlinkRoute => {
                vec![(libc::AF_NETLINK, None, Some(libc::NETLINK_ROUTE))]
            }
            SocketKind::NetlinkNetfilter => {
                vec![(libc::AF_NETLINK, None, Some(libc::NETLINK_NETFILTER))]
            }
        }
    }
}

/// The calls of a tokio program serving TCP and TLS: memory, threads, time, files it reads,
/// sockets, epoll, signals, name resolution (glibc), and the admin server.
const SERVICE: &[i64] = &[
    // Memory and threads.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_futex,
    // clone only without namespace flags (see `NAMESPACE_FLAGS`); clone3 is answered ENOSYS by a
    // filter of its own (`clone3_filter`), so libc falls back to clone.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_membarrier,
    libc::SYS_prctl,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_tgkill,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_getrandom,
    libc::SYS_getrlimit,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getgroups,
    libc::SYS_umask,
    // Signals (tokio's signal handling, panics).
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    // What the kernel calls when a signal interrupted poll or nanosleep and it restarts them.
    libc::SYS_restart_syscall,
    libc::SYS_sigaltstack,
    // Time.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    // Files it reads (and descriptors).
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pwrite64,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getcwd,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    // Sockets (the families are checked apart), epoll and polling.
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
];

/// The same, under their older names that only x86_64 has (glibc and Rust's std still use some).
#[cfg(target_arch = "x86_64")]
const SERVICE_X86_64: &[i64] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_pipe,
    libc::SYS_dup2,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_create,
    libc::SYS_epoll_wait,
    libc::SYS_eventfd,
    libc::SYS_arch_prctl,
    libc::SYS_getdents,
    libc::SYS_time,
];
#[cfg(not(target_arch = "x86_64"))]
const SERVICE_X86_64: &[i64] = &[];

/// Writing state: files made, renamed, linked, removed, permissions set.
const STATE: &[i64] = &[
    libc::SYS_mkdirat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlinkat,
    libc::SYS_linkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_flock,
];
#[cfg(target_arch = "x86_64")]
const STATE_X86_64: &[i64] = &[
    libc::SYS_mkdir,
    libc::SYS_rename,
    libc::SYS_unlink,
    libc::SYS_rmdir,
    libc::SYS_link,
    libc::SYS_chmod,
];
#[cfg(not(target_arch = "x86_64"))]
const STATE_X86_64: &[i64] = &[];

/// Running another program and waiting for it (and what a dynamically linked C program such as
/// `nft` does before its main).
const SPAWN: &[i64] = &[
    libc::SYS_execve,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_kill,
    libc::SYS_set_tid_address,
    libc::SYS_setpgid,
    libc::SYS_getpgid,
    libc::SYS_getsid,
    libc::SYS_setsid,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_capget,
];
#[cfg(target_arch = "x86_64")]
const SPAWN_X86_64: &[i64] = &[libc::SYS_vfork, libc::SYS_fork];
#[cfg(not(target_arch = "x86_64"))]
const SPAWN_X86_64: &[i64] = &[];

/// clone's flags that make new namespaces. A process that may not call unshare or setns could
/// still make a user namespace with clone, and in it hold every capability over new network and
/// mount namespaces: the way most nf_tables and mount exploits reach the kernel from an
/// unprivileged process. clone is allowed only without these (threads and posix_spawn use none).
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

impl Syscalls {
    /// What every Palisade service needs; sockets: TCP and netlink's routing family (glibc asks
    /// the kernel for the host's addresses before resolving a name). No Unix socket: glibc's
    /// name service asks nscd over one when it can and does without when it cannot.
    pub fn service() -> Self {
        Syscalls {
            calls: SERVICE.iter().chain(SERVICE_X86_64).copied().collect(),
            sockets: [SocketKind::Tcp, SocketKind::NetlinkRoute].into(),
        }
    }

    /// Adds UDP, for a service that looks names up (the resolver's queries to port 53).
    pub fn resolver(mut self) -> Self {
        self.sockets.insert(SocketKind::Udp);
        self
    }

    /// Adds netlink's netfilter family (`nft`, `conntrack`).
    pub fn netfilter(mut self) -> Self {
        self.sockets.insert(SocketKind::NetlinkNetfilter);
        self
    }

    /// Adds writing state (the CA service: its directory, tokens and audit log).
    pub fn state(mut self) -> Self {
        self.calls.extend(STATE.iter().chain(STATE_X86_64));
        self
    }

    /// Adds running other programs (`policy sync`: `nft`, `conntrack`).
    pub fn spawn(mut self) -> Self {
        self.calls.extend(SPAWN.iter().chain(SPAWN_X86_64));
        self
    }

    /// Whether `call` (a system call number of this architecture) is allowed.
    pub fn allows(&self, call: i64) -> bool {
        self.calls.contains(&call)
    }

    /// Whether sockets of `kind` may be made.
    pub fn allows_socket(&self, kind: SocketKind) -> bool {
        self.sockets.contains(&kind)
    }

    /// Whether `socket(family, ty, protocol)` passes the filter (`ty` may carry SOCK_NONBLOCK
    /// and SOCK_CLOEXEC); the same reading as the filter's, for tests and reports.
    pub fn allows_socket_call(&self, family: i32, ty: i32, protocol: i32) -> bool {
        self.sockets
            .iter()
            .flat_map(|k| k.triples())
            .any(|(f, t, p)| {
                f == family
                    && t.is_none_or(|t| (ty as u64 & SOCK_TYPE_MASK) == t as u64)
                    && p.is_none_or(|p| p == protocol)
            })
    }

    fn program(&self, mode: SeccompMode) -> Result<BpfProgram, SeccompError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|_| SeccompError::Architecture(std::env::consts::ARCH))?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            self.calls.iter().map(|&call| (call, Vec::new())).collect();
        // socket(family, type, protocol): one rule per allowed triple (the conditions of a rule
        // must all hold; the rules of a call are alternatives).
        let sockets = self
            .sockets
            .iter()
            .flat_map(|k| k.triples())
            .map(|(family, ty, protocol)| {
                let mut conditions = vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    family as u64,
                )?];
                if let Some(ty) = ty {
                    conditions.push(SeccompCondition::new(
                        1,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(SOCK_TYPE_MASK),
                        ty as u64,
                    )?);
                }
                if let Some(protocol) = protocol {
                    conditions.push(SeccompCondition::new(
                        2,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Eq,
                        protocol as u64,
                    )?);
                }
                SeccompRule::new(conditions)
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_socket, sockets);
        // sendto(fd, buf, len, flags, ...) and sendmmsg(fd, vec, n, flags): flags is the fourth
        // argument; sendmsg(fd, msg, flags) the third. Allowed without MSG_FASTOPEN only.
        for (call, flags_arg) in [
            (libc::SYS_sendto, 3),
            (libc::SYS_sendmmsg, 3),
            (libc::SYS_sendmsg, 2),
        ] {
            rules.insert(
                call,
                vec![SeccompRule::new(vec![SeccompCondition::new(
                    flags_arg,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(MSG_FASTOPEN),
                    0,
                )?])?],
            );
        }
        // setsockopt(fd, level, name, ...): anything but (IPPROTO_TCP, TCP_ULP), as two
        // alternatives: another level, or another name.
        rules.insert(
            libc::SYS_setsockopt,
            vec![
                SeccompRule::new(vec![SeccompCondition::new(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Ne,
                    libc::IPPROTO_TCP as u64,
                )?])?,
                SeccompRule::new(vec![SeccompCondition::new(
                    2,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Ne,
                    TCP_ULP,
                )?])?,
            ],
        );
        // socketpair makes a connected pair and reaches nothing (tokio's signal handling uses
        // one); only the Unix family makes pairs, but say so rather than rely on it.
        rules.insert(
            libc::SYS_socketpair,
            vec![SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::AF_UNIX as u64,
            )?])?],
        );
        if self.calls.contains(&libc::SYS_clone) {
            // clone(flags, ...): flags is the first argument on x86_64, aarch64 and riscv64.
            rules.insert(
                libc::SYS_clone,
                vec![SeccompRule::new(vec![SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS),
                    0,
                )?])?],
            );
        }
        let other = match mode {
            SeccompMode::Log => SeccompAction::Log,
            _ => SeccompAction::Errno(libc::EPERM as u32),
        };
        let filter = SeccompFilter::new(rules, other, SeccompAction::Allow, arch)?;
        Ok(filter.try_into()?)
    }
}

/// A filter that answers clone3 with ENOSYS and allows everything else. clone3 passes its flags
/// in memory, where a filter cannot read them, so it cannot be allowed only without namespace
/// flags as clone is; ENOSYS (not EPERM) is what makes glibc fall back to clone for threads and
/// posix_spawn. The main filter allows clone3, so this filter's answer is the one that counts
/// (the kernel takes the highest-precedence action of all filters: ERRNO over ALLOW).
fn clone3_filter() -> Result<BpfProgram, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Architecture(std::env::consts::ARCH))?;
    let filter = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    Ok(filter.try_into()?)
}

/// Installs the filters for `syscalls` on this thread (and those it starts later); nothing with
/// [`SeccompMode::Off`]. Needs no_new_privs or CAP_SYS_ADMIN (seccompiler sets the former). The
/// clone3 filter goes first: once the main one is in, the seccomp call itself is refused.
pub(crate) fn apply(syscalls: &Syscalls, mode: SeccompMode) -> Result<(), SeccompError> {
    if mode == SeccompMode::Off {
        return Ok(());
    }
    let program = syscalls.program(mode)?;
    if mode == SeccompMode::Enforce {
        seccompiler::apply_filter(&clone3_filter()?)?;
    }
    seccompiler::apply_filter(&program)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_compile_into_filters_on_this_architecture() {
        for syscalls in [
            Syscalls::service(),
            Syscalls::service().state(),
            Syscalls::service().spawn(),
        ] {
            assert!(!syscalls.program(SeccompMode::Enforce).unwrap().is_empty());
            assert!(!syscalls.program(SeccompMode::Log).unwrap().is_empty());
        }
    }

    #[test]
    fn the_service_list_holds_no_call_that_changes_the_system() {
        let service = Syscalls::service();
        for forbidden in [
            libc::SYS_execve,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_chroot,
            libc::SYS_setns,
            libc::SYS_unshare,
            libc::SYS_bpf,
            libc::SYS_init_module,
            libc::SYS_keyctl,
            libc::SYS_process_vm_readv,
            libc::SYS_setuid,
            libc::SYS_renameat2,
            libc::SYS_unlinkat,
        ] {
            assert!(!service.allows(forbidden), "{forbidden}");
        }
        assert!(Syscalls::service().spawn().allows(libc::SYS_execve));
    }

    #[test]
    fn sockets_are_allowed_by_family_type_and_protocol() {
        let service = Syscalls::service();
        let nonblocking = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        assert!(service.allows_socket_call(libc::AF_INET, nonblocking, 0));
        assert!(service.allows_socket_call(libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP));
        assert!(service.allows_socket_call(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE));
        for (family, ty, protocol) in [
            (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP),
            (libc::AF_INET6, nonblocking, libc::IPPROTO_MPTCP),
            (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
            (libc::AF_INET, libc::SOCK_DGRAM, 0),
            (libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
            (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP),
            (libc::AF_UNIX, libc::SOCK_STREAM, 0),
            (libc::AF_UNIX, libc::SOCK_DGRAM, 0),
            (libc::AF_PACKET, libc::SOCK_RAW, 0),
            (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_NETFILTER),
            (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
        ] {
            assert!(
                !service.allows_socket_call(family, ty, protocol),
                "{family} {ty} {protocol}"
            );
        }
        let resolver = Syscalls::service().resolver();
        assert!(resolver.allows_socket_call(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0
        ));
        assert!(!resolver.allows_socket_call(
            libc::AF_INET,
            libc::SOCK_STREAM,
            libc::IPPROTO_MPTCP
        ));
        let agent = Syscalls::service().spawn().netfilter();
        assert!(agent.allows_socket_call(
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            libc::NETLINK_NETFILTER
        ));
        assert!(!agent.allows_socket_call(libc::AF_UNIX, libc::SOCK_STREAM, 0));
    }
}
