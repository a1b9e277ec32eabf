//! This workload's identity as the sidecar holds it: certificate, key and trust bundle read from
//! files ([`Credentials`]), turned into one rustls config per listener (each listener's
//! [`InboundListenerTls`] or [`OutboundListenerTls`], kept together in [`ListenerTls`]) and kept
//! current by [`IdentityWatcher`], which swaps in new material only when all of it checks out.
//! Policy files are watched apart (`admission.rs`), so a bad policy never holds up a rotation.
//!
//! Swapping is an `ArcSwap` store: each new handshake takes the configs current at its accept;
//! open connections keep the ones they started with.

pub(crate) mod ca_source;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use palisade_identity::{
    verify_svid, AllowList, BundleError, PeerRole, SpiffeClientVerifier, SpiffeId,
    SpiffeServerVerifier, SvidError, TrustBundle, TrustBundleSet,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::NoServerSessionStorage;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::UnixTime;
use time::OffsetDateTime;

use crate::admission::PolicyFiles;
use crate::config::{IdentityFiles, InboundConfig, OutboundConfig, SidecarConfig};
use crate::metrics::{Metrics, ReloadLabels};

/// Why the identity files were not taken; the credentials in use, if any, stay.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// An identity file cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("the certificate file holds no PEM certificate")]
    NoCertificate,
    /// The key file holds no PKCS#8, SEC1 or PKCS#1 private key.
    #[error("the key file holds no PEM private key")]
    NoKey,
    /// rustls cannot sign with the key (an unsupported algorithm, or malformed).
    #[error("the private key cannot be used: {0}")]
    BadKey(rustls::Error),
    /// The key is not the certificate's: often a rotation caught halfway.
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    /// Our certificate carries no single valid SPIFFE ID, or does not parse.
    #[error("our own certificate is not an X.509-SVID: {0}")]
    NotAnSvid(SvidError),
    /// The bundle is not a valid trust bundle for our trust domain.
    #[error("the trust bundle is not usable: {0}")]
    Bundle(BundleError),
    /// Our own chain does not verify against the bundle (another CA, expired, ...).
    #[error("our own certificate does not verify against the trust bundle: {0}")]
    Untrusted(SvidError),
}

/// Certificate, key and bundle that belong together and check out.
#[derive(Debug)]
pub struct Credentials {
    /// The SPIFFE ID our certificate carries.
    pub id: SpiffeId,
    /// Our chain and signing key, as rustls presents them.
    pub certified_key: Arc<CertifiedKey>,
    /// The roots peers' chains must verify to: our own trust domain's bundle only.
    pub bundles: Arc<TrustBundleSet>,
    /// When our certificate expires.
    pub not_after: OffsetDateTime,
    /// How many roots the bundle holds.
    pub roots: usize,
}

impl Credentials {
    /// Builds credentials from the three files' contents. Our own chain must verify against the
    /// bundle: a new bundle that would not trust us, or a key that does not match, is refused.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        bundle_pem: &[u8],
        provider: &CryptoProvider,
        now: UnixTime,
    ) -> Result<Self, CredentialError> {
        let chain = palisade_identity::pem::certificates_from_pem(cert_pem)
            .map_err(|_| CredentialError::NoCertificate)?;
        let key =
            palisade_identity::pem::private_key_from_pem(key_pem).ok_or(CredentialError::NoKey)?;
        let leaf = &chain[0];
        let id = palisade_identity::peer_spiffe_id(Some(std::slice::from_ref(leaf)))
            .ok_or(CredentialError::NotAnSvid(SvidError::NoUriSan))?;
        let bundle = TrustBundle::from_pem(id.trust_domain().clone(), bundle_pem)
            .map_err(CredentialError::Bundle)?;
        Credentials::from_parts(chain, key, bundle, provider, now)
    }

    /// Builds credentials from a chain (leaf first), its key and the bundle, with the same
    /// checks as [`Credentials::from_pem`]: what the CA source hands over after each renewal.
    pub fn from_parts(
        chain: Vec<rustls_pki_types::CertificateDer<'static>>,
        key: rustls_pki_types::PrivateKeyDer<'static>,
        bundle: TrustBundle,
        provider: &CryptoProvider,
        now: UnixTime,
    ) -> Result<Self, CredentialError> {
        let leaf = chain.first().ok_or(CredentialError::NoCertificate)?.clone();
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(CredentialError::BadKey)?;
        let certified_key = CertifiedKey::new(chain.clone(), signing_key);
        if let Err(rustls::Error::InconsistentKeys(_)) = certified_key.keys_match() {
            return Err(CredentialError::KeyMismatch);
        }
        let id = palisade_identity::peer_spiffe_id(Some(std::slice::from_ref(&leaf)))
            .ok_or(CredentialError::NotAnSvid(SvidError::NoUriSan))?;
        let not_after = palisade_identity::not_after(&leaf).map_err(CredentialError::NotAnSvid)?;
        let roots = bundle.roots().len();
        let bundles = Arc::new(TrustBundleSet::from(bundle));
        verify_svid(&chain, &bundles, PeerRole::Server, now).map_err(CredentialError::Untrusted)?;
        Ok(Credentials {
            id,
            certified_key: Arc::new(certified_key),
            bundles,
            not_after,
            roots,
        })
    }
}

