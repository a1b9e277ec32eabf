//! `palisade inject`: a pure transformation of Kubernetes manifests (multi-document YAML) that
//! puts a workload's pods behind Palisade, and `--uninject`, which takes it out again.
//!
//! - [`inject`] / [`uninject`]: a whole stream of documents; kinds that do not hold a pod
//!   template (Service, ConfigMap, ...) pass through unchanged.
//! - [`Settings`]: the image, ports and UID the injected containers use.
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
//! The ports of the app's kubelet probes are excluded from the redirect, so probes keep working.
//! Pods on the host's network are left alone: their namespace is the host's.

#![warn(missing_docs)]

use serde_yaml::{Mapping, Value};

/// Annotation recording an injection and what the pod had before it.
pub const INJECTED: &str = "palisade.io/injected";
/// Annotation opting a workload out (`"false"`).
pub const INJECT: &str = "palisade.io/inject";
const REDIRECT: &str = "palisade-redirect";
const SIDECAR: &str = "palisade-sidecar";
const CONFIG_VOLUME: &str = "palisade-config";
const TOKEN_VOLUME: &str = "palisade-token";

/// Why a stream could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The input is not YAML.
    #[error("document {document}: {message}")]
    Yaml {
        /// 1-based document number in the stream.
        document: usize,
        /// The parser's message, with its line and column.
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
    /// The UID the sidecar runs as (exempt from the redirect).
    pub proxy_uid: u32,
    /// Default transparent inbound port.
    pub inbound_port: u16,
    /// Default transparent outbound port.
    pub outbound_port: u16,
    /// The sidecar's admin port (loopback; excluded from the redirect).
    pub admin_port: u16,
    /// Default ConfigMap with sidecar.yaml, policy.yaml and bundle.pem.
    pub config_map: String,
    /// Audience of the projected service-account token (the CA's `--jwt-audience`).
    pub token_audience: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            image: "palisade:latest".into(),
            proxy_uid: 1337,
            inbound_port: 15006,
            outbound_port: 15001,
            admin_port: 15000,
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
        let mut doc = Value::deserialize_from(document).map_err(|e| InjectError::Yaml {
            document: i + 1,
            message: e.to_string(),
        })?;
        if doc.is_null() {
            continue;
        }
        each(&mut doc)?;
        // Written as JSON, which is YAML too: serde_yaml writes strings such as "yes" or "on"
        // unquoted, and Kubernetes reads YAML 1.1, where those are booleans.
        let json = serde_json::to_string_pretty(&doc).map_err(|e| InjectError::Yaml {
            document: i + 1,
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
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => &["spec", "template"],
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
    if annotation(meta, INJECT) == Some("false")
        || spec.get("hostNetwork").and_then(Value::as_bool) == Some(true)
    {
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
    let inbound = port("palisade.io/inbound-port", settings.inbound_port)?;
    let outbound = port("palisade.io/outbound-port", settings.outbound_port)?;
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
    let mut exclude_inbound = vec![settings.admin_port.to_string()];
    let (dedicated, served) = probe_ports(spec);
    exclude_inbound.extend(dedicated.iter().map(u16::to_string));
    for port in served {
        warnings.push(format!(
            "{kind} {name}: a kubelet probe uses port {port}, which the app also serves; it stays \
             behind mTLS, so in strict mode the kubelet's plaintext probe is refused (give the probe \
             a port of its own, or use permissive mode while migrating)"
        ));
    }
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

    let before = serde_json::json!({
        "initContainers": spec.contains_key("initContainers"),
        "volumes": spec.contains_key("volumes"),
        "annotations": meta.contains_key("annotations"),
    });

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
        "restartPolicy": "Always",
        "args": ["sidecar", "run", "--config", "/etc/palisade/sidecar.yaml", "--log-format", "json"],
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
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
    }));
    let volumes = [
        yaml(serde_json::json!({"name": CONFIG_VOLUME, "configMap": {"name": config_map}})),
        yaml(
            serde_json::json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": settings.token_audience, "expirationSeconds": 3600, "path": "token"}}]}}),
        ),
    ];

    let init = sequence(spec, "initContainers");
    // The redirect first, the sidecar next: both before the app's own init containers, so that
    // those reach the network through the sidecar too.
    init.insert(0, redirect);
    init.insert(1, sidecar);
    sequence(spec, "volumes").extend(volumes);
    annotations(meta).insert(INJECTED.into(), Value::String(before.to_string()));
    Ok(())
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
    if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_mapping_mut) {
        annotations.shift_remove(INJECTED);
        if annotations.is_empty() && !had("annotations") {
            meta.shift_remove("annotations");
        }
    }
}

/// The ports of the app containers' kubelet probes (HTTP, TCP and gRPC; named ports resolved),
/// split into ports used only by probes, which the redirect may leave alone, and ports the app
/// also declares as serving, which must stay behind mTLS (excluding them would let any plaintext
/// peer reach the app there).
fn probe_ports(spec: &Mapping) -> (Vec<u16>, Vec<u16>) {
    let containers: Vec<&Value> = spec
        .get("containers")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .collect();
    let declared: Vec<u64> = containers
        .iter()
        .filter_map(|c| c.get("ports").and_then(Value::as_sequence))
        .flatten()
        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
        .collect();
    let (mut dedicated, mut served) = (Vec::new(), Vec::new());
    for container in &containers {
        let named = |name: &str| {
            container
                .get("ports")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|p| p.get("containerPort"))
                .and_then(Value::as_u64)
        };
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let Some(probe) = container.get(probe) else {
                continue;
            };
            for handler in ["httpGet", "tcpSocket", "grpc"] {
                let port = match probe.get(handler).and_then(|h| h.get("port")) {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.parse().ok().or_else(|| named(s)),
                    _ => None,
                };
                let Some(port) = port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
                    continue;
                };
                let list = if declared.contains(&u64::from(port)) {
                    &mut served
                } else {
                    &mut dedicated
                };
                if !list.contains(&port) {
                    list.push(port);
                }
            }
        }
    }
    (dedicated, served)
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
