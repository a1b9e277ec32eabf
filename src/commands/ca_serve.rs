//! `palisade ca serve`: the CA service until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use palisade_ca::{CaDir, SpiffeId};
use palisade_ca_server::service_account::ServiceAccountConfig;
use palisade_ca_server::{AuditSink, CaServer, CaServerConfig, Limits, ServerIdentity};

use super::ca::ServeArgs;
use super::sidecar::shutdown_signal;

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.admin_listen.ip().is_loopback(),
        "--admin-listen must be a loopback address (the admin server has no authentication), not {}",
        args.admin_listen
    );
    let (ca, _) = CaDir::new(&args.dir).load()?;
    let server_id = match args.server_id {
        Some(id) => id,
        None => SpiffeId::parse(&format!("{}/palisade/ca", ca.trust_domain().id()))?,
    };
    let service_account = match (args.jwks, args.jwt_issuer) {
        (Some(jwks_path), Some(issuer)) => Some(ServiceAccountConfig {
            jwks_path,
            issuer,
            audience: args.jwt_audience,
        }),
        _ => None,
    };
    let config = CaServerConfig {
        tokens_dir: args.tokens_dir.unwrap_or_else(|| args.dir.join("tokens")),
        dir: args.dir,
        listen: args.listen,
        admin_listen: args.admin_listen,
        server: ServerIdentity {
            id: server_id,
            dns_names: args.dns_names,
            // Its own certificate lives at least an hour: with very short leaves it would
            // otherwise be re-issued at every reload of the directory.
            ttl: args.leaf_ttl.max(std::time::Duration::from_secs(3600)),
        },
        leaf_ttl: args.leaf_ttl,
        service_account,
        audit: match args.audit_log.as_str() {
            "-" => AuditSink::Stdout,
            path => AuditSink::File(path.into()),
        },
        limits: Limits {
            rate_per_second: args.rate_limit,
            burst: args.rate_burst,
            site_rate_multiple: args.site_rate_multiple,
            max_signing: args.max_signing,
            max_connections: args.max_connections,
            reserved_connections: args.reserved_connections,
            max_connections_per_client: args.max_connections_per_client,
            reserved_connections_per_id: args.reserved_connections_per_id,
            handshake_timeout: args.handshake_timeout,
            request_timeout: args.request_timeout,
            refusals_per_connection: args.refusals_per_connection,
            audit_refusals: palisade_ca_server::RefusalBudget {
                window: args.audit_window,
                per_client: args.audit_refusals_per_client,
                ..Default::default()
            },
            ..Limits::default()
        },
        reload_interval: args.reload_interval,
    };
    // Counted before the sandbox closes the cgroup files (see `sidecar::available_parallelism`).
    let workers = super::sidecar::available_parallelism();
    let report = sandbox(&config, args.sandbox.config())?;
    if args.check_sandbox {
        let tries = palisade_sandbox::check(&report, &syscalls(), &[]);
        return super::sidecar::write_check_report(&report, &tries, &mut std::io::stdout());
    }
    palisade_sandbox::log_report("CA service", &report);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // Fatal errors are said once, by main, in the service's log.
        let server = CaServer::bind(config)
            .await
            .context("cannot start the CA service")?;
        let (api, admin) = server.addresses();
        // Stdout carries this line, then the audit lines; logs go to stderr.
        println!(
            "{}",
            serde_json::json!({"listening": {"api": api.to_string(), "admin": admin.to_string()}})
        );
        tracing::info!(%api, %admin, "CA service listening");
        server.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Restricts the CA service, before its runtime starts, to its state: reading and writing beneath
/// its CA directory and token store (tokens are spent by renaming them), appending to its audit
/// log, reading its JWKS file; binding its two ports; connecting nowhere; the system calls of a
/// service that writes state (best effort for Landlock: one log line for what the kernel lacks).
fn sandbox(
    config: &CaServerConfig,
    mode: palisade_sandbox::SandboxConfig,
) -> anyhow::Result<palisade_sandbox::Report> {
    use palisade_sandbox::{directory_of, Allowed};
    let write = writable(&config.dir, &config.tokens_dir, &config.audit)?;
    let read = config
        .service_account
        .iter()
        .map(|sa| directory_of(&sa.jwks_path))
        .collect();
    let allowed = Allowed {
        read,
        write,
        bind: [config.listen.port(), config.admin_listen.port()].into(),
        connect: Some(Default::default()),
        ..Allowed::default()
    };
    Ok(palisade_sandbox::restrict(&allowed, &syscalls(), mode)?)
}

/// A service that writes state; its sockets are TCP only (it looks no name up).
fn syscalls() -> palisade_sandbox::Syscalls {
    palisade_sandbox::Syscalls::service().state()
}

/// Exactly what the CA service writes, never a parent of it. (`directory_of` widens a directory
/// that does not exist to its parent, right for reading files that come later, but for writing it
/// granted far more: `--tokens-dir /X/palisade/tokens` with `/X/palisade` missing allowed all of
/// `/X`.) The token store's layout is the CA's own, so it is made here first (0700, as
/// `ca token` makes it); the CA directory exists (it was loaded); the audit log is made here too
/// (0600, appended to) and allowed as that one file, so its directory (`/var/log`, say) stays
/// closed.
fn writable(ca_dir: &Path, tokens: &Path, audit: &AuditSink) -> anyhow::Result<Vec<PathBuf>> {
    for dir in [
        tokens.to_owned(),
        tokens.join("pending"),
        tokens.join("used"),
    ] {
        palisade_ca::files::create_private_dir(&dir)
            .with_context(|| format!("cannot make the token directory {}", dir.display()))?;
    }
    let mut write = vec![ca_dir.to_owned(), tokens.to_owned()];
    if let AuditSink::File(path) = audit {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open the audit log {}", path.display()))?;
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
            format!("{error:#}").contains("cannot open the audit log"),
            "{error:#}"
        );
    }
}
