//! `--revoke-established`: after a new policy is applied, cut the flows it denies. Connection
//! tracking lets established flows through before any rule looks at them, so a denied flow would
//! otherwise live on; deleting its conntrack entry (which holds both directions) makes its next
//! packet a new one, which the new rules then drop.
//!
//! Uses the `conntrack` tool (Debian package `conntrack`). Only flows with an end in one of this
//! host's segments are considered.

use std::net::IpAddr;
use std::process::Command;

use palisade_policy::{decide, Endpoint, Policy, Protocol};

/// One tracked flow, as `conntrack -L` prints its original direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// `tcp`, `udp` or `sctp`: lines of protocols without ports are skipped.
    pub protocol: Protocol,
    /// The source address of the original direction.
    pub src: IpAddr,
    /// The destination address of the original direction.
    pub dst: IpAddr,
    /// The source port.
    pub sport: u16,
    /// The destination port: the one the policy's rules match.
    pub dport: u16,
}

/// Parses `conntrack -L` output: the first `src=`, `dst=`, `sport=`, `dport=` of each line are
/// the original direction.
pub fn parse_flows(text: &str) -> Vec<Flow> {
    text.lines()
        .filter_map(|line| {
            let protocol = match line.split_whitespace().next()? {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                "sctp" => Protocol::Sctp,
                _ => return None,
            };
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .map(str::to_owned)
            };
            Some(Flow {
                protocol,
                src: field("src=")?.parse().ok()?,
                dst: field("dst=")?.parse().ok()?,
                sport: field("sport=")?.parse().ok()?,
                dport: field("dport=")?.parse().ok()?,
            })
        })
        .collect()
}

/// The flows that `policy` denies and that touch one of `host`'s segments.
pub fn denied_flows(policy: &Policy, host: &str, flows: &[Flow]) -> Vec<Flow> {
    let local = policy
        .host(host)
        .map(|h| {
            h.segments
                .iter()
                .fold(palisade_policy::addrs::Addrs::default(), |acc, &i| {
                    acc.union(&policy.segments[i].members)
                })
        })
        .unwrap_or_default();
    flows
        .iter()
        .filter(|f| local.contains(f.src) || local.contains(f.dst))
        .filter(|f| {
            !decide(
                policy,
                &Endpoint::Address(f.src),
                &Endpoint::Address(f.dst),
                f.protocol,
                Some(f.dport),
            )
            .allowed
        })
        .cloned()
        .collect()
}

/// Deletes the conntrack entries of denied flows; returns how many were cut.
pub fn revoke_denied_flows(policy: &Policy, host: &str) -> u64 {
    let listing = match Command::new("conntrack").arg("-L").output() {
        Ok(out) if out.status.success() || !out.stdout.is_empty() => {
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
        Ok(out) => {
            tracing::error!(stderr = %String::from_utf8_lossy(&out.stderr).trim(), "conntrack -L failed; established flows were not revoked");
            return 0;
        }
        Err(error) => {
            tracing::error!(%error, "cannot run conntrack (install the conntrack package); established flows were not revoked");
            return 0;
        }
    };
    let mut cut = 0;
    for flow in denied_flows(policy, host, &parse_flows(&listing)) {
        let status = Command::new("conntrack")
            .args(["-D", "-p", flow.protocol.name()])
            .args(["-s", &flow.src.to_string(), "-d", &flow.dst.to_string()])
            .args([
                "--sport",
                &flow.sport.to_string(),
                "--dport",
                &flow.dport.to_string(),
            ])
            .output();
        match status {
            Ok(out) if out.status.success() => {
                tracing::info!(src = %flow.src, dst = %flow.dst, dport = flow.dport, protocol = flow.protocol.name(), "revoked an established flow the policy now denies");
                cut += 1;
            }
            Ok(out) => {
                tracing::warn!(stderr = %String::from_utf8_lossy(&out.stderr).trim(), "conntrack -D failed")
            }
            Err(error) => tracing::warn!(%error, "conntrack -D failed"),
        }
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_original_direction() {
        let text = "tcp      6 431999 ESTABLISHED src=10.0.1.5 dst=10.0.2.7 sport=40000 dport=8080 src=10.0.2.7 dst=10.0.1.5 sport=8080 dport=40000 [ASSURED] mark=0 use=1\n\
icmp     1 29 src=10.0.1.5 dst=10.0.2.7 type=8 code=0 id=1 src=10.0.2.7 dst=10.0.1.5 type=0 code=0 id=1 mark=0 use=1\n\
udp      17 29 src=fd00::1 dst=fd00::2 sport=5000 dport=53 [UNREPLIED] src=fd00::2 dst=fd00::1 sport=53 dport=5000 mark=0 use=1\n";
        let flows = parse_flows(text);
        assert_eq!(flows.len(), 2, "icmp has no ports and is skipped");
        assert_eq!(flows[0].dport, 8080);
        assert_eq!(flows[0].src, "10.0.1.5".parse::<IpAddr>().unwrap());
        assert_eq!(flows[1].protocol, Protocol::Udp);
    }
}
