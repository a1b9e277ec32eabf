//! Load on `palisade ca serve`, and the raw issuance rate to compare it with. Prints JSON.
//!
//! ```text
//! ca_load prepare DIR                 writes DIR/jwks.json and DIR/sa.token (an ES256
//!                                     service-account token for the sign measurement)
//! ca_load raw ISSUER_DIR SECONDS DIR  the ceilings on this thread, no network: CSR check +
//!                                     issue, and with each endpoint's credential check (DIR holds
//!                                     jwks.json, sa.token and svid/, the renewing client's SVID)
//! ca_load run MODE URL SERVER_ID SVID_DIR TOKEN_FILE CLIENTS SECONDS
//!     MODE: sign-keepalive   POST /v1/sign with the service-account token, one kept-alive
//!                            connection per client
//!           renew-keepalive  POST /v1/renew over one kept-alive mTLS connection per client
//!           renew-new        POST /v1/renew, a new mTLS connection (full handshake) per request
//! ```
//!
//! Every loop is bounded in time (SECONDS) and count (MAX_REQUESTS per client). CSRs come from a
//! pool made before the clock starts, so the client spends its CPU on TLS and HTTP only. Requests
//! go through palisade-identity-client's `HttpsClient`, the one the workloads use, so the
//! benchmark measures the same client code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use palisade_ca::{CaDir, CheckedCsr, LeafRequest};
use palisade_identity::{ExactId, SpiffeServerVerifier};
use palisade_identity::{SpiffeId, TrustBundle, TrustBundleSet};
use palisade_identity_client::https::{HttpsClient, Options};
use rcgen::{CertificateParams, KeyPair};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const MAX_REQUESTS: u64 = 10_000_000;
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const AUDIENCE: &str = "palisade-ca";

fn csr_pool(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .der()
                .to_vec()
        })
        .collect()
}

fn prepare(dir: &str) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = key.public_key_raw();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "bench", "use": "sig", "alg": "ES256",
        "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
    }]});
    std::fs::write(format!("{dir}/jwks.json"), jwks.to_string()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "aud": [AUDIENCE], "sub": "system:serviceaccount:bench:load",
        "iat": now, "nbf": now, "exp": now + 3600,
        "kubernetes.io": {"namespace": "bench", "serviceaccount": {"name": "load", "uid": "1"}},
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("bench".into());
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
    std::fs::write(format!("{dir}/sa.token"), token).unwrap();
}

/// The ceilings: issuance alone (CSR check + sign), and with each endpoint's credential check
/// (a service-account JWT for sign, the client's chain for renew), on this thread, no network.
fn raw(issuer_dir: &str, seconds: f64, work_dir: &str) {
    let (ca, bundle) = CaDir::new(issuer_dir).load().unwrap();
    let bundles = TrustBundleSet::from(bundle);
    let csrs = csr_pool(256);
    let id = SpiffeId::parse(&format!("{}/bench/raw", ca.trust_domain().id())).unwrap();
    let request = LeafRequest::new(id, Duration::from_secs(3600));
    let accounts = palisade_ca_server::service_account::ServiceAccountVerifier::load(
        palisade_ca_server::service_account::ServiceAccountConfig {
            jwks: palisade_ca_server::service_account::JwksSource::File(
                format!("{work_dir}/jwks.json").into(),
            ),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
        },
    )
    .unwrap();
    let token = std::fs::read_to_string(format!("{work_dir}/sa.token")).unwrap();
    let chain = palisade_identity::pem::certificates_from_pem(
        &std::fs::read(format!("{work_dir}/svid/cert.pem")).unwrap(),
    )
    .unwrap();
    let budget = Duration::from_secs_f64(seconds);
    let measure = |credential: &dyn Fn()| {
        let start = Instant::now();
        let mut n = 0u64;
        while n < MAX_REQUESTS && start.elapsed() < budget {
            credential();
            let csr = CheckedCsr::check(&csrs[n as usize % csrs.len()]).unwrap();
            ca.issue_for_csr(&csr, &request).unwrap();
            n += 1;
        }
        (n as f64 / start.elapsed().as_secs_f64()).round()
    };
    let issue_only = measure(&|| {});
    let with_jwt = measure(&|| {
        accounts
            .verify(&token, ca.trust_domain(), std::time::SystemTime::now())
            .unwrap();
    });
    let with_chain = measure(&|| {
        palisade_identity::verify_svid(
            &chain,
            &bundles,
            palisade_identity::PeerRole::Client,
            rustls_pki_types::UnixTime::now(),
        )
        .unwrap();
    });
    println!(
        "{}",
        serde_json::json!({
            "issue_per_s": issue_only,
            "sign_with_jwt_per_s": with_jwt,
            "renew_with_chain_per_s": with_chain,
        })
    );
}

