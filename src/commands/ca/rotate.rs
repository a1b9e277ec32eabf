//! `palisade ca rotate prepare|activate|retire|status`: the root rotation, each step refused
//! until the previous one is safe to follow (palisade_ca::RootRotation keeps the state).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use palisade_ca::{CaDir, RootRotation, RotationState};
use time::OffsetDateTime;

use crate::commands::{parse_duration, write_json, KeyTypeArg, OutputArgs};
use crate::output::{human_seconds, rfc3339};

#[derive(Debug, Subcommand)]
pub enum RotateCommand {
    /// Step 1: make a new root and add it to the bundle (root and issuer directories).
    #[command(after_help = "Example:\n  \
palisade ca rotate prepare --root-dir /secure/root \\\n      --ca-dir /etc/palisade/issuer --leaf-ttl 1h\n\n\
Then wait one leaf lifetime (the step says when activate becomes safe).")]
    Prepare(RotatePrepareArgs),
    /// Step 2: after one leaf lifetime, the new root takes over and a new issuer signs.
    #[command(after_help = "Example:\n  \
palisade ca rotate activate --root-dir /secure/root \\\n      --ca-dir /etc/palisade/issuer\n\n\
Refused while the new bundle has been served for less than a leaf lifetime (--force for a\n\
compromised root).")]
    Activate(RotateActivateArgs),
    /// Step 3: after one more leaf lifetime, the old root leaves the bundle.
    #[command(after_help = "Example:\n  \
palisade ca rotate retire --root-dir /secure/root \\\n      --ca-dir /etc/palisade/issuer")]
    Retire(RotateRetireArgs),
    /// Say where a rotation stands: its step, the next one and when that becomes safe.
    #[command(after_help = "Examples:\n  \
palisade ca rotate status --root-dir /secure/root \\\n      --ca-dir /etc/palisade/issuer\n  \
palisade ca rotate status --root-dir root --ca-dir issuer -o json \\\n      | jq -r .next_step_safe_from")]
    Status(RotateStatusArgs),
}

#[derive(Debug, Args)]
pub struct RotateDirs {
    /// The root CA's directory.
    #[arg(long, value_name = "DIR")]
    pub root_dir: PathBuf,
    /// The issuer directory `ca serve` runs from.
    #[arg(long = "ca-dir", alias = "dir", value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RotatePrepareArgs {
    #[command(flatten)]
    pub dirs: RotateDirs,
    /// The longest leaf lifetime `ca serve --leaf-ttl` uses: the later steps wait this long.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "1h")]
    pub leaf_ttl: Duration,
    /// Lifetime of the new root.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "365d")]
    pub ttl: Duration,
    /// Key algorithm of the new root.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyTypeArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RotateActivateArgs {
    #[command(flatten)]
    pub dirs: RotateDirs,
    /// Lifetime of the new issuer.
    #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "30d")]
    pub issuer_ttl: Duration,
    /// Key algorithm of the new issuer.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    pub key_type: KeyTypeArg,
    /// Activate before the new bundle has been served for a leaf lifetime (a compromised root).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RotateRetireArgs {
    #[command(flatten)]
    pub dirs: RotateDirs,
    /// Retire while leaves under the old root may still be valid (they stop verifying).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct RotateStatusArgs {
    #[command(flatten)]
    pub dirs: RotateDirs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn rotate(cmd: RotateCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let now = OffsetDateTime::now_utc();
    let rotation =
        |dirs: &RotateDirs| RootRotation::new(CaDir::new(&dirs.root_dir), CaDir::new(&dirs.dir));
    let (dirs, output, done) = match &cmd {
        RotateCommand::Prepare(args) => {
            rotation(&args.dirs).prepare(args.leaf_ttl, args.key_type.into(), args.ttl, now)?;
            (
                &args.dirs,
                args.output,
                "prepared: the bundle now holds the old and the new root",
            )
        }
        RotateCommand::Activate(args) => {
            rotation(&args.dirs).activate(
                args.issuer_ttl,
                args.key_type.into(),
                args.force,
                now,
            )?;
            (
                &args.dirs,
                args.output,
                "activated: a new issuer under the new root signs",
            )
        }
        RotateCommand::Retire(args) => {
            rotation(&args.dirs).retire(args.force, now)?;
            (
                &args.dirs,
                args.output,
                "retired: the old root has left the bundle",
            )
        }
        RotateCommand::Status(args) => (&args.dirs, args.output, ""),
    };
    let status = Status::read(&rotation(dirs), &dirs.dir, now)?;
    if output.json() {
        write_json(out, &status.json())?;
    } else {
        if !done.is_empty() {
            writeln!(out, "{done}")?;
        }
        status.write_text(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a rotation stands after a command: what `-o json` prints for every step.
struct Status {
    state: Option<RotationState>,
    bundle_roots: usize,
    /// The next step and when it becomes safe (a rotation not begun: prepare, now).
    next: (&'static str, OffsetDateTime),
    now: OffsetDateTime,
}

impl Status {
    fn read(
        rotation: &RootRotation,
        issuer: &std::path::Path,
        now: OffsetDateTime,
    ) -> anyhow::Result<Self> {
        let state = rotation.state()?;
        let (_, bundle) = CaDir::new(issuer).load()?;
        let at = |unix: i64| {
            OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        };
        let next = match &state {
            None => ("prepare", now),
            Some(s) => match s.activated_at {
                None => (
                    "activate",
                    at(s.prepared_at) + palisade_ca::activate_wait(s),
                ),
                Some(activated) => ("retire", at(activated) + palisade_ca::retire_wait(s)),
            },
        };
        Ok(Status {
            state,
            bundle_roots: bundle.roots().len(),
            next,
            now,
        })
    }

    fn step(&self) -> &str {
        self.state.as_ref().map_or("none", |s| s.step.as_str())
    }

    fn json(&self) -> serde_json::Value {
        let time = |unix: i64| {
            rfc3339(OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH))
        };
        serde_json::json!({
            "step": self.step(),
            "leaf_ttl_seconds": self.state.as_ref().map(|s| s.leaf_ttl_seconds),
            "prepared_at": self.state.as_ref().map(|s| time(s.prepared_at)),
            "activated_at": self.state.as_ref().and_then(|s| s.activated_at).map(time),
            "bundle_roots": self.bundle_roots,
            "next_step": self.next.0,
            "next_step_safe_from": rfc3339(self.next.1),
            "next_step_safe_now": self.next.1 <= self.now,
        })
    }

    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(
            out,
            "step       {} (the bundle holds {} root{})",
            self.step(),
            self.bundle_roots,
            if self.bundle_roots == 1 { "" } else { "s" }
        )?;
        let (next, from) = self.next;
        let wait = (from - self.now).whole_seconds();
        let when = if wait <= 0 {
            "now".to_string()
        } else {
            format!("from {} (in {})", rfc3339(from), human_seconds(wait))
        };
        writeln!(out, "next step  {next}, safe {when}")
    }
}
