//! Keeping an identity current: get one with a credential when none is held, renew it over
//! mTLS at the scheduled time, back off while the CA cannot be reached, hand every new SVID to a
//! [`SvidSink`] (the sidecar's listeners, or an SVID directory on disk).

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use palisade_identity::SpiffeId;
use tokio_util::sync::CancellationToken;

use crate::client::{CaClient, ClientError, Credential};
use crate::csr::KeyAndCsr;
use crate::schedule::{sleep_until, uniform, RenewalTiming};
use crate::svid::Svid;

/// Where a credential for a first certificate (or one after an expiry) comes from. Files are
/// read at each use: Kubernetes rotates projected service-account tokens in place.
#[derive(Debug, Clone)]
pub enum Bootstrap {
    /// A join token, given directly (usable once).
    JoinToken(String),
    /// A file holding a join token.
    JoinTokenFile(PathBuf),
    /// A file holding a Kubernetes service-account token.
    ServiceAccountTokenFile(PathBuf),
}

impl Bootstrap {
    fn credential(&self) -> Result<Credential, ClientError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|error| ClientError::Credential {
                    path: path.clone(),
                    error,
                })
        };
        Ok(match self {
            Bootstrap::JoinToken(t) => Credential::JoinToken(t.clone()),
            Bootstrap::JoinTokenFile(p) => Credential::JoinToken(read(p)?),
            Bootstrap::ServiceAccountTokenFile(p) => Credential::ServiceAccountToken(read(p)?),
        })
    }
}

/// Takes each new SVID into use.
pub trait SvidSink: Send + Sync + 'static {
    /// Why this sink could not take an SVID into use (each sink has its own: a directory that
    /// cannot be written, credentials a TLS configuration refuses).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Puts `svid` in use; an error keeps the previous one (and the renewer tries again).
    fn install(&self, svid: Arc<Svid>) -> Result<(), Self::Error>;
}

/// Writes each new SVID into a directory (key.pem, cert.pem, bundle.pem): what
/// `palisade cert renew --watch` keeps up to date for a workload that reads files.
#[derive(Debug, Clone)]
pub struct SvidDirSink(pub palisade_identity::SvidDir);

impl SvidSink for SvidDirSink {
    type Error = palisade_identity::SvidDirError;

    fn install(&self, svid: Arc<Svid>) -> Result<(), Self::Error> {
        svid.write_to(&self.0)
    }
}

/// What the renewer is doing, for metrics and readiness.
#[derive(Debug, Default)]
pub struct RenewalStatus {
    /// Attempts to get a certificate (bootstrap or renewal).
    pub attempts: AtomicU64,
    /// Attempts that put a new certificate in use.
    pub successes: AtomicU64,
    /// Attempts that failed.
    pub failures: AtomicU64,
    /// Failures in a row now (0 after a success).
    pub consecutive_failures: AtomicU64,
    /// Unix time of the last success (0: none yet).
    pub last_success: AtomicI64,
    /// Unix time of the next attempt.
    pub next_attempt: AtomicI64,
    /// Unix time at which the SVID held expires (0: none held).
    pub expires_at: AtomicI64,
    /// The last failure's sentence.
    pub last_error: Mutex<Option<String>>,
}

/// Gets and renews one workload's SVID.
pub struct Renewer {
    client: CaClient,
    bootstrap: Option<Bootstrap>,
    expect: Option<SpiffeId>,
    timing: RenewalTiming,
    status: Arc<RenewalStatus>,
}

impl Renewer {
    /// A renewer talking to `client`, bootstrapping with `bootstrap` when it holds no valid SVID;
    /// `expect` pins the ID a bootstrap must yield.
    pub fn new(
        client: CaClient,
        bootstrap: Option<Bootstrap>,
        expect: Option<SpiffeId>,
        timing: RenewalTiming,
    ) -> Renewer {
        Renewer {
            client,
            bootstrap,
            expect,
            timing,
            status: Arc::new(RenewalStatus::default()),
        }
    }

    /// The status this renewer updates.
    pub fn status(&self) -> Arc<RenewalStatus> {
        self.status.clone()
    }

    /// One attempt: renewal over mTLS while `current` is valid, else (or when the CA refuses the
    /// renewal) a bootstrap with the credential, if there is one. A new key every time.
    pub async fn obtain(&self, current: Option<&Svid>) -> Result<Svid, ClientError> {
        let key = KeyAndCsr::generate().map_err(|e| ClientError::BadResponse(e.to_string()))?;
        let now = SystemTime::now();
        let renewal = match current.filter(|svid| svid.valid_at(now)) {
            Some(svid) => {
                let csr = &key.csr_der;
                let attempt = |client: CaClient| async move {
                    client.renew(csr, svid.chain.clone(), svid.key_der()).await
                };
                match self.with_bundle_fallback(Some(svid), attempt).await {
                    Ok(response) => return Svid::from_response(response, &key, Some(&svid.id)),
                    Err(error) if error.is_temporary() || self.bootstrap.is_none() => {
                        return Err(error)
                    }
                    Err(error) => Some(error),
                }
            }
            None => None,
        };
        let Some(bootstrap) = &self.bootstrap else {
            return Err(renewal.unwrap_or(ClientError::NoCredential));
        };
        if let Some(error) = renewal {
            tracing::warn!(%error, "the CA refused a renewal; bootstrapping with the credential");
        }
        let credential = bootstrap.credential()?;
        let expect = self.expect.as_ref();
        let attempt = |client: CaClient| {
            let credential = credential.clone();
            let csr = key.csr_der.clone();
            async move { client.sign(&csr, &credential, expect).await }
        };
        let response = self.with_bundle_fallback(current, attempt).await?;
        let expect = self.expect.as_ref().or(current.map(|svid| &svid.id));
        Svid::from_response(response, &key, expect)
    }

