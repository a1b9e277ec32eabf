//! `palisade`: one command line for every part of Palisade. Each subcommand parses its arguments
//! and calls a library crate; the sentences users read on failure are made here.

mod commands;
mod exit;
#[cfg(feature = "tools")]
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The version, the commit it was built from and that commit's date (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PALISADE_COMMIT"),
    ", ",
    env!("PALISADE_COMMIT_DATE"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version = VERSION,
    about = "Segment a container network twice over from one policy: nftables on every host, SPIFFE mTLS between workloads",
    after_help = "Examples:\n  \
palisade demo\n  \
palisade policy explain examples/policy/shop.yaml \\\n      --from 10.10.1.5 --to 10.10.2.7 --port 8080\n\n\
Start with `palisade demo`: the whole story on one machine, no root needed."
)]
struct Cli {
    /// Log format on stderr: text for people, json for log pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage a certificate authority (one per trust domain).
    #[cfg(feature = "tools")]
    #[command(
        subcommand,
        after_help = "Examples:\n  \
palisade ca init --ca-dir root --trust-domain example.org\n  \
palisade ca init-issuer --root-dir root --ca-dir issuer\n  \
palisade ca serve --ca-dir issuer --listen 0.0.0.0:8443"
    )]
    Ca(commands::ca::CaCommand),
    /// Issue and inspect workload certificates (X.509-SVIDs).
    #[cfg(feature = "tools")]
    #[command(
        subcommand,
        after_help = "Examples:\n  \
palisade cert issue --ca-dir issuer \\\n      --spiffe-id spiffe://example.org/ns/shop/sa/web --svid-dir web\n  \
palisade cert inspect web/cert.pem --bundle web/bundle.pem"
    )]
    Cert(commands::cert::CertCommand),
    /// Check, compile, explain, apply and sync a segmentation policy.
    #[cfg(feature = "tools")]
    #[command(
        subcommand,
        after_help = "Examples:\n  \
palisade policy check examples/policy/shop.yaml\n  \
palisade policy compile examples/policy/shop.yaml --host node-a"
    )]
    Policy(commands::policy::PolicyCommand),
    /// Run the mTLS sidecar of one workload.
    #[command(
        subcommand,
        after_help = "Examples:\n  \
palisade sidecar run --config /etc/palisade/sidecar.yaml\n  \
palisade sidecar check-sandbox --config /etc/palisade/sidecar.yaml"
    )]
    Sidecar(commands::sidecar::SidecarCommand),
    /// Add the redirect init container and the sidecar to Kubernetes workloads (or take them out).
    #[cfg(feature = "tools")]
    Inject(commands::inject::InjectArgs),
    /// Print every object a cluster needs, for kubectl apply -f - (or, with --uninstall, to
    /// delete).
    #[cfg(feature = "tools")]
    Install(commands::install::InstallArgs),
    /// Generate configuration: the ConfigMap of a meshed namespace's sidecars.
    #[cfg(feature = "tools")]
    #[command(
        subcommand,
        after_help = "Examples:\n  \
palisade config sidecar --namespace shop --bundle root/bundle.pem \\\n      \
--policy policy.yaml | kubectl apply -f -"
    )]
    Config(commands::config::ConfigCommand),
    /// Preflight of this host: kernel, nft, Landlock, seccomp, and the configs, certificate
    /// and CA given.
    #[cfg(feature = "tools")]
    Check(commands::check::CheckArgs),
    /// Run the whole story on this machine in a temporary directory, printing each step.
    #[cfg(feature = "tools")]
    Demo(commands::demo::DemoArgs),
    /// Print the version, the commit it was built from and that commit's date.
    #[command(after_help = "Examples:\n  palisade version\n  palisade version -o json")]
    Version(commands::version::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[cfg(feature = "tools")]
    #[command(after_help = "Examples:\n  \
        palisade completion bash > /etc/bash_completion.d/palisade\n  \
        palisade completion zsh > \"${fpath[1]}/_palisade\"\n  \
        palisade completion fish > ~/.config/fish/completions/palisade.fish")]
    Completion(commands::version::CompletionArgs),
    /// Write a man page for every command and subcommand into a directory.
    #[cfg(feature = "tools")]
    #[command(
        after_help = "Example:\n  palisade man /usr/local/share/man/man1 && man palisade-policy-explain"
    )]
    Man(commands::version::ManArgs),
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let mut path = Vec::new();
    let mut at = &matches;
    while let Some((name, sub)) = at.subcommand() {
        path.push(name);
        at = sub;
    }
    // Services say what they do at info; one-shot commands only warn, their output is stdout.
    let is_service = match &cli.command {
        Command::Sidecar(_) => true,
        Command::Version(_) => false,
        #[cfg(feature = "tools")]
        Command::Policy(commands::policy::PolicyCommand::Sync(_)) => true,
        #[cfg(feature = "tools")]
        Command::Ca(commands::ca::CaCommand::Serve(_)) => true,
        #[cfg(feature = "tools")]
        Command::Cert(commands::cert::CertCommand::Renew(args)) => args.watch,
        #[cfg(feature = "tools")]
        Command::Inject(args) => args.command.is_some(),
        #[cfg(feature = "tools")]
        _ => false,
    };
    init_logging(cli.log_format, if is_service { "info" } else { "warn" });
    palisade_admin::exposition::set_build_info(env!("CARGO_PKG_VERSION"), env!("PALISADE_COMMIT"));
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    for warning in commands::deprecated::warnings(&path, &args) {
        tracing::warn!("{warning}");
    }
    // Not locked for the whole run: services (ca serve's audit lines) write from other threads.
    let mut stdout = std::io::stdout();
    let result = match cli.command {
        #[cfg(feature = "tools")]
        Command::Ca(cmd) => commands::ca::run(cmd, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Cert(cmd) => commands::cert::run(cmd, &mut stdout),
        Command::Sidecar(cmd) => commands::sidecar::run(cmd, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Policy(cmd) => commands::policy::run(cmd, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Demo(args) => commands::demo::run(args, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Inject(args) => commands::inject::run(&args, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Install(args) => commands::install::run(&args, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Config(cmd) => commands::config::run(cmd, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Check(args) => commands::check::check(&args, &mut stdout),
        Command::Version(args) => commands::version::version(&args, &mut stdout),
        #[cfg(feature = "tools")]
        Command::Completion(args) => {
            commands::version::completion(&args, &mut Cli::command(), &mut stdout)
        }
        #[cfg(feature = "tools")]
        Command::Man(args) => commands::version::man(&args, Cli::command()),
    };
    match result {
        Ok(code) => code,
        // A reader that closed our stdout (`| head`) has all it wanted: end quietly, with
        // success, so that a pipeline under `set -o pipefail` does not fail for it.
        Err(error) if closed_stdout(&error) => ExitCode::SUCCESS,
        // A service says it once, in its log (json when asked for), where its other lines are.
        // The sentence is the line's message: readable as text, a field as JSON.
        Err(error) if is_service => {
            tracing::error!("{error:#}");
            ExitCode::from(exit::FAILURE)
        }
        Err(error) => {
            tracing::debug!(error = format!("{error:#}"), "command failed");
            eprintln!("error: {error:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Whether `error` is a write to a stdout whose reader has gone (EPIPE; Rust ignores SIGPIPE, so
/// the write fails instead of killing the process).
fn closed_stdout(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("PALISADE_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
