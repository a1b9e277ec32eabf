//! The sidecar's YAML configuration, documented in docs/SIDECAR.md.
//!
//! Unknown fields are errors, and every error names the file, line and column. Checks that span
//! several fields (unique listener names, a loopback admin address) run after parsing and name the
//! listener instead.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use palisade_identity::{IdPattern, SpiffeId};

use crate::app_probe::AppProbe;

/// The environment variable holding the app probes of an injected pod (JSON, the shape of
/// `app_probes`).
pub const APP_PROBES_ENV: &str = "PALISADE_APP_PROBES";

/// Why a configuration was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// Not valid YAML, an unknown field, or a value of the wrong form (an address, a SPIFFE ID
    /// pattern, a duration).
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The configuration file.
        path: PathBuf,
        /// Line, from 1.
        line: usize,
        /// Column, from 1.
        column: usize,
        /// The YAML parser's message, without its location.
        message: String,
    },
    /// Well-formed, but a check across fields failed: no listener, two listeners with one name,
    /// a non-loopback admin address, a zero limit, and so on.
    #[error("{path}: {message}")]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, naming the listener concerned.
        message: String,
    },
}

/// The whole configuration of one sidecar.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    /// This workload's certificate, key and trust bundle.
    pub identity: IdentityConfig,
    /// mTLS in, plaintext to the app.
    #[serde(default)]
    pub inbound: Vec<InboundConfig>,
    /// Plaintext from the app, mTLS out.
    #[serde(default)]
    pub outbound: Vec<OutboundConfig>,
    /// The admin server: /live, /ready, /metrics and POST /shutdown.
    #[serde(default)]
    pub admin: AdminConfig,
    /// A read-only listener for scrapers and probes from outside the pod: /live, /ready and
    /// /metrics only, on any address (the admin server stays on loopback).
    #[serde(default)]
    pub metrics: Option<MetricsListenerConfig>,
    /// The app's kubelet probes, which the sidecar runs for the kubelet, served on the metrics
    /// listener at these paths (under `/app-health/`); `palisade inject` sets them through
    /// `PALISADE_APP_PROBES` ([`SidecarConfig::with_pod_settings`]).
    #[serde(default)]
    pub app_probes: BTreeMap<String, AppProbe>,
    /// Timeouts, connection caps and the buffer size, for every listener.
    #[serde(default)]
    pub limits: Limits,
    /// TLS options for every listener.
    #[serde(default)]
    pub tls: TlsSettings,
    /// Transparent listeners, for a pod whose traffic the redirect table sends here
    /// (`palisade sidecar redirect`): peers and destinations are known from the policy.
    #[serde(default)]
    pub transparent: Option<TransparentConfig>,
    /// Runtime worker threads; default: one per CPU. 1 runs everything on one thread.
    #[serde(default)]
    pub workers: Option<usize>,
    /// How `palisade sidecar run` restricts itself (docs/SIDECAR.md, "Sandbox").
    #[serde(default)]
    pub sandbox: SandboxConfig,
}

pub use palisade_sandbox::{LandlockMode, SandboxConfig, SeccompMode};

/// Where this workload's identity comes from: three files (`cert`, `key`, `bundle`), re-read to
/// pick up rotations, or the CA service (`ca`), from which the sidecar gets and renews its
/// certificate itself, keeping the key in memory only. Exactly one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// PEM: this workload's certificate, then its chain. Relative paths are relative to the
    /// configuration file.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM: the certificate's private key (PKCS#8, SEC1 or PKCS#1).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// PEM: the roots trusted for this workload's trust domain.
    #[serde(default)]
    pub bundle: Option<PathBuf>,
    /// The CA service to get and renew the certificate from, instead of files.
    #[serde(default)]
    pub ca: Option<CaSourceConfig>,
    /// How often the files (the three identity files, and policy files) are re-read.
    #[serde(default = "defaults::reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// The identity files, once the configuration has been checked to name all three.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    /// `identity.cert`.
    pub cert: PathBuf,
    /// `identity.key`.
    pub key: PathBuf,
    /// `identity.bundle`.
    pub bundle: PathBuf,
}

/// Where an identity comes from, as checked.
#[derive(Debug, Clone)]
pub enum IdentitySource {
    /// Three files, re-read every `reload_interval`.
    Files(IdentityFiles),
    /// The CA service.
    Ca(CaSourceConfig),
}

