//! `palisade config sidecar`: the ConfigMap `palisade-sidecar` of one meshed namespace, which
//! `palisade inject` mounts in every pod there (sidecar.yaml, policy.yaml, bundle.pem). Its
//! sidecar.yaml is `install/sidecar-config.yaml` filled in, and is loaded as the sidecar would
//! load it before anything is printed, so what this prints always starts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::commands::install::{check_name, config_map};

const SIDECAR_CONFIG: &str = include_str!("../../install/sidecar-config.yaml");

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the ConfigMap palisade-sidecar of a meshed namespace.
    #[command(after_help = "Examples:\n  \
palisade config sidecar --namespace shop --bundle root/bundle.pem \\\n      \
--policy policy.yaml | kubectl apply -f -\n  \
palisade config sidecar --namespace shop --bundle root/bundle.pem \\\n      \
--policy policy.yaml --mode permissive")]
    Sidecar(SidecarArgs),
}

#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// The meshed namespace (the ConfigMap is made there).
    #[arg(long, value_name = "NAME")]
    pub namespace: String,
    /// The trust bundle (root/bundle.pem of `ca init`): the roots the sidecars trust at first.
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// The segmentation policy the sidecars admit and connect by.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// strict: only mTLS peers the policy admits; permissive: plaintext too (while migrating).
    #[arg(long, value_enum, default_value = "strict")]
    pub mode: Mode,
    /// Palisade's own namespace, where the CA service runs.
    #[arg(long, value_name = "NAME", default_value = "palisade-system")]
    pub palisade_namespace: String,
    /// The ConfigMap's name (inject's --config-map, or a pod's palisade.io/config).
    #[arg(long, value_name = "NAME", default_value = "palisade-sidecar")]
    pub name: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    Strict,
    Permissive,
}

pub fn run(cmd: ConfigCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Sidecar(args) => sidecar(&args, out),
    }
}

fn sidecar(args: &SidecarArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    check_name("--namespace", &args.namespace)?;
    check_name("--palisade-namespace", &args.palisade_namespace)?;
    check_name("--name", &args.name)?;
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let bundle_pem = read(&args.bundle)?;
    let bundle = palisade_identity::TrustBundle::from_pem_own_domain(bundle_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.bundle.display()))?;
    let trust_domain = bundle.trust_domain().as_str().to_owned();
    let policy_text = read(&args.policy)?;
    let policy = palisade_policy::load_file(&args.policy)?;
    anyhow::ensure!(
        policy.trust_domain.as_str() == trust_domain,
        "{}: its trust domain is {}, the bundle's is {trust_domain}",
        args.policy.display(),
        policy.trust_domain
    );
    let mode = match args.mode {
        Mode::Strict => "strict",
        Mode::Permissive => "permissive",
    };
    let sidecar_yaml = SIDECAR_CONFIG
        .replace("${NAMESPACE}", &args.palisade_namespace)
        .replace("${TRUST_DOMAIN}", &trust_domain)
        .replace("  mode: strict\n", &format!("  mode: {mode}\n"));
    // Loaded as the sidecar will load it, so that nothing that cannot start is printed.
    palisade_sidecar::SidecarConfig::from_yaml(&sidecar_yaml, Path::new("sidecar.yaml"))
        .context("the generated sidecar.yaml does not load (a bug)")?;
    let text = config_map(
        &args.name,
        &args.namespace,
        "sidecar",
        &[
            ("sidecar.yaml", sidecar_yaml.as_str()),
            ("policy.yaml", policy_text.as_str()),
            ("bundle.pem", bundle_pem.as_str()),
        ],
    )?;
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