    /// Calls the CA trusting the bundle that came with `current` (it follows root rotations);
    /// if the server does not verify with it, tries once more with the configured bundle: a
    /// workload that slept through a whole root rotation holds a bundle without the new root,
    /// and its operator fixes that by updating the configured one.
    async fn with_bundle_fallback<F, Fut>(
        &self,
        current: Option<&Svid>,
        attempt: F,
    ) -> Result<palisade_identity::ca_api::SignResponse, ClientError>
    where
        F: Fn(CaClient) -> Fut,
        Fut: std::future::Future<
            Output = Result<palisade_identity::ca_api::SignResponse, ClientError>,
        >,
    {
        let Some(svid) = current else {
            return attempt(self.client.clone()).await;
        };
        match attempt(self.client.with_bundles(svid.bundles())).await {
            Err(ClientError::ServerIdentity(reason)) => {
                tracing::warn!(%reason, "the CA does not verify with the bundle we hold; trying the configured bundle");
                attempt(self.client.clone()).await
            }
            other => other,
        }
    }

    /// Keeps `sink` supplied until `stop`: an attempt at once when `current` is `None` or
    /// expired, then at each scheduled renewal, with backoff after failures.
    pub async fn run<S: SvidSink>(
        self,
        sink: Arc<S>,
        mut current: Option<Arc<Svid>>,
        stop: CancellationToken,
    ) {
        let mut failures: u32 = 0;
        if let Some(svid) = &current {
            self.status
                .expires_at
                .store(unix(svid.not_after), Ordering::Relaxed);
        }
        loop {
            let now = SystemTime::now();
            let deadline = if failures > 0 {
                // Never back off for longer than a tenth of what is left of the certificate in
                // use: a short-lived certificate must get its retries in before it expires.
                let left = current
                    .as_ref()
                    .and_then(|svid| svid.not_after.duration_since(now).ok())
                    .map(|left| (left / 10).max(MIN_BACKOFF));
                let backoff = self.timing.backoff(failures, uniform());
                now + left.map_or(backoff, |cap| backoff.min(cap))
            } else {
                match &current {
                    Some(svid) if svid.valid_at(now) => {
                        self.timing
                            .renew_at(svid.obtained_at, svid.not_after, uniform())
                    }
                    _ => now,
                }
            };
            self.status
                .next_attempt
                .store(unix(deadline), Ordering::Relaxed);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = sleep_until(deadline) => {}
            }
            self.status.attempts.fetch_add(1, Ordering::Relaxed);
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                result = self.obtain(current.as_deref()) => result,
            };
            // Said in the log and kept for /ready: the CA's answer or the sink's own error.
            let outcome = match result {
                Err(error) => Err(error.to_string()),
                Ok(svid) => {
                    let svid = Arc::new(svid);
                    sink.install(svid.clone())
                        .map(|()| svid)
                        .map_err(|error| format!("cannot put the new certificate in use: {error}"))
                }
            };
            match outcome {
                Ok(svid) => {
                    tracing::info!(
                        spiffe_id = %svid.id,
                        serial = %svid.serial,
                        not_after = %palisade_identity::rfc3339_system(svid.not_after),
                        "new certificate in use"
                    );
                    failures = 0;
                    self.status.successes.fetch_add(1, Ordering::Relaxed);
                    self.status.consecutive_failures.store(0, Ordering::Relaxed);
                    self.status
                        .last_success
                        .store(unix(SystemTime::now()), Ordering::Relaxed);
                    self.status
                        .expires_at
                        .store(unix(svid.not_after), Ordering::Relaxed);
                    current = Some(svid);
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    self.status.failures.fetch_add(1, Ordering::Relaxed);
                    self.status
                        .consecutive_failures
                        .store(u64::from(failures), Ordering::Relaxed);
                    let held = match &current {
                        Some(svid) if svid.valid_at(SystemTime::now()) => {
                            "keeping the certificate in use"
                        }
                        _ => "no valid certificate held",
                    };
                    tracing::warn!(%error, failures, "cannot get a certificate from the CA; {held}");
                    *self
                        .status
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(error);
                }
            }
        }
    }
}

/// Shortest wait between two failed attempts, whatever the certificate's remaining life.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Seconds since the Unix epoch.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64
}