impl IdentityConfig {
    /// The source the configuration names; `None` for a combination that [`SidecarConfig::load`]
    /// refuses (a config built by hand can hold one).
    pub fn source(&self) -> Option<IdentitySource> {
        match (&self.ca, &self.cert, &self.key, &self.bundle) {
            (Some(ca), None, None, None) => Some(IdentitySource::Ca(ca.clone())),
            (None, Some(cert), Some(key), Some(bundle)) => {
                Some(IdentitySource::Files(IdentityFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    bundle: bundle.clone(),
                }))
            }
            _ => None,
        }
    }

    fn check(&self) -> Result<(), String> {
        let files = [&self.cert, &self.key, &self.bundle];
        let named = files.iter().filter(|f| f.is_some()).count();
        match (&self.ca, named) {
            (Some(_), 0) | (None, 3) => Ok(()),
            (Some(_), _) => Err(
                "identity: give either ca or the files cert, key and bundle, \
                                 not both (the CA's roots are ca.bundle)"
                    .into(),
            ),
            (None, _) => Err(
                "identity: give the three files cert, key and bundle, or ca \
                              (a CA service to get the certificate from)"
                    .into(),
            ),
        }
    }
}

/// The CA service a sidecar gets its certificate from (`palisade ca serve`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSourceConfig {
    /// `https://host[:port]`.
    pub url: String,
    /// The SPIFFE ID the CA service must present.
    pub server_id: SpiffeId,
    /// PEM: the roots that authenticate the CA service at first; afterwards the bundle that
    /// comes with each certificate is used (so a root rotation reaches the sidecar).
    pub bundle: PathBuf,
    /// A Kubernetes projected service-account token (re-read at each use: kubelet rotates it).
    #[serde(default)]
    pub service_account_token: Option<PathBuf>,
    /// A file holding a one-time join token from `palisade ca token`.
    #[serde(default)]
    pub join_token_file: Option<PathBuf>,
    /// The ID the credential must yield; the sidecar refuses a certificate for another.
    #[serde(default)]
    pub spiffe_id: Option<SpiffeId>,
}

/// One inbound listener: terminates mTLS, admits peers by `allow` or by `policy` (exactly one of
/// them), and forwards plaintext to the app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Unique among all listeners; names the listener in logs and metrics.
    pub name: String,
    /// Where peers connect with mTLS.
    pub listen: SocketAddr,
    /// The app, in plaintext; normally on loopback.
    pub forward_to: SocketAddr,
    /// SPIFFE ID patterns of the peers admitted (see docs/SIDECAR.md for `*` and `/**`).
    #[serde(default)]
    pub allow: Vec<IdPattern>,
    /// Or: admit whom the segmentation policy lets reach this workload on this port.
    #[serde(default)]
    pub policy: Option<PolicyAdmission>,
    /// Or: admit the service accounts whose pods this pod's Kubernetes NetworkPolicies admit on
    /// this port (docs/KUBERNETES.md).
    #[serde(default)]
    pub network_policy: Option<NetworkPolicyAdmission>,
    /// ALPN protocols this listener accepts, in order of preference (for example `[h2,
    /// http/1.1]`); empty: none is negotiated. A client offering only others is refused in the
    /// handshake, as TLS says (RFC 7301 §3.2).
    #[serde(default)]
    pub alpn: Vec<String>,
}

/// Transparent capture (docs/PODS.md): connections redirected by nftables, their original
/// destination read from the socket (SO_ORIGINAL_DST).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransparentConfig {
    /// Where redirected connections to the pod arrive (the redirect's inbound port); they are
    /// admitted by the policy for their original port and reach the app on that port on loopback.
    #[serde(default)]
    pub inbound: Option<SocketAddr>,
    /// Where the app's redirected outbound connections arrive (the redirect's outbound port);
    /// each is carried over mTLS to its original destination, whose identities the policy names.
    #[serde(default)]
    pub outbound: Option<SocketAddr>,
    /// The policy: admission inbound, expected peer identities outbound. Watched like an inbound
    /// listener's policy file.
    pub policy: PathBuf,
    /// What happens to plaintext peers (inbound) and destinations in no segment (outbound).
    #[serde(default)]
    pub mode: TransparentMode,
}

/// How a transparent sidecar treats traffic it cannot protect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransparentMode {
    /// Refused and counted.
    #[default]
    Strict,
    /// Passed through in plaintext, counted and logged: for moving a namespace over one
    /// workload at a time.
    Permissive,
}

