//! Why a connection was refused before any byte was forwarded: one reason label for metrics, one
//! sentence for the log, and the peer's SPIFFE ID when the refusal was about who it is.

pub(crate) mod log;

use std::io;

use palisade_identity::{peer_error, PeerError, SpiffeId, SvidError};

#[derive(Debug)]
pub enum Refusal {
    /// Every slot of `limits.max_connections` of this direction is taken.
    ConnectionLimit,
    /// `limits.max_handshakes` inbound connections are already in their handshake.
    HandshakeLimit,
    /// The peer sent nothing within `limits.first_byte_timeout`.
    FirstByteTimeout,
    /// No valid certificate has been loaded yet.
    NoCertificate,
    /// The first byte was not a TLS handshake record: plaintext on an mTLS port.
    NotTls,
    /// The peer closed before sending anything.
    ClosedEarly,
    HandshakeTimeout,
    /// The peer sent its whole handshake budget without finishing the handshake.
    HandshakeTooLarge(usize),
    /// The handshake failed; the rustls error inside says why.
    Handshake(io::Error),
    ConnectTimeout(String),
    ConnectFailed(String, io::Error),
    /// A transparent connection whose original destination could not be read.
    NoOriginalDestination(io::Error),
    /// A transparent inbound connection whose original destination is not one of the pod's own
    /// addresses, or is loopback: a packet routed through the pod for somewhere else.
    DestinationNotLocal(std::net::SocketAddr),
    /// A transparent outbound connection to an address in no segment of the policy (or in
    /// segments without identities), in strict mode.
    DestinationNotInPolicy(std::net::IpAddr),
    /// A transparent outbound connection while no policy has loaded yet.
    NoPolicy,
}

impl Refusal {
    /// A TLS refusal made after the handshake (a resumed session checked again), reported like
    /// one rustls made during it.
    pub fn after_handshake(error: rustls::Error) -> Self {
        Refusal::Handshake(io::Error::new(io::ErrorKind::InvalidData, error))
    }

    /// The `reason` label of `palisade_sidecar_connections_refused_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::HandshakeLimit => "handshake_limit",
            Refusal::FirstByteTimeout => "first_byte_timeout",
            Refusal::NoCertificate => "no_certificate_loaded",
            Refusal::NotTls => "not_tls",
            Refusal::ClosedEarly => "closed_before_handshake",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::HandshakeTooLarge(_) => "handshake_too_large",
            Refusal::ConnectTimeout(_) => "connect_timeout",
            Refusal::ConnectFailed(..) => "connect_failed",
            Refusal::NoOriginalDestination(_) => "no_original_destination",
            Refusal::DestinationNotInPolicy(_) => "destination_not_in_policy",
            Refusal::DestinationNotLocal(_) => "destination_not_local",
            Refusal::NoPolicy => "no_policy_loaded",
            Refusal::Handshake(e) => match rustls_error(e) {
                Some(rustls::Error::NoCertificatesPresented) => "no_client_certificate",
                Some(rustls::Error::AlertReceived(_)) => "alert_received",
                Some(e) => match peer_error(e) {
                    Some(PeerError::NotAdmitted(_)) => "not_admitted",
                    Some(PeerError::Invalid(svid)) => svid_reason(svid),
                    None => "handshake_failed",
                },
                None => "handshake_failed",
            },
        }
    }

    /// The peer's SPIFFE ID, when the refusal was made knowing it (not admitted).
    pub fn peer_id(&self) -> Option<&SpiffeId> {
        match self {
            Refusal::Handshake(e) => match rustls_error(e).and_then(peer_error) {
                Some(PeerError::NotAdmitted(id)) => Some(id),
                _ => None,
            },
            _ => None,
        }
    }

    /// Refusals that say something about a peer's identity (or a stranger speaking plaintext),
    /// as opposed to load or network trouble.
    pub fn is_about_identity(&self) -> bool {
        match self {
            Refusal::NotTls => true,
            Refusal::Handshake(e) => match rustls_error(e) {
                Some(rustls::Error::NoCertificatesPresented) => true,
                Some(e) => peer_error(e).is_some(),
                None => false,
            },
            _ => false,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ConnectionLimit => f.write_str("the connection limit is reached"),
            Refusal::HandshakeLimit => {
                f.write_str("too many connections are in their TLS handshake already")
            }
            Refusal::FirstByteTimeout => f.write_str("the peer sent nothing in time"),
            Refusal::NoCertificate => f.write_str("no valid certificate is loaded yet"),
            Refusal::NotTls => f.write_str("the peer did not start a TLS handshake (plaintext?)"),
            Refusal::ClosedEarly => f.write_str("the peer closed before the handshake"),
            Refusal::HandshakeTimeout => f.write_str("the TLS handshake did not finish in time"),
            Refusal::HandshakeTooLarge(budget) => write!(
                f,
                "the peer sent {budget} bytes without finishing its TLS handshake"
            ),
            Refusal::ConnectTimeout(to) => write!(f, "connecting to {to} timed out"),
            Refusal::ConnectFailed(to, e) => write!(f, "cannot connect to {to}: {e}"),
            Refusal::NoOriginalDestination(e) => {
                write!(f, "cannot read the connection's original destination: {e}")
            }
            Refusal::DestinationNotInPolicy(ip) => write!(
                f,
                "{ip} is in no segment of the policy with identities, so no peer identity can be expected (mode strict)"
            ),
            Refusal::NoPolicy => write!(f, "no policy has loaded yet"),
            Refusal::DestinationNotLocal(to) => write!(
                f,
                "the connection was going to {to}, which is not an address of this pod (a packet routed through the pod for elsewhere is not relayed)"
            ),
            Refusal::Handshake(e) => match rustls_error(e) {
                Some(rustls::Error::NoCertificatesPresented) => {
                    f.write_str("the peer presented no client certificate")
                }
                Some(e) => match peer_error(e) {
                    Some(peer) => write!(f, "{peer}"),
                    None => write!(f, "TLS handshake failed: {e}"),
                },
                None => write!(f, "TLS handshake failed: {e}"),
            },
        }
    }
}

fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

fn svid_reason(e: &SvidError) -> &'static str {
    match e {
        SvidError::Expired(_) => "expired",
        SvidError::NotYetValid(_) => "not_yet_valid",
        SvidError::UnknownIssuer(_)
        | SvidError::NoBundleForTrustDomain(_)
        | SvidError::BadSignature => "untrusted",
        _ => "invalid_certificate",
    }
}
