//! `palisade inject serve`, the admission webhook, against `palisade inject FILE`: every workload
//! of the real-world manifests (tests/manifests/real-world/) and a Pod made from each of their
//! templates (what the API server sends the webhook) goes to the running webhook over HTTPS as an
//! AdmissionReview v1 from Python's own HTTPS client; the JSON Patch it answers, applied by an
//! independent implementation (PyPI `jsonpatch`), must give exactly what `palisade inject` prints
//! for the same object, and a refusal must be inject's refusal, sentence for sentence. Then the
//! bounds: a body over 3 MiB, a request that is not a review, another path.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Sends each object of argv[3] (a JSON array) to the webhook at argv[1] (trusting argv[2]) as an
/// AdmissionReview, applies the answer's patch with jsonpatch, prints one JSON line per object:
/// {"patched": object} or {"refused": message} or {"unchanged": true}.
const CLIENT: &str = r#"
import base64, json, ssl, sys, urllib.request, jsonpatch
url, cafile, objects = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
context = ssl.create_default_context(cafile=cafile)
for i, obj in enumerate(objects):
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {"uid": "uid-%d" % i, "operation": "CREATE", "object": obj,
                          "kind": {"group": "", "version": "v1", "kind": obj["kind"]},
                          "namespace": "shop"}}
    request = urllib.request.Request(url, data=json.dumps(review).encode(),
                                     headers={"Content-Type": "application/json"})
    answer = json.load(urllib.request.urlopen(request, context=context, timeout=10))
    response = answer["response"]
    assert answer["kind"] == "AdmissionReview" and response["uid"] == "uid-%d" % i, answer
    if not response["allowed"]:
        print(json.dumps({"refused": response["status"]["message"]}))
    elif "patch" in response:
        assert response["patchType"] == "JSONPatch"
        patch = json.loads(base64.b64decode(response["patch"]))
        print(json.dumps({"patched": jsonpatch.apply_patch(obj, patch)}))
    else:
        print(json.dumps({"unchanged": True}))
"#;

fn python() -> Option<String> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv/bin/python");
    let ok = Command::new(&venv)
        .args(["-c", "import jsonpatch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(venv.to_string_lossy().into_owned())
    } else {
        skipping("target/interop-venv has no jsonpatch (scripts/test adds it)");
        None
    }
}

fn values(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

/// Every workload of the real-world sets, and a Pod from each template, as the API server would
/// send it (generateName, no name).
fn objects() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/real-world");
    let mut files: Vec<PathBuf> = Vec::new();
    for set in std::fs::read_dir(&root).unwrap() {
        let set = set.unwrap().path();
        if set.is_dir() {
            for file in std::fs::read_dir(&set).unwrap() {
                files.push(file.unwrap().path());
            }
        }
    }
    files.sort();
    let mut objects = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        for doc in values(&std::fs::read_to_string(file).unwrap()) {
            let template = match doc["kind"].as_str().unwrap_or("") {
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                    doc["spec"]["template"].clone()
                }
                "CronJob" => doc["spec"]["jobTemplate"]["spec"]["template"].clone(),
                _ => continue,
            };
            let mut metadata = template["metadata"].clone();
            if !metadata.is_object() {
                metadata = json!({});
            }
            metadata["generateName"] = Value::String(format!(
                "{}-",
                doc["metadata"]["name"].as_str().unwrap_or("x")
            ));
            objects.push(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                "spec": template["spec"]}),
            );
            objects.push(doc);
        }
    }
    objects
}

struct Server {
    child: std::process::Child,
    api: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args([
            "inject",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ])
        .args(["--cert", "webhook/cert.pem", "--key", "webhook/key.pem"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listening: Value = serde_json::from_str(&line).expect("the listening line");
    Server {
        child,
        api: listening["listening"]["api"].as_str().unwrap().to_owned(),
    }
}

#[test]
fn the_webhook_patches_real_objects_into_exactly_what_inject_prints() {
    let Some(python) = python() else {
        return;
    };
    let pki = Pki::new();
    // The serving certificate, for the name the client connects to.
    pki.issue("webhook", "palisade/webhook", &["--dns", "localhost"]);
    let server = start(pki.path());
    let port = server.api.rsplit(':').next().unwrap();
    let url = format!("https://localhost:{port}/inject");

    let objects = objects();
    assert!(objects.len() >= 80, "only {} objects", objects.len());
    let list = pki.path().join("objects.json");
    std::fs::write(&list, serde_json::to_vec(&objects).unwrap()).unwrap();
    let mut client = Command::new(&python);
    client
        .args(["-c", CLIENT, &url])
        .arg(pki.path().join("ca/bundle.pem"))
        .arg(&list);
    let (out, timed_out) = run_bounded(&mut client, b"", Duration::from_secs(120));
    assert!(
        !timed_out && out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), objects.len());

    let (mut patched, mut refused) = (0, 0);
    for (object, answer) in objects.iter().zip(&answers) {
        let mut inject = Command::new(BIN);
        inject.args(["inject", "-"]);
        let (expected, _) = run_bounded(
            &mut inject,
            object.to_string().as_bytes(),
            Duration::from_secs(30),
        );
        let what = format!("{} {}", object["kind"], object["metadata"]);
        if expected.status.success() {
            let expected = values(&String::from_utf8(expected.stdout).unwrap()).remove(0);
            let got = answer
                .get("patched")
                .cloned()
                .unwrap_or_else(|| object.clone());
            assert_eq!(
                got, expected,
                "{what}: the webhook's patch differs from inject's output"
            );
            patched += usize::from(answer.get("patched").is_some());
        } else {
            let sentence = String::from_utf8_lossy(&expected.stderr);
            let message = answer["refused"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: not refused"));
            let sentence = sentence.trim().trim_start_matches("error: -: ");
            assert!(
                message.ends_with(sentence),
                "{what}: {message} / {sentence}"
            );
            refused += 1;
        }
    }
    assert!(
        patched >= 60 && refused >= 2,
        "patched {patched}, refused {refused}"
    );

    // Bounds: too large, not a review, another path, another method.
    let post = |path: &str, body: &[u8]| -> String {
        let mut curl = Command::new("curl");
        curl.args([
            "-s",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(pki.path().join("ca/bundle.pem"))
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("https://localhost:{port}{path}"));
        let (out, _) = run_bounded(&mut curl, body, Duration::from_secs(30));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(post("/inject", &vec![b' '; 4 * 1024 * 1024]), "413");
    assert_eq!(post("/inject", br#"{"kind": "Pod"}"#), "400");
    assert_eq!(post("/mutate", b"{}"), "404");
    // Still serving after all that.
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "CREATE", "object": objects[0]}});
    assert_eq!(post("/inject", review.to_string().as_bytes()), "200");
}
