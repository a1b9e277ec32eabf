//! `palisade ca ...`: create and manage a trust domain's certificate authority.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use palisade_ca::{CaDir, TrustDomain};

use super::{parse_duration, KeyTypeArg};
use crate::output::rfc3339;

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new root CA for a trust domain in a directory.
    #[command(
        after_help = "Example:\n  palisade ca init --dir /etc/palisade/ca --trust-domain example.org\n\n\
Writes ca-key.pem (0600), ca-cert.pem and bundle.pem (the trust bundle to give every workload)."
    )]
    Init(InitArgs),
    /// Create (or replace: an issuer rotation) an issuing CA under a root, so the root key can
    /// stay offline.
    #[command(
        after_help = "Example:\n  palisade ca init-issuer --root-dir /secure/root --dir /etc/palisade/issuer \\\n      --ttl 30d\n\n\
Writes DIR/ca-key.pem (0600), DIR/ca-cert.pem (CA:true, pathLen 0, the trust domain's ID) and\n\
DIR/bundle.pem (the root's bundle). `palisade ca serve --dir DIR` signs with it; leaves carry the\n\
chain leaf -> issuer. Running it again makes a new issuer: new certificates are signed by it,\n\
the ones already issued stay valid (same root)."
    )]
    InitIssuer(InitIssuerArgs),
    /// Make a one-time join token bound to one SPIFFE ID, for `cert request --token`.
    #[command(
        after_help = "Example:\n  palisade ca token --dir /etc/palisade/issuer \\\n      --spiffe-id spiffe://example.org/ns/shop/sa/frontend --ttl 10m\n\n\
Prints the token. Only its SHA-256 is stored (DIR/tokens/pending/); the CA service consumes it\n\
on first use, whatever the outcome."
    )]
    Token(TokenArgs),
    /// Run the CA as an HTTPS service: sign (join token or Kubernetes service-account token),
    /// renew (mTLS), bundle.
    #[command(
        after_help = "Example:\n  palisade ca serve --dir /etc/palisade/issuer --listen 0.0.0.0:8443 \\\n      --leaf-ttl 1h\n\n\
Prints {\"listening\":{\"api\":...,\"admin\":...}} on stdout, then one JSON audit line per issuance\n\
and refusal (or to --audit-log). The CA directory and the JWKS are re-read every --reload-interval.\n\
Endpoints and error codes: docs/IDENTITY.md."
    )]
    Serve(Box<ServeArgs>),
    /// Rotate the root in three steps: prepare, activate, retire.
    #[command(
        subcommand,
        after_help = "Example (each step refused until the previous one is safe to follow):\n  \
palisade ca rotate prepare --root-dir /secure/root --dir /etc/palisade/issuer\n  \
palisade ca rotate activate --root-dir /secure/root --dir /etc/palisade/issuer\n  \
palisade ca rotate retire --root-dir /secure/root --dir /etc/palisade/issuer"
    )]
    Rotate(RotateCommand),
}

