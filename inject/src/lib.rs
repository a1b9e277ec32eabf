//! `palisade inject`: a pure transformation of Kubernetes manifests (multi-document YAML) that
//! puts a workload's pods behind Palisade, and `--uninject`, which takes it out again.
//!
//! - [`inject`] / [`uninject`]: a whole stream of documents; kinds that do not hold a pod
//!   template (Service, ConfigMap, ...) pass through unchanged, and an unknown kind that holds
//!   one passes through with a warning.
//! - [`Settings`]: the image and its pull policy, ports and UID the injected containers use.
//!
//! What a pod gets (docs/PODS.md has it field by field):
//! - init container `palisade-redirect`: `palisade sidecar redirect`, NET_ADMIN and NET_RAW only,
//!   then it exits;
//! - init container `palisade-sidecar` with `restartPolicy: Always` (a native sidecar: started
//!   before the app, stopped after it, so Jobs complete), as a fixed non-root UID, no
//!   capabilities, read-only root filesystem, startup and readiness probes on its /ready;
//! - volumes `palisade-config` (a ConfigMap: sidecar.yaml, policy.yaml, bundle.pem) and
//!   `palisade-token` (a projected service-account token for the CA's audience);
//! - annotation `palisade.io/injected`, which records what the pod had before, so that
//!   uninjecting restores it exactly and injecting twice equals injecting once.
//!
//! Annotations on the pod template steer it: `palisade.io/inject: "false"` opts out;
//! `palisade.io/inbound-port`, `palisade.io/outbound-port`, `palisade.io/exclude-inbound-ports`,
//! `palisade.io/exclude-outbound-ports`, `palisade.io/exclude-cidrs`, `palisade.io/config`.
//! The app's `httpGet`, `tcpSocket` and `grpc` kubelet probes are rewritten to the sidecar's
//! probe port, which runs the originals against the app over loopback (`probes.rs`), so they pass
//! in strict mode; the pod gets Prometheus' scrape annotations for the same port.
//! Pods on the host's network are left alone, with a warning: their namespace is the host's.
//!
//! A pod whose app could take its traffic past the sidecar is refused (a privileged container,
//! one adding NET_ADMIN or NET_RAW, any container of a pod with `hostPID: true`, one that may run
//! as root, gain privileges or has no `runAsUser` in a pod sharing its process namespace), or
//! warned about (one that may hold CAP_SETUID, one whose UID only its image sets), unless
//! `palisade.io/allow-bypass` names the container; every other app container gets NET_RAW in its
//! `capabilities.drop` (docs/SECURITY.md, "A compromised workload", says why each).

#![warn(missing_docs)]

mod probes;

use serde_yaml::{Mapping, Value};

/// Annotation recording an injection and what the pod had before it.
pub const INJECTED: &str = "palisade.io/injected";
/// Annotation opting a workload out (`"false"`).
pub const INJECT: &str = "palisade.io/inject";
/// Annotation naming (comma-separated) the app's containers that are accepted as they are although
/// they could bypass the sidecar: inject neither refuses, warns about, nor hardens them.
pub const ALLOW_BYPASS: &str = "palisade.io/allow-bypass";
const REDIRECT: &str = "palisade-redirect";
const SIDECAR: &str = "palisade-sidecar";
const CONFIG_VOLUME: &str = "palisade-config";
const TOKEN_VOLUME: &str = "palisade-token";

/// Why a stream could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The input is not YAML.
    #[error("{}document {document}: {message}", at.map(|(l, c)| format!("{l}:{c}: ")).unwrap_or_default())]
    Yaml {
        /// 1-based document number in the stream.
        document: usize,
        /// Where, as (line, column), 1-based, counted from the start of the stream (not of
        /// the document), when the parser knows.
        at: Option<(usize, usize)>,
        /// The parser's message, without the location `at` gives.
        message: String,
    },
    /// The pod already has a container or volume of one of the names inject adds, not added by
    /// an earlier injection.
    #[error("{kind} {name}: it already has an init container or volume named {taken}, which inject would add")]
    NameTaken {
        /// The workload's kind.
        kind: String,
        /// The workload's name.
        name: String,
        /// The name.
        taken: String,
    },
    /// A container of the pod runs as the sidecar's UID: the redirect exempts that UID, so the
    /// container's traffic would bypass the sidecar unseen.
    #[error("{kind} {name}: container {container} runs as UID {uid}, the sidecar's own, so its traffic would bypass the sidecar (give it another runAsUser)")]
    RunsAsProxyUid {
        /// The workload's kind.
        kind: String,
        /// The workload's name.
        name: String,
        /// The container.
        container: String,
        /// The UID.
        uid: u32,
    },
    /// A container of the pod could take its traffic past the sidecar (or reach into the
    /// sidecar's process), and `palisade.io/allow-bypass` does not name it.
    #[error("{kind} {name}: container {container} {how}, so it could bypass the sidecar (change that, or accept the risk with the annotation {ALLOW_BYPASS}: \"{container}\")")]
    CanBypass {
        /// The workload's kind.
        kind: String,
        /// The workload's name.
        name: String,
        /// The container.
        container: String,
        /// What it has, and what that lets it do.
        how: String,
    },
    /// A container of the pod uses a port the injected containers listen on.
    #[error("{kind} {name}: container {container} uses port {port}, which the sidecar listens on ({what}); give the app another port")]
    PortTaken {
        /// The workload's kind.
        kind: String,
        /// The workload's name.
        name: String,
        /// The container.
        container: String,
        /// The port.
        port: u16,
        /// Which of the sidecar's listeners it is.
        what: &'static str,
    },
    /// An annotation's value is not what it must be.
    #[error("{kind} {name}: annotation {annotation}: {message}")]
    Annotation {
        /// The workload's kind.
        kind: String,
        /// The workload's name.
        name: String,
        /// The annotation.
        annotation: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// What the injected containers are.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The image holding `palisade`.
    pub image: String,
    /// The injected containers' `imagePullPolicy` (`IfNotPresent` by default: Kubernetes would
    /// pull a `:latest` image on every start, and fail where no registry is reachable).
    pub image_pull_policy: PullPolicy,
    /// The UID the sidecar runs as (exempt from the redirect).
    pub proxy_uid: u32,
    /// Default transparent inbound port.
    pub inbound_port: u16,
    /// Default transparent outbound port.
    pub outbound_port: u16,
    /// The sidecar's admin port (loopback; excluded from the redirect).
    pub admin_port: u16,
    /// The sidecar's read-only port on the pod's address (excluded from the redirect): the app's
    /// rewritten kubelet probes, /live, /ready and /metrics for Prometheus.
    pub probe_port: u16,
    /// Default ConfigMap with sidecar.yaml, policy.yaml and bundle.pem.
    pub config_map: String,
    /// Audience of the projected service-account token (the CA's `--jwt-audience`).
    pub token_audience: String,
}

