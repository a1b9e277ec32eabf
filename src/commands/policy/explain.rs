//! `palisade policy explain`: whether one endpoint may reach another and what decides, for the
//! Palisade policy (palisade_policy::decide, the single definition the sidecar admits by) and for
//! NetworkPolicies (palisade_netpol::decide); with both, a connection must pass both.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use palisade_netpol::{Cluster, End, Side, Verdict};
use palisade_policy::{decide, load_file, Decision, Endpoint, Protocol, Reason};
use serde_json::{json, Value};

use super::{FamilyArg, KubernetesArgs, ProtocolArg};
use crate::commands::{write_json, OutputArgs};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The Palisade policy (optional with --kubernetes).
    #[arg(value_name = "FILE", required_unless_present = "kubernetes")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub kubernetes: KubernetesArgs,
    /// Source: an IP address or a SPIFFE ID; with --kubernetes, a pod (`namespace/name`) or an
    /// IP address.
    #[arg(long, value_name = "ADDR|SPIFFE_ID|NS/POD")]
    pub from: String,
    /// Destination, as --from.
    #[arg(long, value_name = "ADDR|SPIFFE_ID|NS/POD")]
    pub to: String,
    /// Destination port (tcp, udp and sctp).
    #[arg(long, value_name = "P")]
    pub port: Option<u16>,
    #[arg(long, value_enum, default_value = "tcp")]
    pub protocol: ProtocolArg,
    /// With --kubernetes: which of a pod's addresses to use.
    #[arg(long, value_enum, default_value = "ipv4")]
    pub family: FamilyArg,
    /// text, or json: {"allowed", "layers": [...]}, one layer per input, each with its verdict
    /// and what decided it.
    #[command(flatten)]
    pub output: OutputArgs,
}

pub fn explain(args: &ExplainArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let protocol = args.protocol.protocol();
    if protocol.has_ports() && args.port.is_none() {
        anyhow::bail!("--port is needed for {}", protocol.name());
    }
    let mut layers = Vec::new();
    let mut text = String::new();
    let allowed = match args.kubernetes.load()? {
        None => {
            let file = args
                .file
                .as_deref()
                .expect("clap requires FILE without --kubernetes");
            let (from, to): (Endpoint, Endpoint) = (args.from.parse()?, args.to.parse()?);
            let decision = policy_layer(file, &from, &to, protocol, args.port)?;
            text.push_str(&policy_line(&decision, &from, &to, protocol, args.port));
            layers.push(policy_json(
                file, &decision, &from, &to, protocol, args.port,
            ));
            decision.allowed
        }
        Some(cluster) => {
            let proto = args.protocol.kubernetes()?;
            let port = args
                .port
                .expect("checked above: TCP, UDP and SCTP have ports");
            let (from, to) = (
                end(&cluster, &args.from, args.family)?,
                end(&cluster, &args.to, args.family)?,
            );
            let verdict = palisade_netpol::decide(&cluster, &from, &to, proto, port);
            text.push_str(
                &palisade_netpol::Explained {
                    cluster: &cluster,
                    from,
                    to,
                    protocol: proto,
                    port,
                    verdict: &verdict,
                }
                .to_string(),
            );
            layers.push(kubernetes_json(&cluster, from, to, proto, port, &verdict));
            let mut allowed = verdict.allowed;
            if let Some(file) = &args.file {
                let (a, b) = (Endpoint::Address(from.ip), Endpoint::Address(to.ip));
                let decision = policy_layer(file, &a, &b, protocol, args.port)?;
                text.push_str("and the Palisade policy: ");
                text.push_str(&policy_line(&decision, &a, &b, protocol, args.port));
                layers.push(policy_json(file, &decision, &a, &b, protocol, args.port));
                allowed &= decision.allowed;
                text.push_str(&format!(
                    "both layers: {}\n",
                    if allowed { "allowed" } else { "denied" }
                ));
            }
            allowed
        }
    };
    if args.output.json() {
        write_json(out, &json!({"allowed": allowed, "layers": layers}))?;
    } else {
        out.write_all(text.as_bytes())?;
    }
    Ok(crate::exit::answer(allowed))
}