/// An inbound listener's rustls config, with its verifier kept so that a resumed session (which
/// skips certificate verification in TLS) can be checked again.
pub struct InboundTls {
    pub config: Arc<ServerConfig>,
    pub verifier: Arc<SpiffeClientVerifier>,
}

/// An outbound listener's rustls config and verifier.
pub struct OutboundTls {
    pub config: Arc<ClientConfig>,
    pub verifier: Arc<SpiffeServerVerifier>,
}

impl InboundTls {
    /// TLS skips certificate verification on a resumed session: the peer proves it holds the
    /// session's secret, not that its certificate is still valid and admitted. Verify the chain the
    /// session was made with again, as a full handshake would now, so that a session never
    /// outlives its certificate's NotAfter, a bundle rotation or a policy change.
    pub fn recheck_resumed(&self, conn: &rustls::ServerConnection) -> Result<(), rustls::Error> {
        match resumed_chain(conn)? {
            None => Ok(()),
            Some((leaf, rest)) => self
                .verifier
                .verify_client_cert(leaf, rest, UnixTime::now())
                .map(|_| ()),
        }
    }
}

impl OutboundTls {
    /// The server's side of [`InboundTls::recheck_resumed`].
    pub fn recheck_resumed(
        &self,
        conn: &rustls::ClientConnection,
        server_name: &rustls_pki_types::ServerName<'_>,
    ) -> Result<(), rustls::Error> {
        match resumed_chain(conn)? {
            None => Ok(()),
            Some((leaf, rest)) => self
                .verifier
                .verify_server_cert(leaf, rest, server_name, &[], UnixTime::now())
                .map(|_| ()),
        }
    }
}

type Chain<'a> = (
    &'a rustls_pki_types::CertificateDer<'static>,
    &'a [rustls_pki_types::CertificateDer<'static>],
);

/// The peer's chain when the handshake resumed a session, `None` after a full handshake (whose
/// chain the verifier has just checked).
fn resumed_chain(conn: &rustls::CommonState) -> Result<Option<Chain<'_>>, rustls::Error> {
    if conn.handshake_kind() != Some(rustls::HandshakeKind::Resumed) {
        return Ok(None);
    }
    match conn.peer_certificates() {
        Some([leaf, rest @ ..]) => Ok(Some((leaf, rest))),
        _ => Err(rustls::Error::NoCertificatesPresented),
    }
}

/// A listener's ALPN list as rustls takes it.
fn alpn(protocols: &[String]) -> Vec<Vec<u8>> {
    protocols.iter().map(|p| p.as_bytes().to_vec()).collect()
}

/// TLS 1.3 only: every client we talk to has it, and it keeps the certificate encrypted.
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// One inbound listener's TLS: its own config, rebuilt from each new set of credentials.
pub(crate) struct InboundListenerTls {
    listener: InboundConfig,
    resumption: bool,
    policies: Arc<PolicyFiles>,
    current: ArcSwapOption<InboundTls>,
}

impl InboundListenerTls {
    /// A listener's TLS, empty until built (transparent listeners make one per port).
    pub(crate) fn new(
        listener: InboundConfig,
        resumption: bool,
        policies: Arc<PolicyFiles>,
    ) -> Self {
        InboundListenerTls {
            listener,
            resumption,
            policies,
            current: ArcSwapOption::empty(),
        }
    }

    /// The config for new handshakes; `None` until a first identity has loaded.
    pub fn current(&self) -> Option<Arc<InboundTls>> {
        self.current.load_full()
    }

    pub(crate) fn build(
        &self,
        credentials: &Credentials,
        own_cert: &Arc<SingleCertAndKey>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<InboundTls, rustls::Error> {
        let verifier = SpiffeClientVerifier::new(
            credentials.bundles.clone(),
            self.policies.authorizer(&self.listener, &credentials.id),
        );
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(own_cert.clone());
        if !self.resumption {
            server.session_storage = Arc::new(NoServerSessionStorage {});
            server.send_tls13_tickets = 0;
        }
        server.alpn_protocols = alpn(&self.listener.alpn);
        Ok(InboundTls {
            config: Arc::new(server),
            verifier,
        })
    }
}

/// One outbound listener's TLS, like [`InboundListenerTls`].
pub(crate) struct OutboundListenerTls {
    listener: OutboundConfig,
    resumption: bool,
    current: ArcSwapOption<OutboundTls>,
}

impl OutboundListenerTls {
    /// A listener's TLS, empty until built (transparent listeners make one per destination).
    pub(crate) fn new(listener: OutboundConfig, resumption: bool) -> Self {
        OutboundListenerTls {
            listener,
            resumption,
            current: ArcSwapOption::empty(),
        }
    }

