//! `palisade policy sync`: keeps this host's `inet palisade` table equal to what its policy
//! compiles to. The host daemon: [`Sync`] with its [`SyncConfig`]; `source.rs` fetches the policy
//! (file, ConfigMap directory, http), `palisade_netpol::Watched` NetworkPolicy manifests (either
//! or both: a connection must pass both), `revoke.rs` cuts denied established flows, `palisade-nft`
//! applies, `palisade-admin` serves /ready and /metrics.
//!
//! Each cycle (every `interval`, and at once when a file source changes): fetch the source, load
//! and compile it, read our live table back, and write only if they differ: because the policy
//! changed, or because someone changed the table (drift). A policy that fails to load or compile
//! keeps the last good one in force; a refused transaction leaves the previous table in force.
//! Of Kubernetes manifests, a refused NetworkPolicy does not hold up the rest: it stands in
//! isolating what it selects and admitting nothing, and is logged and counted
//! (`palisade_sync_kubernetes_refused`); only a problem of no one policy keeps the last good
//! manifests in force.
//! Starting with no loadable policy and no table installs a fail-closed baseline. Stopping never
//! touches the table: a stopped daemon must not open the host.

#![warn(missing_docs)]

pub mod revoke;
pub mod sandbox;
pub mod source;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_admin::AdminService;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use palisade_nft::apply;
use palisade_policy::{Policy, Ruleset};
use source::{Fetched, Fetcher, Source};

/// How often a file or directory source is looked at between full cycles.
const FILE_POLL: Duration = Duration::from_secs(1);

/// How `palisade policy sync` runs: where the policy comes from, for which host, how often.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Where the Palisade policy is read (`None`: Kubernetes input only).
    pub source: Option<Source>,
    /// Kubernetes manifests (NetworkPolicies, Pods, Namespaces), files or directories; `host`
    /// is then also the node name. Empty: none.
    pub kubernetes: Vec<PathBuf>,
    /// How a URL source is authenticated (see `source.rs`).
    pub source_auth: source::SourceAuth,
    /// A policy larger than this is refused (see `source.rs`).
    pub max_policy_bytes: u64,
    /// This machine's name in the policy's `hosts`: the segments whose table it enforces. A
    /// policy without it does not compile, and the last good one stays in force.
    pub host: String,
    /// Time between full cycles. A file or directory source is also looked at every second (or
    /// every `interval`, if shorter), and a change starts a cycle at once.
    pub interval: Duration,
    /// A policy to enforce when no policy has loaded yet and no table exists.
    pub baseline: Option<PathBuf>,
    /// Cut established flows that the policy denies, after a new policy is applied and after a
    /// drift is repaired (flows opened while the table was tampered with).
    pub revoke_established: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenerationLabels {
    generation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    /// `NetworkPolicy namespace/name`.
    object: String,
    /// file:line:column of its first problem.
    at: String,
}

/// The sync's metrics, registered under `palisade_sync_`.
struct SyncMetrics {
    registry: Registry,
    cycles: Counter,
    writes: Counter,
    drift_repairs: Counter,
    failures: Family<StageLabels, Counter>,
    last_success: Gauge,
    generation: Family<GenerationLabels, Gauge>,
    revoked: Counter,
    refused: Family<RefusedLabels, Gauge>,
    refused_objects: Gauge,
}

