//! `palisade inject` on real-world manifests, checked in unmodified under
//! `tests/manifests/real-world/` (their sources, commits and licenses are in its SOURCES.md):
//! Istio's bookinfo and addons, Online Boutique, the guestbook, Cassandra, CockroachDB,
//! kube-state-metrics, metrics-server, kube-prometheus, ingress-nginx, the descheduler's CronJob,
//! a CSI driver's eight-container StatefulSet and others. For every set:
//!
//! - every `httpGet` (without `host`), `tcpSocket` and `grpc` probe of the app's containers is
//!   rewritten to the sidecar's probe port, and the sidecar of the same pod is handed exactly the
//!   original with its port resolved (the two halves must agree, or the kubelet's probe would test
//!   something else);
//! - no probe is warned about;
//! - every injected object validates against Kubernetes 1.30 and 1.37 (kubernetes-validate,
//!   strict);
//! - injecting twice equals injecting once, and uninjecting gives back the input, value for value.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kubernetes::{problems, validator};
use common::*;
use serde_json::Value;

fn sets() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/real-world");
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    assert!(sets.len() >= 10, "{sets:?}");
    sets
}

fn files(set: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(set)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// Sets inject must refuse, and why: a privileged container could delete the redirect table.
const REFUSED: [(&str, &str); 1] = [(
    "csi-hostpath/csi-hostpath-plugin.yaml",
    "StatefulSet csi-hostpathplugin: container hostpath is privileged",
)];

fn try_inject(args: &[&str], input: &str) -> std::process::Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args);
    let (out, timed_out) = run_bounded(&mut cmd, input.as_bytes(), Duration::from_secs(60));
    assert!(!timed_out, "{args:?} took more than 60 s");
    out
}

