//! `palisade inject` over manifests shaped like real ones (examples/kubernetes/inject/input/):
//! the output equals the golden file beside it (which tests/kubernetes_manifests.rs validates
//! against the Kubernetes schemas, like every manifest under examples/kubernetes/); injecting
//! twice equals injecting once; uninjecting gives back the input, value for value.
//! `PALISADE_BLESS=1` rewrites the golden files.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes/inject")
}

/// Runs palisade with `args` and `stdin`; its output.
fn palisade_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs palisade, which must succeed; its stdout.
fn run(args: &[&str], stdin: &str) -> String {
    let out = palisade_with_stdin(args, stdin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn values(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

fn inputs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join("input"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2);
    files
}

fn golden(input: &Path) -> PathBuf {
    dir().join(input.file_name().unwrap())
}

#[test]
fn inject_output_equals_the_golden_files() {
    for input in inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let injected = run(&["inject", "-"], &text);
        let golden = golden(&input);
        if std::env::var("PALISADE_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(&golden, &injected).unwrap();
        }
        assert_eq!(
            injected,
            std::fs::read_to_string(&golden).unwrap(),
            "{} differs from {} (PALISADE_BLESS=1 rewrites it)",
            input.display(),
            golden.display()
        );
    }
}

#[test]
fn twice_equals_once_and_uninject_restores_the_input() {
    for input in inputs() {
        let text = std::fs::read_to_string(&input).unwrap();
        let once = run(&["inject", "-"], &text);
        let twice = run(&["inject", "-"], &once);
        assert_eq!(
            once,
            twice,
            "{}: injecting twice differs from once",
            input.display()
        );
        let back = run(&["inject", "-", "--uninject"], &once);
        assert_eq!(
            values(&back),
            values(&text),
            "{}: uninject did not restore it",
            input.display()
        );
    }
}

#[test]
fn what_inject_adds_and_what_it_leaves() {
    let shop = values(&std::fs::read_to_string(dir().join("shop.yaml")).unwrap());
    let web = &shop[1]["spec"]["template"]["spec"];
    let init: Vec<&str> = web["initContainers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // The redirect, then the native sidecar, then the app's own init containers.
    assert_eq!(init, ["palisade-redirect", "palisade-sidecar", "migrate"]);
    let sidecar = &web["initContainers"][1];
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["securityContext"]["runAsUser"], 1337);
    assert_eq!(sidecar["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert!(sidecar["securityContext"]["capabilities"]
        .get("add")
        .is_none());
    let redirect = &web["initContainers"][0];
    let caps = &redirect["securityContext"]["capabilities"]["add"];
    assert_eq!(caps.as_sequence().unwrap().len(), 2);
    let args: Vec<&str> = redirect["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    // Only the admin port and the sidecar's probe port bypass the inbound redirect: the app's
    // probes go through the sidecar, so no port of the app does (not even 9901, which only the
    // probes use); the annotation's outbound port bypasses the outbound one.
    let at = |flag: &str| args[args.iter().position(|a| *a == flag).unwrap() + 1];
    assert_eq!(at("--exclude-inbound-ports"), "15000,15020");
    // DNS (53) always bypasses: TCP answers go straight to the resolver, in no segment.
    assert_eq!(at("--exclude-outbound-ports"), "53,5432");
    // A string that YAML 1.1 reads as a boolean stays a string.
    assert_eq!(shop[0]["data"]["CACHE_ENABLED"], "yes");
    // Untouched: the Service, the ConfigMap, the opted-out Deployment, the host-network Pod.
    let input = values(&std::fs::read_to_string(dir().join("input/shop.yaml")).unwrap());
    for i in [0, 2, 3] {
        assert_eq!(shop[i], input[i]);
    }
    let batch = values(&std::fs::read_to_string(dir().join("batch.yaml")).unwrap());
    let batch_input = values(&std::fs::read_to_string(dir().join("input/batch.yaml")).unwrap());
    assert_eq!(batch[3], batch_input[3], "a hostNetwork pod is left alone");
    // The CronJob's pod, three levels down, is injected; the Job's annotation sets its port.
    let cron = &batch[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(cron["initContainers"][1]["name"], "palisade-sidecar");
    let job_args = &batch[1]["spec"]["template"]["spec"]["initContainers"][0]["args"];
    assert_eq!(job_args[3], "16006");
}

#[test]
fn a_bad_annotation_is_refused_with_the_workload_named() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    palisade.io/inbound-port: eighty\nspec:\n  containers:\n  - name: c\n    image: i\n";
    let out = inject_stdin(text);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Pod p: annotation palisade.io/inbound-port"),
        "{err}"
    );
}

fn inject_stdin(text: &str) -> std::process::Output {
    palisade_with_stdin(&["inject", "-"], text)
}

#[test]
fn names_inject_would_add_are_refused() {
    let taken = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  initContainers:\n  - name: palisade-sidecar\n    image: mine\n  containers:\n  - name: c\n    image: i\n";
    let out = inject_stdin(taken);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already has an init container or volume named palisade-sidecar"),
        "{err}"
    );
    // And uninject never removes what inject did not add.
    let back = run(&["inject", "-", "--uninject"], taken);
    assert_eq!(values(&back), values(taken));
}

/// A container running as the sidecar's UID would bypass the redirect (which exempts that UID):
/// refused, by the container's own runAsUser or the pod's; another UID is fine.
#[test]
fn a_container_running_as_the_proxy_uid_is_refused() {
    let own = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      runAsUser: 1337\n";
    let by_pod = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata:\n      labels: {a: b}\n    spec:\n      securityContext:\n        runAsUser: 1337\n      initContainers:\n      - name: setup\n        image: i\n        securityContext:\n          runAsUser: 1000\n      containers:\n      - name: worker\n        image: i\n";
    for (text, expected) in [
        (own, "Pod p: container app runs as UID 1337"),
        (by_pod, "Deployment d: container worker runs as UID 1337"),
    ] {
        let out = inject_stdin(text);
        assert!(!out.status.success(), "{expected}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    }
    let other = own.replace("1337", "1000");
    assert!(inject_stdin(&other).status.success());
}

/// A Pod named p with `spec` (YAML, its keys indented by two) and, when `allow` is given, the
/// annotation that accepts those containers as they are.
fn pod(spec: &str, allow: Option<&str>) -> String {
    let meta = allow
        .map(|a| format!("  annotations:\n    palisade.io/allow-bypass: \"{a}\"\n"))
        .unwrap_or_default();
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n{meta}spec:\n{spec}")
}

/// The Pod of `spec` is refused, in one sentence naming `container` and saying `how` it could
/// bypass the sidecar and which annotation accepts it; with that annotation it is injected.
fn refused_unless_accepted(spec: &str, container: &str, how: &str) {
    let out = inject_stdin(&pod(spec, None));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "not refused: {spec}\n{err}");
    assert!(
        err.contains(&format!("Pod p: container {container} {how}")),
        "{spec}\n{err}"
    );
    assert!(
        err.contains(&format!(
            "so it could bypass the sidecar (change that, or accept the risk with the annotation palisade.io/allow-bypass: \"{container}\")"
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    let accepted = inject_stdin(&pod(spec, Some(container)));
    assert!(
        accepted.status.success(),
        "{spec}\n{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
}

/// Issue 20, item 6: each way an app container could take its traffic past the sidecar (or reach
/// into the sidecar's process) is refused with the container named and the annotation that
/// accepts it; naming the container in that annotation lets the pod through.
#[test]
fn an_app_container_that_could_bypass_the_sidecar_is_refused_unless_the_annotation_names_it() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "  containers:\n  - name: app\n    image: i\n    securityContext:\n      privileged: true\n",
            "app",
            "is privileged",
        ),
        (
            "  containers:\n  - name: app\n    image: i\n    securityContext:\n      capabilities:\n        add: [NET_ADMIN]\n",
            "app",
            "adds capability NET_ADMIN",
        ),
        // Spelled as the runtimes also accept it: any case, with CAP_.
        (
            "  containers:\n  - name: app\n    image: i\n    securityContext:\n      capabilities:\n        add: [cap_net_raw]\n",
            "app",
            "adds capability NET_RAW",
        ),
        (
            "  containers:\n  - name: app\n    image: i\n    securityContext:\n      capabilities:\n        add: [ALL]\n",
            "app",
            "adds capability ALL, NET_ADMIN among them",
        ),
        // The app's init containers run after the redirect is in place: one with NET_ADMIN
        // could delete it for the whole pod.
        (
            "  initContainers:\n  - name: setup\n    image: i\n    securityContext:\n      capabilities:\n        add: [NET_ADMIN]\n  containers:\n  - name: app\n    image: i\n",
            "setup",
            "adds capability NET_ADMIN",
        ),
        (
            "  containers:\n  - name: app\n    image: i\n  ephemeralContainers:\n  - name: debug\n    image: i\n    securityContext:\n      privileged: true\n",
            "debug",
            "is privileged",
        ),
        // A shared process namespace with a container that may be root (nothing says otherwise).
        (
            "  shareProcessNamespace: true\n  containers:\n  - name: app\n    image: i\n",
            "app",
            "may hold CAP_SETUID and CAP_KILL in a pod with shareProcessNamespace: true",
        ),
        // Non-root, but it may gain root through a setuid program: allowPrivilegeEscalation is
        // not false.
        (
            "  shareProcessNamespace: true\n  securityContext:\n    runAsNonRoot: true\n  containers:\n  - name: app\n    image: i\n",
            "app",
            "may hold CAP_SETUID and CAP_KILL in a pod with shareProcessNamespace: true",
        ),
        // The container's runAsNonRoot overrides the pod's.
        (
            "  shareProcessNamespace: true\n  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      runAsUser: 0\n      runAsNonRoot: false\n      allowPrivilegeEscalation: false\n",
            "app",
            "may hold CAP_SETUID and CAP_KILL in a pod",
        ),
        // Non-root and no escalation, but it can trace any process it sees.
        (
            "  shareProcessNamespace: true\n  securityContext:\n    runAsNonRoot: true\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities:\n        add: [SYS_PTRACE]\n",
            "app",
            "may hold CAP_SYS_PTRACE in a pod with shareProcessNamespace: true",
        ),
    ];
    for (spec, container, how) in cases {
        refused_unless_accepted(spec, container, how);
    }
    // Accepting one container accepts that one only.
    let two = "  shareProcessNamespace: true\n  containers:\n  - name: app\n    image: i\n  - name: helper\n    image: i\n";
    let out = inject_stdin(&pod(two, Some("app")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Pod p: container helper may hold"), "{err}");
    assert!(inject_stdin(&pod(two, Some("app, helper")))
        .status
        .success());
    // And the same refusal in a workload's template, named by its kind and name.
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata:\n      labels: {a: b}\n    spec:\n      containers:\n      - name: worker\n        image: i\n        securityContext:\n          capabilities:\n            add: [NET_ADMIN]\n";
    let err = String::from_utf8_lossy(&inject_stdin(deployment).stderr).into_owned();
    assert!(
        err.contains("Deployment d: container worker adds capability NET_ADMIN"),
        "{err}"
    );
}

/// The annotation accepts containers by name: a name that matches none (a typo, or "true") is
/// refused, not taken as accepting nothing.
#[test]
fn the_allow_bypass_annotation_must_name_containers_of_the_pod() {
    let spec = "  containers:\n  - name: app\n    image: i\n    securityContext:\n      privileged: true\n";
    let out = inject_stdin(&pod(spec, Some("true")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Pod p: annotation palisade.io/allow-bypass: \"true\" is not the name of one of the pod's containers"),
        "{err}"
    );
}

/// A container that may hold CAP_SETUID can become UID 1337 and walk past the redirect
/// (`setpriv --reuid 1337 curl ...`). Most images run as root and many need SETUID, so inject
/// warns, naming the container and the fix, and injects; a container that cannot hold it (by its
/// own securityContext or the pod's) and one the annotation names are not warned about.
#[test]
fn a_container_that_may_hold_cap_setuid_is_warned_about_and_injected() {
    let warned: &[(&str, &str)] = &[
        (
            "  containers:\n  - name: app\n    image: i\n",
            "container app may run as root with CAP_SETUID (no runAsNonRoot: true and no runAsUser rule it out)",
        ),
        (
            "  securityContext:\n    runAsUser: 0\n  containers:\n  - name: app\n    image: i\n",
            "container app runs as root with CAP_SETUID",
        ),
        (
            "  securityContext:\n    runAsNonRoot: true\n  initContainers:\n  - name: setup\n    image: i\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      allowPrivilegeEscalation: false\n",
            "container setup may gain root and CAP_SETUID through a setuid program of its image (allowPrivilegeEscalation is not false)",
        ),
    ];
    for (spec, expected) in warned {
        let out = inject_stdin(&pod(spec, None));
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("warning: Pod p: {expected}, so it can take the sidecar's UID 1337 (setpriv --reuid 1337) and bypass the redirect; give it runAsNonRoot: true and allowPrivilegeEscalation: false, or drop SETUID if it never changes user, or accept the risk with the annotation palisade.io/allow-bypass:")),
            "{spec}\n{err}"
        );
    }
    let quiet: &[(&str, Option<&str>)] = &[
        (
            "  securityContext:\n    runAsNonRoot: true\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      allowPrivilegeEscalation: false\n",
            None,
        ),
        // The container's runAsUser overrides the pod's root.
        (
            "  securityContext:\n    runAsUser: 0\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      runAsUser: 1000\n      allowPrivilegeEscalation: false\n",
            None,
        ),
        (
            "  containers:\n  - name: app\n    image: i\n    securityContext:\n      capabilities:\n        drop: [SETUID]\n",
            None,
        ),
        ("  containers:\n  - name: app\n    image: i\n", Some("app")),
    ];
    for (spec, allow) in quiet {
        let out = inject_stdin(&pod(spec, *allow));
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("CAP_SETUID"), "{spec}\n{err}");
    }
}

/// Every app container gets NET_RAW in its capabilities.drop (a packet socket skips the redirect;
/// CRI-O never gives it, so apps do without it), unless it drops it already or the annotation
/// names it; uninject takes exactly that away (the golden files show it in full, and
/// tests/kubernetes_manifests.rs validates them). The proxy's GID (runAsGroup, fsGroup,
/// supplementalGroups 1337) is no way past a redirect that exempts its UID only: no warning.
#[test]
fn app_containers_lose_net_raw_unless_they_drop_it_already_or_are_accepted() {
    let drops = |c: &serde_yaml::Value| -> Vec<String> {
        c["securityContext"]["capabilities"]["drop"]
            .as_sequence()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    // Injected here, not read from the golden files, so this test stands on its own.
    let injected = |file: &str| {
        values(&run(
            &["inject", "-"],
            &std::fs::read_to_string(dir().join("input").join(file)).unwrap(),
        ))
    };
    let shop = injected("shop.yaml");
    let web = &shop[1]["spec"]["template"]["spec"];
    for c in web["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .chain(&web["initContainers"].as_sequence().unwrap()[2..])
    {
        assert_eq!(drops(c), ["NET_RAW"], "{c:?}");
    }
    let security = injected("security.yaml");
    // Already dropping ALL: left alone.
    let api = &security[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(drops(api), ["ALL"]);
    // Added to what is there, or to a securityContext without capabilities.
    let pod = &security[1]["spec"]["containers"];
    assert_eq!(drops(&pod[0]), ["KILL", "NET_RAW"]);
    assert_eq!(drops(&pod[1]), ["NET_RAW"]);
    // Accepted by the annotation: as it was.
    let icmp = &security[2]["spec"]["template"]["spec"]["containers"][0];
    assert!(icmp["securityContext"]["capabilities"]
        .get("drop")
        .is_none());

    let input = std::fs::read_to_string(dir().join("input/security.yaml")).unwrap();
    let out = inject_stdin(&input);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "no warning");
    let back = run(
        &["inject", "-", "--uninject"],
        &String::from_utf8(out.stdout).unwrap(),
    );
    assert_eq!(values(&back), values(&input));
}

/// Issue 22, point 1: every httpGet, tcpSocket and grpc probe goes to the sidecar's probe port
/// (the kubelet has no certificate, so in strict mode it could not reach the app's port), the
/// original goes to the sidecar with its named port resolved, no port of the app is excluded from
/// the redirect any more, and nothing is warned about; exec probes, probes of another host and
/// init containers that are not native sidecars are left alone; uninject puts every original back.
#[test]
fn kubelet_probes_go_to_the_sidecar_which_gets_the_originals() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n  initContainers:\n  - name: setup\n    image: i\n  - name: agent\n    image: i\n    restartPolicy: Always\n    startupProbe:\n      tcpSocket: {port: 7000}\n      failureThreshold: 30\n  containers:\n  - name: web\n    image: i\n    ports:\n    - {name: http, containerPort: 8080}\n    readinessProbe:\n      httpGet:\n        path: /healthz?full=1\n        port: http\n        scheme: HTTPS\n        httpHeaders:\n        - {name: Host, value: shop.example}\n      timeoutSeconds: 3\n      periodSeconds: 7\n    livenessProbe:\n      grpc: {port: 9090, service: shop.Web}\n  - name: tools\n    image: i\n    livenessProbe:\n      exec: {command: [\"true\"]}\n    readinessProbe:\n      httpGet: {host: 10.9.9.9, port: 80, path: /}\n";
    let out = inject_stdin(text);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("probe"), "nothing to warn about: {err}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let docs = json_values(&stdout);
    let pod = &docs[0]["spec"];
    let ours = |path: &str| serde_json::json!({"path": path, "port": 15020, "scheme": "HTTP"});
    let web = &pod["containers"][0];
    assert_eq!(
        web["readinessProbe"]["httpGet"],
        ours("/app-health/web/readyz")
    );
    assert_eq!(web["readinessProbe"]["timeoutSeconds"], 3, "the rest stays");
    assert_eq!(web["readinessProbe"]["periodSeconds"], 7);
    assert_eq!(
        web["livenessProbe"]["httpGet"],
        ours("/app-health/web/livez")
    );
    assert!(web["livenessProbe"].get("grpc").is_none());
    let agent = &pod["initContainers"][3];
    assert_eq!(agent["name"], "agent");
    assert_eq!(
        agent["startupProbe"]["httpGet"],
        ours("/app-health/agent/startupz")
    );
    assert_eq!(agent["startupProbe"]["failureThreshold"], 30);
    let tools = &pod["containers"][1];
    assert_eq!(tools["livenessProbe"]["exec"]["command"][0], "true");
    assert_eq!(tools["readinessProbe"]["httpGet"]["host"], "10.9.9.9");

    let sidecar = &pod["initContainers"][1];
    assert_eq!(sidecar["name"], "palisade-sidecar");
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--metrics", "[::]:15020"]),
        "{args:?}"
    );
    assert_eq!(sidecar["env"][0]["name"], "PALISADE_APP_PROBES");
    let probes: serde_json::Value =
        serde_json::from_str(sidecar["env"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        probes,
        serde_json::json!({
            "/app-health/web/readyz": {"httpGet": {"path": "/healthz?full=1", "port": 8080,
                "scheme": "HTTPS", "httpHeaders": [{"name": "Host", "value": "shop.example"}]},
                "timeoutSeconds": 3},
            "/app-health/web/livez": {"grpc": {"port": 9090, "service": "shop.Web"},
                "timeoutSeconds": 1},
            "/app-health/agent/startupz": {"tcpSocket": {"port": 7000}, "timeoutSeconds": 1},
        })
    );
    // Only the admin and probe ports pass the inbound redirect: the app's stay behind mTLS.
    let redirect: Vec<&str> = pod["initContainers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let at = redirect
        .iter()
        .position(|a| *a == "--exclude-inbound-ports")
        .unwrap();
    assert_eq!(redirect[at + 1], "15000,15020");
    // The kubelet and Prometheus reach the sidecar on the probe port.
    let annotations = &docs[0]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/port"], "15020");
    assert_eq!(annotations["prometheus.io/scrape"], "true");

    let back = run(&["inject", "-", "--uninject"], &stdout);
    assert_eq!(values(&back), values(text));
}

fn json_values(text: &str) -> Vec<serde_json::Value> {
    values(text)
        .iter()
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

/// A probe on a port name the container does not declare cannot be resolved (by the kubelet
/// either): left as it is, and said; a pod with Prometheus annotations of its own keeps them, and
/// is told that its app's port is behind mTLS now.
#[test]
fn an_unresolvable_probe_and_an_apps_own_scrape_annotations_are_kept_and_said() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    prometheus.io/scrape: \"true\"\n    prometheus.io/port: \"9100\"\nspec:\n  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n  containers:\n  - name: web\n    image: i\n    readinessProbe:\n      httpGet: {port: metrics, path: /}\n";
    let out = inject_stdin(text);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Pod p: container web: the readinessProbe names port \"metrics\", which the container does not declare; it is left as it is"),
        "{err}"
    );
    assert!(
        err.contains("Pod p: its prometheus.io annotations are kept"),
        "{err}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let pod = &json_values(&stdout)[0];
    assert_eq!(
        pod["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
        "metrics"
    );
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "9100");
    assert!(pod["spec"]["initContainers"][1].get("env").is_none());
    let back = run(&["inject", "-", "--uninject"], &stdout);
    assert_eq!(values(&back), values(text));
}

/// `hostPID: true` shows the app every process of the node, the sidecar of every injected pod
/// there among them: at least as much as `shareProcessNamespace` shows, for every pod of the
/// node. Each app container is refused, however locked down (what it could do to the processes
/// it sees depends on theirs, which inject does not see), unless the annotation names it.
#[test]
fn every_container_of_a_host_pid_pod_is_refused_unless_the_annotation_names_it() {
    let how = "is in a pod with hostPID: true (it sees every process of the node, the sidecars of all its pods among them: as root, or as UID 1337, which its image may set where inject cannot see it, it could stop them or read their keys through /proc)";
    for (spec, container) in [
        // Non-root by an explicit UID, no escalation, no capabilities: refused all the same.
        (
            "  hostPID: true\n  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities:\n        drop: [ALL]\n",
            "app",
        ),
        // What shareProcessNamespace refuses, hostPID refuses too.
        ("  hostPID: true\n  containers:\n  - name: app\n    image: i\n", "app"),
        // The app's init containers too.
        (
            "  hostPID: true\n  securityContext:\n    runAsUser: 1000\n  initContainers:\n  - name: setup\n    image: i\n",
            "setup",
        ),
    ] {
        refused_unless_accepted(spec, container, how);
    }
    // Each container must be named: accepting one leaves the other refused.
    let two = "  hostPID: true\n  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      allowPrivilegeEscalation: false\n  - name: agent\n    image: i\n    securityContext:\n      allowPrivilegeEscalation: false\n";
    let out = inject_stdin(&pod(two, Some("app")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Pod p: container agent is in a pod with hostPID: true"),
        "{err}"
    );
    assert!(inject_stdin(&pod(two, Some("app,agent"))).status.success());
    // In a workload's template too; `hostPID: false` is no reason to refuse.
    let deployment = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata:\n      labels: {a: b}\n    spec:\n      hostPID: true\n      containers:\n      - name: collector\n        image: i\n";
    let out = inject_stdin(deployment);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DaemonSet agent: container collector is in a pod with hostPID: true"),
        "{err}"
    );
    assert!(
        inject_stdin(&deployment.replace("hostPID: true", "hostPID: false"))
            .status
            .success()
    );
}

/// In a pod with `shareProcessNamespace: true`, a container without a runAsUser (its own or the
/// pod's) runs as its image's UID, which inject cannot see: if that is the sidecar's, it reads
/// the sidecar's memory with no capability at all. Refused, even non-root and without escalation;
/// a runAsUser (the container's or the pod's) lets it through.
#[test]
fn in_a_shared_process_namespace_a_container_whose_uid_only_its_image_sets_is_refused() {
    let spec = "  shareProcessNamespace: true\n  securityContext:\n    runAsNonRoot: true\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      allowPrivilegeEscalation: false\n";
    refused_unless_accepted(
        spec,
        "app",
        "has no runAsUser, its own or the pod's, in a pod with shareProcessNamespace: true (its image sets its UID, which inject cannot see: as UID 1337 it could read the sidecar's memory (the workload's key) and files through /proc)",
    );
    let by_pod = spec.replace(
        "    runAsNonRoot: true\n",
        "    runAsNonRoot: true\n    runAsUser: 1000\n",
    );
    let by_container = spec.replace(
        "      allowPrivilegeEscalation: false\n",
        "      allowPrivilegeEscalation: false\n      runAsUser: 1000\n",
    );
    for spec in [by_pod, by_container] {
        let out = inject_stdin(&pod(&spec, None));
        assert!(
            out.status.success(),
            "{spec}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{spec}");
    }
}

/// A pod on the node's network is never injected: the redirect would rewrite the node's nat table
/// and capture the node's own connections. It is passed through as it is (an earlier injection
/// taken out), with a warning naming the workload, so that nobody takes it to be behind a
/// sidecar; `palisade.io/inject: "false"` says that is meant, and silences the warning.
#[test]
fn a_host_network_pod_is_passed_through_with_a_warning_never_injected() {
    let plain = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostNetwork: true\n  containers:\n  - name: app\n    image: i\n";
    let template = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: exporter\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata:\n      labels: {a: b}\n    spec:\n      hostNetwork: true\n      containers:\n      - name: exporter\n        image: i\n        securityContext:\n          privileged: true\n";
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: q\n  spec:\n    hostNetwork: true\n    containers:\n    - name: app\n      image: i\n";
    for (text, workload) in [
        (plain, "Pod p"),
        (template, "DaemonSet exporter"),
        (list, "Pod q"),
    ] {
        let out = inject_stdin(text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}\n{err}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(values(&stdout), values(text), "changed: {text}");
        assert!(!stdout.contains("palisade-redirect"), "{stdout}");
        assert_eq!(
            err.trim_end(),
            format!("warning: {workload}: not injected: it sets hostNetwork: true, so its network namespace is the node's, where the redirect would capture the node's own connections; its traffic goes without a sidecar, governed by the host tables only (the annotation palisade.io/inject: \"false\" says that is meant, and silences this)"),
        );
    }
    let meant = plain.replace(
        "  name: p\n",
        "  name: p\n  annotations:\n    palisade.io/inject: \"false\"\n",
    );
    let out = inject_stdin(&meant);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // Injected before it moved to the node's network: the injection is taken out, not kept.
    let injected = run(
        &["inject", "-"],
        &plain.replace("  hostNetwork: true\n", ""),
    );
    assert!(injected.contains("palisade-redirect"));
    let moved = injected.replace("\"spec\": {", "\"spec\": {\n    \"hostNetwork\": true,");
    assert_ne!(moved, injected);
    let out = inject_stdin(&moved);
    assert!(out.status.success());
    assert_eq!(values(&String::from_utf8_lossy(&out.stdout)), values(plain));
}

/// `hostIPC: true` gives the pod the node's System V IPC objects, POSIX message queues and
/// /dev/shm. The sidecar uses none of them (its system-call filter allows no System V IPC or message-queue call),
/// and none of them reaches a socket or a process: no way past the redirect or into the sidecar,
/// so such a pod is injected like any other (Pod Security's baseline is what forbids it).
#[test]
fn a_host_ipc_pod_is_injected_like_any_other() {
    let spec = "  hostIPC: true\n  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      allowPrivilegeEscalation: false\n";
    let out = inject_stdin(&pod(spec, None));
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "no warning");
    let injected = values(&String::from_utf8_lossy(&out.stdout));
    let spec = &injected[0]["spec"];
    assert_eq!(spec["initContainers"][0]["name"], "palisade-redirect");
    assert_eq!(
        spec["containers"][0]["securityContext"]["capabilities"]["drop"][0],
        "NET_RAW"
    );
}

/// A container without a runAsUser (its own or the pod's) runs as the UID its image sets, which
/// inject cannot see (the kubelet checks only that runAsNonRoot's UID is not 0): if that is the
/// sidecar's, its connections skip the redirect. Warned about, with the container and the fix
/// named; a runAsUser at either level, or the annotation, silences it; a container warned about
/// CAP_SETUID (which can take any UID) is not warned about twice.
#[test]
fn a_container_whose_uid_only_its_image_sets_is_warned_about_and_injected() {
    let warning = |c: &str| {
        format!("warning: Pod p: container {c} has no runAsUser, its own or the pod's, so its image sets its UID, which inject cannot see: if that is the sidecar's UID 1337, its connections bypass the redirect unseen; give it a runAsUser other than 1337, or accept the risk with the annotation palisade.io/allow-bypass: \"{c}\"")
    };
    let locked = "  securityContext:\n    runAsNonRoot: true\n  containers:\n  - name: app\n    image: i\n    securityContext:\n      allowPrivilegeEscalation: false\n";
    for spec in [
        locked,
        // Dropping SETUID rules out taking the UID, not starting with it.
        "  containers:\n  - name: app\n    image: i\n    securityContext:\n      capabilities:\n        drop: [SETUID]\n",
    ] {
        let out = inject_stdin(&pod(spec, None));
        assert!(out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end(), warning("app"), "{spec}");
    }
    let quiet: &[(String, Option<&str>)] = &[
        (
            locked.replace(
                "    runAsNonRoot: true\n",
                "    runAsNonRoot: true\n    runAsUser: 1000\n",
            ),
            None,
        ),
        (
            locked.replace(
                "      allowPrivilegeEscalation: false\n",
                "      allowPrivilegeEscalation: false\n      runAsUser: 1000\n",
            ),
            None,
        ),
        (locked.to_owned(), Some("app")),
    ];
    for (spec, allow) in quiet {
        let out = inject_stdin(&pod(spec, *allow));
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{spec}");
    }
    // One warning for a container that may be root: the CAP_SETUID one.
    let out = inject_stdin(&pod("  containers:\n  - name: app\n    image: i\n", None));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("CAP_SETUID"), "{err}");
}

/// A YAML error anywhere in a stream says where, as file:line:column counted from the stream's
/// start (so an editor jumps there), and which document.
#[test]
fn a_yaml_error_in_a_later_document_is_located_in_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("two.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, image: i}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b\nspec: [\n",
    )
    .unwrap();
    let out = palisade(&["inject", file.to_str().unwrap()], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("error: {}:9:5: document 2: ", file.display())),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // From standard input, the same, named `-`.
    let out = palisade_with_stdin(&["inject", "-"], "a: 1\n---\nb: {\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: -:4:1: document 2: "), "{stderr}");
}

/// A ReplicationController is injected like a ReplicaSet; a kind inject does not know that holds
/// a pod template (here an Argo Rollout, and a CronJob-like custom resource inside a List) passes
/// through unchanged and is named in a warning, never silently.
#[test]
fn a_replication_controller_is_injected_and_an_unknown_kind_with_a_pod_template_is_named() {
    let rc = "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: i\n        securityContext: {runAsUser: 1000, runAsNonRoot: true, allowPrivilegeEscalation: false}\n";
    let out = inject_stdin(rc);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("palisade-redirect") && stdout.contains("palisade-sidecar"),
        "{stdout}"
    );
    assert_eq!(
        values(&run(&["inject", "-", "--uninject"], &stdout)),
        values(rc)
    );

    let rollout = "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata:\n  name: shop\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        image: i\n";
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: example.org/v1\n  kind: Batch\n  metadata:\n    name: nightly\n  spec:\n    jobTemplate:\n      spec:\n        template:\n          spec:\n            containers:\n            - name: app\n              image: i\n- apiVersion: v1\n  kind: Service\n  metadata:\n    name: s\n  spec:\n    template: {}\n";
    for (text, named, path) in [
        (rollout, "Rollout shop", "spec.template.spec"),
        (list, "Batch nightly", "spec.jobTemplate.spec.template.spec"),
    ] {
        let out = inject_stdin(text);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(values(&String::from_utf8_lossy(&out.stdout)), values(text));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.lines().count(),
            1,
            "one warning, for the template only: {err}"
        );
        assert!(
            err.starts_with(&format!(
                "warning: {named}: not injected: palisade inject does not know the kind"
            )) && err.contains(&format!("a pod template at {path}")),
            "{err}"
        );
    }
    // Injected by hand (the sidecar is there): nothing to warn about.
    let by_hand = rollout.replace(
        "    spec:\n      containers:",
        "    spec:\n      initContainers:\n      - name: palisade-sidecar\n        image: i\n      containers:",
    );
    assert_ne!(by_hand, rollout);
    let out = inject_stdin(&by_hand);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
}

