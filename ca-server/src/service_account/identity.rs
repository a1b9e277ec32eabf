//! Who a verified token says its bearer is: the Kubernetes namespace, service account and pod, and
//! the SPIFFE ID `ns/<namespace>/sa/<name>` they map to. Nothing here is JWT: the claims reach this
//! module only once the signature, issuer, audience and times have been checked.

use serde::Deserialize;

use palisade_identity::{SpiffeId, TrustDomain};

use super::{peer_text, ServiceAccount, TokenRefusal};

/// `sub` of a service-account token: `system:serviceaccount:<namespace>:<name>`.
const SA_SUBJECT_PREFIX: &str = "system:serviceaccount:";

/// Longest Kubernetes namespace name (a DNS-1123 label).
const MAX_LABEL_LEN: usize = 63;
/// Longest Kubernetes object name such as a service account's (a DNS-1123 subdomain).
const MAX_SUBDOMAIN_LEN: usize = 253;

/// `{"namespace": ..., "serviceaccount": {"name": ..., "uid": ...}, "pod": {"name": ..., ...}}`.
/// Every member is optional so that a missing one gets its own refusal; a member of the wrong
/// type, or twice, makes the token malformed (serde's derived code refuses a second one).
#[derive(Deserialize)]
pub(super) struct KubernetesClaim {
    namespace: Option<String>,
    serviceaccount: Option<ObjectRef>,
    pod: Option<ObjectRef>,
}

#[derive(Deserialize)]
struct ObjectRef {
    name: Option<String>,
}

/// The service account that the `kubernetes.io` claim and the `sub` of a verified token name, with
/// its SPIFFE ID in `trust_domain`, or why they name none we can issue for. `expires_at` is the
/// token's `exp`, carried into the answer.
pub(super) fn service_account(
    kubernetes: Option<&KubernetesClaim>,
    subject: Option<&str>,
    trust_domain: &TrustDomain,
    expires_at: i64,
) -> Result<ServiceAccount, TokenRefusal> {
    let (namespace, name, pod) = service_account_of(kubernetes, subject)?;
    if !is_dns1123_label(&namespace) {
        return Err(TokenRefusal::InvalidName {
            kind: "namespace",
            name: peer_text(&namespace),
        });
    }
    if !is_dns1123_subdomain(&name) {
        return Err(TokenRefusal::InvalidName {
            kind: "service account",
            name: peer_text(&name),
        });
    }
    if let Some(pod) = &pod {
        if !is_dns1123_subdomain(pod) {
            return Err(TokenRefusal::InvalidName {
                kind: "pod",
                name: peer_text(pod),
            });
        }
    }
    let spiffe_id = spiffe_id_for(trust_domain, &namespace, &name)?;
    Ok(ServiceAccount {
        namespace,
        name,
        pod,
        spiffe_id,
        expires_at,
    })
}

/// Namespace, service account and pod, from the `kubernetes.io` claim when there is one (what
/// projected tokens carry), else from a `sub` of the service-account form. When both are there
/// they must agree: two answers to "who is this" mean we cannot tell which one was meant.
fn service_account_of(
    kubernetes: Option<&KubernetesClaim>,
    subject: Option<&str>,
) -> Result<(String, String, Option<String>), TokenRefusal> {
    let from_claim = match kubernetes {
        Some(k) => {
            let name = k.serviceaccount.as_ref().and_then(|sa| sa.name.as_ref());
            match (&k.namespace, name) {
                (Some(namespace), Some(name)) => Some((
                    namespace.clone(),
                    name.clone(),
                    k.pod.as_ref().and_then(|p| p.name.clone()),
                )),
                _ => return Err(TokenRefusal::NoKubernetesClaims),
            }
        }
        None => None,
    };
    match (from_claim, subject) {
        (Some(account), Some(subject)) => {
            if parse_sa_subject(subject) == Some((account.0.as_str(), account.1.as_str())) {
                Ok(account)
            } else {
                Err(TokenRefusal::SubjectMismatch {
                    subject: peer_text(subject),
                })
            }
        }
        (Some(account), None) => Ok(account),
        (None, Some(subject)) => match parse_sa_subject(subject) {
            Some((namespace, name)) => Ok((namespace.to_owned(), name.to_owned(), None)),
            None => Err(TokenRefusal::NoKubernetesClaims),
        },
        (None, None) => Err(TokenRefusal::NoKubernetesClaims),
    }
}