/// A container's `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull on every start.
    Always,
    /// Pull only when the node does not have the image.
    IfNotPresent,
    /// Never pull: the image must be on the node.
    Never,
}

impl PullPolicy {
    /// As Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image: "palisade:latest".into(),
            image_pull_policy: PullPolicy::IfNotPresent,
            proxy_uid: 1337,
            inbound_port: 15006,
            outbound_port: 15001,
            admin_port: 15000,
            probe_port: 15020,
            config_map: "palisade-sidecar".into(),
            token_audience: "palisade-ca".into(),
        }
    }
}

/// A stream after injection, and what the operator should know about it.
#[derive(Debug)]
pub struct Injected {
    /// The documents, each written as JSON (which is YAML).
    pub text: String,
    /// One sentence per thing that needs a decision (a probe on a served port, say).
    pub warnings: Vec<String>,
}

/// Injects every workload of a YAML stream.
pub fn inject(input: &str, settings: &Settings) -> Result<Injected, InjectError> {
    let mut warnings = Vec::new();
    let text = transform(input, |doc| {
        warn_of_unknown_templates(doc, &mut warnings);
        visit_pod_specs(doc, &mut |meta, spec, kind, name| {
            inject_pod(meta, spec, settings, kind, name, &mut warnings)
        })
    })?;
    Ok(Injected { text, warnings })
}

/// Takes every injection out of a YAML stream; returns the new stream.
pub fn uninject(input: &str) -> Result<String, InjectError> {
    transform(input, |doc| {
        visit_pod_specs(doc, &mut |meta, spec, _, _| {
            uninject_pod(meta, spec);
            Ok(())
        })
    })
}

fn transform(
    input: &str,
    mut each: impl FnMut(&mut Value) -> Result<(), InjectError>,
) -> Result<String, InjectError> {
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let mut doc = Value::deserialize_from(document).map_err(|e| {
            let at = e.location().map(|l| (l.line(), l.column()));
            let mut message = e.to_string();
            if let Some((line, column)) = at {
                message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
            }
            InjectError::Yaml {
                document: i + 1,
                at,
                message,
            }
        })?;
        if doc.is_null() {
            continue;
        }
        each(&mut doc)?;
        // Written as JSON, which is YAML too: serde_yaml writes strings such as "yes" or "on"
        // unquoted, and Kubernetes reads YAML 1.1, where those are booleans.
        let json = serde_json::to_string_pretty(&doc).map_err(|e| InjectError::Yaml {
            document: i + 1,
            at: None,
            message: e.to_string(),
        })?;
        out.push(json + "\n");
    }
    Ok(out.join("---\n"))
}