/// Admission decided by Kubernetes NetworkPolicies: a peer `spiffe://<own trust
/// domain>/ns/<namespace>/sa/<account>` is admitted when some pod of that namespace running as
/// that account is one `pod`'s ingress admits on `port` (`palisade policy explain --kubernetes`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicyAdmission {
    /// The manifests (NetworkPolicies, Pods, Namespaces): files or directories; re-read with the
    /// identity files when their bytes change.
    pub manifests: Vec<PathBuf>,
    /// This workload's pod, `namespace/name`.
    pub pod: String,
    /// The port peers are checked for; default: the listener's port.
    #[serde(default)]
    pub port: Option<u16>,
}

/// Admission decided by a policy file (docs/POLICY.md): the peers whose identities are in a
/// segment that may reach this workload's segment on `port` over TCP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyAdmission {
    /// The policy file; re-read with the identity files, and swapped in when it loads.
    pub file: PathBuf,
    /// The port peers are checked for; default: the listener's port.
    #[serde(default)]
    pub port: Option<u16>,
}

/// One outbound listener: takes plaintext from the app and opens mTLS to one peer, whose ID must
/// match `expect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Unique among all listeners; names the listener in logs and metrics.
    pub name: String,
    /// Where the app connects in plaintext; normally on loopback.
    pub listen: SocketAddr,
    /// The peer's sidecar, `host:port`.
    pub connect_to: String,
    /// SPIFFE ID patterns the peer's certificate must match.
    pub expect: Vec<IdPattern>,
    /// Whoever reaches an outbound listener connects with this workload's identity, so it must
    /// listen on loopback unless this says otherwise, knowingly.
    #[serde(default)]
    pub allow_non_loopback: bool,
    /// ALPN protocols offered to the peer, in order of preference; empty: none offered.
    #[serde(default)]
    pub alpn: Vec<String>,
}

/// The admin server's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Loopback only: /live, /ready, /metrics, POST /shutdown.
    #[serde(default = "defaults::admin_listen")]
    pub listen: SocketAddr,
}

/// The read-only listener (`metrics:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsListenerConfig {
    /// Where it listens, e.g. `0.0.0.0:15090` for Prometheus in the cluster.
    pub listen: SocketAddr,
}

impl SidecarConfig {
    fn check_app_probes(&self) -> Result<(), String> {
        if self.app_probes.is_empty() {
            return Ok(());
        }
        let Some(metrics) = &self.metrics else {
            return Err(
                "app_probes: they are served on the metrics listener, so give metrics.listen too"
                    .into(),
            );
        };
        for (path, probe) in &self.app_probes {
            let name = path
                .strip_prefix(palisade_admin::APP_PROBE_PREFIX)
                .unwrap_or("");
            if name.is_empty()
                || path.len() > 256
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
            {
                return Err(format!(
                    "app_probes: {path:?} is not a probe path (/app-health/ then letters, digits, \
                     '-', '.', '_' and '/')"
                ));
            }
            probe
                .check()
                .map_err(|why| format!("app_probes: {path}: {why}"))?;
            if probe.port() == metrics.listen.port() {
                return Err(format!(
                    "app_probes: {path}: port {} is the metrics listener's own",
                    probe.port()
                ));
            }
        }
        Ok(())
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: defaults::admin_listen(),
        }
    }
}

/// What one peer or app may hold of the sidecar's time and memory; every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// From accept to a finished TLS handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// From accept to the peer's first byte (inbound): silent sockets are closed sooner.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// Connecting to the app (inbound) or to the peer (outbound).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// A connection with no byte in either direction for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// After one side has finished sending, how long the other may stay quiet before both close.
    #[serde(with = "humantime_serde")]
    pub half_close_timeout: Duration,
    /// Open connections per direction (inbound listeners together, outbound listeners
    /// together); beyond it new ones are refused and counted.
    pub max_connections: usize,
    /// Inbound connections whose TLS handshake has not finished (peers not yet authenticated);
    /// beyond it new inbound connections are refused and counted.
    pub max_handshakes: usize,
    /// On SIGTERM or POST /shutdown, how long open connections may take to finish.
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
    /// Bytes buffered per direction per connection.
    pub buffer_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(3600),
            half_close_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_handshakes: 1_000,
            drain_grace: Duration::from_secs(30),
            buffer_size: 32 * 1024,
        }
    }
}

/// TLS options shared by every listener.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// TLS session resumption. Off by default. When on, a resumed session's certificate is
    /// verified again (chain, validity, admission) as a full handshake would.
    #[serde(default)]
    pub resumption: bool,
}

