//! The container image the manifests name: `scripts/image` builds it offline from scratch with
//! buildah (no base image, no registry) as an OCI archive, with its SBOM and the binary's debug
//! information beside it. This test builds it twice from the same tree with one
//! SOURCE_DATE_EPOCH and checks that both builds are the same image (one manifest digest, the same
//! archive and SBOM byte for byte); then, on the first: the labels (revision, created, version),
//! the binary stripped with a debuglink, the dpkg database scanners read (the Debian packages with
//! the host's versions, every file it lists present, every md5 it records true), the SBOM (the
//! crates at the versions Cargo.lock pins, the same Debian packages). Then it unpacks the layer
//! into a directory and runs the image's own binaries inside it with `chroot`, so nothing from the
//! host is used: `palisade --version`, and `palisade sidecar redirect` (with the image's nft) in a
//! network namespace of the test's own.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Both builds' SOURCE_DATE_EPOCH, and what the image says it is.
const EPOCH: &str = "1767225600";
const CREATED: &str = "2026-01-01T00:00:00Z";

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

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').expect("a digest");
    dir.join("blobs").join(algorithm).join(hex)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `path` with `suffix` appended: the files scripts/image writes next to its archive.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// `scripts/image BIN DIR/palisade.tar` with the test's SOURCE_DATE_EPOCH; returns the archive.
fn build(dir: &Path) -> PathBuf {
    std::fs::create_dir(dir).unwrap();
    let archive = dir.join("palisade.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/image");
    run(Command::new(script)
        .arg(BIN)
        .arg(&archive)
        .env("SOURCE_DATE_EPOCH", EPOCH));
    archive
}

/// An OCI archive unpacked into `dir`: the manifest's digest (from index.json), the manifest and
/// the config.
struct Oci {
    dir: PathBuf,
    digest: String,
    manifest: serde_json::Value,
    config: serde_json::Value,
}

fn unpack(archive: &Path, dir: &Path) -> Oci {
    std::fs::create_dir(dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir));
    let index = json(&dir.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("a manifest in index.json")
        .to_owned();
    let manifest = json(&blob(dir, &digest));
    let config = json(&blob(dir, manifest["config"]["digest"].as_str().unwrap()));
    Oci {
        dir: dir.to_owned(),
        digest,
        manifest,
        config,
    }
}

/// The names of an ELF file's sections, as `readelf -S` lists them (its exit status is not
/// asked: on a debug file it complains that there is no program interpreter).
fn sections(file: &Path) -> BTreeSet<String> {
    let out = Command::new("readelf")
        .args(["-S", "-W"])
        .arg(file)
        .output()
        .expect("run readelf");
    let names: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('.'))
        .map(str::to_owned)
        .collect();
    assert!(
        !names.is_empty(),
        "readelf -S {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    names
}

/// Every (name, version) Cargo.lock pins.
fn locked(lock: &str) -> BTreeSet<(String, String)> {
    let mut pinned = BTreeSet::new();
    let mut name = None;
    for line in lock.lines() {
        if line == "[[package]]" {
            name = None;
        } else if let Some(value) = line.strip_prefix("name = ") {
            name = Some(value.trim_matches('"').to_owned());
        } else if let Some(value) = line.strip_prefix("version = ") {
            if let Some(name) = name.take() {
                pinned.insert((name, value.trim_matches('"').to_owned()));
            }
        }
    }
    pinned
}

