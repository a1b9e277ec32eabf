//! The kubelet's probes of an injected pod, in strict mode, end to end: a pod manifest goes through
//! the real `palisade inject`; its redirect container's arguments set up the redirect table in a
//! network namespace of this test's (the pod), and its sidecar runs with the arguments and the
//! `PALISADE_APP_PROBES` inject wrote, as UID 1337, strict. From a second namespace (the node, where
//! the kubelet is), the rewritten probes are sent as the kubelet sends them: plaintext HTTP to the
//! pod's address. The apps are real servers: an HTTP app that answers its health path only with the
//! probe's headers, the same behind TLS with a self-signed certificate, and grpcio's standard health
//! service. A plaintext request to the app's own port is still refused.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const PROXY_UID: &str = "1337";
const POD: &str = "10.66.0.2";
const NODE: &str = "10.66.0.1";

/// An HTTP app on argv[1] (TLS with argv[2], argv[3] as certificate and key when given) whose
/// /healthz answers 200 only when the request carries `X-Probe: kubelet` and `Host` names the
/// pod's address and the port (what the kubelet sends), and 418 otherwise; every other path 404.
const HEALTH_APP: &str = r#"
import http.server, socketserver, ssl, sys
port = int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/healthz?deep=1":
            self.send_response(404); self.end_headers(); return
        ok = self.headers.get("X-Probe") == "kubelet" and self.headers.get("Host") == "10.66.0.2:%d" % port
        self.send_response(200 if ok else 418); self.end_headers()
        self.wfile.write(b"app body that must not reach the kubelet\n")
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = __import__("socket").AF_INET6
    allow_reuse_address = True
s = S(("::", port), H)
if len(sys.argv) > 2:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

/// grpcio's health service on argv[1]: the server as a whole SERVING, `shop.Cart` NOT_SERVING.
const GRPC_APP: &str = r#"
import sys, time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
servicer = health.HealthServicer()
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
servicer.set("shop.Cart", health_pb2.HealthCheckResponse.NOT_SERVING)
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port("[::]:" + sys.argv[1])
server.start()
while True:
    time.sleep(3600)
"#;

/// A TCP server on argv[1]:argv[2] that accepts connections and never answers.
const SILENT_APP: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
held = []
while True:
    held.append(s.accept()[0])
"#;

const MANIFEST: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: shop
spec:
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
  containers:
  - name: web
    image: shop/web
    ports:
    - {name: http, containerPort: 8080}
    readinessProbe:
      httpGet:
        path: /healthz?deep=1
        port: http
        httpHeaders: [{name: X-Probe, value: kubelet}]
    livenessProbe:
      tcpSocket: {port: http}
  - name: secure
    image: shop/secure
    ports:
    - {containerPort: 8443}
    readinessProbe:
      httpGet:
        path: /healthz?deep=1
        port: 8443
        scheme: HTTPS
        httpHeaders: [{name: X-Probe, value: kubelet}]
      timeoutSeconds: 2
    livenessProbe:
      httpGet: {path: /missing, port: 8443, scheme: HTTPS}
  - name: cart
    image: shop/cart
    readinessProbe:
      grpc: {port: 9555}
    livenessProbe:
      grpc: {port: 9555, service: shop.Cart}
  - name: slow
    image: shop/slow
    readinessProbe:
      httpGet: {path: /, port: 8081}
      timeoutSeconds: 1
  - name: podip
    image: shop/podip
    livenessProbe:
      tcpSocket: {port: 8082}
"#;

fn interop_python() -> Option<String> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    let ok = std::process::Command::new(&venv)
        .args(["-c", "import grpc, grpc_health.v1.health"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(venv.to_string_lossy().into_owned())
    } else {
        skipping("target/interop-venv has no grpcio (scripts/test adds it)");
        None
    }
}

