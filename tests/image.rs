//! The container image the manifests name: `scripts/image` builds it offline from scratch with
//! buildah (no base image, no registry) as an OCI archive; this test unpacks the archive's layer
//! into a directory and runs the image's own binaries inside it with `chroot`, so nothing from the
//! host is used: `palisade --version`, and `palisade sidecar redirect` (with the image's nft) in a
//! network namespace of the test's own.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn blob(dir: &Path, digest: &str) -> std::path::PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("a digest");
    dir.join("blobs").join(algorithm).join(hex)
}

#[test]
#[ignore = "needs root: buildah, chroot, a network namespace"]
fn the_image_runs_its_own_binaries_with_nothing_from_the_host() {
    require_root("buildah, chroot, a network namespace");
    if !(have("buildah") && have("nft") && have("ip")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("palisade.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/image");
    run(Command::new(&script).arg(BIN).arg(&archive));

    // Unpack: index -> manifest -> config and the one layer.
    let oci = tmp.path().join("oci");
    std::fs::create_dir(&oci).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&oci));
    let json = |path: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index = json(&oci.join("index.json"));
    let manifest = json(&blob(
        &oci,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    let config = json(&blob(&oci, manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/palisade");
    assert_eq!(config["config"]["User"], "1337:1337");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "from scratch: one layer, ours");
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(blob(&oci, layers[0]["digest"].as_str().unwrap()))
        .arg("-C")
        .arg(&rootfs));
    // Nothing but our binaries, their libraries and a few files.
    assert!(!rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin").exists());

    let version = run(Command::new("chroot")
        .arg(&rootfs)
        .args(["/usr/local/bin/palisade", "--version"]));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("palisade "));

    // What a container runtime gives every container, and nothing more: /proc, and /dev with
    // null and urandom and the stdin/stdout/stderr links (nft reads its transaction from
    // /dev/stdin; std::process opens /dev/null). Mounted in a private mount namespace, so the
    // host's mount table never sees it.
    let dev = rootfs.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    for (name, fd) in [("stdin", 0), ("stdout", 1), ("stderr", 2)] {
        std::os::unix::fs::symlink(format!("/proc/self/fd/{fd}"), dev.join(name)).unwrap();
    }
    std::fs::create_dir_all(rootfs.join("proc")).unwrap();
    for device in ["null", "urandom"] {
        std::fs::write(dev.join(device), b"").unwrap();
    }
    let root = rootfs.to_str().unwrap();
    let in_container = format!(
        "mount -t proc proc {root}/proc && mount --bind /dev/null {root}/dev/null && \
         mount --bind /dev/urandom {root}/dev/urandom && exec chroot {root} /usr/local/bin/palisade sidecar redirect \
         --inbound-port 15006 --outbound-port 15001 --proxy-uid 1337"
    );
    let mut nets = Netns::new();
    let ns = nets.add("image");
    nets.exec_ok(
        &ns,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &in_container,
        ],
        None,
    );
    let table = nets.exec_ok(
        &ns,
        &["nft", "list", "table", "inet", "palisade_redirect"],
        None,
    );
    assert!(table.contains("redirect to :15001"), "{table}");
}