trait DeserializeFrom {
    fn deserialize_from(d: serde_yaml::Deserializer<'_>) -> Result<Value, serde_yaml::Error>;
}

impl DeserializeFrom for Value {
    fn deserialize_from(d: serde_yaml::Deserializer<'_>) -> Result<Value, serde_yaml::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// An object of a kind inject does not know that holds a pod template (a custom resource such
/// as an Argo Rollout or an OpenKruise CloneSet, at `spec.template` or
/// `spec.jobTemplate.spec.template`) is passed through unchanged, and named: its pods would
/// otherwise run without a sidecar while the user believes them meshed.
fn warn_of_unknown_templates(doc: &Value, warnings: &mut Vec<String>) {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == "List" {
        for item in doc
            .get("items")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            warn_of_unknown_templates(item, warnings);
        }
        return;
    }
    const KNOWN: &[&str] = &[
        "Pod",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Job",
        "CronJob",
    ];
    if KNOWN.contains(&kind) {
        return;
    }
    let at = |path: &[&str]| {
        let mut value = doc;
        for key in path {
            match value.get(*key) {
                Some(next) => value = next,
                None => return false,
            }
        }
        value.get("containers").is_some()
    };
    let Some(path) = ["spec.template.spec", "spec.jobTemplate.spec.template.spec"]
        .into_iter()
        .find(|path| at(&path.split('.').collect::<Vec<_>>()))
    else {
        return;
    };
    // Injected by hand, as the warning suggests: nothing to say.
    let mut spec = doc;
    for key in path.split('.') {
        spec = &spec[key];
    }
    let has_sidecar = spec["initContainers"]
        .as_sequence()
        .into_iter()
        .flatten()
        .any(|c| c["name"].as_str() == Some(SIDECAR));
    if has_sidecar {
        return;
    }
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    warnings.push(format!(
        "{kind} {name}: not injected: palisade inject does not know the kind {kind}, which holds \
         a pod template at {path}; its pods will run without a sidecar (inject the Pods it makes, \
         or add the two containers as docs/PODS.md lists them)"
    ));
}

type PodVisitor<'a> =
    dyn FnMut(&mut Mapping, &mut Mapping, &str, &str) -> Result<(), InjectError> + 'a;

/// Calls `f` with (pod metadata, pod spec, kind, name) for every pod template in `doc`.
fn visit_pod_specs(doc: &mut Value, f: &mut PodVisitor<'_>) -> Result<(), InjectError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let path: &[&str] = match kind.as_str() {
        "Pod" => &[],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        "List" => {
            if let Some(items) = doc.get_mut("items").and_then(Value::as_sequence_mut) {
                for item in items {
                    visit_pod_specs(item, f)?;
                }
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    let mut template = &mut *doc;
    for key in path {
        match template.get_mut(*key) {
            Some(next) => template = next,
            None => return Ok(()),
        }
    }
    let Some(template) = template.as_mapping_mut() else {
        return Ok(());
    };
    // Two mutable borrows of one mapping: take the metadata out and put it back in its place
    // (or leave it out when there was none and nothing is left in it, so uninjecting restores a
    // template that had no metadata).
    // `metadata: null` is no metadata (as Kubernetes reads it): treated, and given back, as
    // absent. (Removals shift, never swap, so that the other keys keep their order.)
    if template.get("metadata").is_some_and(Value::is_null) {
        template.shift_remove("metadata");
    }
    let had_metadata = template.contains_key("metadata");
    if !had_metadata {
        // First, where Kubernetes writes it: injecting a pod whose metadata uninject removed
        // gives the same text as the first injection did.
        let rest = std::mem::take(template);
        template.insert("metadata".into(), Value::Mapping(Mapping::new()));
        template.extend(rest);
    }
    let mut meta = match template.get_mut("metadata").map(std::mem::take) {
        Some(Value::Mapping(m)) => m,
        _ => Mapping::new(),
    };
    let empty_before = meta.is_empty();
    let result = match template.get_mut("spec").and_then(Value::as_mapping_mut) {
        Some(spec) => f(&mut meta, spec, &kind, &name),
        None => Ok(()),
    };
    if meta.is_empty() && !(had_metadata && empty_before) {
        template.shift_remove("metadata");
    } else if let Some(slot) = template.get_mut("metadata") {
        *slot = Value::Mapping(meta);
    }
    result
}

/// DNS, excluded from outbound capture in every injected pod.
const DNS_PORT: u16 = 53;

/// The first of the pod's containers (app or init) that runs as `uid`, by its own
/// `securityContext.runAsUser` or else the pod's. (A UID set only in the image is not seen.)
fn runs_as(spec: &Mapping, uid: u32) -> Option<String> {
    let uid_of = |v: &Value| {
        v.get("securityContext")
            .and_then(|c| c.get("runAsUser"))
            .and_then(Value::as_u64)
    };
    let pod_uid = spec
        .get("securityContext")
        .and_then(|c| c.get("runAsUser"))
        .and_then(Value::as_u64);
    ["containers", "initContainers", "ephemeralContainers"]
        .into_iter()
        .filter_map(|key| spec.get(key).and_then(Value::as_sequence))
        .flatten()
        .find(|c| uid_of(c).or(pod_uid) == Some(u64::from(uid)))
        .map(|c| {
            c.get("name")
                .and_then(Value::as_str)
                .unwrap_or("(unnamed)")
                .to_owned()
        })
}

/// The sections of a pod spec that hold the app's containers. The app's init containers run after
/// the redirect and the sidecar (inject puts those two first), so their traffic is captured too,
/// and one that removed the redirect table would remove it for the whole pod; ephemeral
/// containers (found only in a Pod read back from the API) run beside the app.
const APP_SECTIONS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// A capability as the runtimes read it: upper case, without `CAP_`.
fn capability(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_owned()
}

/// What one app container may do, from its `securityContext` and, for what the container leaves
/// unsaid, the pod's (`runAsUser` and `runAsNonRoot` exist at both levels; `privileged`,
/// `allowPrivilegeEscalation` and `capabilities` only on the container).
struct Powers {
    privileged: bool,
    added: Vec<String>,
    dropped: Vec<String>,
    /// `runAsUser`, the container's or else the pod's; None when neither says, and then the
    /// image's `USER` decides, which inject cannot see (it could be the sidecar's UID).
    uid: Option<u64>,
    /// `runAsUser: 0`, said by the container or the pod.
    root: bool,
    /// It may run as root: `runAsUser: 0`, or no `runAsUser` and no `runAsNonRoot: true` (then
    /// the image decides, and most images run as root).
    may_be_root: bool,
    /// It may gain root by running a setuid-root (or file-capability) program of its image:
    /// `allowPrivilegeEscalation` is not false (Kubernetes' default is true).
    may_escalate: bool,
}

impl Powers {
    fn of(container: &Value, pod: Option<&Value>) -> Powers {
        let own = container.get("securityContext");
        let field = |key: &str| {
            own.and_then(|c| c.get(key))
                .filter(|v| !v.is_null())
                .or_else(|| pod.and_then(|p| p.get(key)).filter(|v| !v.is_null()))
        };
        let caps = |key: &str| -> Vec<String> {
            own.and_then(|c| c.get("capabilities"))
                .and_then(|c| c.get(key))
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(capability)
                .collect()
        };
        let privileged = own
            .and_then(|c| c.get("privileged"))
            .and_then(Value::as_bool)
            == Some(true);
        let uid = field("runAsUser").and_then(Value::as_u64);
        let non_root = field("runAsNonRoot").and_then(Value::as_bool) == Some(true);
        Powers {
            privileged,
            uid,
            added: caps("add"),
            dropped: caps("drop"),
            // With runAsNonRoot the kubelet refuses to start a container whose UID is 0.
            root: uid == Some(0) && !non_root,
            may_be_root: !non_root && uid.is_none_or(|u| u == 0),
            may_escalate: privileged
                || own
                    .and_then(|c| c.get("allowPrivilegeEscalation"))
                    .and_then(Value::as_bool)
                    != Some(false),
        }
    }

    fn adds(&self, cap: &str) -> bool {
        self.added.iter().any(|c| c == cap || c == "ALL")
    }

    fn drops(&self, cap: &str) -> bool {
        self.dropped.iter().any(|c| c == cap || c == "ALL")
    }

    /// Whether it may hold `cap`, one that containerd and CRI-O both give root by default
    /// (SETUID, KILL): as root, or as whoever gains root, unless the container drops it.
    fn may_hold_default(&self, cap: &str) -> bool {
        self.privileged
            || self.adds(cap)
            || (!self.drops(cap) && (self.may_be_root || self.may_escalate))
    }

    /// Whether it may hold `cap`, one no runtime gives by default (SYS_PTRACE).
    fn may_hold(&self, cap: &str) -> bool {
        self.privileged || self.adds(cap)
    }
}

/// An app container inject hardens: NET_RAW goes into its `capabilities.drop`.
struct Harden {
    section: &'static str,
    index: usize,
}

/// Refuses the pod when an app container could bypass the sidecar and `accepted` does not name
/// it; warns about those that may hold CAP_SETUID; returns those that get NET_RAW dropped.
/// Why each case is refused, warned about or hardened: docs/SECURITY.md, "A compromised workload".
fn check_bypass(
    spec: &Mapping,
    accepted: &[String],
    proxy_uid: u32,
    kind: &str,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<Harden>, InjectError> {
    let pod = spec.get("securityContext");
    let shares_processes = spec.get("shareProcessNamespace").and_then(Value::as_bool) == Some(true);
    let host_pid = spec.get("hostPID").and_then(Value::as_bool) == Some(true);
    let mut harden = Vec::new();
    for section in APP_SECTIONS {
        let list = spec.get(section).and_then(Value::as_sequence);
        for (index, container) in list.into_iter().flatten().enumerate() {
            let cname = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("(unnamed)");
            if accepted.iter().any(|a| a == cname) {
                continue;
            }
            let refuse = |how: String| InjectError::CanBypass {
                kind: kind.to_owned(),
                name: name.to_owned(),
                container: cname.to_owned(),
                how,
            };
            let p = Powers::of(container, pod);
            // Refused, not hardened: the author asked for these powers, and taking them away
            // without a word would break the app where it runs, not here.
            if p.privileged {
                return Err(refuse(
                    "is privileged (it holds every capability, NET_ADMIN among them, and can \
                     delete the redirect table)"
                        .into(),
                ));
            }
            let all = if p.added.iter().any(|c| c == "ALL") {
                "ALL, NET_ADMIN among them"
            } else {
                "NET_ADMIN"
            };
            if p.adds("NET_ADMIN") {
                return Err(refuse(format!(
                    "adds capability {all} (it can delete or rewrite the redirect table)"
                )));
            }
            if p.adds("NET_RAW") {
                return Err(refuse(
                    "adds capability NET_RAW (what it sends through a packet socket never meets \
                     the redirect)"
                        .into(),
                ));
            }
            // With the node's process namespace the app sees every process of the node, the
            // sidecar of every injected pod there among them, so what a shared process namespace
            // risks for one pod (below) it risks for all of them. Refused whatever the container
            // says, not judged as in a shared namespace: what it could do to a process it sees
            // depends on that process's UID and capabilities, so on every other pod and daemon of
            // the node, none of which inject sees; and its own UID may come from its image,
            // unseen, and be the sidecars' UID. Pod Security's baseline forbids hostPID, so such
            // pods are node agents, few, and naming one in the annotation costs little.
            if host_pid {
                return Err(refuse(format!(
                    "is in a pod with hostPID: true (it sees every process of the node, the \
                     sidecars of all its pods among them: as root, or as UID {proxy_uid}, which its \
                     image may set where inject cannot see it, it could stop them or read their \
                     keys through /proc)"
                )));
            }
            // With a shared process namespace the app sees the sidecar's process: with CAP_KILL
            // it can stop it; with CAP_SETUID it can take the sidecar's UID (and GID: CAP_SETGID
            // comes with it by default) and then, as the sidecar's owner (the sidecar is
            // dumpable: it never changes credentials), read its memory, the workload's key, and
            // its files (the CA token) through /proc/<pid>/mem and /proc/<pid>/root;
            // CAP_SYS_PTRACE does that without the UID. Without those, it sees only the
            // sidecar's command line, so the namespace alone is no reason to refuse.
            let setuid = p.may_hold_default("SETUID");
            let kill = p.may_hold_default("KILL");
            let ptrace = p.may_hold("SYS_PTRACE");
            if shares_processes && (setuid || kill || ptrace) {
                let held: Vec<&str> = [
                    (setuid, "CAP_SETUID"),
                    (kill, "CAP_KILL"),
                    (ptrace, "CAP_SYS_PTRACE"),
                ]
                .into_iter()
                .filter_map(|(held, cap)| held.then_some(cap))
                .collect();
                let mut can = Vec::new();
                if kill {
                    can.push("stop the sidecar".to_owned());
                }
                if setuid {
                    can.push(format!(
                        "take UID {proxy_uid} and read the sidecar's memory (the workload's key) \
                         and files through /proc"
                    ));
                } else if ptrace {
                    can.push(
                        "read the sidecar's memory (the workload's key) and files through /proc"
                            .to_owned(),
                    );
                }
                return Err(refuse(format!(
                    "may hold {} in a pod with shareProcessNamespace: true (it can {})",
                    held.join(" and "),
                    can.join(", or ")
                )));
            }
            // Without a runAsUser its image sets its UID, which inject cannot see: if that is the
            // sidecar's, the sidecar's memory and files are its own to read, no capability
            // needed. Outside a shared namespace the same unknown UID is only warned about
            // (below): there it can bypass the redirect, not reach the key.
            if shares_processes && p.uid.is_none() {
                return Err(refuse(format!(
                    "has no runAsUser, its own or the pod's, in a pod with shareProcessNamespace: \
                     true (its image sets its UID, which inject cannot see: as UID {proxy_uid} it \
                     could read the sidecar's memory (the workload's key) and files through /proc)"
                )));
            }
            if p.may_hold_default("SETUID") {
                // Warned about, not refused: most images run as root and keep CAP_SETUID, and
                // many need it (nginx's master, entrypoints that step down with gosu or su-exec),
                // so neither refusing them nor dropping SETUID behind the user's back is a safe
                // default. Istio and Linkerd document the same limit.
                let why = if p.root {
                    "runs as root with CAP_SETUID"
                } else if p.may_be_root {
                    "may run as root with CAP_SETUID (no runAsNonRoot: true and no runAsUser rule it out)"
                } else if p.may_escalate {
                    "may gain root and CAP_SETUID through a setuid program of its image \
                     (allowPrivilegeEscalation is not false)"
                } else {
                    "adds capability SETUID"
                };
                warnings.push(format!(
                    "{kind} {name}: container {cname} {why}, so it can take the sidecar's UID \
                     {proxy_uid} (setpriv --reuid {proxy_uid}) and bypass the redirect; give it \
                     runAsNonRoot: true and allowPrivilegeEscalation: false, or drop SETUID if it \
                     never changes user, or accept the risk with the annotation {ALLOW_BYPASS}: \
                     \"{cname}\""
                ));
            } else if p.uid.is_none() {
                // Warned about, not refused: Pod Security's restricted level asks for runAsNonRoot,
                // not a runAsUser, so many well-kept pods leave the UID to the image, and few
                // images use the sidecar's UID. But one that does sends its connections past the
                // redirect with nothing else to tell (the kubelet checks at most that the UID is
                // not 0), and one field fixes it. Not said again with the CAP_SETUID warning above: such a
                // container can take any UID, and that warning's fix leads here.
                warnings.push(format!(
                    "{kind} {name}: container {cname} has no runAsUser, its own or the pod's, so \
                     its image sets its UID, which inject cannot see: if that is the sidecar's UID \
                     {proxy_uid}, its connections bypass the redirect unseen; give it a runAsUser \
                     other than {proxy_uid}, or accept the risk with the annotation \
                     {ALLOW_BYPASS}: \"{cname}\""
                ));
            }
            // NET_RAW (a packet socket skips netfilter, the redirect with it) is in containerd's
            // default set for root but not in CRI-O's, so apps that run on both already do
            // without it: dropping it is safe where dropping SETUID is not.
            if !p.drops("NET_RAW") {
                harden.push(Harden { section, index });
            }
        }
    }
    Ok(harden)
}

/// Puts NET_RAW in the container's `capabilities.drop`; returns the outermost key it created
/// ("securityContext", "capabilities", "drop", or "" for none), so uninject can take exactly that
/// away, or None when a level is not what the schema says (then it leaves the container alone).
fn drop_net_raw(container: &mut Value) -> Option<&'static str> {
    fn present(v: Option<&Value>) -> Option<&Value> {
        v.filter(|v| !v.is_null())
    }
    let context = present(container.get("securityContext"));
    let caps = context.and_then(|c| present(c.get("capabilities")));
    let drop = caps.and_then(|c| present(c.get("drop")));
    let created = match (context, caps, drop) {
        (None, _, _) => "securityContext",
        (Some(Value::Mapping(_)), None, _) => "capabilities",
        (Some(Value::Mapping(_)), Some(Value::Mapping(_)), None) => "drop",
        (Some(Value::Mapping(_)), Some(Value::Mapping(_)), Some(Value::Sequence(_))) => "",
        _ => return None,
    };
    // A null level is taken out and added at the end, as an absent one is: uninject gives back
    // an absent key, and injecting that again must give the same text.
    let mut level = container.as_mapping_mut()?;
    for key in ["securityContext", "capabilities"] {
        if !matches!(level.get(key), Some(Value::Mapping(_))) {
            level.shift_remove(key);
            level.insert(key.into(), Value::Mapping(Mapping::new()));
        }
        level = level.get_mut(key)?.as_mapping_mut()?;
    }
    if level.get("drop").is_some_and(Value::is_null) {
        level.shift_remove("drop");
    }
    sequence(level, "drop").push(Value::String("NET_RAW".into()));
    Some(created)
}

/// The container an entry of the injection record names (`in`, `index`, `name`), in the pod as
/// it is once inject's own init containers are gone.
fn recorded_container<'a>(
    spec: &'a mut Mapping,
    record: &serde_json::Value,
) -> Option<&'a mut Mapping> {
    let section = record.get("in").and_then(serde_json::Value::as_str)?;
    let index = record.get("index").and_then(serde_json::Value::as_u64)?;
    // None: the container had no name (the API server would refuse it, inject does not).
    let name = record.get("name").and_then(serde_json::Value::as_str);
    let list = spec.get_mut(section).and_then(Value::as_sequence_mut)?;
    let named = |c: &Value| c.get("name").and_then(Value::as_str) == name;
    // By position (names may repeat in a manifest the API server would refuse), else by name.
    let at = usize::try_from(index)
        .ok()
        .filter(|i| list.get(*i).is_some_and(named))
        .or_else(|| list.iter().position(named));
    at.and_then(|i| list.get_mut(i))
        .and_then(|c| c.as_mapping_mut())
}

/// Undoes [`drop_net_raw`] on the container the injection record names.
fn restore_net_raw(spec: &mut Mapping, record: &serde_json::Value) {
    let Some(created) = record.get("created").and_then(serde_json::Value::as_str) else {
        return;
    };
    let Some(context) = recorded_container(spec, record) else {
        return;
    };
    let Some(caps) = context
        .get_mut("securityContext")
        .and_then(Value::as_mapping_mut)
        .and_then(|c| c.get_mut("capabilities"))
        .and_then(Value::as_mapping_mut)
    else {
        return;
    };
    let Some(drop) = caps.get_mut("drop").and_then(Value::as_sequence_mut) else {
        return;
    };
    let Some(ours) = drop.iter().rposition(|c| c.as_str() == Some("NET_RAW")) else {
        return;
    };
    drop.remove(ours);
    let levels = ["securityContext", "capabilities", "drop"];
    let from = levels
        .iter()
        .position(|l| *l == created)
        .unwrap_or(levels.len());
    if from <= 2 && drop.is_empty() {
        caps.shift_remove("drop");
    }
    if from <= 1 && caps.is_empty() {
        if let Some(sc) = context
            .get_mut("securityContext")
            .and_then(Value::as_mapping_mut)
        {
            sc.shift_remove("capabilities");
        }
    }
    if from == 0
        && context
            .get("securityContext")
            .and_then(Value::as_mapping)
            .is_some_and(Mapping::is_empty)
    {
        context.shift_remove("securityContext");
    }
}

fn annotation<'a>(meta: &'a Mapping, key: &str) -> Option<&'a str> {
    meta.get("annotations")?.get(key)?.as_str()
}