    pub fn current(&self) -> Option<Arc<OutboundTls>> {
        self.current.load_full()
    }

    pub(crate) fn build(
        &self,
        credentials: &Credentials,
        own_cert: &Arc<SingleCertAndKey>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<OutboundTls, rustls::Error> {
        let verifier = SpiffeServerVerifier::new(
            credentials.bundles.clone(),
            Arc::new(AllowList::new(self.listener.expect.clone())),
        );
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(own_cert.clone());
        if !self.resumption {
            client.resumption = Resumption::disabled();
        }
        client.alpn_protocols = alpn(&self.listener.alpn);
        Ok(OutboundTls {
            config: Arc::new(client),
            verifier,
        })
    }
}

/// The credentials in use, and every listener's TLS built from them. Each listener task holds
/// its own [`InboundListenerTls`] or [`OutboundListenerTls`]; this keeps them all to rebuild
/// them together when the credentials change.
pub(crate) struct ListenerTls {
    pub inbound: Vec<Arc<InboundListenerTls>>,
    pub outbound: Vec<Arc<OutboundListenerTls>>,
    credentials: ArcSwapOption<Credentials>,
}

impl ListenerTls {
    pub fn new(config: &SidecarConfig, policies: Arc<PolicyFiles>) -> Arc<Self> {
        let resumption = config.tls.resumption;
        Arc::new(ListenerTls {
            inbound: config
                .inbound
                .iter()
                .map(|listener| {
                    Arc::new(InboundListenerTls {
                        listener: listener.clone(),
                        resumption,
                        policies: policies.clone(),
                        current: ArcSwapOption::empty(),
                    })
                })
                .collect(),
            outbound: config
                .outbound
                .iter()
                .map(|listener| {
                    Arc::new(OutboundListenerTls {
                        listener: listener.clone(),
                        resumption,
                        current: ArcSwapOption::empty(),
                    })
                })
                .collect(),
            credentials: ArcSwapOption::empty(),
        })
    }

    /// Builds every listener's config from `credentials`; switches them (and publishes the
    /// credentials) only if every one builds.
    pub fn install(
        &self,
        credentials: Arc<Credentials>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<(), rustls::Error> {
        let own_cert = Arc::new(SingleCertAndKey::from(credentials.certified_key.clone()));
        let inbound = self
            .inbound
            .iter()
            .map(|l| l.build(&credentials, &own_cert, provider))
            .collect::<Result<Vec<_>, _>>()?;
        let outbound = self
            .outbound
            .iter()
            .map(|l| l.build(&credentials, &own_cert, provider))
            .collect::<Result<Vec<_>, _>>()?;
        for (listener, tls) in self.inbound.iter().zip(inbound) {
            listener.current.store(Some(Arc::new(tls)));
        }
        for (listener, tls) in self.outbound.iter().zip(outbound) {
            listener.current.store(Some(Arc::new(tls)));
        }
        self.credentials.store(Some(credentials));
        Ok(())
    }

    /// The credentials in use, if any have loaded.
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credentials.load_full()
    }

    /// Whether a valid, unexpired certificate is in use now.
    pub fn holds_valid_certificate(&self) -> bool {
        self.credentials
            .load()
            .as_ref()
            .is_some_and(|c| OffsetDateTime::now_utc() < c.not_after)
    }
}

/// rustls with aws-lc-rs, preferring AES-128-GCM: both ends are ours, it is the fastest suite on
/// CPUs with AES instructions, and 128-bit keys are ample for hour-long sessions.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    })
}

/// Keeps the listeners' TLS equal to what the identity files say, as long as what they say
/// checks out: the credential source of the sidecar.
/// Polling the contents (not inotify) catches every way files change, Kubernetes' symlink swaps
/// included, and costs three small reads per interval.
pub(crate) struct IdentityWatcher {
    files: IdentityFiles,
    provider: Arc<CryptoProvider>,
    tls: Arc<ListenerTls>,
    metrics: Arc<Metrics>,
    /// The file contents last tried, loaded or refused, so a refusal is logged once, not per poll.
    last_seen: Option<Vec<Vec<u8>>>,
    /// The last read error logged, so that a missing file is reported once, not every poll.
    last_read_error: Option<String>,
}

/// What one look at the files did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files hold what was last tried: nothing was done.
    Unchanged,
    /// New files checked out, and every listener's new handshakes use them.
    Loaded,
    /// New files did not check out, on two looks 200 ms apart; what was in use stays.
    Refused,
    /// A file could not be read; what was in use stays.
    Unreadable,
}

