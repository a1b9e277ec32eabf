//! The app's kubelet probes, rewritten to go through the sidecar, and back.
//!
//! In strict mode the kubelet's plaintext probe of a port the app serves would meet the sidecar's
//! mTLS and fail, so every `httpGet`, `tcpSocket` and `grpc` probe of the app's containers (and of
//! its native sidecars, the init containers with `restartPolicy: Always`) becomes
//! `httpGet /app-health/<container>/<livez|readyz|startupz>` on the sidecar's probe port, which
//! the redirect leaves alone. The original, its named port resolved, goes to the sidecar in
//! `PALISADE_APP_PROBES`; the sidecar runs it against the app on loopback
//! (`palisade_sidecar::app_probe`). Every other field of the probe (periods, thresholds, the
//! timeout) stays, so the kubelet judges as before. The injection record keeps each original
//! handler, so that uninject puts it back where it was.
//!
//! Left alone: `exec` probes (they run inside the container, past no network) and `httpGet` and
//! `tcpSocket` probes with a `host` (they go to another host, not into the pod). A probe on a port name the
//! container does not declare is left alone with a warning: the kubelet would fail it anyway.

use serde_yaml::{Mapping, Value};

/// The probe fields of a container and the name of each in the sidecar's paths.
const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// The handlers the sidecar can run.
const HANDLERS: [&str; 3] = ["httpGet", "tcpSocket", "grpc"];

/// The sidecar cuts a longer probe timeout to this (`palisade_sidecar::app_probe::MAX_TIMEOUT`).
const MAX_TIMEOUT_SECONDS: u64 = 25;

/// What rewriting a pod's probes gave.
#[derive(Default)]
pub(crate) struct Rewritten {
    /// Path → original probe (port numeric), the value of `PALISADE_APP_PROBES`.
    pub app_probes: serde_json::Map<String, serde_json::Value>,
    /// One entry per rewritten probe, for the injection record.
    pub record: Vec<serde_json::Value>,
}

/// Rewrites the probes of the app's containers to `GET /app-health/...` on `probe_port`.
pub(crate) fn rewrite(
    spec: &mut Mapping,
    probe_port: u16,
    kind: &str,
    name: &str,
    warnings: &mut Vec<String>,
) -> Rewritten {
    let mut out = Rewritten::default();
    for section in ["initContainers", "containers"] {
        let Some(list) = spec.get_mut(section).and_then(Value::as_sequence_mut) else {
            continue;
        };
        for (index, container) in list.iter_mut().enumerate() {
            let Some(container) = container.as_mapping_mut() else {
                continue;
            };
            // Only native sidecars among init containers may have probes.
            if section == "initContainers"
                && container.get("restartPolicy").and_then(Value::as_str) != Some("Always")
            {
                continue;
            }
            // Nameless containers are refused by the API server; their probes have no path.
            let Some(cname) = container
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                continue;
            };
            let ports = container.get("ports").cloned();
            for (field, short) in PROBES {
                let Some(probe) = container.get_mut(field).and_then(Value::as_mapping_mut) else {
                    continue;
                };
                let Some(handler) = HANDLERS.into_iter().find(|h| probe.contains_key(*h)) else {
                    continue;
                };
                let action = probe.get(handler).cloned().unwrap_or(Value::Null);
                // httpGet and tcpSocket may name another host: the kubelet goes there, not into the
                // pod, so the probe needs no sidecar.
                if action
                    .get("host")
                    .and_then(Value::as_str)
                    .is_some_and(|h| !h.is_empty())
                {
                    continue;
                }
                let who = cname.as_str();
                let Some(port) = resolve_port(action.get("port"), ports.as_ref()) else {
                    warnings.push(format!(
                        "{kind} {name}: container {who}: the {field} names port {}, which the \
                         container does not declare; it is left as it is (the kubelet cannot \
                         resolve it either)",
                        value_text(action.get("port"))
                    ));
                    continue;
                };
                let timeout = probe.get("timeoutSeconds").and_then(Value::as_u64);
                if timeout.is_some_and(|t| t > MAX_TIMEOUT_SECONDS) {
                    warnings.push(format!(
                        "{kind} {name}: container {who}: the {field} waits {} s; the sidecar runs \
                         it with at most {MAX_TIMEOUT_SECONDS} s",
                        timeout.unwrap_or_default()
                    ));
                }
                let path = format!("/app-health/{who}/{short}");
                out.app_probes.insert(
                    path.clone(),
                    app_probe(handler, &action, port, timeout.unwrap_or(1)),
                );
                out.record.push(serde_json::json!({
                    "in": section,
                    "index": index,
                    "name": cname,
                    "probe": field,
                    "handler": {handler: serde_json::to_value(&action).unwrap_or_default()},
                }));
                let ours = yaml(serde_json::json!({
                    "path": path, "port": probe_port, "scheme": "HTTP",
                }));
                replace_key(probe, handler, "httpGet", ours);
            }
        }
    }
    out
}

/// Puts back the probe an injection record entry names, if it is still the one inject wrote.
pub(crate) fn restore(spec: &mut Mapping, record: &serde_json::Value) {
    let (Some(field), Some((handler, original))) = (
        record.get("probe").and_then(serde_json::Value::as_str),
        record
            .get("handler")
            .and_then(serde_json::Value::as_object)
            .and_then(|h| h.iter().next()),
    ) else {
        return;
    };
    let Some(container) = crate::recorded_container(spec, record) else {
        return;
    };
    let Some(probe) = container.get_mut(field).and_then(Value::as_mapping_mut) else {
        return;
    };
    let ours = probe
        .get("httpGet")
        .and_then(|h| h.get("path"))
        .and_then(Value::as_str)
        .is_some_and(|p| p.starts_with("/app-health/"));
    if ours {
        replace_key(probe, "httpGet", handler, yaml(original.clone()));
    }
}

/// The probe the sidecar runs: the original handler with a numeric port, and its timeout.
fn app_probe(handler: &str, action: &Value, port: u16, timeout: u64) -> serde_json::Value {
    let mut action = serde_json::to_value(action).unwrap_or_default();
    if let Some(a) = action.as_object_mut() {
        a.insert("port".into(), port.into());
        a.remove("host");
    }
    serde_json::json!({handler: action, "timeoutSeconds": timeout})
}

/// A probe's port as a number: a number, or the name of one of the container's ports.
fn resolve_port(port: Option<&Value>, ports: Option<&Value>) -> Option<u16> {
    let number = match port? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok().or_else(|| {
            ports
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(s.as_str()))
                .and_then(|p| p.get("containerPort"))
                .and_then(Value::as_u64)
        }),
        _ => None,
    }?;
    u16::try_from(number).ok().filter(|p| *p > 0)
}

fn value_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => format!("{s:?}"),
        Some(Value::Number(n)) => n.to_string(),
        _ => "(none)".into(),
    }
}

/// Replaces `old` by `new: value` in place, so that the keys keep their order.
fn replace_key(map: &mut Mapping, old: &str, new: &str, value: Value) {
    let entries = std::mem::take(map);
    for (key, v) in entries {
        if key.as_str() == Some(old) {
            map.insert(new.into(), value.clone());
        } else if key.as_str() != Some(new) {
            map.insert(key, v);
        }
    }
}

fn yaml(json: serde_json::Value) -> Value {
    serde_yaml::to_value(json).unwrap_or(Value::Null)
}
