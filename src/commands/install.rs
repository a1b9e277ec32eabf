//! `palisade install`: every object a cluster needs, as one stream for `kubectl apply -f -` (as
//! `linkerd install` does), and `--uninstall`, what to delete. The objects are the templates in
//! `install/templates/` (their comments say why each field is what it is), filled in with the
//! flags, and the ConfigMap `palisade-policy`, generated from the policy file.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::commands::inject::PullPolicyArg;

/// The templates, in the order they are applied.
const TEMPLATES: [(&str, &str); 4] = [
    (
        "00-namespace.yaml",
        include_str!("../../install/templates/00-namespace.yaml"),
    ),
    (
        "10-ca.yaml",
        include_str!("../../install/templates/10-ca.yaml"),
    ),
    (
        "20-sync.yaml",
        include_str!("../../install/templates/20-sync.yaml"),
    ),
    (
        "30-webhook.yaml",
        include_str!("../../install/templates/30-webhook.yaml"),
    ),
];

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
palisade install --trust-domain example.org --policy policy.yaml \\\n      \
--bundle root/bundle.pem | kubectl apply -f -\n  \
palisade install --trust-domain example.org --policy policy.yaml \\\n      \
--bundle root/bundle.pem --image registry.example/palisade:0.1.0\n  \
palisade install --uninstall | kubectl delete -f -\n\n\
Before it: the Secrets palisade-ca-issuer and palisade-inject-tls (docs/INSTALL.md).\n\
After it, per meshed namespace: palisade config sidecar.")]
pub struct InstallArgs {
    /// The trust domain of every SPIFFE ID (the one `ca init` was given).
    #[arg(long, value_name = "NAME", required_unless_present = "uninstall")]
    pub trust_domain: Option<String>,
    /// The segmentation policy every node's agent enforces (the ConfigMap palisade-policy).
    #[arg(long, value_name = "FILE", required_unless_present = "uninstall")]
    pub policy: Option<PathBuf>,
    /// The trust domain's roots (root/bundle.pem of `ca init`): the API server checks the
    /// webhook's certificate against them (caBundle).
    #[arg(long, value_name = "FILE", required_unless_present = "uninstall")]
    pub bundle: Option<PathBuf>,
    /// The `iss` of the cluster's service-account tokens (`kubectl get --raw
    /// /.well-known/openid-configuration` says it), which the CA checks.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://kubernetes.default.svc.cluster.local"
    )]
    pub jwt_issuer: String,
    /// Palisade's own namespace: the CA and the node agents.
    #[arg(long, value_name = "NAME", default_value = "palisade-system")]
    pub namespace: String,
    /// The image holding palisade.
    #[arg(long, value_name = "IMAGE", default_value = "palisade:latest")]
    pub image: String,
    /// The containers' imagePullPolicy.
    #[arg(long, value_enum, default_value = "if-not-present")]
    pub image_pull_policy: PullPolicyArg,
    /// Print the objects to delete instead (every one install makes, namespace last).
    #[arg(long, conflicts_with_all = ["trust_domain", "policy", "bundle"])]
    pub uninstall: bool,
}

/// What the templates' `${NAME}`s become.
struct Values<'a> {
    namespace: &'a str,
    image: &'a str,
    image_pull_policy: &'a str,
    trust_domain: &'a str,
    jwt_issuer: &'a str,
    /// base64 of the roots' PEM.
    ca_bundle: String,
}

fn render(template: &str, values: &Values<'_>) -> String {
    template
        .replace("${NAMESPACE}", values.namespace)
        .replace("${IMAGE_PULL_POLICY}", values.image_pull_policy)
        .replace("${IMAGE}", values.image)
        .replace("${TRUST_DOMAIN}", values.trust_domain)
        .replace("${JWT_ISSUER}", values.jwt_issuer)
        .replace("${CA_BUNDLE}", &values.ca_bundle)
        .replace("${VERSION}", env!("CARGO_PKG_VERSION"))
}

