//! One AdmissionReview, answered: pure, so that tests and the server share it.

use base64::Engine;
use palisade_inject::Settings;
use serde_json::{json, Value};

/// Why a request is not an AdmissionReview this webhook can answer (HTTP 400: the API server
/// sent something else, or someone who is not the API server did).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an `admission.k8s.io/v1` AdmissionReview with a request, a uid and an object.
    #[error("not an admission.k8s.io/v1 AdmissionReview request: {0}")]
    NotAReview(&'static str),
}

/// What the answer did, for metrics and the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with a patch.
    Injected,
    /// Allowed without one: already injected, opted out, a kind without pods, another operation.
    Unchanged,
    /// Not allowed: inject refused the object (it could bypass the sidecar, say).
    Refused,
}

impl Outcome {
    /// As a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Unchanged => "unchanged",
            Outcome::Refused => "refused",
        }
    }
}

/// Admission warnings longer than this are cut (the API server passes them to the client, which
/// prints each on a line; Kubernetes asks for short ones).
const MAX_WARNING: usize = 512;

/// Answers one AdmissionReview (`body`): the response AdmissionReview, and what it did.
pub fn review(body: &[u8], settings: &Settings) -> Result<(Value, Outcome), ReviewError> {
    let review: Value =
        serde_json::from_slice(body).map_err(|e| ReviewError::NotJson(e.to_string()))?;
    review_value(&review, settings)
}

/// [`review`] of a body already parsed.
pub(crate) fn review_value(
    review: &Value,
    settings: &Settings,
) -> Result<(Value, Outcome), ReviewError> {
    if review["apiVersion"] != "admission.k8s.io/v1" || review["kind"] != "AdmissionReview" {
        return Err(ReviewError::NotAReview(
            "apiVersion and kind must be admission.k8s.io/v1 and AdmissionReview",
        ));
    }
    let request = &review["request"];
    let uid = request["uid"]
        .as_str()
        .ok_or(ReviewError::NotAReview("request.uid is missing"))?;
    let object = &request["object"];
    if !object.is_object() {
        return Err(ReviewError::NotAReview("request.object is missing"));
    }
    let answer = |response: Value| {
        let mut response = response;
        response["uid"] = Value::String(uid.to_owned());
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
    };
    // Pods are injected when they are made; an update cannot add containers to a pod.
    if request["operation"] != "CREATE" {
        return Ok((answer(json!({"allowed": true})), Outcome::Unchanged));
    }
    let text = serde_json::to_string(object).map_err(|e| ReviewError::NotJson(e.to_string()))?;
    let injected = match palisade_inject::inject(&text, settings) {
        Ok(injected) => injected,
        Err(error) => {
            let response = json!({
                "allowed": false,
                "status": {
                    "code": 403,
                    "reason": "Forbidden",
                    "message": format!("palisade inject: {error}"),
                },
            });
            return Ok((answer(response), Outcome::Refused));
        }
    };
    let after: Value = serde_json::from_str(&injected.text)
        .map_err(|e| ReviewError::NotJson(format!("inject's output: {e}")))?;
    let patch = json_patch::diff(object, &after);
    let mut response = json!({"allowed": true});
    if !injected.warnings.is_empty() {
        response["warnings"] = injected
            .warnings
            .iter()
            .map(|w| Value::String(cut(w)))
            .collect();
    }
    if patch.0.is_empty() {
        return Ok((answer(response), Outcome::Unchanged));
    }
    let patch = serde_json::to_vec(&patch).map_err(|e| ReviewError::NotJson(e.to_string()))?;
    response["patchType"] = Value::String("JSONPatch".into());
    response["patch"] = Value::String(base64::engine::general_purpose::STANDARD.encode(patch));
    Ok((answer(response), Outcome::Injected))
}

fn cut(warning: &str) -> String {
    if warning.len() <= MAX_WARNING {
        return warning.to_owned();
    }
    let mut end = MAX_WARNING - 3;
    while !warning.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &warning[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(operation: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u-1", "operation": operation, "object": object,
                "kind": {"group": "", "version": "v1", "kind": "Pod"}},
        }))
        .unwrap()
    }

    fn pod(security: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
            "spec": {"securityContext": security,
                "containers": [{"name": "web", "image": "shop/web"}]}})
    }

    fn decoded_patch(answer: &Value) -> Vec<Value> {
        let patch = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap();
        serde_json::from_slice(&patch).unwrap()
    }

    #[test]
    fn a_pod_is_patched_as_inject_would_change_it() {
        let object = pod(json!({"runAsNonRoot": true, "runAsUser": 1000}));
        let (answer, outcome) =
            review(&request("CREATE", object.clone()), &Settings::default()).unwrap();
        assert_eq!(outcome, Outcome::Injected);
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(decoded_patch(&answer))).unwrap();
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        let expected: Value = serde_json::from_str(
            &palisade_inject::inject(&object.to_string(), &Settings::default())
                .unwrap()
                .text,
        )
        .unwrap();
        assert_eq!(patched, expected);
        // Injecting what is injected changes nothing.
        let (again, outcome) = review(&request("CREATE", patched), &Settings::default()).unwrap();
        assert_eq!(outcome, Outcome::Unchanged);
        assert!(again["response"].get("patch").is_none());
    }

    #[test]
    fn a_pod_that_could_bypass_the_sidecar_is_refused_with_inject_s_sentence() {
        let mut object = pod(json!({}));
        object["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
        let (answer, outcome) = review(&request("CREATE", object), &Settings::default()).unwrap();
        assert_eq!(outcome, Outcome::Refused);
        assert_eq!(answer["response"]["allowed"], false);
        let message = answer["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains("container web is privileged"), "{message}");
    }

    #[test]
    fn other_operations_and_bad_requests() {
        let (answer, outcome) =
            review(&request("UPDATE", pod(json!({}))), &Settings::default()).unwrap();
        assert_eq!(outcome, Outcome::Unchanged);
        assert_eq!(answer["response"]["allowed"], true);
        for bad in [
            &b"not json"[..],
            br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}"#,
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"object": {}}}"#,
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x"}}"#,
        ] {
            assert!(review(bad, &Settings::default()).is_err());
        }
    }
}