/// `system:serviceaccount:<namespace>:<name>` → `(namespace, name)`. The name keeps any further
/// `:`, and then fails the name check.
fn parse_sa_subject(subject: &str) -> Option<(&str, &str)> {
    subject.strip_prefix(SA_SUBJECT_PREFIX)?.split_once(':')
}

/// Builds the ID as text and parses it, then checks that it came out as the four segments meant:
/// the names were checked already, but the ID is what the certificate will say, so it is not taken
/// on trust from a concatenation.
fn spiffe_id_for(
    trust_domain: &TrustDomain,
    namespace: &str,
    name: &str,
) -> Result<SpiffeId, TokenRefusal> {
    let text = format!(
        "spiffe://{}/ns/{namespace}/sa/{name}",
        trust_domain.as_str()
    );
    let id = SpiffeId::parse(&text).map_err(|e| TokenRefusal::NotASpiffeId {
        reason: e.to_string(),
    })?;
    let segments: Vec<&str> = id.segments().collect();
    if id.trust_domain() != trust_domain || segments != ["ns", namespace, "sa", name] {
        return Err(TokenRefusal::NotASpiffeId {
            reason: "it does not come out as ns/<namespace>/sa/<name>".to_owned(),
        });
    }
    Ok(id)
}

/// A DNS-1123 label, what a namespace name must be: 1 to 63 of `[a-z0-9-]`, starting and ending
/// with a letter or digit.
fn is_dns1123_label(s: &str) -> bool {
    s.len() <= MAX_LABEL_LEN && is_label(s)
}

/// A DNS-1123 subdomain, what a service account or pod name must be: at most 253 characters,
/// labels as above (without their length limit, as Kubernetes checks it) joined by dots.
fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SUBDOMAIN_LEN && s.split('.').all(is_label)
}

fn is_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            alphanumeric(first)
                && alphanumeric(last)
                && bytes.iter().all(|b| alphanumeric(b) || *b == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_must_be_dns1123_labels() {
        let longest = "a".repeat(63);
        let too_long = "a".repeat(64);
        for good in ["shop", "a", "kube-system", "ns1", "1ns", longest.as_str()] {
            assert!(is_dns1123_label(good), "{good} should be a label");
        }
        for bad in [
            "",
            "Shop",
            "shop_1",
            "-shop",
            "shop-",
            "sh.op",
            "sh/op",
            "..",
            "shöp",
            too_long.as_str(),
        ] {
            assert!(!is_dns1123_label(bad), "{bad:?} should not be a label");
        }
    }

    #[test]
    fn service_account_names_must_be_dns1123_subdomains() {
        let longest = "a".repeat(253);
        let too_long = "a".repeat(254);
        for good in [
            "frontend",
            "front-end",
            "front.end",
            "a.b.c",
            longest.as_str(),
        ] {
            assert!(is_dns1123_subdomain(good), "{good} should be a subdomain");
        }
        for bad in [
            "",
            ".",
            "..",
            "front..end",
            ".frontend",
            "frontend.",
            "front/end",
            "front end",
            "Frontend",
            "front_end",
            "front.-end",
            too_long.as_str(),
        ] {
            assert!(
                !is_dns1123_subdomain(bad),
                "{bad:?} should not be a subdomain"
            );
        }
    }

    #[test]
    fn legacy_subject_parses_into_namespace_and_name() {
        assert_eq!(
            parse_sa_subject("system:serviceaccount:shop:frontend"),
            Some(("shop", "frontend"))
        );
        assert_eq!(
            parse_sa_subject("system:serviceaccount:shop:front:end"),
            Some(("shop", "front:end"))
        );
        assert_eq!(parse_sa_subject("system:serviceaccount:shop"), None);
        assert_eq!(parse_sa_subject("system:node:worker-1"), None);
        assert_eq!(parse_sa_subject("alice"), None);
    }

    #[test]
    fn spiffe_id_is_parsed_not_concatenated() {
        let td = TrustDomain::parse("example.org").expect("trust domain");
        let id = spiffe_id_for(&td, "shop", "frontend").expect("id");
        assert_eq!(id.as_str(), "spiffe://example.org/ns/shop/sa/frontend");
        // Were a name with a slash ever to get this far, it must not add path segments.
        assert!(matches!(
            spiffe_id_for(&td, "shop", "front/sa/admin"),
            Err(TokenRefusal::NotASpiffeId { .. })
        ));
        assert!(matches!(
            spiffe_id_for(&td, "shop", "front%2Fend"),
            Err(TokenRefusal::NotASpiffeId { .. })
        ));
    }
}