#[derive(Debug, Args)]
pub struct InitIssuerArgs {
    /// The root CA's directory (made by `ca init`).
    #[arg(long, value_name = "DIR")]
    pub root_dir: PathBuf,
    /// Directory for the issuer (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Lifetime of the issuer certificate; never past the root's.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "30d")]
    pub ttl: Duration,
    /// Key algorithm of the issuer.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyTypeArg,
    /// Replace a root CA found in DIR (an issuer found there is replaced without it).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The CA directory `ca serve` runs from.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The identity the token grants.
    #[arg(long, value_name = "ID")]
    pub spiffe_id: palisade_ca::SpiffeId,
    /// How long the token may be used.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10m")]
    pub ttl: Duration,
    /// The token store, if not DIR/tokens (it must be the one `ca serve --tokens-dir` uses).
    #[arg(long, value_name = "DIR")]
    pub tokens_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The CA directory (an issuer from `ca init-issuer`, or a root).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Address of the HTTPS service.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// Address of the admin server (/live, /ready, /metrics); loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9092")]
    pub admin_listen: std::net::SocketAddr,
    /// The service's own SPIFFE ID, which clients pin (default spiffe://<trust domain>/palisade/ca).
    #[arg(long, value_name = "ID")]
    pub server_id: Option<palisade_ca::SpiffeId>,
    /// DNS name for the service's certificate (repeatable).
    #[arg(long = "dns", value_name = "NAME")]
    pub dns_names: Vec<String>,
    /// Lifetime of the certificates issued.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "1h")]
    pub leaf_ttl: Duration,
    /// The join-token store (default DIR/tokens).
    #[arg(long, value_name = "DIR")]
    pub tokens_dir: Option<PathBuf>,
    /// JWKS file with the Kubernetes service-account signing keys (the API server's
    /// /openid/v1/jwks); turns on service-account tokens.
    #[arg(long, value_name = "FILE", requires = "jwt_issuer")]
    pub jwks: Option<PathBuf>,
    /// The `iss` service-account tokens must carry.
    #[arg(long, value_name = "URL", requires = "jwks")]
    pub jwt_issuer: Option<String>,
    /// The audience service-account tokens must be made for.
    #[arg(long, value_name = "AUD", default_value = "palisade-ca")]
    pub jwt_audience: String,
    /// Where audit lines go: - for stdout, or a file (appended, 0600).
    #[arg(long, value_name = "FILE", default_value = "-")]
    pub audit_log: String,
    /// Sign and renew requests per second per client address (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    pub rate_limit: f64,
    /// Requests a client may make in a burst before --rate-limit applies.
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub rate_burst: u32,
    /// An IPv6 /48 (a site) is limited too, at N times --rate-limit and --rate-burst for all of
    /// its /64s together: a request must pass both buckets.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub site_rate_multiple: u32,
    /// Signings in progress at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_signing: usize,
    /// Connections open at once, both classes together.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_connections: usize,
    /// Of --max-connections, those kept for connections whose client certificate verified to the
    /// bundle (renewals): a flood of unauthenticated connections cannot take them.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub reserved_connections: usize,
    /// Connections one client (an IPv4 address, an IPv6 /64) may hold in each class; a new one
    /// beyond closes its oldest idle one, or is refused when none is idle.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_connections_per_client: usize,
    /// Of --reserved-connections, those one SPIFFE ID may hold; a new one beyond closes its
    /// oldest idle one, or stays in the general class when none is idle.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub reserved_connections_per_id: usize,
    /// Time for a connection's TLS handshake.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub handshake_timeout: Duration,
    /// Time for a whole request, head and body together, on a connection without a verified
    /// client certificate (from the handshake, and from the previous answer); renewal connections
    /// get 30 s for a head and 10 s for a body.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub request_timeout: Duration,
    /// Requests refused on one connection before it is closed.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub refusals_per_connection: u32,
    /// Refusal lines per client per --audit-window in the audit trail; the rest are counted in
    /// one summary line per client and code when the window ends.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub audit_refusals_per_client: u32,
    /// The window of --audit-refusals-per-client (1,000 refusal lines per window in all).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "10s")]
    pub audit_window: Duration,
    /// How often the CA directory and the JWKS are read again.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "5s")]
    pub reload_interval: Duration,
    /// How the service restricts itself (Landlock: its state; the system call allow-list).
    #[command(flatten)]
    pub sandbox: super::SandboxArgs,
    /// Apply the sandbox (making the token directories it needs), try what it must forbid,
    /// print one JSON line, and exit: 0 when every attempt came out as it should.
    #[arg(long)]
    pub check_sandbox: bool,
}

#[derive(Debug, Subcommand)]
pub enum RotateCommand {
    /// Step 1: make a new root and add it to the bundle (root and issuer directories).
    #[command(after_help = "Example:\n  \
palisade ca rotate prepare --root-dir /secure/root \\\n      --dir /etc/palisade/issuer --leaf-ttl 1h\n\n\
Then wait one leaf lifetime (the step says when activate becomes safe).")]
    Prepare(RotatePrepareArgs),
    /// Step 2: after one leaf lifetime, the new root takes over and a new issuer signs.
    #[command(after_help = "Example:\n  \
palisade ca rotate activate --root-dir /secure/root --dir /etc/palisade/issuer\n\n\
Refused while the new bundle has been served for less than a leaf lifetime (--force for a\n\
compromised root).")]
    Activate(RotateActivateArgs),
    /// Step 3: after one more leaf lifetime, the old root leaves the bundle.
    #[command(after_help = "Example:\n  \
palisade ca rotate retire --root-dir /secure/root --dir /etc/palisade/issuer")]
    Retire(RotateRetireArgs),
}

#[derive(Debug, Args)]
pub struct RotateDirs {
    /// The root CA's directory.
    #[arg(long, value_name = "DIR")]
    pub root_dir: PathBuf,
    /// The issuer directory `ca serve` runs from.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RotatePrepareArgs {
    #[command(flatten)]
    pub dirs: RotateDirs,
    /// The longest leaf lifetime `ca serve --leaf-ttl` uses: the later steps wait this long.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "1h")]
    pub leaf_ttl: Duration,
    /// Lifetime of the new root.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "365d")]
    pub ttl: Duration,
    /// Key algorithm of the new root.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyTypeArg,
}

