//! The command line, one directory per area (`ca/`, `cert/`, `policy/`, `sidecar/`), one file
//! per command with its arguments beside it. What several commands share lives here: the output
//! formats (`-o`), lifetimes, key types, the sandbox flags; `service` holds what the long-running
//! ones share, `deprecated` the old spellings of flags (docs/CLI.md, "Grammar").

#[cfg(feature = "tools")]
pub mod ca;
#[cfg(feature = "tools")]
pub mod cert;
#[cfg(feature = "tools")]
pub mod check;
#[cfg(feature = "tools")]
pub mod config;
#[cfg(feature = "tools")]
pub mod demo;
pub mod deprecated;
#[cfg(feature = "tools")]
pub mod inject;
#[cfg(feature = "tools")]
pub mod install;
#[cfg(feature = "tools")]
pub mod policy;
pub mod service;
pub mod sidecar;
pub mod version;

/// `-o text|json`: how a command prints what a script reads (docs/CLI.md, "Output").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON document (times in RFC 3339, serial numbers in lowercase hex).
    Json,
}

/// The `-o` flag, flattened into every command a script reads.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct OutputArgs {
    /// Output format: text for people, json for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[cfg(feature = "tools")]
impl OutputArgs {
    pub fn json(&self) -> bool {
        self.output == Output::Json
    }
}

/// Writes `value` as one pretty-printed JSON document and a newline.
#[cfg(feature = "tools")]
pub fn write_json(
    out: &mut dyn std::io::Write,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

#[cfg(feature = "tools")]
use std::time::Duration;

#[cfg(feature = "tools")]
/// Parses `90s`, `15m`, `24h`, `30d`, `1y` (and combinations such as `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("\"{s}\" is not a duration like 90s, 15m, 24h or 30d ({e})"))?;
    if d.is_zero() {
        return Err("a lifetime must be longer than zero".into());
    }
    Ok(d)
}

/// How a long-running command restricts itself (`policy sync`, `ca serve`, `cert renew --watch`;
/// the sidecar takes the same in its configuration's `sandbox:`).
#[cfg(feature = "tools")]
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct SandboxArgs {
    /// Landlock: best-effort (what the kernel supports, logged), required (refuse to run
    /// otherwise), off.
    #[arg(long, value_enum, default_value = "best-effort")]
    pub landlock: LandlockArg,
    /// The system call allow-list: enforce, log (calls off the list allowed and logged by the
    /// kernel's audit, to find one that is missing) or off.
    #[arg(long, value_enum, default_value = "enforce")]
    pub seccomp: SeccompArg,
}

#[cfg(feature = "tools")]
impl SandboxArgs {
    pub fn config(&self) -> palisade_sandbox::SandboxConfig {
        use palisade_sandbox::{LandlockMode, SeccompMode};
        palisade_sandbox::SandboxConfig {
            landlock: match self.landlock {
                LandlockArg::BestEffort => LandlockMode::BestEffort,
                LandlockArg::Required => LandlockMode::Required,
                LandlockArg::Off => LandlockMode::Off,
            },
            seccomp: match self.seccomp {
                SeccompArg::Enforce => SeccompMode::Enforce,
                SeccompArg::Log => SeccompMode::Log,
                SeccompArg::Off => SeccompMode::Off,
            },
        }
    }
}

#[cfg(feature = "tools")]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LandlockArg {
    BestEffort,
    Required,
    Off,
}

#[cfg(feature = "tools")]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SeccompArg {
    Enforce,
    Log,
    Off,
}

/// The key types a command accepts, as clap lists them in `--help` and in errors.
#[cfg(feature = "tools")]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum KeyTypeArg {
    EcdsaP256,
    Ed25519,
}

#[cfg(feature = "tools")]
impl From<KeyTypeArg> for palisade_ca::KeyType {
    fn from(k: KeyTypeArg) -> Self {
        match k {
            KeyTypeArg::EcdsaP256 => palisade_ca::KeyType::EcdsaP256,
            KeyTypeArg::Ed25519 => palisade_ca::KeyType::Ed25519,
        }
    }
}
