//! `palisade demo`: the whole story on one machine, in a temporary directory, no root needed.
//! Each step prints the command an operator would type, then runs that same command's code (the
//! sidecars run in this process, on loopback ports the kernel picks) and checks the outcome: the
//! demo fails loudly if the story does not happen as told.

mod pods;
mod toy_http;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use clap::Args;
use palisade_identity::{SpiffeId, TrustDomain};
use palisade_sidecar::{Addresses, Sidecar, SidecarConfig};

use super::ca::{self, InitArgs};
use super::cert::{self, InspectArgs, IssueArgs};
use super::policy::{self as policy_cmd, CheckArgs, CompileArgs, ExplainArgs, PolicyCommand};
use super::KeyTypeArg;
use toy_http::{admin_get, sample, Client};

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  cargo run --release -- demo\n  palisade demo --keep")]
pub struct DemoArgs {
    /// Keep the demo's directory (CA, certificates, sidecar configs) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// (The pods' pretend app, run by the demo inside a pod: serve HTTP on this address.)
    #[arg(long, hide = true, value_name = "ADDR")]
    pub toy_app: Option<std::net::SocketAddr>,
    /// (The pods' pretend client: one GET to this address; exit 0 on a 200.)
    #[arg(long, hide = true, value_name = "ADDR")]
    pub toy_get: Option<std::net::SocketAddr>,
    /// (The path --toy-get asks for.)
    #[arg(long, hide = true, default_value = "/")]
    pub toy_path: String,
}

const TRUST_DOMAIN: &str = "demo.palisade.internal";

