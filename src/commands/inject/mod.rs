//! `palisade inject`: Kubernetes manifests in, the same manifests with Palisade's containers out
//! (palisade_inject does the work); `inject serve` (serve.rs), the same as an admission webhook.

mod serve;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use palisade_inject::{PullPolicy, Settings};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  palisade inject deployment.yaml | kubectl apply -f -\n  \
palisade inject - < deployment.yaml > injected.yaml\n  \
palisade inject deployment.yaml --uninject\n\n\
Every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job and CronJob\n\
gets the redirect init container and the sidecar (a native sidecar); other kinds pass through,\n\
and one that holds a pod template is named in a warning. Injecting twice equals\n\
injecting once; --uninject restores the input. Comments are not kept. A pod whose app could\n\
bypass the sidecar (privileged, NET_ADMIN or NET_RAW added, root or no runAsUser with a shared\n\
process namespace, hostPID) is refused unless the palisade.io/allow-bypass annotation names the\n\
container. A hostNetwork pod is not injected (with a warning). See docs/PODS.md.\n\n\
`palisade inject serve` does the same to pods as they are made (an admission webhook).",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct InjectArgs {
    #[command(subcommand)]
    pub command: Option<InjectCommand>,
    /// The manifests (multi-document YAML); - for standard input.
    #[arg(value_name = "FILE", required_unless_present = "old_file")]
    pub file: Option<PathBuf>,
    /// The old spelling of FILE (docs/CLI.md).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE",
        hide = true,
        conflicts_with = "file"
    )]
    pub old_file: Option<PathBuf>,
    /// Take Palisade out instead.
    #[arg(long)]
    pub uninject: bool,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// What the injected containers are: the same flags for `inject` and `inject serve`.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// The image holding palisade.
    #[arg(long, value_name = "IMAGE", default_value = "palisade:latest")]
    pub image: String,
    /// The injected containers' imagePullPolicy.
    #[arg(long, value_enum, default_value = "if-not-present")]
    pub image_pull_policy: PullPolicyArg,
    /// The UID the sidecar runs as (exempt from the redirect).
    #[arg(long, value_name = "UID", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// The ConfigMap with sidecar.yaml, policy.yaml and bundle.pem (per workload: the
    /// palisade.io/config annotation).
    #[arg(long, value_name = "NAME", default_value = "palisade-sidecar")]
    pub config_map: String,
}

impl SettingsArgs {
    /// The inject crate's settings.
    pub fn settings(&self) -> Settings {
        Settings {
            image: self.image.clone(),
            image_pull_policy: self.image_pull_policy.into(),
            proxy_uid: self.proxy_uid,
            config_map: self.config_map.clone(),
            ..Settings::default()
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum InjectCommand {
    /// Inject pods as they are made: the mutating admission webhook (AdmissionReview v1, HTTPS).
    Serve(serve::ServeArgs),
}

/// `--image-pull-policy`, as clap lists it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PullPolicyArg {
    #[value(alias = "Always")]
    Always,
    #[value(alias = "IfNotPresent")]
    IfNotPresent,
    #[value(alias = "Never")]
    Never,
}

impl From<PullPolicyArg> for PullPolicy {
    fn from(arg: PullPolicyArg) -> PullPolicy {
        match arg {
            PullPolicyArg::Always => PullPolicy::Always,
            PullPolicyArg::IfNotPresent => PullPolicy::IfNotPresent,
            PullPolicyArg::Never => PullPolicy::Never,
        }
    }
}

pub fn run(args: &InjectArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    if let Some(InjectCommand::Serve(serve_args)) = &args.command {
        return serve::run(serve_args, out);
    }
    let file = args
        .file
        .as_ref()
        .or(args.old_file.as_ref())
        .expect("clap requires FILE or its old spelling");
    let mut input = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut input)
            .context("cannot read standard input")?;
    } else {
        input = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
    }
    let output = if args.uninject {
        palisade_inject::uninject(&input)
    } else {
        palisade_inject::inject(&input, &args.settings.settings()).map(|injected| {
            for warning in &injected.warnings {
                eprintln!("warning: {warning}");
            }
            injected.text
        })
    }
    // file:line:column when the error is located (a YAML error), as every YAML error reads.
    .map_err(|e| match e {
        palisade_inject::InjectError::Yaml { at: Some(_), .. } => {
            anyhow::anyhow!("{}:{e}", file.display())
        }
        e => anyhow::Error::new(e).context(file.display().to_string()),
    })?;
    out.write_all(output.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
