//! `palisade policy check`: load a policy and NetworkPolicy manifests, report every problem at
//! its file:line:column, lint what loads. With `-o json` every finding is a diagnostic (file,
//! line, column, severity, message), errors included, so an editor or CI can place them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::KubernetesArgs;
use crate::commands::{write_json, OutputArgs};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The Palisade policy (optional with --kubernetes).
    #[arg(value_name = "FILE", required_unless_present = "kubernetes")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// Treat warnings as errors.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// One finding, located.
#[derive(Debug, Serialize)]
struct Diagnostic {
    file: String,
    line: usize,
    column: usize,
    severity: Severity,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Severity {
    Error,
    Warning,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {severity}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

pub fn check(args: &CheckArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let mut diagnostics = Vec::new();
    let mut summaries = serde_json::Map::new();
    let mut lines = Vec::new();
    if let Some(file) = &args.file {
        let name = file.display().to_string();
        let located = |severity, pos: palisade_policy::model::Pos, message| Diagnostic {
            file: name.clone(),
            line: pos.line,
            column: pos.column,
            severity,
            message,
        };
        match palisade_policy::load_file(file) {
            Ok(policy) => {
                diagnostics.extend(
                    palisade_policy::lint(&policy)
                        .into_iter()
                        .map(|w| located(Severity::Warning, w.pos, w.message)),
                );
                let (segments, rules, hosts) = (
                    policy.segments.len(),
                    policy.rules.len(),
                    policy.hosts.len(),
                );
                lines.push(format!(
                    "{name}: {segments} segments, {rules} rules, {hosts} hosts"
                ));
                summaries.insert(
                    "policy".into(),
                    serde_json::json!({"file": name, "segments": segments, "rules": rules, "hosts": hosts}),
                );
            }
            Err(errors) => diagnostics.extend(
                errors
                    .errors
                    .into_iter()
                    .map(|e| located(Severity::Error, e.pos, e.message)),
            ),
        }
    }
    if !args.kubernetes.kubernetes.is_empty() {
        let located =
            |severity, (at, message): (palisade_netpol::model::Source, String)| Diagnostic {
                file: at.file.to_string(),
                line: at.line,
                column: at.column,
                severity,
                message,
            };
        match palisade_netpol::load_partial(&args.kubernetes.kubernetes) {
            Ok(loaded) => {
                for refused in loaded.refused {
                    diagnostics.extend(
                        refused
                            .errors
                            .into_iter()
                            .map(|e| located(Severity::Error, e)),
                    );
                }
                diagnostics.extend(
                    loaded
                        .warnings
                        .into_iter()
                        .map(|w| located(Severity::Warning, w)),
                );
                let inventory = &loaded.cluster.inventory;
                let (policies, pods, namespaces) = (
                    loaded.cluster.policies.len(),
                    inventory.pods.len(),
                    inventory.namespaces.len(),
                );
                lines.push(format!(
                    "kubernetes: {policies} NetworkPolicies, {pods} pods, {namespaces} namespaces"
                ));
                summaries.insert(
                    "kubernetes".into(),
                    serde_json::json!({"network_policies": policies, "pods": pods, "namespaces": namespaces}),
                );
            }
            Err(errors) => diagnostics.extend(
                errors
                    .errors
                    .into_iter()
                    .map(|e| located(Severity::Error, e)),
            ),
        }
    }
    let count = |severity| {
        diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    };
    let (errors, warnings) = (count(Severity::Error), count(Severity::Warning));
    let passed = errors == 0 && !(args.strict && warnings > 0);
    if args.output.json() {
        let mut document = serde_json::json!({
            "passed": passed,
            "errors": errors,
            "warnings": warnings,
            "diagnostics": diagnostics,
        });
        document
            .as_object_mut()
            .expect("an object")
            .extend(summaries);
        write_json(out, &document)?;
        return Ok(exit_code(passed));
    }
    // Text: warnings on stdout with the summary, as a linter prints them; errors are the
    // command's failure, said on stderr as every command's are.
    if errors > 0 {
        let text: Vec<String> = diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string().replacen(": error: ", ": ", 1))
            .collect();
        anyhow::bail!("{}", text.join("\n"));
    }
    for d in &diagnostics {
        writeln!(out, "{d}")?;
    }
    for line in lines {
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "{warnings} warning{}",
        if warnings == 1 { "" } else { "s" }
    )?;
    Ok(exit_code(passed))
}

/// A check that does not pass is a failure (1), not a "no" (3): the input must change.
fn exit_code(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::FAILURE)
    }
}