fn inject_pod(
    meta: &mut Mapping,
    spec: &mut Mapping,
    settings: &Settings,
    kind: &str,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<(), InjectError> {
    // Injecting again starts from the pod as it was, so twice equals once.
    uninject_pod(meta, spec);
    if annotation(meta, INJECT) == Some("false") {
        return Ok(());
    }
    // A pod on the node's network has the node's network namespace: the redirect would rewrite
    // the node's nat table and capture the connections of everything on the node's network (the
    // kubelet, host daemons, every other host-network pod), exempting only the proxy's UID there.
    // Skipped, not refused (nothing in the pod could change to make it injectable, and refusing
    // would stop the whole stream), but said, so that nobody takes it to be behind a sidecar.
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        warnings.push(format!(
            "{kind} {name}: not injected: it sets hostNetwork: true, so its network namespace is \
             the node's, where the redirect would capture the node's own connections; its traffic \
             goes without a sidecar, governed by the host tables only (the annotation {INJECT}: \
             \"false\" says that is meant, and silences this)"
        ));
        return Ok(());
    }
    for (key, names) in [
        ("initContainers", &[REDIRECT, SIDECAR][..]),
        ("volumes", &[CONFIG_VOLUME, TOKEN_VOLUME][..]),
    ] {
        let list = spec
            .get(key)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten();
        if let Some(taken) = list
            .filter_map(|v| v.get("name").and_then(Value::as_str))
            .find(|n| names.contains(n))
        {
            return Err(InjectError::NameTaken {
                kind: kind.to_owned(),
                name: name.to_owned(),
                taken: taken.to_owned(),
            });
        }
    }
    if let Some(container) = runs_as(spec, settings.proxy_uid) {
        return Err(InjectError::RunsAsProxyUid {
            kind: kind.to_owned(),
            name: name.to_owned(),
            container,
            uid: settings.proxy_uid,
        });
    }
    let bad = |annotation: &'static str, message: String| InjectError::Annotation {
        kind: kind.to_owned(),
        name: name.to_owned(),
        annotation,
        message,
    };
    let port = |key: &'static str, default: u16| -> Result<u16, InjectError> {
        match annotation(meta, key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(key, format!("{v:?} is not a port"))),
        }
    };
    let list = |key: &'static str| -> Vec<String> {
        annotation(meta, key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let accepted = list(ALLOW_BYPASS);
    let names: Vec<&str> = APP_SECTIONS
        .into_iter()
        .filter_map(|key| spec.get(key).and_then(Value::as_sequence))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    // A name that matches no container accepts nothing: most likely a typo, or "true".
    if let Some(unknown) = accepted.iter().find(|a| !names.contains(&a.as_str())) {
        return Err(bad(
            ALLOW_BYPASS,
            format!("{unknown:?} is not the name of one of the pod's containers"),
        ));
    }
    let harden = check_bypass(spec, &accepted, settings.proxy_uid, kind, name, warnings)?;
    let inbound = port("palisade.io/inbound-port", settings.inbound_port)?;
    let outbound = port("palisade.io/outbound-port", settings.outbound_port)?;
    check_ports(
        spec,
        &[
            (settings.admin_port, "its admin server"),
            (settings.probe_port, "the kubelet's probes and /metrics"),
            (inbound, "transparent inbound"),
            (outbound, "transparent outbound"),
        ],
        kind,
        name,
    )?;
    warn_of_http_hooks(spec, kind, name, warnings);
    // The admin port is on loopback (never redirected, listed for clarity); the probe port is
    // where the kubelet and Prometheus reach the sidecar in plaintext.
    let mut exclude_inbound = vec![
        settings.admin_port.to_string(),
        settings.probe_port.to_string(),
    ];
    for p in list("palisade.io/exclude-inbound-ports") {
        p.parse::<u16>().map_err(|_| {
            bad(
                "palisade.io/exclude-inbound-ports",
                format!("{p:?} is not a port"),
            )
        })?;
        exclude_inbound.push(p);
    }
    exclude_inbound.sort_by_key(|p| p.parse::<u16>().unwrap_or(u16::MAX));
    exclude_inbound.dedup();
    // DNS: UDP is never captured, and TCP to port 53 (answers too large for UDP) goes straight to
    // the resolver, which is in no segment; the host's table still governs it.
    let mut exclude_outbound = vec![DNS_PORT.to_string()];
    for p in list("palisade.io/exclude-outbound-ports") {
        p.parse::<u16>().map_err(|_| {
            bad(
                "palisade.io/exclude-outbound-ports",
                format!("{p:?} is not a port"),
            )
        })?;
        exclude_outbound.push(p);
    }
    exclude_outbound.sort_by_key(|p| p.parse::<u16>().unwrap_or(u16::MAX));
    exclude_outbound.dedup();
    let exclude_cidrs = list("palisade.io/exclude-cidrs");
    let config_map = annotation(meta, "palisade.io/config")
        .unwrap_or(&settings.config_map)
        .to_owned();

    let mut before = serde_json::json!({
        "initContainers": spec.contains_key("initContainers"),
        "volumes": spec.contains_key("volumes"),
        "annotations": meta.contains_key("annotations"),
    });
    let mut dropped = Vec::new();
    for h in harden {
        let container = spec
            .get_mut(h.section)
            .and_then(Value::as_sequence_mut)
            .and_then(|list| list.get_mut(h.index));
        let Some(container) = container else {
            continue;
        };
        // The name as the manifest has it: none (null) for a container without one, which
        // uninject must find again by position (a stand-in such as "(unnamed)" would match no
        // container, and the drop would stay).
        let cname = container
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(created) = drop_net_raw(container) {
            dropped.push(serde_json::json!({
                "in": h.section, "index": h.index, "name": cname, "created": created,
            }));
        }
    }
    // Recorded only when there is something to undo, so a record stays short.
    if !dropped.is_empty() {
        before["droppedNetRaw"] = serde_json::Value::Array(dropped);
    }
    let rewritten = probes::rewrite(spec, settings.probe_port, kind, name, warnings);
    if !rewritten.record.is_empty() {
        before["probes"] = serde_json::Value::Array(rewritten.record);
    }
    // Prometheus' usual annotations, for the sidecar's metrics; a pod that already has its own
    // keeps them (its scraper would meet mTLS on the app's port, which the warning says).
    let has_scrape = annotations_of(meta).any(|k| k.starts_with("prometheus.io/"));
    if has_scrape {
        warnings.push(format!(
            "{kind} {name}: its prometheus.io annotations are kept, so Prometheus scrapes the app, \
             whose port is behind mTLS now; the sidecar's metrics are on port {} (/metrics)",
            settings.probe_port
        ));
    } else {
        before["scrape"] = serde_json::Value::Bool(true);
    }

    let mut redirect_args = vec![
        "sidecar".to_owned(),
        "redirect".into(),
        "--inbound-port".into(),
        inbound.to_string(),
        "--outbound-port".into(),
        outbound.to_string(),
        "--proxy-uid".into(),
        settings.proxy_uid.to_string(),
        "--exclude-inbound-ports".into(),
        exclude_inbound.join(","),
    ];
    redirect_args.extend([
        "--exclude-outbound-ports".into(),
        exclude_outbound.join(","),
    ]);
    if !exclude_cidrs.is_empty() {
        redirect_args.extend(["--exclude-cidrs".into(), exclude_cidrs.join(",")]);
    }
    let redirect = yaml(serde_json::json!({
        "name": REDIRECT,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy.as_str(),
        "args": redirect_args,
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]},
        },
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
    }));
    let probe = serde_json::json!({
        "exec": {"command": ["/usr/local/bin/palisade", "sidecar", "probe", "--admin", format!("127.0.0.1:{}", settings.admin_port)]},
        "periodSeconds": 2,
        "failureThreshold": 30,
    });
    let sidecar = yaml(serde_json::json!({
        "name": SIDECAR,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy.as_str(),
        "restartPolicy": "Always",
        "args": ["sidecar", "run", "--config", "/etc/palisade/sidecar.yaml", "--metrics", format!("[::]:{}", settings.probe_port), "--log-format", "json"],
        "ports": [{"name": "palisade-probe", "containerPort": settings.probe_port, "protocol": "TCP"}],
        "securityContext": {
            "runAsUser": settings.proxy_uid,
            "runAsGroup": settings.proxy_uid,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "startupProbe": probe,
        "readinessProbe": probe,
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": "/etc/palisade", "readOnly": true},
            {"name": TOKEN_VOLUME, "mountPath": "/var/run/secrets/palisade", "readOnly": true},
        ],
        // 256Mi fits the caps of the sidecar.yaml `palisade config sidecar` writes (450 connections
        // per direction, a policy up to 1 MiB): docs/INSTALL.md, "Resources".
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
    }));
    let volumes = [
        yaml(serde_json::json!({"name": CONFIG_VOLUME, "configMap": {"name": config_map}})),
        yaml(
            serde_json::json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": settings.token_audience, "expirationSeconds": 3600, "path": "token"}}]}}),
        ),
    ];

    let mut sidecar = sidecar;
    if !rewritten.app_probes.is_empty() {
        let probes = serde_json::Value::Object(rewritten.app_probes).to_string();
        if let Some(c) = sidecar.as_mapping_mut() {
            c.insert(
                "env".into(),
                yaml(serde_json::json!([{"name": "PALISADE_APP_PROBES", "value": probes}])),
            );
        }
    }
    let init = sequence(spec, "initContainers");
    // The redirect first, the sidecar next: both before the app's own init containers, so that
    // those reach the network through the sidecar too.
    init.insert(0, redirect);
    init.insert(1, sidecar);
    sequence(spec, "volumes").extend(volumes);
    let scrape = before.get("scrape").is_some();
    let annotations = annotations(meta);
    if scrape {
        for (key, value) in [
            ("prometheus.io/scrape", "true".to_owned()),
            ("prometheus.io/port", settings.probe_port.to_string()),
            ("prometheus.io/path", "/metrics".to_owned()),
        ] {
            annotations.insert(key.into(), Value::String(value));
        }
    }
    annotations.insert(INJECTED.into(), Value::String(before.to_string()));
    Ok(())
}

