//! Whom a sidecar admits by the NetworkPolicies: a peer's SPIFFE ID names a namespace and a
//! service account (`ns/<namespace>/sa/<serviceaccount>`), and it is admitted to a pod's port
//! when some pod running as that account is one the pod's ingress admits there ([`decide`]'s
//! ingress side). The kernel checks the same objects per pod address; the sidecar checks them per
//! workload identity, so two pods sharing a service account share its admission. The source's
//! egress is its own node's to enforce, not the destination sidecar's.

use crate::explain::{decide, End};
use crate::model::{Cluster, Proto};

/// Whether the ingress of pod `destination` (`namespace/name`) admits, on `protocol`/`port`, some
/// pod of namespace `namespace` running as service account `account`. False when the
/// destination or every such pod is missing from the inventory (nobody is admitted on a guess).
pub fn ingress_admits_account(
    cluster: &Cluster,
    destination: &str,
    namespace: &str,
    account: &str,
    protocol: Proto,
    port: u16,
) -> bool {
    let Some(d) = cluster.inventory.pod(destination) else {
        return false;
    };
    let pods = &cluster.inventory.pods;
    let dst_ips = &pods[d].ips;
    pods.iter().enumerate().any(|(i, p)| {
        i != d
            && p.namespace == namespace
            && p.service_account == account
            && p.in_pod_network()
            && p.ips.iter().any(|&ip| {
                dst_ips
                    .iter()
                    .find(|d_ip| d_ip.is_ipv4() == ip.is_ipv4())
                    .is_some_and(|&dst_ip| {
                        let from = End { ip, pod: Some(i) };
                        let to = End {
                            ip: dst_ip,
                            pod: Some(d),
                        };
                        decide(cluster, &from, &to, protocol, port).ingress.allows()
                    })
            })
    })
}
