//! Who an inbound listener admits: its `allow` list, or what a policy file decides
//! ([`palisade_policy::Admission`], the same decision as `palisade policy explain`).
//!
//! Policy files are watched apart from the certificate files ([`PolicyWatcher`]): a policy that
//! does not load, or goes missing, keeps the last good one in force and never holds up a
//! certificate rotation. Each file's current policy lives in a [`PolicyFile`]; the verifier of each
//! listener asks a [`PolicyAuthorizer`], which reads the current policy on every handshake, so a
//! new policy applies to the next handshake without rebuilding any TLS configuration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use palisade_identity::{AllowList, AuthorizeId, SpiffeId};
use palisade_netpol::{Cluster, Watched};
use palisade_policy::{Admission, Policy};

use crate::config::{InboundConfig, SidecarConfig};
use crate::metrics::{Metrics, ReloadLabels};

/// Policy files larger than this are refused: a policy is a few kilobytes to a few megabytes.
const MAX_POLICY_BYTES: u64 = 16 * 1024 * 1024;

/// One policy file and the last policy that loaded from it.
pub(crate) struct PolicyFile {
    pub path: PathBuf,
    current: ArcSwapOption<Policy>,
}

/// One set of Kubernetes manifests a listener's `network_policy` names, and the objects that
/// last loaded from them.
pub(crate) struct ManifestSet {
    pub paths: Vec<PathBuf>,
    current: ArcSwapOption<Cluster>,
    watched: Mutex<Watched>,
}

/// Every policy file and set of manifests the listeners name, each once.
#[derive(Default)]
pub(crate) struct PolicyFiles(Vec<Arc<PolicyFile>>, Vec<Arc<ManifestSet>>);

impl PolicyFiles {
    pub fn of(config: &SidecarConfig) -> Self {
        let mut manifests: Vec<Arc<ManifestSet>> = Vec::new();
        for n in config
            .inbound
            .iter()
            .filter_map(|l| l.network_policy.as_ref())
        {
            if !manifests.iter().any(|m| m.paths == n.manifests) {
                manifests.push(Arc::new(ManifestSet {
                    paths: n.manifests.clone(),
                    current: ArcSwapOption::empty(),
                    watched: Mutex::new(Watched::new(n.manifests.clone())),
                }));
            }
        }
        let mut files: Vec<Arc<PolicyFile>> = Vec::new();
        let transparent = config.transparent.as_ref().map(|t| &t.policy);
        let paths = config
            .inbound
            .iter()
            .filter_map(|l| l.policy.as_ref().map(|p| &p.file))
            .chain(transparent);
        for path in paths {
            if !files.iter().any(|f| &f.path == path) {
                files.push(Arc::new(PolicyFile {
                    path: path.clone(),
                    current: ArcSwapOption::empty(),
                }));
            }
        }
        PolicyFiles(files, manifests)
    }

    /// The policy loaded from `path` now, if any.
    pub fn current(&self, path: &Path) -> Option<Arc<Policy>> {
        self.get(path).and_then(|f| f.current.load_full())
    }

    fn get(&self, path: &Path) -> Option<&Arc<PolicyFile>> {
        self.0.iter().find(|f| f.path == path)
    }

    /// The first file no policy (or set of manifests) has loaded from yet, if any.
    pub fn not_loaded(&self) -> Option<&Path> {
        self.0
            .iter()
            .find(|f| f.current.load().is_none())
            .map(|f| f.path.as_path())
            .or_else(|| {
                self.1
                    .iter()
                    .find(|m| m.current.load().is_none())
                    .and_then(|m| m.paths.first().map(PathBuf::as_path))
            })
    }