pub fn run(args: DemoArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    if let Some(listen) = args.toy_app {
        return toy_http::serve_forever(listen, "payments: charge accepted\n");
    }
    if let Some(target) = args.toy_get {
        return toy_http::get_once(target, &args.toy_path, out);
    }
    let dir = tempfile::Builder::new()
        .prefix("palisade-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    std::env::set_current_dir(dir.path())
        .with_context(|| format!("cannot enter {}", dir.path().display()))?;
    let td: TrustDomain = TRUST_DOMAIN.parse()?;
    let frontend = SpiffeId::from_segments(&td, &["ns", "shop", "sa", "frontend"])?;
    let payments = SpiffeId::from_segments(&td, &["ns", "shop", "sa", "payments"])?;
    let intruder = SpiffeId::from_segments(&td, &["ns", "guest", "sa", "scanner"])?;

    writeln!(
        out,
        "Palisade demo: workload identity and the mTLS sidecar, on this machine, no root needed."
    )?;
    writeln!(out, "\n$ cd {}", dir.path().display())?;

    step(
        out,
        "1. A certificate authority for the trust domain. Its bundle.pem is what every workload trusts.",
    )?;
    command(
        out,
        &format!("palisade ca init --ca-dir ca --trust-domain {td}"),
    )?;
    ca::init(
        &InitArgs {
            dir: "ca".into(),
            trust_domain: td.clone(),
            key_type: KeyTypeArg::EcdsaP256,
            ttl: Duration::from_secs(365 * 86_400),
            force: false,
            output: Default::default(),
        },
        out,
    )?;

    step(
        out,
        "2. Three workloads get short-lived X.509-SVIDs (their SPIFFE ID is the one URI SAN).\n   \
The scanner's certificate is perfectly valid, it just names another workload.",
    )?;
    for (id, name) in [
        (&frontend, "frontend"),
        (&payments, "payments"),
        (&intruder, "scanner"),
    ] {
        command(
            out,
            &format!("palisade cert issue --ca-dir ca --spiffe-id {id} --svid-dir {name} --ttl 1h"),
        )?;
        cert::issue(&issue_args("1h", id, name), out)?;
    }
    command(
        out,
        "palisade cert inspect payments/cert.pem --bundle ca/bundle.pem",
    )?;
    expect_valid(
        true,
        cert::inspect(&inspect_args("payments", "ca/bundle.pem"), out)?,
    )?;

    policy_story(out, &frontend, &payments, &intruder)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(sidecar_story(out, &payments, &intruder))?;

    let pods = pods::can_run();
    if pods.is_ok() {
        pods::story(out, dir.path())?;
    }
    writeln!(
        out,
        "\nDone: the frontend reached payments over mTLS, the scanner was refused for who it is,\n\
payments rotated its certificate without dropping a connection, and the frontend renewed\n\
its own from the CA service.{}",
        if pods.is_ok() {
            " Then two nodes' tables and three pods' transparent sidecars enforced\nthe same policy on unmodified apps."
        } else {
            ""
        }
    )?;
    if let Err(why) = pods {
        writeln!(out, "(Not shown: {why}.)")?;
    }
    if args.keep {
        let kept: PathBuf = dir.keep();
        writeln!(out, "Kept {} for you to look at.", kept.display())?;
    } else {
        writeln!(
            out,
            "Removed {} (pass --keep to look at the files).",
            dir.path().display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn sidecar_story(
    out: &mut dyn Write,
    payments: &SpiffeId,
    intruder: &SpiffeId,
) -> anyhow::Result<()> {
    let app = toy_http::spawn_app("payments: charge accepted\n").await?;
    step(
        out,
        &format!(
            "4. Payments' sidecar terminates mTLS and forwards to the payments app ({app}), admitting\n   \
whom the policy lets reach payments on port 8080 (the frontend). Its configuration (listener ports\n   \
are 0 here: the kernel picks free ones; the policy is asked about port 8080):"
        ),
    )?;
    let payments_yaml = format!(
        "identity: {{ cert: payments/cert.pem, key: payments/key.pem, bundle: payments/bundle.pem, reload_interval: 200ms }}\n\
inbound:\n  - name: payments-api\n    listen: 127.0.0.1:0\n    forward_to: {app}\n    policy: {{ file: policy.yaml, port: 8080 }}\n\
admin: {{ listen: 127.0.0.1:0 }}\n"
    );
    let payments_sidecar = start_sidecar(out, "payments.yaml", &payments_yaml).await?;
    let payments_port = payments_sidecar.inbound[0].1;

    step(
        out,
        "5. The frontend's and the scanner's sidecars originate mTLS to payments and expect its ID.",
    )?;
    let outbound_yaml = |name: &str| {
        format!(
            "identity: {{ cert: {name}/cert.pem, key: {name}/key.pem, bundle: {name}/bundle.pem }}\n\
outbound:\n  - name: to-payments\n    listen: 127.0.0.1:0\n    connect_to: {payments_port}\n    expect: [\"{payments}\"]\n\
admin: {{ listen: 127.0.0.1:0 }}\n"
        )
    };
    let frontend_sidecar = start_sidecar(out, "frontend.yaml", &outbound_yaml("frontend")).await?;
    let scanner_sidecar = start_sidecar(out, "scanner.yaml", &outbound_yaml("scanner")).await?;
    let frontend_out = frontend_sidecar.outbound[0].1;
    let scanner_out = scanner_sidecar.outbound[0].1;

    step(
        out,
        "6. The frontend app speaks plain HTTP to its sidecar; mTLS carries it to payments.",
    )?;
    command(
        out,
        &format!("curl http://{frontend_out}/charge   # as the frontend app"),
    )?;
    let mut kept_open = Client::connect(frontend_out).await?;
    let (status, body) = kept_open
        .get("/charge")
        .await
        .context("the frontend's request should have reached payments")?;
    writeln!(out, "{status}\n{}", body.trim_end())?;

    step(
        out,
        &format!("7. The scanner tries the same. Its certificate verifies, but {intruder}\n   is in segment guest, which the policy does not let reach payments (explain said so in step 3):\n   \
the handshake is refused and the app never sees it."),
    )?;
    command(
        out,
        &format!("curl http://{scanner_out}/charge   # as the scanner"),
    )?;
    let refused = match Client::connect(scanner_out).await?.get("/charge").await {
        Ok((status, _)) => bail!("the scanner should have been refused, got {status}"),
        Err(e) => e,
    };
    writeln!(out, "-> {refused}")?;
    let admin = payments_sidecar.admin;
    let not_admitted = wait_for_sample(
        admin,
        "palisade_sidecar_connections_refused_total{listener=\"payments-api\",direction=\"inbound\",reason=\"not_admitted\"}",
        |v| v >= 1.0,
    )
    .await?;
    command(
        out,
        &format!("curl -s http://{admin}/metrics | grep refused"),
    )?;
    writeln!(
        out,
        "palisade_sidecar_connections_refused_total{{listener=\"payments-api\",direction=\"inbound\",reason=\"not_admitted\"}} {not_admitted}"
    )?;
    writeln!(
        out,
        "(payments' sidecar also logged a warning naming {intruder}; it is on stderr)"
    )?;

    step(
        out,
        "8. Rotation: payments gets a new certificate while the frontend's connection stays open.\n   \
The sidecar re-reads its files, checks them, and serves new handshakes with the new one.",
    )?;
    let expiry_before = sample(
        &admin_get(admin, "/metrics").await?,
        "palisade_sidecar_certificate_expiry_timestamp_seconds",
    );
    command(
        out,
        &format!(
            "palisade cert issue --ca-dir ca --spiffe-id {payments} --svid-dir payments --ttl 2h"
        ),
    )?;
    cert::issue(&issue_args("2h", payments, "payments"), out)?;
    let expiry_after = wait_for_sample(
        admin,
        "palisade_sidecar_certificate_expiry_timestamp_seconds",
        |v| v > expiry_before,
    )
    .await?;
    writeln!(
        out,
        "payments' sidecar reloaded: certificate expiry {} -> {} (metric palisade_sidecar_certificate_expiry_timestamp_seconds)",
        timestamp(expiry_before),
        timestamp(expiry_after)
    )?;
    let (status, _) = kept_open
        .get("/charge")
        .await
        .context("the connection opened before the rotation should still work")?;
    writeln!(out, "the connection opened before the rotation: {status}")?;
    let (status, _) = Client::connect(frontend_out).await?.get("/charge").await?;
    writeln!(out, "a new connection, with the new certificate: {status}")?;

    ca_story(out, frontend_sidecar.admin, frontend_out).await
}

/// Step 9: the CA as a service. An issuer under the root signs, the root key could now go
/// offline, and the frontend renews its certificate over mTLS with the one it holds.
async fn ca_story(
    out: &mut dyn Write,
    frontend_admin: std::net::SocketAddr,
    frontend_out: std::net::SocketAddr,
) -> anyhow::Result<()> {
    use palisade_ca_server::{AuditSink, CaServer, CaServerConfig, Limits, ServerIdentity};
    step(
        out,
        "9. The CA as a service. An issuer under the root signs (the root key can go offline), and\n   \
the frontend renews its certificate itself, over mTLS with the certificate it holds. Its sidecar\n   \
picks the new one up like any rotation.",
    )?;
    command(
        out,
        "palisade ca init-issuer --root-dir ca --ca-dir issuer --ttl 30d",
    )?;
    ca::init_issuer(
        &ca::InitIssuerArgs {
            root_dir: "ca".into(),
            dir: "issuer".into(),
            ttl: Duration::from_secs(30 * 86_400),
            key_type: KeyTypeArg::EcdsaP256,
            force: false,
            output: Default::default(),
        },
        out,
    )?;
    let (issuer, _) = palisade_ca::CaDir::new("issuer").load()?;
    let server_id = SpiffeId::parse(&format!("{}/palisade/ca", issuer.trust_domain().id()))?;
    let server = CaServer::bind(CaServerConfig {
        dir: "issuer".into(),
        listen: "127.0.0.1:0".parse()?,
        admin_listen: "127.0.0.1:0".parse()?,
        metrics_listen: None,
        server: ServerIdentity {
            id: server_id,
            dns_names: Vec::new(),
            ttl: Duration::from_secs(3600),
        },
        // Longer than the frontend's first certificate (1 h), so the renewal shows in its expiry.
        leaf_ttl: Duration::from_secs(2 * 3600),
        tokens_dir: "issuer/tokens".into(),
        service_account: None,
        audit: AuditSink::File("ca-audit.log".into()),
        limits: Limits::default(),
        reload_interval: Duration::from_secs(5),
    })
    .await?;
    let (api, _) = server.addresses();
    tokio::spawn(server.run(std::future::pending()));
    command(
        out,
        &format!("palisade ca serve --ca-dir issuer --listen {api} --leaf-ttl 2h &"),
    )?;
    let expiry_before = sample(
        &admin_get(frontend_admin, "/metrics").await?,
        "palisade_sidecar_certificate_expiry_timestamp_seconds",
    );
    let url = format!("https://{api}");
    command(
        out,
        &format!("palisade cert renew --ca {url} --svid-dir frontend"),
    )?;
    super::cert::renew_once(
        &super::cert::CaArgs {
            ca: url,
            ca_id: None,
        },
        &palisade_identity::SvidDir::new("frontend"),
        Default::default(),
        out,
    )
    .await
    .map_err(|failure| anyhow::anyhow!("the renewal failed: {failure}"))?;
    let audit = std::fs::read_to_string("ca-audit.log").unwrap_or_default();
    writeln!(
        out,
        "the CA's audit line:\n    {}",
        audit.lines().last().unwrap_or("")
    )?;
    let expiry_after = wait_for_sample(
        frontend_admin,
        "palisade_sidecar_certificate_expiry_timestamp_seconds",
        |v| v != expiry_before,
    )
    .await?;
    writeln!(
        out,
        "the frontend's sidecar reloaded: certificate expiry {} -> {}, now signed by the issuer",
        timestamp(expiry_before),
        timestamp(expiry_after)
    )?;
    let (status, _) = Client::connect(frontend_out).await?.get("/charge").await?;
    writeln!(
        out,
        "a new connection from the frontend, with the renewed certificate: {status}"
    )?;
    Ok(())
}

/// The policy both layers enforce: checked, asked, and compiled into a host's table.
fn policy_story(
    out: &mut dyn Write,
    frontend: &SpiffeId,
    payments: &SpiffeId,
    intruder: &SpiffeId,
) -> anyhow::Result<()> {
    let td = frontend.trust_domain();
    let policy = [
        "version: 1".to_owned(),
        format!("trust_domain: {td}"),
        "segments:".into(),
        "  frontend:".into(),
        "    addresses: [10.10.1.0/24]".into(),
        format!("    identities: [{frontend}]"),
        "  payments:".into(),
        "    addresses: [10.10.2.0/24]".into(),
        format!("    identities: [{payments}]"),
        "  guest:".into(),
        "    addresses: [10.10.9.0/24]".into(),
        format!("    identities: [\"spiffe://{td}/ns/guest/**\"]"),
        "rules:".into(),
        "  - name: frontend-to-payments".into(),
        "    from: frontend".into(),
        "    to: payments".into(),
        "    protocol: tcp".into(),
        "    ports: [8080]".into(),
        "hosts:".into(),
        "  node-a: { segments: [payments] }".into(),
        "  node-b: { segments: [frontend, guest] }".into(),
    ]
    .join("\n")
        + "\n";
    std::fs::write("policy.yaml", &policy).context("cannot write policy.yaml")?;
    step(
        out,
        "3. One policy for both layers: segments by address (for the kernel) and by SPIFFE ID (for\n   \
the sidecars). Checked, asked, and compiled into the nftables table of the host of payments:",
    )?;
    for line in policy.lines() {
        writeln!(out, "    {line}")?;
    }
    command(out, "palisade policy check policy.yaml")?;
    policy_cmd::run(
        PolicyCommand::Check(CheckArgs {
            file: Some("policy.yaml".into()),
            kubernetes: Default::default(),
            strict: true,
            output: Default::default(),
        }),
        out,
    )?;
    for (from, verdict) in [(frontend, "allowed"), (intruder, "denied")] {
        command(
            out,
            &format!(
                "palisade policy explain policy.yaml --from {from} --to {payments} --port 8080"
            ),
        )?;
        let mut text = Vec::new();
        policy_cmd::run(
            PolicyCommand::Explain(ExplainArgs {
                file: Some("policy.yaml".into()),
                kubernetes: Default::default(),
                from: from.to_string(),
                to: payments.to_string(),
                port: Some(8080),
                protocol: policy_cmd::ProtocolArg::Tcp,
                family: policy_cmd::FamilyArg::Ipv4,
                output: Default::default(),
            }),
            &mut text,
        )?;
        let text = String::from_utf8_lossy(&text);
        write!(out, "{text}")?;
        ensure!(
            text.to_lowercase().contains(verdict),
            "explain should have said {verdict} for {from}"
        );
    }
    command(out, "palisade policy compile policy.yaml --host node-a")?;
    policy_cmd::run(
        PolicyCommand::Compile(CompileArgs {
            file: Some("policy.yaml".into()),
            kubernetes: Default::default(),
            host: Some("node-a".into()),
            all_hosts: false,
            format: policy_cmd::Format::Nft,
        }),
        out,
    )?;
    writeln!(
        out,
        "(as root, `palisade policy apply policy.yaml --host node-a` puts that table in the kernel;\n\
the sidecar of payments now asks the same policy who may connect)"
    )?;
    Ok(())
}

/// A sidecar started in this process; its addresses are what the kernel picked.
async fn start_sidecar(out: &mut dyn Write, file: &str, yaml: &str) -> anyhow::Result<Addresses> {
    std::fs::write(file, yaml).with_context(|| format!("cannot write {file}"))?;
    if file == "payments.yaml" {
        for line in yaml.lines() {
            writeln!(out, "    {line}")?;
        }
    }
    command(out, &format!("palisade sidecar run --config {file} &"))?;
    let config = SidecarConfig::load(file.as_ref())?;
    let sidecar = Sidecar::bind(config).await?;
    let addresses = sidecar.addresses();
    tokio::spawn(sidecar.run(std::future::pending()));
    // Ready means it holds a valid certificate.
    let deadline = Instant::now() + Duration::from_secs(5);
    while admin_get(addresses.admin, "/ready").await.ok().as_deref() != Some("ready\n") {
        ensure!(
            Instant::now() < deadline,
            "the sidecar of {file} did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(addresses)
}

/// Polls a metric until `done` holds (up to 5 s); returns its value.
async fn wait_for_sample(
    admin: std::net::SocketAddr,
    series: &str,
    done: impl Fn(f64) -> bool,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = sample(&admin_get(admin, "/metrics").await?, series);
        if done(value) {
            return Ok(value);
        }
        ensure!(
            Instant::now() < deadline,
            "{series} did not reach the expected value (it is {value})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn timestamp(seconds: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds as i64)
        .map(crate::output::rfc3339)
        .unwrap_or_else(|_| seconds.to_string())
}

fn issue_args(ttl: &str, id: &SpiffeId, out_dir: &str) -> IssueArgs {
    IssueArgs {
        ca_dir: "ca".into(),
        spiffe_id: id.clone(),
        svid_dir: out_dir.into(),
        ttl: super::parse_duration(ttl).expect("the demo's lifetimes are valid"),
        dns_names: Vec::new(),
        csr: None,
        key_type: KeyTypeArg::EcdsaP256,
        output: Default::default(),
    }
}

fn inspect_args(dir: &str, bundle: &str) -> InspectArgs {
    InspectArgs {
        file: PathBuf::from(dir).join("cert.pem"),
        bundle: Some(bundle.into()),
        output: Default::default(),
        json: false,
    }
}

fn expect_valid(expected: bool, code: ExitCode) -> anyhow::Result<()> {
    let valid = code == ExitCode::SUCCESS;
    if valid != expected {
        bail!(
            "the demo expected this certificate to be {}, but it was not",
            if expected { "valid" } else { "refused" }
        );
    }
    Ok(())
}

fn step(out: &mut dyn Write, text: &str) -> std::io::Result<()> {
    writeln!(out, "\n{text}")
}

fn command(out: &mut dyn Write, cmd: &str) -> std::io::Result<()> {
    writeln!(out, "$ {cmd}")
}