/// A pod (`namespace/name`, its address of `family`) or an IP address, in the manifests.
fn end(cluster: &Cluster, text: &str, family: FamilyArg) -> anyhow::Result<End> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(End::at(cluster, ip));
    }
    let Some(i) = cluster.inventory.pod(text) else {
        anyhow::bail!(
            "there is no pod `{text}` in the manifests (expected namespace/name or an IP address)"
        );
    };
    let Some(ip) = cluster.inventory.pods[i]
        .ips
        .iter()
        .copied()
        .find(|ip| palisade_policy::addrs::family_of(*ip) == family.family())
    else {
        anyhow::bail!(
            "pod `{text}` has no {} address",
            match family {
                FamilyArg::Ipv4 => "IPv4",
                FamilyArg::Ipv6 => "IPv6",
            }
        );
    };
    Ok(End { ip, pod: Some(i) })
}

fn policy_layer(
    file: &Path,
    from: &Endpoint,
    to: &Endpoint,
    protocol: Protocol,
    port: Option<u16>,
) -> anyhow::Result<Decision> {
    Ok(decide(&load_file(file)?, from, to, protocol, port))
}

fn policy_line(
    decision: &Decision,
    from: &Endpoint,
    to: &Endpoint,
    protocol: Protocol,
    port: Option<u16>,
) -> String {
    let port = port.map(|p| format!(" port {p}")).unwrap_or_default();
    format!(
        "{from} ({}) -> {to} ({}) {}{port}: {decision}\n",
        decision.from_segments.join(", "),
        decision.to_segments.join(", "),
        protocol.name(),
    )
}

fn policy_json(
    file: &Path,
    decision: &Decision,
    from: &Endpoint,
    to: &Endpoint,
    protocol: Protocol,
    port: Option<u16>,
) -> Value {
    let reason = match &decision.reason {
        Reason::Rule { name, line } => json!({"kind": "rule", "rule": name, "line": line}),
        Reason::SameSegment(s) => json!({"kind": "same_segment", "segment": s}),
        Reason::EgressToOutside(s) => json!({"kind": "egress_to_outside", "segment": s}),
        Reason::NotGoverned => json!({"kind": "not_governed"}),
        Reason::IdentitiesInNoSegment => json!({"kind": "identities_in_no_segment"}),
        Reason::DefaultDeny => json!({"kind": "default_deny"}),
    };
    json!({
        "layer": "policy",
        "file": file.display().to_string(),
        "from": from.to_string(),
        "to": to.to_string(),
        "from_segments": decision.from_segments,
        "to_segments": decision.to_segments,
        "protocol": protocol.name(),
        "port": port,
        "allowed": decision.allowed,
        "reason": reason,
        "sentence": decision.to_string(),
    })
}

fn kubernetes_json(
    cluster: &Cluster,
    from: End,
    to: End,
    protocol: palisade_netpol::Proto,
    port: u16,
    verdict: &Verdict,
) -> Value {
    let end = |end: End| {
        json!({
            "ip": end.ip.to_string(),
            "pod": end.pod.map(|i| cluster.inventory.pods[i].key()),
        })
    };
    let side = |side: &Side, egress: bool| match side {
        Side::NotAPod => json!({"kind": "not_a_pod", "allows": true}),
        Side::NotIsolated => json!({"kind": "not_isolated", "allows": true}),
        Side::Isolated {
            policies,
            admitted_by,
        } => json!({
            "kind": "isolated",
            "allows": !admitted_by.is_empty(),
            "policies": policies.iter().map(|&i| {
                let p = &cluster.policies[i];
                json!({"name": p.key(), "at": p.source.to_string()})
            }).collect::<Vec<_>>(),
            "admitted_by": admitted_by.iter().map(|r| {
                let p = &cluster.policies[r.policy];
                let rules = if egress { &p.egress } else { &p.ingress };
                let at = rules.iter().find(|x| x.index == r.rule).map(|x| x.source.to_string());
                json!({"policy": p.key(), "rule": r.rule + 1, "at": at})
            }).collect::<Vec<_>>(),
        }),
    };
    json!({
        "layer": "kubernetes",
        "from": end(from),
        "to": end(to),
        "protocol": protocol.name(),
        "port": port,
        "allowed": verdict.allowed,
        "same_pod": verdict.same_pod,
        "egress": side(&verdict.egress, true),
        "ingress": side(&verdict.ingress, false),
    })
}