/// Refuses a pod whose app declares, or is probed on, a port the sidecar listens on: the app
/// could not bind it (or the sidecar could not), or the probe would reach the sidecar itself.
fn check_ports(
    spec: &Mapping,
    ours: &[(u16, &'static str)],
    kind: &str,
    name: &str,
) -> Result<(), InjectError> {
    for section in APP_SECTIONS {
        for container in spec
            .get(section)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let declared = container
                .get("ports")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("containerPort").and_then(Value::as_u64));
            let probed = ["livenessProbe", "readinessProbe", "startupProbe"]
                .into_iter()
                .filter_map(|p| container.get(p))
                .flat_map(|p| ["httpGet", "tcpSocket", "grpc"].map(|h| p.get(h)))
                .flatten()
                .filter_map(|h| h.get("port").and_then(Value::as_u64));
            for port in declared.chain(probed) {
                if let Some((port, what)) = ours.iter().find(|(p, _)| u64::from(*p) == port) {
                    return Err(InjectError::PortTaken {
                        kind: kind.to_owned(),
                        name: name.to_owned(),
                        container: container
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("(unnamed)")
                            .to_owned(),
                        port: *port,
                        what,
                    });
                }
            }
        }
    }
    Ok(())
}

/// `httpGet` lifecycle hooks are sent by the kubelet in plaintext to the pod, like probes, but
/// cannot be rewritten (the kubelet runs them once, at a moment the sidecar cannot be asked to
/// mirror): in strict mode they fail, and a failing postStart kills the container.
fn warn_of_http_hooks(spec: &Mapping, kind: &str, name: &str, warnings: &mut Vec<String>) {
    for container in APP_SECTIONS
        .into_iter()
        .filter_map(|s| spec.get(s).and_then(Value::as_sequence))
        .flatten()
    {
        for hook in ["postStart", "preStop"] {
            let http = container
                .get("lifecycle")
                .and_then(|l| l.get(hook))
                .and_then(|h| h.get("httpGet"));
            if http.is_some_and(|h| {
                h.get("host")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
            }) {
                warnings.push(format!(
                    "{kind} {name}: container {}: its {hook} hook is an httpGet, which the kubelet \
                     sends in plaintext to the pod: in strict mode the sidecar refuses it (use an \
                     exec hook, or add the port to palisade.io/exclude-inbound-ports)",
                    container.get("name").and_then(Value::as_str).unwrap_or("(unnamed)")
                ));
            }
        }
    }
}