struct Target {
    /// `https://host:port`.
    url: String,
    server_id: SpiffeId,
    bundles: Arc<TrustBundleSet>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    token: String,
}

impl Target {
    /// One client's HTTPS client: its own pool, so that `keep_alive` means one connection kept
    /// by this client, as a workload would.
    fn client(&self, client_auth: bool, keep_alive: bool) -> HttpsClient {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = SpiffeServerVerifier::new(
            self.bundles.clone(),
            Arc::new(ExactId(self.server_id.clone())),
        );
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = if client_auth {
            builder
                .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        // A new connection per request must mean a full handshake, not a resumed one.
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        HttpsClient::new(
            config,
            Options {
                // Far beyond any answer under load: a request this late counts as failed.
                deadline: Duration::from_secs(60),
                max_body: 256 * 1024,
                keep_alive,
                plain_http: false,
            },
        )
    }
}

async fn one(client: &HttpsClient, url: &str, csr: &[u8], token: Option<&str>) -> bool {
    let mut request = Request::post(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(csr)))
        .unwrap();
    // A failed connection is not put back in the pool: the next request connects anew.
    matches!(client.send(request).await, Ok(answer) if answer.status == 200)
}

async fn run(mode: String, target: Arc<Target>, clients: usize, seconds: f64) {
    let csrs = Arc::new(csr_pool(64));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let budget = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (mode, target, csrs, ok, failed) = (
                mode.clone(),
                target.clone(),
                csrs.clone(),
                ok.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let renew = mode.starts_with("renew");
                let client = target.client(renew, mode != "renew-new");
                let url = format!(
                    "{}{}",
                    target.url,
                    if renew { "/v1/renew" } else { "/v1/sign" }
                );
                let token = (!renew).then_some(target.token.as_str());
                let mut n = 0u64;
                while n < MAX_REQUESTS && start.elapsed() < budget {
                    let csr = &csrs[(i + n as usize) % csrs.len()];
                    if one(&client, &url, csr, token).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "mode": mode, "clients": clients, "seconds": (elapsed * 100.0).round() / 100.0,
            "ok": ok, "failed": failed.load(Ordering::Relaxed),
            "requests_per_s": (ok as f64 / elapsed).round(),
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("prepare") => prepare(&args[1]),
        Some("raw") => raw(&args[1], args[2].parse().unwrap(), &args[3]),
        Some("run") => {
            let (mode, url, server_id, svid_dir, token_file) =
                (&args[1], &args[2], &args[3], &args[4], &args[5]);
            let clients: usize = args[6].parse().unwrap();
            let seconds: f64 = args[7].parse().unwrap();
            let read = |name: &str| std::fs::read(format!("{svid_dir}/{name}")).unwrap();
            let bundle = TrustBundle::from_pem_own_domain(&read("bundle.pem")).unwrap();
            let target = Arc::new(Target {
                url: url.trim_end_matches('/').to_owned(),
                server_id: SpiffeId::parse(server_id).unwrap(),
                bundles: Arc::new(TrustBundleSet::from(bundle)),
                chain: palisade_identity::pem::certificates_from_pem(&read("cert.pem")).unwrap(),
                key: palisade_identity::pem::private_key_from_pem(&read("key.pem")).unwrap(),
                token: std::fs::read_to_string(token_file)
                    .unwrap()
                    .trim()
                    .to_owned(),
            });
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(run(mode.clone(), target, clients, seconds));
        }
        _ => {
            eprintln!("usage: ca_load prepare DIR | raw ISSUER_DIR SECONDS DIR | run MODE URL SERVER_ID SVID_DIR TOKEN_FILE CLIENTS SECONDS");
            std::process::exit(2);
        }
    }
}