mod defaults {
    use std::net::SocketAddr;
    use std::time::Duration;

    pub fn reload_interval() -> Duration {
        Duration::from_secs(1)
    }

    pub fn admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 15000))
    }
}

impl SidecarConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let mut config = Self::from_yaml(&text, path)?;
        // Relative file names are relative to the configuration file, not to wherever the
        // sidecar happens to be started from.
        if let Some(dir) = path.parent() {
            let policies = config.inbound.iter_mut().flat_map(|l| {
                let file = l.policy.as_mut().map(|p| &mut p.file);
                let manifests = l
                    .network_policy
                    .as_mut()
                    .into_iter()
                    .flat_map(|n| n.manifests.iter_mut());
                file.into_iter().chain(manifests)
            });
            let identity = &mut config.identity;
            let ca_files = identity.ca.as_mut().into_iter().flat_map(|ca| {
                std::iter::once(&mut ca.bundle)
                    .chain(ca.service_account_token.as_mut())
                    .chain(ca.join_token_file.as_mut())
            });
            let files = [&mut identity.cert, &mut identity.key, &mut identity.bundle]
                .into_iter()
                .flatten()
                .chain(ca_files);
            let transparent = config.transparent.as_mut().map(|t| &mut t.policy);
            for file in files.chain(policies).chain(transparent) {
                if file.is_relative() {
                    *file = dir.join(&*file);
                }
            }
        }
        Ok(config)
    }

    /// What `palisade sidecar run` takes beside the file, for settings that belong to one pod
    /// rather than to the ConfigMap every pod shares: `metrics` replaces `metrics.listen` (inject
    /// gives each pod's sidecar its probe and scrape port), and `app_probes`, the JSON of
    /// [`APP_PROBES_ENV`], replaces `app_probes`. The whole is checked again.
    pub fn with_pod_settings(
        mut self,
        path: &Path,
        metrics: Option<SocketAddr>,
        app_probes: Option<&str>,
    ) -> Result<Self, ConfigError> {
        if let Some(listen) = metrics {
            self.metrics = Some(MetricsListenerConfig { listen });
        }
        if let Some(json) = app_probes {
            self.app_probes = serde_yaml::from_str(json).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                ConfigError::Syntax {
                    path: PathBuf::from(APP_PROBES_ENV),
                    line,
                    column,
                    message: strip_location(&e.to_string()),
                }
            })?;
        }
        self.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(self)
    }

    /// Parses and checks configuration text; `path` is only used in error messages.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: SidecarConfig = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            ConfigError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: strip_location(&e.to_string()),
            }
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        self.identity.check()?;
        self.check_app_probes()?;
        if let Some(ca) = &self.identity.ca {
            match (&ca.service_account_token, &ca.join_token_file) {
                (Some(_), Some(_)) => {
                    return Err(
                        "identity.ca: give service_account_token or join_token_file, not both"
                            .into(),
                    )
                }
                (None, None) => {
                    return Err(
                        "identity.ca: give service_account_token or join_token_file \
                                (the credential for the first certificate)"
                            .into(),
                    )
                }
                _ => {}
            }
        }
        let transparent = self
            .transparent
            .as_ref()
            .is_some_and(|t| t.inbound.is_some() || t.outbound.is_some());
        if self.inbound.is_empty() && self.outbound.is_empty() && !transparent {
            return Err(
                "no listener: add at least one entry under inbound or outbound, or transparent"
                    .into(),
            );
        }
        let alpn_lists = self
            .inbound
            .iter()
            .map(|l| (&l.name, &l.alpn))
            .chain(self.outbound.iter().map(|l| (&l.name, &l.alpn)));
        for (name, alpn) in alpn_lists {
            // RFC 7301 §3.1: a protocol name is 1 to 255 bytes.
            if let Some(bad) = alpn.iter().find(|p| p.is_empty() || p.len() > 255) {
                return Err(format!(
                    "listener {name}: ALPN protocol {bad:?} must be 1 to 255 bytes long"
                ));
            }
        }
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        let listeners = self
            .inbound
            .iter()
            .map(|l| (&l.name, l.listen, "inbound"))
            .chain(
                self.outbound
                    .iter()
                    .map(|l| (&l.name, l.listen, "outbound")),
            );
        for (name, listen, kind) in listeners {
            if name.is_empty() {
                return Err(format!("an {kind} listener has an empty name"));
            }
            if !names.insert(name.clone()) {
                return Err(format!("two listeners are named \"{name}\""));
            }
            if listen.port() != 0 && !addresses.insert(listen) {
                return Err(format!(
                    "{kind} listener \"{name}\": {listen} is already used by another listener"
                ));
            }
        }
        for l in &self.inbound {
            let ways = usize::from(!l.allow.is_empty())
                + usize::from(l.policy.is_some())
                + usize::from(l.network_policy.is_some());
            match ways {
                0 => {
                    return Err(format!(
                        "inbound listener \"{}\": allow is empty and no policy is named, so it would admit nobody",
                        l.name
                    ))
                }
                1 => {}
                _ => {
                    return Err(format!(
                        "inbound listener \"{}\": give one of allow, policy and network_policy, not several",
                        l.name
                    ))
                }
            }
            if let Some(n) = &l.network_policy {
                if n.port.is_none() && l.listen.port() == 0 {
                    return Err(format!(
                        "inbound listener \"{}\": listens on port 0, so network_policy.port must say which port the policies speak of",
                        l.name
                    ));
                }
                if n.manifests.is_empty() {
                    return Err(format!(
                        "inbound listener \"{}\": network_policy.manifests names no file or directory",
                        l.name
                    ));
                }
                let pod_ok = n.pod.split_once('/').is_some_and(|(ns, name)| {
                    !ns.is_empty() && !name.is_empty() && !name.contains('/')
                });
                if !pod_ok {
                    return Err(format!(
                        "inbound listener \"{}\": network_policy.pod \"{}\" is not namespace/name",
                        l.name, n.pod
                    ));
                }
            }
            if let Some(p) = &l.policy {
                if p.port.is_none() && l.listen.port() == 0 {
                    return Err(format!(
                        "inbound listener \"{}\": listens on port 0, so policy.port must say which port the policy speaks of",
                        l.name
                    ));
                }
            }
        }
        for l in &self.outbound {
            if l.expect.is_empty() {
                return Err(format!(
                    "outbound listener \"{}\": expect is empty, so no peer could be reached",
                    l.name
                ));
            }
            if !l.listen.ip().is_loopback() && !l.allow_non_loopback {
                return Err(format!(
                    "outbound listener \"{}\": {} is not a loopback address; whoever reaches it connects with this workload's identity (set allow_non_loopback: true if that is meant)",
                    l.name, l.listen
                ));
            }
            if l.connect_to
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(format!(
                    "outbound listener \"{}\": connect_to \"{}\" is not host:port",
                    l.name, l.connect_to
                ));
            }
        }
        if !self.admin.listen.ip().is_loopback() {
            return Err(format!(
                "admin listen address {} is not a loopback address; the admin server (with POST /shutdown) must not be reachable from the network",
                self.admin.listen
            ));
        }
        let limits = &self.limits;
        // Upper bounds too: a count becomes a tokio semaphore (which refuses more than 2^61
        // permits, with a panic at start) and is doubled for a gauge; a million connections per
        // direction already needs four million descriptors.
        for (name, count) in [
            ("max_connections", limits.max_connections),
            ("max_handshakes", limits.max_handshakes),
        ] {
            if !(1..=MAX_COUNT).contains(&count) {
                return Err(format!(
                    "limits.{name} must be between 1 and {MAX_COUNT}, not {count}"
                ));
            }
        }
        if !(1024..=16 * 1024 * 1024).contains(&limits.buffer_size) {
            return Err("limits.buffer_size must be between 1024 and 16777216 bytes".into());
        }
        for (name, d) in [
            ("handshake_timeout", limits.handshake_timeout),
            ("first_byte_timeout", limits.first_byte_timeout),
            ("connect_timeout", limits.connect_timeout),
            ("idle_timeout", limits.idle_timeout),
            ("half_close_timeout", limits.half_close_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("limits.{name} must be longer than zero"));
            }
        }
        if self.identity.reload_interval.is_zero() {
            return Err("identity.reload_interval must be longer than zero".into());
        }
        if let Some(workers) = self.workers.filter(|w| !(1..=MAX_WORKERS).contains(w)) {
            return Err(format!(
                "workers must be between 1 and {MAX_WORKERS}, not {workers}"
            ));
        }
        Ok(())
    }
}