fn annotations_of(meta: &Mapping) -> impl Iterator<Item = &str> {
    meta.get("annotations")
        .and_then(Value::as_mapping)
        .into_iter()
        .flat_map(|a| a.keys())
        .filter_map(Value::as_str)
}

fn uninject_pod(meta: &mut Mapping, spec: &mut Mapping) {
    let Some(record) = annotation(meta, INJECTED).map(str::to_owned) else {
        return;
    };
    let before: serde_json::Value = serde_json::from_str(&record).unwrap_or_default();
    let had = |key: &str| {
        before
            .get(key)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true)
    };
    let ours = |v: &Value, names: &[&str]| {
        v.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| names.contains(&n))
    };
    for (key, names) in [
        ("initContainers", &[REDIRECT, SIDECAR][..]),
        ("volumes", &[CONFIG_VOLUME, TOKEN_VOLUME][..]),
    ] {
        if let Some(list) = spec.get_mut(key).and_then(Value::as_sequence_mut) {
            list.retain(|v| !ours(v, names));
            if list.is_empty() && !had(key) {
                spec.shift_remove(key);
            }
        }
    }
    // After our init containers are gone: the record counts the app's init containers from 0.
    if let Some(dropped) = before
        .get("droppedNetRaw")
        .and_then(serde_json::Value::as_array)
    {
        for record in dropped {
            restore_net_raw(spec, record);
        }
    }
    if let Some(rewritten) = before.get("probes").and_then(serde_json::Value::as_array) {
        for record in rewritten {
            probes::restore(spec, record);
        }
    }
    if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_mapping_mut) {
        if before.get("scrape").is_some() {
            for key in [
                "prometheus.io/scrape",
                "prometheus.io/port",
                "prometheus.io/path",
            ] {
                annotations.shift_remove(key);
            }
        }
        annotations.shift_remove(INJECTED);
        if annotations.is_empty() && !had("annotations") {
            meta.shift_remove("annotations");
        }
    }
}

fn sequence<'a>(spec: &'a mut Mapping, key: &str) -> &'a mut Vec<Value> {
    if !matches!(spec.get(key), Some(Value::Sequence(_))) {
        spec.insert(key.into(), Value::Sequence(Vec::new()));
    }
    match spec.get_mut(key) {
        Some(Value::Sequence(list)) => list,
        _ => unreachable!("just inserted a sequence"),
    }
}

fn annotations(meta: &mut Mapping) -> &mut Mapping {
    if !matches!(meta.get("annotations"), Some(Value::Mapping(_))) {
        meta.insert("annotations".into(), Value::Mapping(Mapping::new()));
    }
    match meta.get_mut("annotations") {
        Some(Value::Mapping(m)) => m,
        _ => unreachable!("just inserted a mapping"),
    }
}

fn yaml(json: serde_json::Value) -> Value {
    serde_yaml::to_value(json).unwrap_or(Value::Null)
}