impl SyncMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade_sync");
        let cycles = Counter::default();
        registry.register("cycles", "Sync cycles run", cycles.clone());
        let writes = Counter::default();
        registry.register(
            "nft_writes",
            "Transactions written to the table (a cycle with no change writes none)",
            writes.clone(),
        );
        let drift_repairs = Counter::default();
        registry.register(
            "drift_repairs",
            "Times the live table differed from the policy that was already applied, and was rewritten",
            drift_repairs.clone(),
        );
        let failures = Family::default();
        registry.register(
            "failures",
            "Cycles that failed, by stage (fetch, load, compile, read, apply)",
            failures.clone(),
        );
        let last_success = Gauge::default();
        registry.register(
            "last_success_timestamp_seconds",
            "When the live table was last confirmed or made equal to the policy",
            last_success.clone(),
        );
        let generation = Family::default();
        registry.register(
            "generation",
            "1 for the generation in force (label), from the compiled policy",
            generation.clone(),
        );
        let revoked = Counter::default();
        registry.register(
            "revoked_flows",
            "Established flows cut because a new policy denies them",
            revoked.clone(),
        );
        let refused = Family::default();
        registry.register(
            "kubernetes_refused",
            "1 for each NetworkPolicy refused in the manifests in force (labels: the object, where its first problem is); it stands in isolating what it selects and admitting nothing",
            refused.clone(),
        );
        let refused_objects = Gauge::default();
        registry.register(
            "kubernetes_refused_objects",
            "How many NetworkPolicies the manifests in force have refused",
            refused_objects.clone(),
        );
        SyncMetrics {
            registry,
            cycles,
            writes,
            drift_repairs,
            failures,
            last_success,
            generation,
            revoked,
            refused,
            refused_objects,
        }
    }

    fn fail(&self, stage: &'static str) {
        self.failures.get_or_create(&StageLabels { stage }).inc();
    }
}

/// What the sync knows between cycles.
#[derive(Default)]
struct State {
    /// The last Palisade policy that loaded and compiled, and its ruleset.
    policy: Option<(Policy, Ruleset)>,
    /// The last Kubernetes objects that loaded.
    cluster: Option<palisade_netpol::Cluster>,
    /// The ruleset of both, as last composed.
    good: Option<Ruleset>,
    /// The generation last confirmed live.
    live_generation: Option<String>,
}

/// The host daemon: cycles of fetch, compile, compare and apply, with /ready (true once the
/// live table has matched a policy) and /metrics on the admin port.
pub struct Sync {
    config: SyncConfig,
    metrics: SyncMetrics,
    state: Mutex<State>,
    ready: AtomicBool,
    /// The NetworkPolicies the manifests in force refused, as `/ready` notes them.
    refused: Mutex<Vec<String>>,
}

impl AdminService for Sync {
    fn ready(&self) -> Result<(), palisade_admin::NotReady> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("the policy has not been applied yet".into())
        }
    }

    fn ready_notes(&self) -> Vec<String> {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry);
        out
    }
}

impl Sync {
    /// A daemon for `config`; nothing runs until [`Sync::run`].
    pub fn new(config: SyncConfig) -> Arc<Sync> {
        Arc::new(Sync {
            config,
            metrics: SyncMetrics::new(),
            state: Mutex::new(State::default()),
            ready: AtomicBool::new(false),
            refused: Mutex::default(),
        })
    }

