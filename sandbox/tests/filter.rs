//! The system call filter in a real process: this test runs itself again as a child (the filter
//! cannot be taken off a process once installed), which installs the agent's filter (a service's
//! calls plus running programs and netlink's netfilter family; Landlock off, so that only the
//! filter decides) and then:
//! starts a thread (glibc's clone3 is answered ENOSYS and falls back to clone), runs python3,
//! which inherits the filter and tries clone with CLONE_NEWUSER (refused), clone3 (ENOSYS),
//! unshare (refused) and a plain fork (allowed), then the sockets Landlock's port rules do not
//! cover: MPTCP, UDP, and a connection to a live Unix socket (all refused; plain TCP and
//! netlink's routing family allowed). The same probe without the filter is the control (on this
//! machine it makes a user namespace, an MPTCP socket, a UDP socket and the Unix connection). No
//! root needed: no_new_privs is enough.

use std::process::Command;

use palisade_sandbox::{restrict, Allowed, LandlockMode, SandboxConfig, SeccompMode, Syscalls};

const CHILD: &str = "PALISADE_SANDBOX_FILTER_CHILD";
/// The interpreter itself, found before the filter: `python3` on PATH may be a shell wrapper
/// (pyenv's shim), whose own calls are not what this test is about.
const PYTHON: &str = "PALISADE_SANDBOX_FILTER_PYTHON";

/// A Unix socket the parent listens on, for the child to try.
const UNIX_PATH: &str = "PALISADE_SANDBOX_FILTER_UNIX";

const PROBE_PY: &str = r#"
import ctypes, errno, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
sys_clone, sys_clone3 = int(sys.argv[1]), int(sys.argv[2])
def attempt(r):
    return "allowed" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
out = {}
r = libc.syscall(sys_clone, 0x10000000 | 17, 0, 0, 0, 0)   # CLONE_NEWUSER | SIGCHLD
if r == 0:
    os._exit(0)
if r > 0:
    os.waitpid(r, 0)
out["clone_newuser"] = attempt(r)
out["clone3"] = attempt(libc.syscall(sys_clone3, None, 0))
out["unshare"] = attempt(libc.unshare(0x10000000))   # CLONE_NEWUSER
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
out["fork"] = "allowed"
def make(family, kind, protocol=0, then=None):
    try:
        s = socket.socket(family, kind, protocol)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    try:
        if then:
            then(s)
        return "allowed"
    except OSError as e:
        return "made, then " + errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()
out["tcp"] = make(socket.AF_INET, socket.SOCK_STREAM)
out["tcp6"] = make(socket.AF_INET6, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, socket.IPPROTO_TCP)
out["netlink_route"] = make(socket.AF_NETLINK, socket.SOCK_RAW, 0)
out["netlink_netfilter"] = make(socket.AF_NETLINK, socket.SOCK_RAW, 12)
out["netlink_audit"] = make(socket.AF_NETLINK, socket.SOCK_RAW, 9)
out["mptcp"] = make(socket.AF_INET, socket.SOCK_STREAM, 262)
out["mptcp6"] = make(socket.AF_INET6, socket.SOCK_STREAM | socket.SOCK_CLOEXEC, 262)
out["sctp"] = make(socket.AF_INET, socket.SOCK_STREAM, 132)
out["udp"] = make(socket.AF_INET, socket.SOCK_DGRAM, 0, lambda s: s.sendto(b"x", ("127.0.0.1", 9)))
out["udp6"] = make(socket.AF_INET6, socket.SOCK_DGRAM, 17)
out["icmp"] = make(socket.AF_INET, socket.SOCK_DGRAM, 1)
out["unix"] = make(socket.AF_UNIX, socket.SOCK_STREAM, 0, lambda s: s.connect(sys.argv[3]))
out["unix_dgram"] = make(socket.AF_UNIX, socket.SOCK_DGRAM)
out["fast_open"] = make(socket.AF_INET, socket.SOCK_STREAM, 0, lambda s: s.sendto(b"x", socket.MSG_FASTOPEN, ("127.0.0.1", 9)))
out["tcp_ulp"] = make(socket.AF_INET, socket.SOCK_STREAM, 0, lambda s: s.setsockopt(socket.IPPROTO_TCP, 31, b"tls"))
out["tcp_nodelay"] = make(socket.AF_INET, socket.SOCK_STREAM, 0, lambda s: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1))
out["reuseaddr"] = make(socket.AF_INET, socket.SOCK_STREAM, 0, lambda s: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1))
print(json.dumps(out))
"#;