/// Pause before trying a second time when the new files do not belong together: cert and key are
/// renamed into place one after the other, so the first look can catch one new and one old.
const PAIR_SETTLE: Duration = Duration::from_millis(200);

impl IdentityWatcher {
    pub(crate) fn new(
        files: IdentityFiles,
        provider: Arc<CryptoProvider>,
        tls: Arc<ListenerTls>,
        metrics: Arc<Metrics>,
    ) -> Self {
        IdentityWatcher {
            files,
            provider,
            tls,
            metrics,
            last_seen: None,
            last_read_error: None,
        }
    }

    /// Reads the files and swaps in new configs if they changed and check out.
    pub async fn check(&mut self) -> ReloadOutcome {
        // The first look at files that do not check out is tentative: it is neither logged nor
        // counted, since the second look may find the rest of the rotation in place.
        let mut outcome = self.check_once(false).await;
        if outcome == ReloadOutcome::Refused {
            tokio::time::sleep(PAIR_SETTLE).await;
            self.last_seen = None;
            outcome = self.check_once(true).await;
        }
        outcome
    }

    /// One look at the files; a refusal is logged and counted only when `final_look`.
    async fn check_once(&mut self, final_look: bool) -> ReloadOutcome {
        let contents = match self.read_all().await {
            Ok(contents) => contents,
            Err(error) => {
                // A missing file mid-rotation is normal for a moment; say it once per change.
                self.last_seen = None;
                let message = error.to_string();
                if self.last_read_error.as_ref() != Some(&message) {
                    self.last_read_error = Some(message);
                    let keeping = if self.tls.credentials().is_some() {
                        "keeping the certificate in use"
                    } else {
                        "no certificate loaded yet, so not ready"
                    };
                    tracing::warn!(%error, "cannot read the identity files; {keeping}");
                    self.metrics
                        .reloads
                        .get_or_create(&ReloadLabels {
                            files: "identity",
                            result: "failure",
                        })
                        .inc();
                }
                return ReloadOutcome::Unreadable;
            }
        };
        self.last_read_error = None;
        if self.last_seen.as_ref() == Some(&contents) {
            return ReloadOutcome::Unchanged;
        }
        let (cert, key, bundle) = (&contents[0], &contents[1], &contents[2]);
        let result = Credentials::from_pem(cert, key, bundle, &self.provider, UnixTime::now())
            .map_err(|e| e.to_string())
            .and_then(|credentials| {
                let credentials = Arc::new(credentials);
                self.tls
                    .install(credentials.clone(), &self.provider)
                    .map(|()| credentials)
                    .map_err(|e| format!("cannot build the TLS configuration: {e}"))
            });
        self.last_seen = Some(contents);
        match result {
            Ok(c) => {
                tracing::info!(
                    spiffe_id = %c.id,
                    not_after = %palisade_identity::rfc3339(c.not_after),
                    bundle_roots = c.roots,
                    "loaded identity; new handshakes use it"
                );
                self.metrics
                    .certificate_expiry_seconds
                    .set(c.not_after.unix_timestamp());
                self.metrics.bundle_roots.set(c.roots as i64);
                self.metrics
                    .reloads
                    .get_or_create(&ReloadLabels {
                        files: "identity",
                        result: "success",
                    })
                    .inc();
                ReloadOutcome::Loaded
            }
            Err(_) if !final_look => ReloadOutcome::Refused,
            Err(reason) => {
                let keeping = if self.tls.credentials().is_some() {
                    "keeping the certificate in use"
                } else {
                    "no certificate loaded yet, so not ready"
                };
                tracing::warn!(%reason, "refused new identity files; {keeping}");
                self.metrics
                    .reloads
                    .get_or_create(&ReloadLabels {
                        files: "identity",
                        result: "failure",
                    })
                    .inc();
                ReloadOutcome::Refused
            }
        }
    }

    /// Reads the identity files on the runtime thread. They are a few
    /// kilobytes on a local or tmpfs volume (a Kubernetes Secret or ConfigMap), so this takes
    /// microseconds; going through tokio::fs would keep a blocking-pool thread (and its malloc
    /// arena) alive for a read every second.
    async fn read_all(&self) -> Result<Vec<Vec<u8>>, CredentialError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|error| CredentialError::Read {
                path: path.clone(),
                error,
            })
        };
        let contents = vec![
            read(&self.files.cert)?,
            read(&self.files.key)?,
            read(&self.files.bundle)?,
        ];
        Ok(contents)
    }
}