    /// Who `listener` admits, for a workload whose own ID is `own`.
    pub fn authorizer(&self, listener: &InboundConfig, own: &SpiffeId) -> Arc<dyn AuthorizeId> {
        if let Some(n) = &listener.network_policy {
            return Arc::new(NetworkPolicyAuthorizer {
                set: self
                    .1
                    .iter()
                    .find(|m| m.paths == n.manifests)
                    .expect("every set of manifests of the configuration is watched")
                    .clone(),
                own: own.clone(),
                pod: n.pod.clone(),
                port: n.port.unwrap_or(listener.listen.port()),
                memory: Mutex::new(None),
            });
        }
        match &listener.policy {
            None => Arc::new(AllowList::new(listener.allow.clone())),
            Some(p) => Arc::new(PolicyAuthorizer {
                file: self
                    .get(&p.file)
                    .expect("every policy file of the configuration is watched")
                    .clone(),
                own: own.clone(),
                port: p.port.unwrap_or(listener.listen.port()),
                admission: Mutex::new(None),
            }),
        }
    }
}

/// Admits by the current policy of one file, for one workload ID and port. Nobody is admitted
/// while no policy has loaded (fail closed).
pub(crate) struct PolicyAuthorizer {
    file: Arc<PolicyFile>,
    own: SpiffeId,
    port: u16,
    /// The admission of the policy last seen, with what it remembered; replaced when the
    /// file's policy changes (a new generation starts with an empty memory).
    admission: Mutex<Option<Arc<Admission>>>,
}

impl std::fmt::Debug for PolicyAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyAuthorizer")
            .field("file", &self.file.path)
            .field("own", &self.own.as_str())
            .field("port", &self.port)
            .finish()
    }
}

impl AuthorizeId for PolicyAuthorizer {
    fn authorize(&self, peer: &SpiffeId) -> bool {
        let Some(policy) = self.file.current.load_full() else {
            return false;
        };
        let admission = {
            let mut slot = self
                .admission
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match &*slot {
                Some(a) if Arc::ptr_eq(a.policy(), &policy) => a.clone(),
                _ => {
                    let a = Arc::new(Admission::new(policy, self.own.clone(), self.port));
                    *slot = Some(a.clone());
                    a
                }
            }
        };
        admission.admits(peer)
    }
}

/// Answers given for one set of objects, by peer ID.
type Answers = (Arc<Cluster>, HashMap<String, bool>);

/// Admits by the current NetworkPolicies of one set of manifests, for one pod and port: a peer
/// `spiffe://<own trust domain>/ns/<namespace>/sa/<account>` when
/// [`palisade_netpol::ingress_admits_account`] says so. Nobody while no manifests have loaded,
/// and no ID of another form or trust domain.
pub(crate) struct NetworkPolicyAuthorizer {
    set: Arc<ManifestSet>,
    own: SpiffeId,
    pod: String,
    port: u16,
    /// The objects last asked about and the answers given for them, per peer ID (bounded).
    memory: Mutex<Option<Answers>>,
}

impl std::fmt::Debug for NetworkPolicyAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkPolicyAuthorizer")
            .field("manifests", &self.set.paths)
            .field("pod", &self.pod)
            .field("port", &self.port)
            .finish()
    }
}

impl AuthorizeId for NetworkPolicyAuthorizer {
    fn authorize(&self, peer: &SpiffeId) -> bool {
        let Some(cluster) = self.set.current.load_full() else {
            return false;
        };
        if peer.trust_domain() != self.own.trust_domain() {
            return false;
        }
        let segments: Vec<&str> = peer.segments().collect();
        let ["ns", namespace, "sa", account] = segments.as_slice() else {
            return false;
        };
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        match &*memory {
            Some((seen, _)) if Arc::ptr_eq(seen, &cluster) => {}
            _ => *memory = Some((cluster.clone(), HashMap::new())),
        }
        let (_, answers) = memory.as_mut().expect("just set");
        if let Some(&known) = answers.get(peer.as_str()) {
            return known;
        }
        let admitted = palisade_netpol::ingress_admits_account(
            &cluster,
            &self.pod,
            namespace,
            account,
            palisade_netpol::Proto::Tcp,
            self.port,
        );
        // Only authenticated IDs get here; still, a bounded memory.
        if answers.len() >= 4096 {
            answers.clear();
        }
        answers.insert(peer.as_str().to_owned(), admitted);
        admitted
    }
}