/// The child's half: runs only when the parent asked for it.
#[test]
fn filtered_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // "off" is the control: the same probe without the filter, to show what it changes here.
    let seccomp = match std::env::var(CHILD).as_deref() {
        Ok("off") => SeccompMode::Off,
        _ => SeccompMode::Enforce,
    };
    restrict(
        &Allowed::default(),
        &Syscalls::service().spawn().netfilter(),
        SandboxConfig {
            landlock: LandlockMode::Off,
            seccomp,
        },
    )
    .expect("the filter installs");
    let thread = std::thread::spawn(|| 42).join();
    assert_eq!(thread.ok(), Some(42), "a thread under the filter");
    let python = std::env::var(PYTHON).expect("the parent names the interpreter");
    let out = Command::new(python)
        .args(["-c", PROBE_PY])
        .arg(libc::SYS_clone.to_string())
        .arg(libc::SYS_clone3.to_string())
        .arg(std::env::var(UNIX_PATH).expect("the parent names its Unix socket"))
        .output()
        .expect("run python3 under the filter");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("PROBE {}", String::from_utf8_lossy(&out.stdout).trim());
}

#[test]
fn under_the_filter_no_namespace_can_be_made_but_threads_and_processes_can() {
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let Some(python) = python else {
        palisade_test_support::skip::skipping("python3 is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unix_path = dir.path().join("live.sock");
    // Listening: without the filter the child's connection succeeds (it waits in the backlog).
    let _unix = std::os::unix::net::UnixListener::bind(&unix_path).unwrap();
    let probe = |seccomp: &str| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "filtered_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, seccomp)
            .env(PYTHON, &python)
            .env(UNIX_PATH, &unix_path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = text
            .lines()
            .find_map(|l| l.split_once("PROBE ").map(|(_, json)| json.to_owned()))
            .unwrap_or_else(|| panic!("no probe line in:\n{text}"));
        serde_json::from_str::<std::collections::BTreeMap<String, String>>(&json).unwrap()
    };
    let without = probe("off");
    let with = probe("enforce");
    println!("without the filter: {without:?}; with it: {with:?}");
    // The control: clone3 and fork work without the filter (clone3 with no arguments is refused
    // by the kernel as invalid, not as unknown).
    assert_ne!(without["clone3"], "ENOSYS", "{without:?}");
    assert_eq!(without["fork"], "allowed", "{without:?}");
    assert_eq!(with["clone_newuser"], "EPERM", "{with:?}");
    assert_eq!(with["clone3"], "ENOSYS", "{with:?}");
    assert_eq!(with["unshare"], "EPERM", "{with:?}");
    assert_eq!(with["fork"], "allowed", "{with:?}");
    // Sockets: plain TCP and netlink's routing family are what a service needs; the rest would
    // go where Landlock's port rules do not look.
    for kind in [
        "tcp",
        "tcp6",
        "netlink_route",
        "netlink_netfilter",
        "tcp_nodelay",
        "reuseaddr",
    ] {
        assert_eq!(with[kind], "allowed", "{kind}: {with:?}");
    }
    for kind in [
        "mptcp",
        "mptcp6",
        "sctp",
        "udp",
        "udp6",
        "icmp",
        "unix",
        "unix_dgram",
        "netlink_audit",
    ] {
        assert_eq!(with[kind], "EPERM", "{kind}: {with:?}");
    }
    // Connecting by a send flag, and a TCP socket turned into another protocol, are the filter's
    // to refuse too (the socket itself is plain TCP).
    for kind in ["fast_open", "tcp_ulp"] {
        assert_eq!(with[kind], "made, then EPERM", "{kind}: {with:?}");
    }
    // Without the filter, Fast Open does try to connect (refused by the closed port, not EPERM).
    assert_ne!(without["fast_open"], "made, then EPERM", "{without:?}");
    // The control: UDP and the Unix connection work without the filter (MPTCP and SCTP where
    // the kernel has them).
    for kind in ["udp", "udp6", "unix", "unix_dgram"] {
        assert_eq!(without[kind], "allowed", "{kind}: {without:?}");
    }
    if without["mptcp"] != "allowed" {
        eprintln!("note: this kernel makes no MPTCP socket even without the filter: {without:?}");
    }
    if without["clone_newuser"] != "allowed" {
        // This host refuses user namespaces to this process anyway (a sysctl, AppArmor, or a
        // process without CAP_SYS_ADMIN where unprivileged ones are off): the filter's refusal
        // above is then not its own.
        eprintln!("note: user namespaces are refused here even without the filter: {without:?}");
    }
}
