//! `palisade ca ...`: create and run a trust domain's certificate authority. One file per
//! command: `init` (a root, an issuer under it), `token`, `serve`, `rotate`.

mod init;
mod rotate;
mod serve;
mod token;

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;

pub use init::{init, init_issuer, InitArgs, InitIssuerArgs};

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new root CA for a trust domain in a directory.
    #[command(
        after_help = "Example:\n  palisade ca init --ca-dir /etc/palisade/ca --trust-domain example.org\n\n\
Writes ca-key.pem (0600), ca-cert.pem and bundle.pem (the trust bundle to give every workload)."
    )]
    Init(InitArgs),
    /// Create (or replace: an issuer rotation) an issuing CA under a root, so the root key can
    /// stay offline.
    #[command(
        after_help = "Example:\n  palisade ca init-issuer --root-dir /secure/root \\\n      --ca-dir /etc/palisade/issuer --ttl 30d\n\n\
Writes DIR/ca-key.pem (0600), DIR/ca-cert.pem (CA:true, pathLen 0, the trust domain's ID) and\n\
DIR/bundle.pem (the root's bundle). `palisade ca serve --ca-dir DIR` signs with it; leaves carry\n\
the chain leaf -> issuer. Running it again makes a new issuer: new certificates are signed by\n\
it, the ones already issued stay valid (same root)."
    )]
    InitIssuer(InitIssuerArgs),
    /// Make a one-time join token bound to one SPIFFE ID, for `cert request --token`.
    #[command(
        after_help = "Examples:\n  palisade ca token --ca-dir /etc/palisade/issuer \\\n      --spiffe-id spiffe://example.org/ns/shop/sa/frontend --ttl 10m\n  \
palisade ca token --ca-dir /etc/palisade/issuer \\\n      --spiffe-id spiffe://example.org/ns/shop/sa/frontend -o json\n\n\
Prints the token. Only its SHA-256 is stored (DIR/tokens/pending/); the CA service consumes it\n\
on first use, whatever the outcome."
    )]
    Token(token::TokenArgs),
    /// Run the CA as an HTTPS service: sign (join token or Kubernetes service-account token),
    /// renew (mTLS), bundle.
    #[command(
        after_help = "Example:\n  palisade ca serve --ca-dir /etc/palisade/issuer --listen 0.0.0.0:8443 \\\n      --leaf-ttl 1h\n\n\
Prints {\"listening\":{\"api\":...,\"admin\":...}} on stdout, then one JSON audit line per issuance\n\
and refusal (or to --audit-log). The CA directory and the JWKS are re-read every --reload-interval.\n\
Endpoints and error codes: docs/IDENTITY.md."
    )]
    Serve(Box<serve::ServeArgs>),
    /// Rotate the root in three steps (prepare, activate, retire), and say where a rotation
    /// stands (status).
    #[command(
        subcommand,
        after_help = "Example (each step refused until the previous one is safe to follow):\n  \
palisade ca rotate prepare --root-dir root --ca-dir issuer --leaf-ttl 1h\n  \
palisade ca rotate status --root-dir root --ca-dir issuer -o json\n  \
palisade ca rotate activate --root-dir root --ca-dir issuer\n  \
palisade ca rotate retire --root-dir root --ca-dir issuer"
    )]
    Rotate(rotate::RotateCommand),
}

pub fn run(cmd: CaCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Init(args) => init::init(&args, out),
        CaCommand::InitIssuer(args) => init::init_issuer(&args, out),
        CaCommand::Token(args) => token::token(&args, out),
        CaCommand::Serve(args) => serve::serve(*args),
        CaCommand::Rotate(cmd) => rotate::rotate(cmd, out),
    }
}
