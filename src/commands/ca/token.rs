//! `palisade ca token`: a one-time join token bound to one SPIFFE ID.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use palisade_ca::CaDir;
use palisade_identity::SpiffeId;

use crate::commands::{parse_duration, write_json, OutputArgs};
use crate::output::rfc3339;

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The CA directory `ca serve` runs from.
    #[arg(long = "ca-dir", alias = "dir", value_name = "DIR")]
    pub dir: PathBuf,
    /// The identity the token grants.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: SpiffeId,
    /// How long the token may be used.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10m")]
    pub ttl: Duration,
    /// The token store, if not DIR/tokens (it must be the one `ca serve --tokens-dir` uses).
    #[arg(long, value_name = "DIR")]
    pub tokens_dir: Option<PathBuf>,
    /// text prints the token alone; json {"token", "spiffe_id", "expires"}.
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn token(args: &TokenArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (ca, _) = CaDir::new(&args.dir).load()?;
    if args.spiffe_id.trust_domain() != ca.trust_domain() || !args.spiffe_id.has_path() {
        anyhow::bail!(
            "{} is not a workload ID of trust domain {} (the CA in {})",
            args.spiffe_id,
            ca.trust_domain(),
            args.dir.display()
        );
    }
    let store = args
        .tokens_dir
        .clone()
        .unwrap_or_else(|| args.dir.join("tokens"));
    let (token, expires) = palisade_ca::JoinTokens::new(&store)
        .create(&args.spiffe_id, args.ttl)
        .with_context(|| format!("cannot store the token in {}", store.display()))?;
    tracing::info!(spiffe_id = %args.spiffe_id, expires = %rfc3339(expires), "made a join token");
    if args.output.json() {
        write_json(
            out,
            &serde_json::json!({
                "token": token.as_str(),
                "spiffe_id": args.spiffe_id.to_string(),
                "expires": rfc3339(expires),
            }),
        )?;
    } else {
        writeln!(out, "{token}")?;
    }
    Ok(ExitCode::SUCCESS)
}