#[derive(Debug, Args)]
pub struct RotateActivateArgs {
    #[command(flatten)]
    pub dirs: RotateDirs,
    /// Lifetime of the new issuer.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "30d")]
    pub issuer_ttl: Duration,
    /// Key algorithm of the new issuer.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyTypeArg,
    /// Activate before the new bundle has been served for a leaf lifetime (a compromised root).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RotateRetireArgs {
    #[command(flatten)]
    pub dirs: RotateDirs,
    /// Retire while leaves under the old root may still be valid (they stop verifying).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for the CA's state (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Trust domain, e.g. example.org (lowercase letters, digits, '.', '-', '_').
    #[arg(long, value_name = "TD")]
    pub trust_domain: TrustDomain,
    /// Key algorithm of the CA.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyTypeArg,
    /// Lifetime of the CA certificate (e.g. 365d, 8760h).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "365d")]
    pub ttl: Duration,
    /// Replace an existing CA in DIR. Certificates it issued stop verifying against the new bundle.
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: CaCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        CaCommand::Init(args) => init(&args, out),
        CaCommand::InitIssuer(args) => init_issuer(&args, out),
        CaCommand::Token(args) => token(&args, out),
        CaCommand::Serve(args) => super::ca_serve::serve(*args),
        CaCommand::Rotate(cmd) => rotate(cmd, out),
    }
}

pub fn init(args: &InitArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let dir = CaDir::new(&args.dir);
    let (ca, _bundle) = dir.init(
        &args.trust_domain,
        args.key_type.into(),
        args.ttl,
        args.force,
    )?;
    tracing::info!(trust_domain = %args.trust_domain, dir = %args.dir.display(), "created CA");
    writeln!(
        out,
        "created CA for trust domain {} ({}), valid until {}",
        ca.trust_domain(),
        palisade_ca::KeyType::from(args.key_type),
        rfc3339(ca.not_after())
    )?;
    writeln!(out, "  key      {} (0600)", dir.key_path().display())?;
    writeln!(out, "  cert     {}", dir.cert_path().display())?;
    writeln!(
        out,
        "  bundle   {}  <- give this to every workload",
        dir.bundle_path().display()
    )
    .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

pub fn init_issuer(args: &InitIssuerArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let dir = CaDir::new(&args.dir);
    let (issuer, bundle) = dir.init_issuer(
        &CaDir::new(&args.root_dir),
        args.key_type.into(),
        args.ttl,
        args.force,
    )?;
    tracing::info!(trust_domain = %issuer.trust_domain(), dir = %args.dir.display(), "created issuer");
    writeln!(
        out,
        "created issuer for trust domain {} under {}, valid until {}",
        issuer.trust_domain(),
        args.root_dir.display(),
        rfc3339(issuer.not_after())
    )?;
    writeln!(out, "  key      {} (0600)", dir.key_path().display())?;
    writeln!(out, "  cert     {}", dir.cert_path().display())?;
    writeln!(
        out,
        "  bundle   {} ({} root{})",
        dir.bundle_path().display(),
        bundle.roots().len(),
        if bundle.roots().len() == 1 { "" } else { "s" }
    )?;
    Ok(ExitCode::SUCCESS)
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
    writeln!(out, "{token}")?;
    Ok(ExitCode::SUCCESS)
}

fn rotate(cmd: RotateCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    use palisade_ca::RootRotation;
    let now = time::OffsetDateTime::now_utc();
    let rotation =
        |dirs: &RotateDirs| RootRotation::new(CaDir::new(&dirs.root_dir), CaDir::new(&dirs.dir));
    match cmd {
        RotateCommand::Prepare(args) => {
            let bundle =
                rotation(&args.dirs).prepare(args.leaf_ttl, args.key_type.into(), args.ttl, now)?;
            let state = rotation(&args.dirs).state()?;
            let wait = state
                .as_ref()
                .map(palisade_ca::activate_wait)
                .unwrap_or_default();
            writeln!(
                out,
                "prepared: the bundle now holds {} roots (old and new); activate from {}",
                bundle.roots().len(),
                rfc3339(now + wait)
            )?;
        }
        RotateCommand::Activate(args) => {
            rotation(&args.dirs).activate(
                args.issuer_ttl,
                args.key_type.into(),
                args.force,
                now,
            )?;
            let state = rotation(&args.dirs).state()?;
            let wait = state
                .as_ref()
                .map(palisade_ca::retire_wait)
                .unwrap_or_default();
            writeln!(
                out,
                "activated: a new issuer under the new root signs; retire the old root from {}",
                rfc3339(now + wait)
            )?;
        }
        RotateCommand::Retire(args) => {
            let bundle = rotation(&args.dirs).retire(args.force, now)?;
            writeln!(
                out,
                "retired: the bundle holds {} root{}",
                bundle.roots().len(),
                if bundle.roots().len() == 1 { "" } else { "s" }
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
