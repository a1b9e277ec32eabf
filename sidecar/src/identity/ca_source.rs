//! The sidecar's identity from the CA service (`identity.ca`): the renewer of
//! `palisade-identity-client` gets a certificate with the configured credential, renews it over
//! mTLS at half its lifetime, backs off while the CA is away, and hands each new one here, where
//! it becomes every listener's TLS for new handshakes (open connections keep theirs). The key
//! lives in memory only.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use palisade_identity::{TrustBundle, TrustBundleSet};
use palisade_identity_client::{
    Bootstrap, CaClient, RenewalStatus, RenewalTiming, Renewer, Svid, SvidSink,
};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::UnixTime;
use tokio_util::sync::CancellationToken;

use crate::config::CaSourceConfig;
use crate::identity::{Credentials, ListenerTls};
use crate::metrics::{Metrics, ResultLabels};

/// Puts each certificate from the CA into the listeners' TLS.
struct ListenerSink {
    tls: Arc<ListenerTls>,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
}

/// Why a certificate from the CA was not put in the listeners' TLS.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The certificate, its key or the bundle do not make credentials.
    #[error(transparent)]
    Credentials(#[from] crate::identity::CredentialError),
    /// rustls refused the configuration built from them.
    #[error("the TLS configuration does not build: {0}")]
    Tls(#[from] rustls::Error),
}

impl SvidSink for ListenerSink {
    type Error = InstallError;

    fn install(&self, svid: Arc<Svid>) -> Result<(), InstallError> {
        let credentials = Credentials::from_parts(
            svid.chain.clone(),
            svid.key_der(),
            svid.bundle.clone(),
            &self.provider,
            UnixTime::now(),
        )?;
        let credentials = Arc::new(credentials);
        self.tls.install(credentials.clone(), &self.provider)?;
        self.metrics
            .certificate_expiry_seconds
            .set(credentials.not_after.unix_timestamp());
        self.metrics.bundle_roots.set(credentials.roots as i64);
        Ok(())
    }
}

/// Runs the CA source until `stop`: reads the CA's bundle file (again every `retry` until it
/// loads), then keeps the listeners supplied.
pub(crate) async fn run(
    config: CaSourceConfig,
    tls: Arc<ListenerTls>,
    provider: Arc<CryptoProvider>,
    metrics: Arc<Metrics>,
    retry: Duration,
    stop: CancellationToken,
) {
    let client = loop {
        match client_for(&config) {
            Ok(client) => break client,
            Err(error) => {
                tracing::warn!(%error, "cannot set up the CA client; not ready, trying again");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
            }
        }
    };
    let bootstrap = match (&config.service_account_token, &config.join_token_file) {
        (Some(path), _) => Some(Bootstrap::ServiceAccountTokenFile(path.clone())),
        (None, Some(path)) => Some(Bootstrap::JoinTokenFile(path.clone())),
        (None, None) => None,
    };
    let renewer = Renewer::new(
        client,
        bootstrap,
        config.spiffe_id.clone(),
        RenewalTiming::default(),
    );
    tokio::spawn(report(renewer.status(), metrics.clone(), stop.clone()));
    let sink = Arc::new(ListenerSink {
        tls,
        provider,
        metrics,
    });
    tracing::info!(
        ca = config.url,
        "getting the certificate from the CA service"
    );
    renewer.run(sink, None, stop).await;
}

fn client_for(config: &CaSourceConfig) -> Result<CaClient, String> {
    let pem = std::fs::read(&config.bundle)
        .map_err(|e| format!("cannot read {}: {e}", config.bundle.display()))?;
    let bundle = TrustBundle::from_pem_own_domain(&pem)
        .map_err(|e| format!("{}: {e}", config.bundle.display()))?;
    CaClient::new(
        &config.url,
        config.server_id.clone(),
        Arc::new(TrustBundleSet::from(bundle)),
    )
    .map_err(|e| e.to_string())
}

/// Copies the renewer's status into the metrics once a second.
async fn report(status: Arc<RenewalStatus>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let (mut successes_seen, mut failures_seen) = (0, 0);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let successes = status.successes.load(Ordering::Relaxed);
        let failures = status.failures.load(Ordering::Relaxed);
        let count = |result, n| {
            metrics
                .renewals
                .get_or_create(&ResultLabels { result })
                .inc_by(n);
        };
        count("success", successes - successes_seen);
        count("failure", failures - failures_seen);
        (successes_seen, failures_seen) = (successes, failures);
        metrics
            .renewal_failures_in_a_row
            .set(status.consecutive_failures.load(Ordering::Relaxed) as i64);
        metrics
            .next_renewal_timestamp_seconds
            .set(status.next_attempt.load(Ordering::Relaxed));
    }
}
