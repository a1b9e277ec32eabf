//! What a renewer that runs as a service (`palisade cert renew --watch`) may do once it
//! restricts itself (palisade-sandbox applies it before the runtime starts): write beneath its
//! SVID directory (files are replaced by renaming), read its service-account token's directory
//! and the resolver's files, bind its admin port, connect only to the CA service's port (and to
//! DNS over TCP when the CA is named by host); the system calls of a service that writes files,
//! UDP for the resolver only when a name must be looked up.

use std::path::Path;

use palisade_sandbox::{directory_of, names_a_host, port_of, resolver_files, Allowed, Syscalls};

/// What a renewer writing to `svid_dir`, serving its admin server on `admin_port` and renewing
/// from `ca_url` may touch; `service_account_token` is the file it starts again with, if any.
pub fn allowed(
    svid_dir: &Path,
    admin_port: u16,
    ca_url: &str,
    service_account_token: Option<&Path>,
) -> Allowed {
    let mut read: Vec<_> = service_account_token
        .into_iter()
        .map(directory_of)
        .collect();
    read.extend(resolver_files());
    Allowed {
        read,
        write: vec![directory_of(svid_dir)],
        bind: [admin_port].into(),
        // And DNS over TCP when the CA is named by host (answers too large for UDP).
        connect: Some(
            port_of(ca_url)
                .into_iter()
                .chain(names_a_host(ca_url).then_some(53))
                .collect(),
        ),
        ..Allowed::default()
    }
}

/// The system calls of a renewer of `ca_url`.
pub fn syscalls(ca_url: &str) -> Syscalls {
    if names_a_host(ca_url) {
        Syscalls::service().state().resolver()
    } else {
        Syscalls::service().state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_named_by_address_needs_no_resolver_and_one_port() {
        let tmp = tempfile::tempdir().unwrap();
        let allowed = allowed(tmp.path(), 9093, "https://127.0.0.1:8443", None);
        assert_eq!(allowed.connect, Some([8443].into()));
        assert_eq!(allowed.bind, [9093].into());
        assert_eq!(allowed.write, [tmp.path().to_owned()]);
        let named = super::allowed(tmp.path(), 9093, "https://ca.example.org:8443", None);
        assert_eq!(named.connect, Some([53, 8443].into()));
    }
}
