//! A temporary CA and workload certificates, made with the real `palisade` binary.

use std::path::{Path, PathBuf};

use super::{ok, palisade, TD};

/// A temporary directory with a CA (`ca/`) and workload certificates issued by the real binary.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        Self::with_key_type("ecdsa-p256")
    }

    /// A CA whose own key is of `key_type` (`ecdsa-p256` or `ed25519`).
    pub fn with_key_type(key_type: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        ok(palisade(
            &[
                "ca",
                "init",
                "--ca-dir",
                "ca",
                "--trust-domain",
                TD,
                "--key-type",
                key_type,
            ],
            dir.path(),
        ));
        Pki { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issues `spiffe://example.org/<path>` into `<name>/` (key.pem, cert.pem, bundle.pem).
    pub fn issue(&self, name: &str, id_path: &str, extra: &[&str]) -> PathBuf {
        let id = format!("spiffe://{TD}/{id_path}");
        let mut args = vec![
            "cert",
            "issue",
            "--ca-dir",
            "ca",
            "--spiffe-id",
            &id,
            "--svid-dir",
            name,
        ];
        args.extend_from_slice(extra);
        ok(palisade(&args, self.path()));
        self.path().join(name)
    }

    /// A second, unrelated CA of the same trust domain (`<name>-ca/`), and a leaf from it.
    pub fn issue_from_other_ca(&self, name: &str, id_path: &str) -> PathBuf {
        let ca = format!("{name}-ca");
        ok(palisade(
            &["ca", "init", "--ca-dir", &ca, "--trust-domain", TD],
            self.path(),
        ));
        let id = format!("spiffe://{TD}/{id_path}");
        ok(palisade(
            &[
                "cert",
                "issue",
                "--ca-dir",
                &ca,
                "--spiffe-id",
                &id,
                "--svid-dir",
                name,
            ],
            self.path(),
        ));
        self.path().join(name)
    }

    /// The identity section of a sidecar config for the workload in `<name>/`.
    pub fn identity_yaml(&self, name: &str) -> String {
        let d = self.path().join(name);
        format!(
            "identity:\n  cert: {}\n  key: {}\n  bundle: {}\n  reload_interval: 200ms\n",
            d.join("cert.pem").display(),
            d.join("key.pem").display(),
            d.join("bundle.pem").display()
        )
    }
}

/// One HTTPS request to `https://payments.test:<port>/` on 127.0.0.1 with curl, as the workload
/// in `<client>/` of `pki` (its certificate and key, the CA's bundle); true on a 200.
pub fn curl_as(pki: &Pki, client: &str, port: u16) -> bool {
    let dir = pki.path().join(client);
    std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg("--resolve")
        .arg(format!("payments.test:{port}:127.0.0.1"))
        .arg("--cert")
        .arg(dir.join("cert.pem"))
        .arg("--key")
        .arg(dir.join("key.pem"))
        .arg("--cacert")
        .arg(pki.path().join("ca/bundle.pem"))
        .arg(format!("https://payments.test:{port}/"))
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"200")
}
