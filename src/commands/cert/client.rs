//! What `cert request` and `cert renew` share: the CA service's address and ID, the exit code
//! each failure deserves, reading and writing the SVID directory, and the report.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use palisade_identity::{SpiffeId, SvidDir, TrustBundle, TrustBundleSet};
use palisade_identity_client::{unix, CaClient, ClientError, Svid};

use crate::commands::{write_json, OutputArgs};
use crate::exit::{FAILURE as EXIT_REFUSED, LOCAL as EXIT_LOCAL, RETRY_LATER as EXIT_UNAVAILABLE};
use crate::output::rfc3339;

#[derive(Debug, Args)]
pub struct CaArgs {
    /// The CA service, https://host[:port].
    #[arg(long, value_name = "URL")]
    pub ca: String,
    /// The CA service's SPIFFE ID (default spiffe://<trust domain of the bundle>/palisade/ca).
    #[arg(long, value_name = "ID")]
    pub ca_id: Option<SpiffeId>,
}

/// An error with the exit code it deserves.
pub struct Failure(pub u8, pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        let code = match &error {
            ClientError::Credential { .. } | ClientError::OwnCredentials(_) => EXIT_LOCAL,
            e if e.is_temporary() => EXIT_UNAVAILABLE,
            _ => EXIT_REFUSED,
        };
        Failure(code, error.to_string())
    }
}

/// The exit code and the sentence, said once: in the log for the `--watch` service, on stderr
/// for a one-shot command.
pub fn exit(result: Result<ExitCode, Failure>, service: bool) -> anyhow::Result<ExitCode> {
    match result {
        Ok(code) => Ok(code),
        Err(Failure(code, message)) => {
            if service {
                tracing::error!(error = %message, "stopped");
            } else {
                eprintln!("error: {message}");
            }
            Ok(ExitCode::from(code))
        }
    }
}

pub fn client(ca: &CaArgs, bundle: &TrustBundle) -> Result<CaClient, Failure> {
    let server_id = match &ca.ca_id {
        Some(id) => id.clone(),
        None => SpiffeId::parse(&format!("{}/palisade/ca", bundle.trust_domain().id()))
            .map_err(|e| Failure(EXIT_LOCAL, e.to_string()))?,
    };
    Ok(CaClient::new(
        &ca.ca,
        server_id,
        Arc::new(TrustBundleSet::from(bundle.clone())),
    )?)
}

pub fn read_bundle(path: &PathBuf) -> Result<TrustBundle, Failure> {
    let pem = std::fs::read(path)
        .map_err(|e| Failure(EXIT_LOCAL, format!("cannot read {}: {e}", path.display())))?;
    TrustBundle::from_pem_own_domain(&pem)
        .map_err(|e| Failure(EXIT_LOCAL, format!("{}: {e}", path.display())))
}

pub fn write(dir: &SvidDir, svid: &Svid) -> Result<(), Failure> {
    svid.write_to(dir)
        .map_err(|e| Failure(EXIT_LOCAL, e.to_string()))
}

/// What `cert request` and `cert renew` print about the SVID they wrote: a line and the paths,
/// or with `-o json` the same document as `cert issue -o json`.
pub fn report(
    out: &mut dyn Write,
    verb: &str,
    svid: &Svid,
    dir: &SvidDir,
    output: OutputArgs,
) -> Result<(), Failure> {
    let not_after = time::OffsetDateTime::from_unix_timestamp(unix(svid.not_after))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let written = if output.json() {
        let document = serde_json::json!({
            "spiffe_id": svid.id.to_string(),
            "serial": svid.serial,
            "not_after": rfc3339(not_after),
            "key": dir.key_path(),
            "cert": dir.cert_path(),
            "bundle": dir.bundle_path(),
        });
        write_json(out, &document).map_err(|e| Failure(EXIT_LOCAL, format!("{e:#}")))
    } else {
        (|| {
            writeln!(
                out,
                "{verb} {} (serial {}), valid until {}",
                svid.id,
                svid.serial,
                rfc3339(not_after)
            )?;
            writeln!(out, "  key      {} (0600)", dir.key_path().display())?;
            writeln!(out, "  cert     {}", dir.cert_path().display())?;
            writeln!(out, "  bundle   {}", dir.bundle_path().display())
        })()
        .map_err(|e| Failure(EXIT_LOCAL, e.to_string()))
    };
    written
}

pub fn load_dir(dir: &SvidDir) -> Result<Svid, Failure> {
    let read = |name| {
        dir.read(name)
            .map_err(|e| Failure(EXIT_LOCAL, e.to_string()))
    };
    let written_at = std::fs::metadata(dir.cert_path())
        .and_then(|m| m.modified())
        .ok();
    Svid::from_pem(
        &read(SvidDir::CERT)?,
        &read(SvidDir::KEY)?,
        &read(SvidDir::BUNDLE)?,
        written_at,
    )
    .map_err(|e| Failure(EXIT_LOCAL, format!("{}: {e}", dir.path().display())))
}