pub fn run(args: &InstallArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    check_name("--namespace", &args.namespace)?;
    // Installing into one of these would set Pod Security `privileged` on it, and --uninstall
    // would delete it.
    anyhow::ensure!(
        !(args.namespace == "default" || args.namespace.starts_with("kube-")),
        "--namespace {}: Palisade needs a namespace of its own (install labels it privileged, \
         and --uninstall deletes it)",
        args.namespace
    );
    // Both go into YAML as they are, in double quotes: nothing that ends or escapes them.
    anyhow::ensure!(
        args.jwt_issuer.starts_with("https://")
            && !args.jwt_issuer.contains(['"', '\\'])
            && !args.jwt_issuer.chars().any(char::is_control),
        "--jwt-issuer {:?} is not an https URL",
        args.jwt_issuer
    );
    anyhow::ensure!(
        !args.image.is_empty()
            && args
                .image
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b)),
        "--image {:?} is not an image reference",
        args.image
    );
    let pull = palisade_inject::PullPolicy::from(args.image_pull_policy);
    let trust_domain = args.trust_domain.as_deref().unwrap_or("example.org");
    // A bare name: `example.org/x` would pass as the start of an ID and put /x into every one.
    anyhow::ensure!(
        !trust_domain.contains([':', '/']),
        "--trust-domain {trust_domain:?}: give the bare name, such as example.org"
    );
    palisade_identity::TrustDomain::parse(trust_domain)
        .map_err(|e| anyhow::anyhow!("--trust-domain {trust_domain:?}: {e}"))?;
    let values = Values {
        namespace: &args.namespace,
        image: &args.image,
        image_pull_policy: pull.as_str(),
        trust_domain,
        jwt_issuer: &args.jwt_issuer,
        ca_bundle: match &args.bundle {
            Some(file) => ca_bundle(file, trust_domain)?,
            None => String::new(),
        },
    };
    let mut documents: Vec<String> = Vec::new();
    for (i, (_, template)) in TEMPLATES.iter().enumerate() {
        documents.push(render(template, &values));
        // After the namespace, before what mounts it; by name only when uninstalling.
        if i == 0 {
            documents.push(match &args.policy {
                Some(file) => policy_config_map(file, &args.namespace, trust_domain)?,
                None => config_map("palisade-policy", &args.namespace, "sync", &[])?,
            });
        }
    }
    if args.uninstall {
        return uninstall(&documents, out);
    }
    let stream = documents
        .iter()
        .map(|d| d.trim_end().to_owned() + "\n")
        .collect::<Vec<_>>()
        .join("---\n");
    out.write_all(stream.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The roots, base64 (caBundle), once they load as the trust domain's bundle.
fn ca_bundle(file: &PathBuf, trust_domain: &str) -> anyhow::Result<String> {
    use base64::Engine;
    let pem = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let bundle = palisade_identity::TrustBundle::from_pem_own_domain(&pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    anyhow::ensure!(
        bundle.trust_domain().as_str() == trust_domain,
        "{}: its trust domain is {}, --trust-domain says {trust_domain}",
        file.display(),
        bundle.trust_domain()
    );
    Ok(base64::engine::general_purpose::STANDARD.encode(pem))
}

/// The ConfigMap the node agents read their policy from; the policy must load first.
fn policy_config_map(
    file: &PathBuf,
    namespace: &str,
    trust_domain: &str,
) -> anyhow::Result<String> {
    let policy = palisade_policy::load_file(file)?;
    anyhow::ensure!(
        policy.trust_domain.as_str() == trust_domain,
        "{}: its trust domain is {}, --trust-domain says {trust_domain}",
        file.display(),
        policy.trust_domain
    );
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    config_map(
        "palisade-policy",
        namespace,
        "sync",
        &[("policy.yaml", text.as_str())],
    )
}

/// A ConfigMap of Palisade's, as YAML (the data as block scalars, readable in `kubectl get -o
/// yaml` and in review).
pub fn config_map(
    name: &str,
    namespace: &str,
    component: &str,
    data: &[(&str, &str)],
) -> anyhow::Result<String> {
    let mut map = serde_yaml::Mapping::new();
    for (key, value) in data {
        map.insert((*key).into(), (*value).into());
    }
    let object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/component": component,
                "app.kubernetes.io/part-of": "palisade",
                "app.kubernetes.io/version": env!("CARGO_PKG_VERSION"),
            },
        },
        "data": serde_yaml::Value::Mapping(map),
    });
    Ok(serde_yaml::to_string(&object)?)
}

/// Every object of `documents`, reduced to what names it, in the reverse order (the namespace
/// last: deleting it first would leave kubectl with objects already gone).
fn uninstall(documents: &[String], out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let mut names = Vec::new();
    for document in documents {
        for doc in serde_yaml::Deserializer::from_str(document) {
            let value: serde_json::Value = serde::Deserialize::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            let mut metadata = serde_json::json!({"name": value["metadata"]["name"]});
            if let Some(ns) = value["metadata"].get("namespace") {
                metadata["namespace"] = ns.clone();
            }
            names.push(serde_json::json!({
                "apiVersion": value["apiVersion"],
                "kind": value["kind"],
                "metadata": metadata,
            }));
        }
    }
    names.reverse();
    let stream: Vec<String> = names
        .iter()
        .map(serde_yaml::to_string)
        .collect::<Result<_, _>>()?;
    out.write_all(stream.join("---\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// A Kubernetes object or namespace name (RFC 1123 label) that YAML 1.1, which Kubernetes reads,
/// takes for a string wherever it is written unquoted: not `on`, `no`, `null`, `123` or `1e3`.
pub fn check_name(flag: &str, name: &str) -> anyhow::Result<()> {
    const YAML_WORDS: [&str; 11] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
    ];
    let numeric = name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == 'x' || c == 'o' || c == '-');
    anyhow::ensure!(
        !YAML_WORDS.contains(&name) && !numeric,
        "{flag} {name:?} would be read as a boolean, null or number in YAML; choose another name"
    );
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    anyhow::ensure!(
        ok,
        "{flag} {name:?} is not a Kubernetes name (lowercase letters, digits and '-', at most 63)"
    );
    Ok(())
}
