//! `palisade cert ...`: a workload's X.509-SVID. `issue` and `inspect` work on files; `request`
//! and `renew` are the rotation CLI, clients of `palisade ca serve` (`client.rs` holds what they
//! share; the protocol and timing are palisade_identity_client).

pub(crate) mod client;
mod inspect;
mod issue;
mod renew;
mod request;

use std::io::Write;
use std::process::ExitCode;

use clap::Subcommand;

pub use client::CaArgs;
pub use inspect::{inspect, InspectArgs};
pub use issue::{issue, IssueArgs};
pub use renew::renew_once;

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a workload certificate (X.509-SVID) from a CA directory.
    #[command(after_help = "Examples:\n  \
palisade cert issue --ca-dir ca \\\n      --spiffe-id spiffe://example.org/ns/shop/sa/frontend --svid-dir frontend\n  \
palisade cert issue --ca-dir ca \\\n      --spiffe-id spiffe://example.org/ns/shop/sa/payments \\\n      --csr payments.csr --svid-dir payments\n\n\
Writes key.pem (0600, unless --csr), cert.pem (the certificate, then its chain) and bundle.pem,\n\
each atomically.")]
    Issue(IssueArgs),
    /// Show a certificate's SPIFFE ID, issuer, serial and validity, and check it.
    #[command(
        after_help = "Examples:\n  palisade cert inspect frontend/cert.pem --bundle frontend/bundle.pem\n  \
palisade cert inspect frontend/cert.pem -o json | jq -r .not_after\n\n\
Exit code 0 when the certificate is a valid X.509-SVID (and chains to the bundle, if given); 3\n\
when it is not (docs/CLI.md)."
    )]
    Inspect(InspectArgs),
    /// Get a first certificate from the CA service with a join token or a service-account token.
    #[command(after_help = "Examples:\n  \
palisade cert request --ca https://ca.example.org:8443 --bundle bundle.pem \\\n      --token-file join.token --svid-dir frontend\n  \
palisade cert request --ca https://palisade-ca.palisade.svc:8443 \\\n      --bundle bundle.pem \\\n      --service-account-token /var/run/secrets/palisade/token \\\n      --ca-id spiffe://cluster.local/ns/palisade/sa/palisade-ca \\\n      --svid-dir /run/svid\n\n\
The key is made here and never leaves (only the CSR is sent). Writes key.pem (0600), cert.pem and\n\
bundle.pem atomically. Exit codes: 0 issued; 1 the CA refused (retrying will not help); 4 local\n\
files unusable; 75 the CA could not be reached or was busy (retry later).")]
    Request(request::RequestArgs),
    /// Renew a certificate from the CA service over mTLS, once or (--watch) for as long as it runs.
    #[command(after_help = "Examples:\n  \
palisade cert renew --ca https://ca.example.org:8443 --svid-dir frontend\n  \
palisade cert renew --ca https://ca.example.org:8443 --svid-dir frontend \\\n      --watch --admin 127.0.0.1:9093\n\n\
Authenticates with DIR's certificate and trusts DIR's bundle; writes a new key, certificate and\n\
bundle atomically. With --watch it renews at half the lifetime (+-10%), backs off with jitter\n\
while the CA is away, and serves /live, /ready and /metrics. Exit codes as for `cert request`.")]
    Renew(renew::RenewArgs),
}

pub fn run(cmd: CertCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        CertCommand::Issue(args) => issue::issue(&args, out),
        CertCommand::Inspect(args) => inspect::inspect(&args, out),
        CertCommand::Request(args) => request::request(&args, out),
        CertCommand::Renew(args) => renew::renew(&args, out),
    }
}