/// Re-reads the policy files and swaps in each one that loads.
pub(crate) struct PolicyWatcher {
    files: Arc<PolicyFiles>,
    metrics: Arc<Metrics>,
    /// Per file: the bytes last tried (loaded or refused), so a refusal is logged once, and the
    /// last read error logged.
    last_seen: Vec<Option<Vec<u8>>>,
    last_read_error: Vec<Option<String>>,
}

impl PolicyWatcher {
    pub fn new(files: Arc<PolicyFiles>, metrics: Arc<Metrics>) -> Self {
        let n = files.0.len();
        PolicyWatcher {
            files,
            metrics,
            last_seen: vec![None; n],
            last_read_error: vec![None; n],
        }
    }

    /// One look at every policy file and set of manifests.
    pub fn check(&mut self) {
        for set in &self.files.1 {
            // Partial, as `policy sync` loads them: a refused NetworkPolicy stands in admitting
            // nothing (fail closed) and does not hold up the others.
            let looked = set
                .watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .look_partial();
            match looked {
                None => {}
                Some(Ok(loaded)) => {
                    for (at, warning) in &loaded.warnings {
                        tracing::warn!("{at}: {warning}");
                    }
                    for refused in &loaded.refused {
                        let errors = palisade_netpol::LoadErrors {
                            errors: refused.errors.clone(),
                        };
                        tracing::error!(
                            object = refused.object,
                            %errors,
                            "a NetworkPolicy is refused; the others are in force, and it stands in admitting nothing"
                        );
                    }
                    let cluster = loaded.cluster;
                    tracing::info!(
                        files = set.paths.len(),
                        pods = cluster.inventory.pods.len(),
                        policies = cluster.policies.len(),
                        "loaded NetworkPolicies; new handshakes are admitted by them"
                    );
                    set.current.store(Some(Arc::new(cluster)));
                    self.count("success");
                }
                Some(Err(errors)) => {
                    let keeping = if set.current.load().is_some() {
                        "keeping the last good ones"
                    } else {
                        "none loaded yet, so this listener admits nobody"
                    };
                    tracing::warn!(files = set.paths.len(), %errors, "refused the NetworkPolicy manifests; {keeping}");
                    self.count("failure");
                }
            }
        }
        for (i, file) in self.files.0.iter().enumerate() {
            let keeping = if file.current.load().is_some() {
                "keeping the last good policy"
            } else {
                "no policy loaded from it yet, so this listener admits nobody"
            };
            let bytes = match read_bounded(&file.path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    self.last_seen[i] = None;
                    if self.last_read_error[i].as_ref() != Some(&error) {
                        tracing::warn!(file = %file.path.display(), %error, "cannot read the policy file; {keeping}");
                        self.count("failure");
                        self.last_read_error[i] = Some(error);
                    }
                    continue;
                }
            };
            self.last_read_error[i] = None;
            if self.last_seen[i].as_ref() == Some(&bytes) {
                continue;
            }
            let loaded = std::str::from_utf8(&bytes)
                .map_err(|_| "the policy is not UTF-8 text".to_owned())
                .and_then(|text| {
                    palisade_policy::load_str(text, &file.path).map_err(|e| e.to_string())
                });
            self.last_seen[i] = Some(bytes);
            match loaded {
                Ok(policy) => {
                    tracing::info!(
                        file = %file.path.display(),
                        segments = policy.segments.len(),
                        rules = policy.rules.len(),
                        "loaded policy; new handshakes are admitted by it"
                    );
                    file.current.store(Some(Arc::new(policy)));
                    self.count("success");
                }
                Err(errors) => {
                    tracing::warn!(file = %file.path.display(), %errors, "refused the new policy; {keeping}");
                    self.count("failure");
                }
            }
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .reloads
            .get_or_create(&ReloadLabels {
                files: "policy",
                result,
            })
            .inc();
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(format!(
            "the file is larger than {} MiB",
            MAX_POLICY_BYTES >> 20
        ));
    }
    Ok(bytes)
}