/// The largest `limits.max_connections` (per direction) and `limits.max_handshakes`.
pub const MAX_COUNT: usize = 1_000_000;
/// The most runtime worker threads.
pub const MAX_WORKERS: usize = 1024;

/// serde_yaml appends " at line L column C" to its messages; we print the location first.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
identity:
  cert: /c.pem
  key: /k.pem
  bundle: /b.pem
inbound:
  - name: api
    listen: 0.0.0.0:8443
    forward_to: 127.0.0.1:8080
    allow: [spiffe://td/ns/shop/sa/frontend]
";

    fn parse(text: &str) -> Result<SidecarConfig, ConfigError> {
        SidecarConfig::from_yaml(text, Path::new("sidecar.yaml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.identity.reload_interval, Duration::from_secs(1));
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:15000");
        assert!(!c.tls.resumption);
    }

    #[test]
    fn errors_carry_file_line_and_column() {
        let text = MINIMAL.replace("    allow:", "    alow:");
        let e = parse(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("sidecar.yaml:9:5: inbound[0]: unknown field `alow`"),
            "{e}"
        );
        let text = MINIMAL.replace("spiffe://td/ns/shop/sa/frontend", "spiffe://td/ns/front*");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("sidecar.yaml:9:"), "{e}");
        assert!(e.contains("whole path segment"), "{e}");
        let text = MINIMAL.replace("0.0.0.0:8443", "0.0.0.0:84430");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("sidecar.yaml:7:"), "{e}");
        let text = format!("{MINIMAL}limits:\n  idle_timeout: forever\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.starts_with("sidecar.yaml:11:"), "{e}");
    }

    #[test]
    fn counts_that_a_semaphore_cannot_hold_are_refused() {
        // Found by the config fuzz target: 2^61 passed the load and panicked in tokio at start.
        for (field, value) in [
            ("max_connections", "2305843009213693952"),
            ("max_handshakes", "18446744073709551615"),
            ("max_connections", "1000001"),
        ] {
            let text = format!("{MINIMAL}limits:\n  {field}: {value}\n");
            let e = parse(&text).unwrap_err().to_string();
            assert!(
                e.contains(&format!("limits.{field} must be between 1 and 1000000")),
                "{e}"
            );
        }
        let text = format!("{MINIMAL}limits:\n  max_connections: 1000000\n");
        assert_eq!(parse(&text).unwrap().limits.max_connections, MAX_COUNT);
        let e = parse(&format!("{MINIMAL}workers: 100000\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers must be between 1 and 1024"), "{e}");
    }

    #[test]
    fn cross_field_checks_name_the_listener() {
        let text = MINIMAL.replace("allow: [spiffe://td/ns/shop/sa/frontend]", "allow: []");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("\"api\"") && e.contains("admit nobody"), "{e}");
        let text = format!("{MINIMAL}admin:\n  listen: 0.0.0.0:15000\n");
        assert!(parse(&text)
            .unwrap_err()
            .to_string()
            .contains("not a loopback"));
        let text = format!(
            "{MINIMAL}outbound:\n  - name: api\n    listen: 127.0.0.1:1\n    connect_to: x:1\n    expect: [spiffe://td/x]\n"
        );
        assert!(parse(&text)
            .unwrap_err()
            .to_string()
            .contains("two listeners"));
        let text = format!(
            "{MINIMAL}outbound:\n  - name: out\n    listen: 127.0.0.1:1\n    connect_to: nohost\n    expect: [spiffe://td/x]\n"
        );
        assert!(parse(&text)
            .unwrap_err()
            .to_string()
            .contains("not host:port"));
    }

    /// Review finding 8: an outbound listener on a non-loopback address lends this workload's
    /// identity to anyone who reaches it; it takes an explicit opt-in.
    #[test]
    fn outbound_listeners_are_loopback_unless_opted_out() {
        let outbound = |listen: &str, extra: &str| {
            format!(
                "{MINIMAL}outbound:\n  - name: out\n    listen: {listen}\n    connect_to: x:1\n    expect: [spiffe://td/x]\n{extra}"
            )
        };
        for listen in ["0.0.0.0:7001", "10.1.2.3:7001", "\"[::]:7001\""] {
            let e = parse(&outbound(listen, "")).unwrap_err().to_string();
            assert!(
                e.contains("\"out\"") && e.contains("not a loopback address"),
                "{e}"
            );
            assert!(parse(&outbound(listen, "    allow_non_loopback: true\n")).is_ok());
        }
        for listen in ["127.0.0.1:7001", "127.0.0.2:7001", "\"[::1]:7001\""] {
            assert!(parse(&outbound(listen, "")).is_ok(), "{listen}");
        }
    }
}