/// The (name, version) of each SBOM component whose purl starts with `prefix`.
fn components(sbom: &serde_json::Value, prefix: &str) -> BTreeSet<(String, String)> {
    sbom["components"]
        .as_array()
        .expect("components in the SBOM")
        .iter()
        .filter(|c| c["purl"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root: buildah, chroot, a network namespace"]
fn the_image_is_reproducible_readable_by_scanners_and_runs_its_own_binaries() {
    require_root("buildah, chroot, a network namespace");
    let tools = [
        "buildah",
        "nft",
        "ip",
        "python3",
        "objcopy",
        "readelf",
        "dpkg-query",
        "git",
        "cargo-cyclonedx",
    ];
    if !tools.into_iter().all(have) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));

    // Two builds of one tree with one SOURCE_DATE_EPOCH: one image.
    let archive = build(&tmp.path().join("first"));
    let again = build(&tmp.path().join("second"));
    let image = unpack(&archive, &tmp.path().join("oci"));
    let other = unpack(&again, &tmp.path().join("oci-again"));
    assert_eq!(
        image.digest, other.digest,
        "two builds with one SOURCE_DATE_EPOCH give two manifests"
    );
    assert!(
        std::fs::read(&archive).unwrap() == std::fs::read(&again).unwrap(),
        "one manifest, but two archives that differ"
    );
    let sbom_bytes = std::fs::read(beside(&archive, ".cdx.json")).unwrap();
    assert!(
        sbom_bytes == std::fs::read(beside(&again, ".cdx.json")).unwrap(),
        "two builds, two SBOMs that differ"
    );

    // The config: what runs, as whom, and the labels.
    let config = &image.config;
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/local/bin/palisade");
    assert_eq!(config["config"]["User"], "1337:1337");
    let labels = &config["config"]["Labels"];
    let label = |name: &str| -> String {
        let key = format!("org.opencontainers.image.{name}");
        labels[key.as_str()]
            .as_str()
            .unwrap_or_else(|| panic!("no label {key} in {labels}"))
            .to_owned()
    };
    let head = stdout(
        Command::new("git")
            .arg("-C")
            .arg(source)
            .args(["rev-parse", "HEAD"]),
    )
    .trim()
    .to_owned();
    let revision = label("revision");
    assert!(
        revision == head || revision == format!("{head}-dirty"),
        "revision label {revision}, HEAD {head}"
    );
    assert_eq!(label("created"), CREATED);
    assert_eq!(config["created"], CREATED);
    assert_eq!(config["history"][0]["created"], CREATED);
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(label("licenses"), env!("CARGO_PKG_LICENSE"));
    assert_eq!(label("title"), "palisade");
    assert!(!label("source").is_empty());
    assert!(
        labels.get("io.buildah.version").is_none(),
        "the builder's version label would change the digest with the builder: {labels}"
    );

    // The one layer, unpacked.
    let layers = image.manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "from scratch: one layer, ours");
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(blob(&image.dir, layers[0]["digest"].as_str().unwrap()))
        .arg("-C")
        .arg(&rootfs));
    // Nothing but our binaries, their libraries and a few files.
    assert!(!rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin").exists());

    // The binary is stripped and names its debug file, which has what it lost.
    let binary = sections(&rootfs.join("usr/local/bin/palisade"));
    assert!(!binary.contains(".debug_info"), "not stripped: {binary:?}");
    assert!(
        binary.contains(".gnu_debuglink"),
        "no debuglink: {binary:?}"
    );
    if sections(Path::new(BIN)).contains(".debug_info") {
        assert!(sections(&beside(&archive, ".debug")).contains(".debug_info"));
    }

    // The dpkg database scanners read: the packages at this host's versions, each file it lists
    // in the image, each md5 it records the file's.
    let admindir = rootfs.join("var/lib/dpkg");
    let listed = stdout(
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", admindir.display()))
            .args(["-W", "-f", "${Package} ${Version}\n"]),
    );
    let packages: BTreeSet<(String, String)> = listed
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(package, version)| (package.to_owned(), version.to_owned()))
        .collect();
    for package in ["libc6", "nftables", "base-files"] {
        let host = stdout(Command::new("dpkg-query").args(["-W", "-f", "${Version}\n", package]));
        let version = host.lines().next().unwrap_or_default().to_owned();
        assert!(
            packages.contains(&(package.to_owned(), version.clone())),
            "{package} {version} is not in the image's dpkg database:\n{listed}"
        );
    }
    for entry in std::fs::read_dir(admindir.join("info")).unwrap() {
        let list = entry.unwrap().path();
        if list.extension().is_none_or(|e| e != "list") {
            continue;
        }
        for line in std::fs::read_to_string(&list).unwrap().lines() {
            assert!(
                rootfs
                    .join(line.trim_start_matches('/'))
                    .symlink_metadata()
                    .is_ok(),
                "{} lists {line}, which the image does not have",
                list.display()
            );
        }
    }
    run(Command::new("sh")
        .args([
            "-c",
            "cat var/lib/dpkg/info/*.md5sums | md5sum --check --quiet --strict",
        ])
        .current_dir(&rootfs));
    // dpkg's own check (md5sums and conffiles) with the image as its root: it prints a line for
    // each file that differs or is missing.
    let verify = stdout(
        Command::new("dpkg")
            .arg(format!("--root={}", rootfs.display()))
            .arg("--verify"),
    );
    assert!(verify.is_empty(), "dpkg --verify in the image:\n{verify}");
    let os_release = std::fs::read_to_string(rootfs.join("etc/os-release")).unwrap();
    assert!(os_release.contains("ID=debian"), "{os_release}");
    assert!(rootfs.join("etc/debian_version").is_file());

    // The SBOM: every crate at a version Cargo.lock pins, rustls and tokio among them; the same
    // Debian packages as the dpkg database; the same SBOM inside the image.
    let sbom: serde_json::Value = serde_json::from_slice(&sbom_bytes).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    assert_eq!(sbom["metadata"]["timestamp"], CREATED);
    let lock = locked(&std::fs::read_to_string(source.join("Cargo.lock")).unwrap());
    let crates = components(&sbom, "pkg:cargo/");
    for krate in &crates {
        assert!(
            lock.contains(krate),
            "{krate:?} is in the SBOM, not in Cargo.lock"
        );
    }
    for name in ["rustls", "tokio"] {
        assert!(
            crates.iter().any(|(krate, _)| krate == name),
            "{name} is not in the SBOM"
        );
    }
    assert_eq!(
        components(&sbom, "pkg:deb/debian/"),
        packages,
        "the SBOM's Debian packages are not those of the image's dpkg database"
    );
    assert!(
        std::fs::read(rootfs.join("usr/share/doc/palisade/sbom.cdx.json")).unwrap() == sbom_bytes,
        "the SBOM in the image is not the one beside it"
    );

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