/// The injected pod's containers, as inject wrote them.
fn injected() -> serde_json::Value {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["inject", "-"]);
    let (out, timed_out) = run_bounded(&mut cmd, MANIFEST.as_bytes(), Duration::from_secs(30));
    assert!(!timed_out && out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn args_of(container: &serde_json::Value) -> Vec<String> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// The kubelet's probe: plaintext GET from the node to the pod; the status and body.
fn kubelet_probe(nets: &Netns, node: &str, port: u16, path: &str) -> (String, String) {
    let url = format!("http://{POD}:{port}{path}");
    let out = nets.exec(
        node,
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            "-A",
            "kube-probe/1.37",
            "-w",
            "\n%{http_code}",
            &url,
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

#[test]
#[ignore = "needs root: network namespaces and nftables"]
fn injected_probes_pass_a_strict_sidecar_while_the_apps_port_stays_closed() {
    require_root("network namespaces and nftables");
    if !(have("nft") && have("curl") && have("setpriv") && have("python3") && have("openssl")) {
        return;
    }
    let Some(grpc_python) = interop_python() else {
        return;
    };
    let pod_spec = injected();
    let init = pod_spec["spec"]["initContainers"].as_array().unwrap();
    let (redirect, sidecar) = (&init[0], &init[1]);
    assert_eq!(sidecar["name"], "palisade-sidecar");
    let probes_env = sidecar["env"][0]["value"].as_str().unwrap().to_owned();
    // What inject gave the sidecar beside its file: `--metrics [::]:15020`.
    let sidecar_args = args_of(sidecar);
    let at = sidecar_args.iter().position(|a| a == "--metrics").unwrap();
    let metrics = sidecar_args[at + 1].clone();
    let probe_port: u16 = metrics.rsplit(':').next().unwrap().parse().unwrap();
    let rewritten = |container: usize, probe: &str| {
        let get = &pod_spec["spec"]["containers"][container][probe]["httpGet"];
        assert_eq!(get["port"], probe_port);
        get["path"].as_str().unwrap().to_owned()
    };

    let mut nets = Netns::new();
    let node = nets.add("node");
    let pod = nets.add("pod");
    nets.exec_ok(
        &node,
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &pod,
        ],
        None,
    );
    for (ns, addr) in [(&node, NODE), (&pod, POD)] {
        nets.exec_ok(
            ns,
            &["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"],
            None,
        );
        nets.exec_ok(ns, &["ip", "link", "set", "eth0", "up"], None);
        nets.exec_ok(ns, &["ip", "link", "set", "lo", "up"], None);
    }

    // The apps, in the pod.
    let pki = Pki::new();
    pki.issue("shop", "ns/shop/sa/shop", &[]);
    let dir = pki.path();
    let (cert, key) = (dir.join("app-cert.pem"), dir.join("app-key.pem"));
    let openssl = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=secure.shop.svc", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(openssl.status.success(), "{openssl:?}");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let web_app = nets
        .spawn(&pod, &["python3", "-c", HEALTH_APP, "8080"])
        .id();
    nets.spawn(&pod, &["python3", "-c", HEALTH_APP, "8443", cert, key]);
    nets.spawn(&pod, &[&grpc_python, "-c", GRPC_APP, "9555"]);
    // One that hangs, and one listening on the pod's address only (not on loopback).
    nets.spawn(&pod, &["python3", "-c", SILENT_APP, "0.0.0.0", "8081"]);
    nets.spawn(&pod, &["python3", "-c", SILENT_APP, POD, "8082"]);
    for port in ["8080", "8443", "9555", "8081"] {
        let up = wait_until(Duration::from_secs(20), || {
            nets.exec(
                &pod,
                &[
                    "python3",
                    "-c",
                    &format!("import socket; socket.create_connection(('127.0.0.1', {port}), 1)"),
                ],
                None,
            )
            .status
            .success()
        });
        assert!(up, "the app on port {port} did not start");
    }

    // The sidecar, strict, as inject configured it.
    let policy = format!(
        "version: 1\ntrust_domain: {TD}\nsegments:\n  nodes:\n    addresses: [10.66.0.0/24]\n    identities: [spiffe://{TD}/ns/shop/sa/client]\nrules: []\n"
    );
    std::fs::write(dir.join("policy.yaml"), policy).unwrap();
    let config = dir.join("sidecar.yaml");
    std::fs::write(
        &config,
        "identity:\n  cert: shop/cert.pem\n  key: shop/key.pem\n  bundle: shop/bundle.pem\n\
transparent:\n  inbound: \"[::]:15006\"\n  outbound: \"[::]:15001\"\n  policy: policy.yaml\n  mode: strict\n\
admin:\n  listen: 127.0.0.1:15000\n",
    )
    .unwrap();
    chown_recursive(dir, PROXY_UID);
    let env = format!("PALISADE_APP_PROBES={probes_env}");
    let config = config.to_str().unwrap().to_owned();
    nets.spawn(
        &pod,
        &[
            "env",
            &env,
            "setpriv",
            "--reuid",
            PROXY_UID,
            "--regid",
            PROXY_UID,
            "--clear-groups",
            BIN,
            "sidecar",
            "run",
            "--config",
            &config,
            "--metrics",
            &metrics,
        ],
    );
    let ready = wait_until(Duration::from_secs(10), || {
        kubelet_probe(&nets, &node, probe_port, "/ready").0 == "200"
    });
    assert!(ready, "the sidecar did not become ready");
    // The redirect, with the arguments inject gave its init container.
    let mut redirect_args: Vec<String> = vec![BIN.to_owned()];
    redirect_args.extend(args_of(redirect));
    let redirect_args: Vec<&str> = redirect_args.iter().map(String::as_str).collect();
    nets.exec_ok(&pod, &redirect_args, None);

    // Each rewritten probe, sent as the kubelet sends it, gets what the original would have.
    for (container, probe, code) in [
        (0, "readinessProbe", "200"), // headers and Host as the kubelet's
        (0, "livenessProbe", "200"),  // tcpSocket
        (1, "readinessProbe", "200"), // HTTPS, self-signed
        (1, "livenessProbe", "503"),  // HTTPS, the app says 404
        (2, "readinessProbe", "200"), // gRPC: SERVING
        (2, "livenessProbe", "503"),  // gRPC: shop.Cart NOT_SERVING
        (3, "readinessProbe", "503"), // no answer within timeoutSeconds
        (4, "livenessProbe", "200"),  // on the pod's address only
    ] {
        let path = rewritten(container, probe);
        let (got, body) = kubelet_probe(&nets, &node, probe_port, &path);
        assert_eq!(got, code, "{path}: {body}");
        assert!(
            !body.contains("app body"),
            "{path}: the app's body came out: {body}"
        );
    }
    let (_, body) = kubelet_probe(&nets, &node, probe_port, &rewritten(2, "livenessProbe"));
    assert!(body.contains("NOT_SERVING"), "{body}");
    // The probe's own timeout (1 s) ends it, well inside curl's 5 s.
    let (_, body) = kubelet_probe(&nets, &node, probe_port, &rewritten(3, "readinessProbe"));
    assert!(
        body.contains("did not answer on port 8081 within 1 s"),
        "{body}"
    );
    // Nothing else of the app through the probe port.
    assert_eq!(
        kubelet_probe(&nets, &node, probe_port, "/app-health/web/other").0,
        "404"
    );
    assert_eq!(
        kubelet_probe(&nets, &node, probe_port, "/healthz?deep=1").0,
        "404"
    );
    // Prometheus scrapes the same port.
    let (code, metrics_text) = kubelet_probe(&nets, &node, probe_port, "/metrics");
    assert_eq!(code, "200");
    assert!(
        metrics_text.contains("palisade_build_info"),
        "{metrics_text}"
    );

    // Strict stays strict: the app's port in plaintext from the node gets no HTTP answer (the
    // redirect hands it to the sidecar, which wants TLS from an admitted peer).
    let direct = nets.exec(
        &node,
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            "-w",
            "%{http_code}",
            &format!("http://{POD}:8080/healthz?deep=1"),
        ],
        None,
    );
    let code = String::from_utf8_lossy(&direct.stdout);
    assert!(
        !direct.status.success() && code.trim_start_matches('0').is_empty(),
        "{direct:?}"
    );

    // The app stops: its probes fail, as the kubelet's would.
    let web_ready = rewritten(0, "readinessProbe");
    // `ip netns exec` runs the app in its own process, so this is the app.
    let stopped = std::process::Command::new("kill")
        .arg(web_app.to_string())
        .status()
        .unwrap();
    assert!(stopped.success());
    let failed = wait_until(Duration::from_secs(10), || {
        kubelet_probe(&nets, &node, probe_port, &web_ready).0 == "503"
    });
    assert!(failed, "the probe did not fail once the app had stopped");
}
