//! The system call filter in a real process: this test runs itself again as a child (the filter
//! cannot be taken off a process once installed), which installs the agent's filter (a service's
//! calls plus running programs; Landlock off, so that only the filter decides) and then:
//! starts a thread (glibc's clone3 is answered ENOSYS and falls back to clone), runs python3,
//! which inherits the filter and tries clone with CLONE_NEWUSER (refused), clone3 (ENOSYS),
//! unshare (refused) and a plain fork (allowed). The same probe without the filter is the
//! control (on this machine it makes a user namespace). No root needed: no_new_privs is enough.

use std::process::Command;

use palisade_sandbox::{restrict, Allowed, LandlockMode, SandboxConfig, SeccompMode, Syscalls};

const CHILD: &str = "PALISADE_SANDBOX_FILTER_CHILD";
/// The interpreter itself, found before the filter: `python3` on PATH may be a shell wrapper
/// (pyenv's shim), whose own calls are not what this test is about.
const PYTHON: &str = "PALISADE_SANDBOX_FILTER_PYTHON";

const PROBE_PY: &str = r#"
import ctypes, errno, json, os, sys
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
        &Syscalls::service().spawn(),
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
        assert!(
            std::env::var_os("PALISADE_TEST_STRICT").is_none(),
            "python3 is needed (PALISADE_TEST_STRICT=1: nothing may skip)"
        );
        eprintln!("SKIP: python3 is not installed");
        return;
    };
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
    if without["clone_newuser"] != "allowed" {
        // This host refuses user namespaces to this process anyway (a sysctl, AppArmor, or a
        // process without CAP_SYS_ADMIN where unprivileged ones are off): the filter's refusal
        // above is then not its own.
        eprintln!("note: user namespaces are refused here even without the filter: {without:?}");
    }
}