    /// Runs cycles until `shutdown`; serves the admin endpoints on `admin` meanwhile.
    pub async fn run(self: Arc<Self>, admin: TcpListener, shutdown: CancellationToken) {
        tokio::spawn(palisade_admin::serve(admin, self.clone(), shutdown.clone()));
        let mut fetcher = self.config.source.clone().map(|source| {
            Fetcher::new(
                source,
                self.config.source_auth.clone(),
                self.config.max_policy_bytes,
            )
        });
        let kubernetes = (!self.config.kubernetes.is_empty()).then(|| {
            Arc::new(Mutex::new(palisade_netpol::Watched::new(
                self.config.kubernetes.clone(),
            )))
        });
        let poll = match self.config.source {
            Some(Source::Url(_)) if kubernetes.is_none() => self.config.interval,
            _ => FILE_POLL.min(self.config.interval),
        };
        let mut next_full = tokio::time::Instant::now();
        loop {
            let full = tokio::time::Instant::now() >= next_full;
            let fetched = match (&mut fetcher, full) {
                (Some(fetcher), _) => Some(fetcher.fetch().await),
                (None, _) => None,
            };
            // Reading manifests is file I/O and parsing: off the runtime thread too.
            let looked = match &kubernetes {
                Some(k) => {
                    let k = k.clone();
                    tokio::task::spawn_blocking(move || {
                        k.lock().unwrap_or_else(|p| p.into_inner()).look_partial()
                    })
                    .await
                    .ok()
                    .flatten()
                }
                None => None,
            };
            let changed = matches!(fetched, Some(Ok(Fetched::Changed(_)))) || looked.is_some();
            if full || changed {
                let this = self.clone();
                // nft runs as a child process: keep it off the runtime thread.
                let _ = tokio::task::spawn_blocking(move || this.cycle(fetched, looked)).await;
                next_full = tokio::time::Instant::now() + self.config.interval;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
        tracing::info!("stopped; the table stays as it is");
    }

    /// One cycle: use what was fetched (a policy that does not load is reported once, since the
    /// same bytes are not looked at again), then make the live table equal to the last good one.
    fn cycle(
        &self,
        fetched: Option<Result<Fetched, source::FetchError>>,
        looked: Option<Result<palisade_netpol::Loaded, palisade_netpol::LoadErrors>>,
    ) {
        self.metrics.cycles.inc();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match fetched {
            None | Some(Ok(Fetched::Unchanged)) => {}
            Some(Err(error)) => {
                self.metrics.fail("fetch");
                tracing::error!(%error, "cannot fetch the policy; the last good ruleset stays in force");
            }
            Some(Ok(Fetched::Changed(text))) => {
                let source = self
                    .config
                    .source
                    .as_ref()
                    .map(Source::name)
                    .unwrap_or_default();
                if let Ok(compiled) = self.compile(&text, &source) {
                    state.policy = Some(compiled);
                }
            }
        }
        match looked {
            None => {}
            Some(Ok(loaded)) => {
                self.report(&loaded);
                state.cluster = Some(loaded.cluster);
            }
            // A problem that belongs to no one NetworkPolicy (see `load_partial`): what the
            // broken part would isolate is unknown.
            Some(Err(errors)) => {
                self.metrics.fail("load");
                tracing::error!(errors = %errors, "the Kubernetes manifests do not load; the last good ones stay in force");
            }
        }
        let composed = self.compose(&state);
        let policy_changed = match (&composed, &state.good) {
            (Some(new), Some(old)) => new.generation != old.generation,
            (Some(_), None) => true,
            _ => false,
        };
        if composed.is_some() {
            state.good = composed;
        }
        let live = match apply::live_table() {
            Ok(live) => live,
            Err(error) => {
                self.metrics.fail("read");
                tracing::error!(%error, "cannot read the live table");
                return;
            }
        };
        let policy = state.policy.as_ref().map(|(p, _)| p.clone());
        let Some(ruleset) = state.good.clone() else {
            // Only a table we wrote (a generation or the baseline) counts as in force: an empty
            // or foreign `inet palisade` made by someone else would otherwise keep the host open.
            if live.as_ref().is_some_and(apply::is_ours) {
                tracing::warn!("no policy has loaded yet; our table in place stays in force");
            } else {
                if live.is_some() {
                    tracing::warn!("an `inet palisade` table that we did not write is in place; replacing it with the baseline");
                }
                self.install_baseline();
            }
            return;
        };
        let changes = apply::diff(live.as_ref(), &ruleset);
        if changes.is_empty() {
            self.confirmed(&mut state, &ruleset);
            return;
        }
        let drift = !policy_changed
            && state.live_generation.as_deref() == Some(ruleset.generation.as_str());
        if drift {
            tracing::warn!(
                differences = changes.len(),
                first = changes.first().map(String::as_str).unwrap_or(""),
                "the live table drifted from the policy; rewriting it"
            );
        }
        match apply::apply(&ruleset) {
            Ok(()) => {
                self.metrics.writes.inc();
                if drift {
                    self.metrics.drift_repairs.inc();
                }
                tracing::info!(
                    generation = ruleset.generation,
                    host = self.config.host,
                    "applied"
                );
                self.confirmed(&mut state, &ruleset);
                // After a drift, too: flows opened while the table was tampered with are in
                // conntrack and would pass the repaired table as established.
                // (Flows that only the Kubernetes objects deny are not cut: see KUBERNETES.md.)
                if let Some(policy) =
                    policy.filter(|_| (policy_changed || drift) && self.config.revoke_established)
                {
                    let cut = crate::revoke::revoke_denied_flows(&policy, &self.config.host);
                    self.metrics.revoked.inc_by(cut);
                }
            }
            Err(error) => {
                self.metrics.fail("apply");
                tracing::error!(%error, "the table was not written; the previous one stays in force");
            }
        }
    }

    /// The table for this host from the last good inputs: the Palisade policy's (or an open
    /// one without a policy source), with the node's share of the Kubernetes objects added.
    /// `None` while a configured input has never loaded.
    fn compose(&self, state: &State) -> Option<Ruleset> {
        let base = match (&self.config.source, &state.policy) {
            (None, _) => Ruleset::open(Some(&self.config.host)),
            (Some(_), Some((_, ruleset))) => ruleset.clone(),
            (Some(_), None) => return None,
        };
        if self.config.kubernetes.is_empty() {
            return Some(base);
        }
        let cluster = state.cluster.as_ref()?;
        Some(palisade_netpol::compile(cluster, &self.config.host, base))
    }

    /// Logs a new load's warnings and refused objects (once: the same bytes are not loaded
    /// again), and sets the refused-object metrics to this load's.
    fn report(&self, loaded: &palisade_netpol::Loaded) {
        for (at, warning) in &loaded.warnings {
            tracing::warn!("{at}: {warning}");
        }
        self.metrics.refused.clear();
        let mut notes = Vec::new();
        for refused in &loaded.refused {
            let errors = palisade_netpol::LoadErrors {
                errors: refused.errors.clone(),
            };
            tracing::error!(
                object = refused.object,
                errors = %errors,
                "a NetworkPolicy is refused; the rest is enforced, and it stands in isolating what it selects and admitting nothing"
            );
            let at = refused
                .errors
                .first()
                .map_or_else(|| refused.source.to_string(), |(at, _)| at.to_string());
            notes.push(format!(
                "{} refused at {at}: it stands in isolating what it selects and admitting nothing",
                refused.object
            ));
            self.metrics
                .refused
                .get_or_create(&RefusedLabels {
                    object: refused.object.clone(),
                    at,
                })
                .set(1);
        }
        self.metrics
            .refused_objects
            .set(loaded.refused.len() as i64);
        *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = notes;
    }

    fn compile(&self, text: &str, source: &str) -> Result<(Policy, Ruleset), ()> {
        let policy = palisade_policy::load_str(text, source.as_ref()).map_err(|errors| {
            self.metrics.fail("load");
            tracing::error!(errors = %errors, "the policy does not load; the last good ruleset stays in force");
        })?;
        let ruleset = palisade_policy::compile(&policy, Some(&self.config.host)).map_err(|error| {
            self.metrics.fail("compile");
            tracing::error!(%error, "the policy does not compile for this host; the last good ruleset stays in force");
        })?;
        Ok((policy, ruleset))
    }

    fn confirmed(&self, state: &mut State, ruleset: &Ruleset) {
        if state.live_generation.as_deref() != Some(ruleset.generation.as_str()) {
            if let Some(old) = state.live_generation.take() {
                self.metrics
                    .generation
                    .remove(&GenerationLabels { generation: old });
            }
            self.metrics
                .generation
                .get_or_create(&GenerationLabels {
                    generation: ruleset.generation.clone(),
                })
                .set(1);
            state.live_generation = Some(ruleset.generation.clone());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.metrics.last_success.set(now);
        self.ready.store(true, Ordering::Relaxed);
    }

    /// No policy and no table: enforce the baseline rather than nothing.
    fn install_baseline(&self) {
        let result = match &self.config.baseline {
            Some(file) => {
                let policy = match palisade_policy::load_file(file) {
                    Ok(policy) => policy,
                    Err(errors) => {
                        self.metrics.fail("load");
                        tracing::error!(%errors, "the baseline policy does not load");
                        return;
                    }
                };
                match palisade_policy::compile(&policy, Some(&self.config.host)) {
                    Ok(ruleset) => apply::apply(&ruleset),
                    Err(error) => {
                        self.metrics.fail("compile");
                        tracing::error!(%error, "the baseline policy does not compile for this host");
                        return;
                    }
                }
            }
            None => apply::apply(&palisade_policy::Ruleset::baseline()),
        };
        match result {
            Ok(()) => {
                self.metrics.writes.inc();
                tracing::warn!("no policy could be loaded and no table was in place: installed the fail-closed baseline");
            }
            Err(error) => {
                self.metrics.fail("apply");
                tracing::error!(%error, "cannot install the baseline");
            }
        }
    }
}
