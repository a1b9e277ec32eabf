//! Trying what the sandbox must forbid (and what it must still allow), after [`crate::restrict`]:
//! the proof an operator can run on a node (`palisade sidecar check-sandbox`,
//! `palisade policy sync --check-sandbox`), and what the tests read.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Report, SocketKind, Syscalls};

/// One attempt and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Try {
    /// What was tried ("read /etc/passwd").
    pub what: String,
    /// The sandbox refused it.
    pub refused: bool,
    /// It should have been refused (false: something the service needs, which must still work).
    pub must_be_refused: bool,
}

impl Try {
    /// The outcome is the one wanted.
    pub fn as_wanted(&self) -> bool {
        self.refused == self.must_be_refused
    }
}

fn refused_by_permission(result: std::io::Result<()>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::PermissionDenied)
}

/// Tries, in this process (already restricted as `report` says, with `syscalls`): reading a file
/// outside what may be read, writing where only reading is allowed and beside each directory
/// or file that may be written, binding and connecting to a
/// port not allowed, running a program not allowed, and a system call off the list (a `chown`
/// that changes nothing, which any user may make without the filter), and the sockets Landlock's
/// port rules do not cover: an MPTCP connection, a TCP Fast Open connection, a UDP datagram (refused unless the service looks
/// names up) and a connection to a Unix socket. Each program in `must_run` is run with
/// `--version` and must start.
pub fn check(report: &Report, syscalls: &Syscalls, must_run: &[&Path]) -> Vec<Try> {
    let allowed = &report.allowed;
    // What each layer must refuse, as configured: with a layer off its attempts are still made
    // and reported, and must not be refused by it.
    let landlock = report.landlock_fully_enforced || report.landlock_partially_enforced;
    let filter = report.seccomp == crate::SeccompMode::Enforce;
    let mut tries = Vec::new();
    let mut push = |what: String, refused: bool, must_be_refused: bool| {
        tries.push(Try {
            what,
            refused,
            must_be_refused,
        })
    };
    let readable = |p: &Path| {
        allowed
            .read
            .iter()
            .chain(&allowed.write)
            .chain(&allowed.execute)
            .any(|a| p.starts_with(a))
    };
    if let Some(path) = ["/etc/passwd", "/etc/os-release", "/proc/version"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists() && !readable(p))
    {
        let result = std::fs::read(path).map(drop);
        push(
            format!("read {}", path.display()),
            refused_by_permission(result),
            landlock,
        );
    }
    // Where writing must be refused: a directory that may only be read, and beside what may be
    // written (the directory that holds each writable directory or file: a rule widened to a
    // parent would show there). Tried under Landlock only: without it the write would succeed,
    // and a check must not leave (or even briefly make) a file in a directory such as
    // /etc/iproute2.
    let mut write_dirs: Vec<&Path> = allowed
        .read
        .iter()
        .find(|d| d.is_dir() && !allowed.write.iter().any(|w| d.starts_with(w)))
        .map(PathBuf::as_path)
        .into_iter()
        .collect();
    for path in &allowed.write {
        let Some(parent) = path.parent().filter(|p| p.is_dir()) else {
            continue;
        };
        if !allowed.write.iter().any(|w| parent.starts_with(w)) && !write_dirs.contains(&parent) {
            write_dirs.push(parent);
        }
    }
    for dir in write_dirs.into_iter().filter(|_| landlock) {
        let probe = dir.join(".palisade-sandbox-check");
        let result = std::fs::write(&probe, b"x");
        let _ = std::fs::remove_file(&probe);
        push(
            format!("write {}", probe.display()),
            refused_by_permission(result),
            landlock,
        );
    }
    let free = (20000..60000u16)
        .find(|p| !allowed.bind.contains(p) && !allowed.connect.iter().flatten().any(|c| c == p))
        .unwrap_or(1);
    let bound = TcpListener::bind(("127.0.0.1", free)).map(drop);
    push(
        format!("bind 127.0.0.1:{free}"),
        refused_by_permission(bound),
        landlock,
    );
    if allowed.connect.is_some() {
        let connected = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], free)),
            Duration::from_secs(1),
        )
        .map(drop);
        push(
            format!("connect 127.0.0.1:{free}"),
            refused_by_permission(connected),
            landlock,
        );
    }
    // Landlock's network rules hold for plain TCP only: the filter must refuse the other kinds.
    let mptcp = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::from(libc::IPPROTO_MPTCP)),
    )
    .and_then(|socket| {
        socket.connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], free)).into(),
            Duration::from_secs(1),
        )
    });
    push(
        format!("connect over MPTCP to 127.0.0.1:{free}"),
        refused_by_permission(mptcp),
        filter,
    );
    // TCP Fast Open connects from sendto, where Landlock's connect rule does not look.
    let fast_open = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .and_then(|socket| {
            socket.send_to_with_flags(
                b"x",
                &SocketAddr::from(([127, 0, 0, 1], free)).into(),
                libc::MSG_FASTOPEN,
            )
        })
        .map(drop);
    push(
        format!("connect with TCP Fast Open to 127.0.0.1:{free}"),
        refused_by_permission(fast_open),
        filter,
    );
    let udp = std::net::UdpSocket::bind(("127.0.0.1", 0))
        .and_then(|socket| socket.send_to(b"x", ("127.0.0.1", free)))
        .map(drop);
    let resolves = syscalls.allows_socket(SocketKind::Udp);
    push(
        format!(
            "send UDP to 127.0.0.1:{free}{}",
            if resolves {
                " (allowed: this service looks names up)"
            } else {
                ""
            }
        ),
        refused_by_permission(udp),
        filter && !resolves,
    );
    // A path that does not exist: without the filter the attempt fails with "not found", so
    // only a refusal of the socket itself counts.
    let unix =
        std::os::unix::net::UnixStream::connect("/run/palisade-sandbox-check.sock").map(drop);
    push(
        "connect to a Unix socket".into(),
        refused_by_permission(unix),
        filter,
    );
    let shell = Path::new("/bin/sh");
    if shell.exists() && !allowed.execute.iter().any(|a| shell.starts_with(a)) {
        push(
            "run /bin/sh".into(),
            refused_by_permission(run(shell, &["-c", "exit 0"])),
            landlock || (filter && !syscalls.allows(libc::SYS_execve)),
        );
    }
    for program in must_run {
        push(
            format!("run {} --version", program.display()),
            run(program, &["--version"]).is_err(),
            false,
        );
    }
    if !syscalls.allows(libc::SYS_fchownat) {
        // chown("/", unchanged, unchanged) is a no-op that any user may make, so only the filter
        // refuses it (unlike chroot, which the kernel refuses to a process without
        // CAP_SYS_CHROOT anyway): a check that tells whether the filter is there.
        push(
            "chown / to itself (a system call off the list)".into(),
            refused_by_permission(std::os::unix::fs::chown("/", None, None)),
            filter,
        );
    }
    tries
}

/// Runs `program` with `args`, output discarded, and waits: Ok when it started and exited 0.
fn run(program: &Path, args: &[&str]) -> std::io::Result<()> {
    let status = Command::new(program)
        .args(args)
        // Not Stdio::null(): opening /dev/null is itself refused to the sidecar.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()?
        .status;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{} exited with {status}",
            program.display()
        )))
    }
}