/// Both injected containers carry the image and pull policy the flags name (IfNotPresent by
/// default: a `:latest` image would otherwise be pulled on every start).
#[test]
fn the_image_and_its_pull_policy_come_from_the_flags() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: i\n    securityContext: {runAsUser: 1000, runAsNonRoot: true, allowPrivilegeEscalation: false}\n";
    let containers = |text: &str| -> Vec<(String, String)> {
        let doc: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        doc["spec"]["initContainers"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["image"].as_str().unwrap().to_owned(),
                    c["imagePullPolicy"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let default = containers(&run(&["inject", "-"], pod));
    assert_eq!(default.len(), 2);
    assert!(default
        .iter()
        .all(|(image, policy)| image == "palisade:latest" && policy == "IfNotPresent"));
    let named = containers(&run(
        &[
            "inject",
            "-",
            "--image",
            "registry.example/palisade:0.1.0",
            "--image-pull-policy",
            "Always", // Kubernetes' own spelling is accepted too
        ],
        pod,
    ));
    assert!(
        named.iter().all(|(image, policy)| image == "registry.example/palisade:0.1.0" && policy == "Always"),
        "{named:?}"
    );
}

/// What the probe rewrite must not touch or cannot serve: a tcpSocket probe of another host is
/// left alone; an app using a port the sidecar listens on is refused (it could not bind it, or its
/// probe would reach the sidecar); an httpGet lifecycle hook, which the kubelet sends in plaintext
/// and which cannot be rewritten, is warned about.
#[test]
fn probes_of_other_hosts_ports_of_the_sidecar_and_http_hooks() {
    let secure = "  securityContext:\n    runAsNonRoot: true\n    runAsUser: 1000\n";
    let elsewhere = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{secure}  containers:\n  - name: web\n    image: i\n    livenessProbe:\n      tcpSocket: {{host: db.example, port: 5432}}\n");
    let out = inject_stdin(&elsewhere);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let pod = &json_values(&stdout)[0]["spec"];
    assert_eq!(
        pod["containers"][0]["livenessProbe"]["tcpSocket"]["host"],
        "db.example"
    );
    assert!(
        pod["initContainers"][1].get("env").is_none(),
        "nothing for the sidecar to run"
    );

    for (port_yaml, port, what) in [
        (
            "    ports:\n    - {containerPort: 15020}\n",
            15020,
            "the kubelet's probes and /metrics",
        ),
        (
            "    readinessProbe:\n      httpGet: {port: 15000, path: /}\n",
            15000,
            "its admin server",
        ),
        (
            "    ports:\n    - {containerPort: 15006}\n",
            15006,
            "transparent inbound",
        ),
    ] {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{secure}  containers:\n  - name: web\n    image: i\n{port_yaml}");
        let out = inject_stdin(&text);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(
            err.contains(&format!(
                "Pod p: container web uses port {port}, which the sidecar listens on ({what})"
            )),
            "{err}"
        );
    }

    let hook = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n{secure}  containers:\n  - name: web\n    image: i\n    lifecycle:\n      postStart:\n        httpGet: {{port: 8080, path: /warm}}\n");
    let out = inject_stdin(&hook);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Pod p: container web: its postStart hook is an httpGet, which the kubelet sends in plaintext"),
        "{err}"
    );
}
