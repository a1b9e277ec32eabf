//! What the CA service may do once it restricts itself (palisade-sandbox applies it before the
//! runtime starts): read and write beneath its CA directory and token store (tokens are spent by
//! renaming them), append to its audit log, read its JWKS file's directory; bind its ports
//! (service, admin, metrics); connect nowhere but, when it fetches the JWKS, to that server's
//! port (and DNS when it is named); the system calls of a service that writes state, TCP only
//! (UDP too for the resolver when it fetches the JWKS from a name).

use std::path::{Path, PathBuf};

use palisade_sandbox::{directory_of, names_a_host, port_of, Allowed, Syscalls};

use crate::service_account::JwksSource;
use crate::{AuditSink, CaServerConfig};

/// A file or directory the sandbox names could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum SandboxSetupError {
    /// The token store's directories could not be made.
    #[error("cannot make the token directory {}", dir.display())]
    TokenDirectory {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The audit log could not be opened for appending.
    #[error("cannot open the audit log {}", path.display())]
    AuditLog {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The paths and ports the service needs, its token store and audit log made first.
pub fn allowed(config: &CaServerConfig) -> Result<Allowed, SandboxSetupError> {
    let write = writable(&config.dir, &config.tokens_dir, &config.audit)?;
    let mut read = Vec::new();
    let mut connect = std::collections::BTreeSet::new();
    if let Some(sa) = &config.service_account {
        match &sa.jwks {
            JwksSource::File(path) => read.push(directory_of(path)),
            // The roots and the token file (its directory: the kubelet swaps it by rename), and
            // the server's port; the jwks_uri of a discovery document is on the same server.
            JwksSource::Url(url) => {
                read.push(directory_of(&url.roots));
                read.extend(url.token.iter().map(|t| directory_of(t)));
                read.extend(palisade_sandbox::resolver_files());
                connect.extend(port_of(&url.url));
                if names_a_host(&url.url) {
                    connect.insert(53);
                }
            }
        }
    }
    Ok(Allowed {
        read,
        write,
        bind: [config.listen, config.admin_listen]
            .into_iter()
            .chain(config.metrics_listen)
            .map(|a| a.port())
            .collect(),
        connect: Some(connect),
        ..Allowed::default()
    })
}

/// A service that writes state; its sockets are TCP only, and UDP for the resolver when it
/// fetches the JWKS from a host by name.
pub fn syscalls(config: &CaServerConfig) -> Syscalls {
    let by_name = config.service_account.iter().any(|sa| match &sa.jwks {
        JwksSource::Url(url) => names_a_host(&url.url),
        JwksSource::File(_) => false,
    });
    if by_name {
        Syscalls::service().state().resolver()
    } else {
        Syscalls::service().state()
    }
}

/// Exactly what the CA service writes, never a parent of it. (`directory_of` widens a directory
/// that does not exist to its parent, right for reading files that come later, but for writing it
/// granted far more: `--tokens-dir /X/palisade/tokens` with `/X/palisade` missing allowed all of
/// `/X`.) The token store's layout is the CA's own, so it is made here first (0700, as
/// `ca token` makes it); the CA directory exists (it was loaded); the audit log is made here too
/// (0600, appended to) and allowed as that one file, so its directory (`/var/log`, say) stays
/// closed.
fn writable(
    ca_dir: &Path,
    tokens: &Path,
    audit: &AuditSink,
) -> Result<Vec<PathBuf>, SandboxSetupError> {
    for dir in [
        tokens.to_owned(),
        tokens.join("pending"),
        tokens.join("used"),
    ] {
        palisade_identity::files::create_private_dir(&dir)
            .map_err(|source| SandboxSetupError::TokenDirectory { dir, source })?;
    }
    let mut write = vec![ca_dir.to_owned(), tokens.to_owned()];
    if let AuditSink::File(path) = audit {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| SandboxSetupError::AuditLog {
                path: path.clone(),
                source,
            })?;
        write.push(path.clone());
    }
    Ok(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_directories_used_are_writable_and_the_token_store_is_made_first() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        std::fs::create_dir(&ca).unwrap();
        // Neither X/palisade nor its tokens directory exists: made, and only the latter allowed.
        let tokens = tmp.path().join("X/palisade/tokens");
        let write = writable(&ca, &tokens, &AuditSink::Stdout).unwrap();
        assert_eq!(write, [ca.clone(), tokens.clone()]);
        for dir in ["", "pending", "used"] {
            assert!(tokens.join(dir).is_dir(), "{dir}");
        }
        // The audit log is made first and allowed alone, whether it existed or not; one whose
        // directory is missing is a sentence.
        let existing = tmp.path().join("audit.jsonl");
        std::fs::write(&existing, "").unwrap();
        let write = writable(&ca, &tokens, &AuditSink::File(existing.clone())).unwrap();
        assert_eq!(write.last(), Some(&existing));
        let new = tmp.path().join("new-audit.jsonl");
        let write = writable(&ca, &tokens, &AuditSink::File(new.clone())).unwrap();
        assert_eq!(write.last(), Some(&new));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(new.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let missing = tmp.path().join("logs-dir/audit.jsonl");
        let error = writable(&ca, &tokens, &AuditSink::File(missing)).unwrap_err();
        assert!(
            error.to_string().contains("cannot open the audit log"),
            "{error}"
        );
    }
}