fn inject(args: &[&str], input: &str) -> (String, String) {
    let out = try_inject(args, input);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn values(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

/// Every pod spec in a document, with its workload's name.
fn pod_specs(doc: &Value) -> Vec<(String, &Value)> {
    let name = doc["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let spec = match doc["kind"].as_str().unwrap_or("") {
        "Pod" => &doc["spec"],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &doc["spec"]["template"]["spec"],
        "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        "List" => {
            return doc["items"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(pod_specs)
                .collect()
        }
        _ => return Vec::new(),
    };
    if spec.is_object() {
        vec![(name, spec)]
    } else {
        Vec::new()
    }
}

const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// The app's containers that may have probes: containers, and native sidecars.
fn probed_containers(spec: &Value) -> Vec<&Value> {
    let init = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"] == "Always" && c["name"] != "palisade-sidecar");
    spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(init)
        .collect()
}

/// (path the sidecar serves, the probe the sidecar must run) for every probe inject must
/// rewrite, worked out from the input alone.
fn expected_app_probes(spec: &Value) -> Vec<(String, Value)> {
    let mut expected = Vec::new();
    for container in probed_containers(spec) {
        let cname = container["name"].as_str().unwrap();
        for (field, short) in PROBES {
            let probe = &container[field];
            let Some((handler, action)) = ["httpGet", "tcpSocket", "grpc"]
                .into_iter()
                .find_map(|h| probe.get(h).map(|a| (h, a)))
            else {
                continue;
            };
            if action.get("host").is_some_and(|h| h != "") {
                continue;
            }
            let port = match &action["port"] {
                Value::Number(n) => n.as_u64().unwrap(),
                Value::String(name) => container["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"] == *name)
                    .and_then(|p| p["containerPort"].as_u64())
                    .unwrap_or_else(|| panic!("{cname}: port {name} is not declared")),
                other => panic!("{cname}: port {other}"),
            };
            let mut action = action.clone();
            action["port"] = port.into();
            expected.push((
                format!("/app-health/{cname}/{short}"),
                serde_json::json!({handler: action, "timeoutSeconds":
                    probe.get("timeoutSeconds").cloned().unwrap_or(1.into())}),
            ));
        }
    }
    expected
}

/// kubernetes-validate's complaints about `text`, the temporary file's name taken out.
fn validation_problems(validator: &Path, text: &str) -> Vec<String> {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let name = file.path().display().to_string();
    problems(validator, file.path())
        .into_iter()
        .map(|p| p.replace(&name, "FILE"))
        .filter(|p| !p.starts_with("no Kubernetes object was validated"))
        .collect()
}

#[test]
fn real_world_manifests_have_every_probe_rewritten_and_validate_and_round_trip() {
    let validator = validator();
    let mut rewritten_in_all = 0;
    let mut pods_in_all = 0;
    for set in sets() {
        let set_name = set.file_name().unwrap().to_string_lossy().into_owned();
        let mut injected_set = String::new();
        let mut input_set = String::new();
        for file in files(&set) {
            let shown = format!("{set_name}/{}", file.file_name().unwrap().to_string_lossy());
            let input = std::fs::read_to_string(&file).unwrap();
            if let Some((_, why)) = REFUSED.iter().find(|(f, _)| *f == shown) {
                let out = try_inject(&["inject", "-"], &input);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success() && err.contains(why), "{shown}: {err}");
                continue;
            }
            let (once, warnings) = inject(&["inject", "-"], &input);
            assert!(
                !warnings.contains("probe"),
                "{shown}: a probe was warned about:\n{warnings}"
            );
            let (twice, _) = inject(&["inject", "-"], &once);
            assert_eq!(once, twice, "{shown}: injecting twice differs from once");
            let (back, _) = inject(&["inject", "-", "--uninject"], &once);
            assert_eq!(
                values(&back),
                values(&input),
                "{shown}: uninject did not restore it"
            );

            let inputs = values(&input);
            let outputs = values(&once);
            assert_eq!(inputs.len(), outputs.len(), "{shown}");
            for (before, after) in inputs.iter().zip(&outputs) {
                for ((name, spec_in), (_, spec_out)) in
                    pod_specs(before).into_iter().zip(pod_specs(after))
                {
                    if spec_in["hostNetwork"] == true {
                        continue;
                    }
                    pods_in_all += 1;
                    let expected = expected_app_probes(spec_in);
                    // Every such probe now asks the sidecar, at its own path.
                    for container in probed_containers(spec_out) {
                        let cname = container["name"].as_str().unwrap_or("");
                        for (field, short) in PROBES {
                            let probe = &container[field];
                            for handler in ["tcpSocket", "grpc"] {
                                assert!(probe.get(handler).is_none(), "{shown} {name}: {probe}");
                            }
                            if let Some(get) = probe.get("httpGet") {
                                if get.get("host").is_some() {
                                    continue;
                                }
                                assert_eq!(get["port"], 15020, "{shown} {name}: {probe}");
                                assert_eq!(get["scheme"], "HTTP", "{shown} {name}");
                                // Its own path: this container, this kind of probe.
                                let own = format!("/app-health/{cname}/{short}");
                                assert_eq!(get["path"], own.as_str(), "{shown} {name}: {probe}");
                                assert!(
                                    expected.iter().any(|(path, _)| *path == own),
                                    "{shown} {name}: {own} is not one of the sidecar's"
                                );
                            }
                        }
                    }
                    // And the sidecar is handed exactly the originals.
                    let sidecar = spec_out["initContainers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|c| c["name"] == "palisade-sidecar")
                        .unwrap_or_else(|| panic!("{shown} {name}: no sidecar"));
                    let given: Value = sidecar["env"]
                        .as_array()
                        .and_then(|env| env.iter().find(|e| e["name"] == "PALISADE_APP_PROBES"))
                        .map(|e| serde_json::from_str(e["value"].as_str().unwrap()).unwrap())
                        .unwrap_or(Value::Object(Default::default()));
                    let expected: serde_json::Map<String, Value> = expected.into_iter().collect();
                    assert_eq!(given, Value::Object(expected.clone()), "{shown} {name}");
                    rewritten_in_all += expected.len();
                }
            }
            // The objects inject changed: others pass through untouched, and some upstream
            // ones name API versions Kubernetes has since removed (policy/v1beta1).
            for (before, after) in inputs.iter().zip(&outputs) {
                if !pod_specs(before).is_empty() {
                    input_set.push_str(&serde_json::to_string_pretty(before).unwrap());
                    input_set.push_str("\n---\n");
                    injected_set.push_str(&serde_json::to_string_pretty(after).unwrap());
                    injected_set.push_str("\n---\n");
                }
            }
        }
        if let Some(validator) = validator.as_ref().filter(|_| !injected_set.is_empty()) {
            let found = validation_problems(validator, &injected_set);
            // A few upstream objects are not valid as they are (metrics-server's base Deployment
            // leaves its selector to kustomize): inject must add no problem of its own.
            let had = if found.is_empty() {
                Vec::new()
            } else {
                validation_problems(validator, &input_set)
            };
            let added: Vec<&String> = found.iter().filter(|p| !had.contains(p)).collect();
            assert!(
                added.is_empty(),
                "{set_name}: the injected manifests do not validate:\n{added:?}"
            );
        }
    }
    // What SOURCES.md counts: 58 probes that go through the network, in 33 containers.
    assert!(
        rewritten_in_all >= 50,
        "only {rewritten_in_all} probes rewritten"
    );
    assert!(pods_in_all >= 40, "only {pods_in_all} pods injected");
}
