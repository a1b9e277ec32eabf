//! Real mutual-TLS handshakes over loopback TCP (tokio-rustls, aws-lc-rs) with
//! `SpiffeClientVerifier` on the server and `SpiffeServerVerifier` on the client.
//!
//! The server certificate carries no DNS SAN and the client dials "palisade.invalid": the
//! verifiers never match names, only SPIFFE IDs. A refused peer's reason is read back from the
//! refusing side's error with `peer_error`, and must be the exact `PeerError`.

mod common;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_ca::{CertificateAuthority, KeyType, LeafRequest};
use palisade_identity::{
    peer_error, peer_spiffe_id, AnyTrustedId, AuthorizeId, ExactId, PeerError,
    SpiffeClientVerifier, SpiffeId, SpiffeServerVerifier, SvidError, TrustBundle, TrustBundleSet,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The bound on every network wait.
const TIMEOUT: Duration = Duration::from_secs(10);
const SERVER_NAME: &str = "palisade.invalid";
const PING: &[u8; 5] = b"ping!";

/// One side's certificate chain, key, and whom it admits.
struct Side {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    admits: Arc<dyn AuthorizeId>,
}

impl Side {
    fn new(svid: Svid, admits: Arc<dyn AuthorizeId>) -> Side {
        Side {
            key: svid.key_der(),
            chain: svid.chain,
            admits,
        }
    }
}

/// What each side of one connection saw: the peer's ID, or why the connection failed.
struct Outcome {
    server: io::Result<SpiffeId>,
    client: io::Result<SpiffeId>,
}

fn install_provider() {
    // Another test may have installed it already; either way aws-lc-rs is the default.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

async fn bounded<T>(what: &str, f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(TIMEOUT, f).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timed out"),
        ))
    })
}

/// Runs one connection between `server` and `client`, both trusting `bundles`.
async fn connect(server: Side, client: Side, bundles: &TrustBundleSet) -> Outcome {
    connect_with(server, client, bundles, rustls::DEFAULT_VERSIONS).await
}

async fn connect_with(
    server: Side,
    client: Side,
    bundles: &TrustBundleSet,
    versions: &[&'static SupportedProtocolVersion],
) -> Outcome {
    install_provider();
    let bundles = Arc::new(bundles.clone());
    let server_config = ServerConfig::builder_with_protocol_versions(versions)
        .with_client_cert_verifier(SpiffeClientVerifier::new(bundles.clone(), server.admits))
        .with_single_cert(server.chain, server.key)
        .expect("server config");
    let client_config = ClientConfig::builder_with_protocol_versions(versions)
        .dangerous()
        .with_custom_certificate_verifier(SpiffeServerVerifier::new(bundles, client.admits))
        .with_client_auth_cert(client.chain, client.key)
        .expect("client config");

    let listener = bounded("bind", TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (server, client) = tokio::join!(
        serve(listener, Arc::new(server_config)),
        dial(addr, Arc::new(client_config)),
    );
    Outcome { server, client }
}

/// Accepts one connection, echoes one message, and returns the client's ID.
async fn serve(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<SpiffeId> {
    let (tcp, _) = bounded("accept", listener.accept()).await?;
    let mut tls = bounded("server handshake", TlsAcceptor::from(config).accept(tcp)).await?;
    let peer = peer_spiffe_id(tls.get_ref().1.peer_certificates())
        .ok_or_else(|| io::Error::other("no client SPIFFE ID"))?;
    let mut buf = [0u8; PING.len()];
    bounded("server read", tls.read_exact(&mut buf)).await?;
    bounded("server write", tls.write_all(&buf)).await?;
    bounded("server flush", tls.flush()).await?;
    bounded("server shutdown", tls.shutdown()).await?;
    Ok(peer)
}

/// Connects, sends one message, checks its echo, and returns the server's ID.
async fn dial(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<SpiffeId> {
    let tcp = bounded("connect", TcpStream::connect(addr)).await?;
    let name = ServerName::try_from(SERVER_NAME).expect("server name");
    let mut tls = bounded(
        "client handshake",
        TlsConnector::from(config).connect(name, tcp),
    )
    .await?;
    let peer = peer_spiffe_id(tls.get_ref().1.peer_certificates())
        .ok_or_else(|| io::Error::other("no server SPIFFE ID"))?;
    bounded("client write", tls.write_all(PING)).await?;
    bounded("client flush", tls.flush()).await?;
    let mut buf = [0u8; PING.len()];
    bounded("client read", tls.read_exact(&mut buf)).await?;
    if &buf != PING {
        return Err(io::Error::other("echo differs"));
    }
    Ok(peer)
}

/// Our reason inside a failed connection's error, if one of our verifiers refused the peer.
fn refusal(result: &io::Result<SpiffeId>) -> Option<PeerError> {
    let error = result.as_ref().err()?;
    let rustls_error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    peer_error(rustls_error).cloned()
}

fn any() -> Arc<dyn AuthorizeId> {
    Arc::new(AnyTrustedId)
}

fn exactly(s: &str) -> Arc<dyn AuthorizeId> {
    Arc::new(ExactId(id(s)))
}

/// Asserts the handshake failed on the refusing side with `expected`, and that the other side
/// did not get a working connection either.
fn assert_refused(
    name: &str,
    refuser: &io::Result<SpiffeId>,
    other: &io::Result<SpiffeId>,
    expected: PeerError,
) {
    assert_eq!(
        refusal(refuser),
        Some(expected),
        "{name}: refusing side's outcome was {refuser:?}"
    );
    assert!(other.is_err(), "{name}: the refused side got {other:?}");
}

// ---------------------------------------------------------------------------------------------
// Accepted connections
// ---------------------------------------------------------------------------------------------

/// Leaves issued by a Palisade CA: the handshake completes, bytes echo, and each side sees the
/// other's ID. Run for TLS 1.3 and 1.2 and for both key types.
#[tokio::test]
async fn palisade_issued_svids_connect_both_ways() {
    let versions: [(&str, &[&'static SupportedProtocolVersion]); 2] = [
        ("TLS 1.3", &[&rustls::version::TLS13]),
        ("TLS 1.2", &[&rustls::version::TLS12]),
    ];
    for key_type in [KeyType::EcdsaP256, KeyType::Ed25519] {
        let ca = CertificateAuthority::generate_root(&td(TD1), key_type, Duration::from_secs(3600))
            .expect("root CA");
        let bundles = TrustBundleSet::from(
            TrustBundle::new(td(TD1), vec![ca.certificate().clone()]).expect("bundle"),
        );
        let issue = |spiffe_id: &str| {
            let request = LeafRequest::new(id(spiffe_id), Duration::from_secs(600));
            let (issued, key) = ca.issue_with_new_key(&request, key_type).expect("issued");
            Svid {
                chain: std::iter::once(issued.cert).chain(issued.chain).collect(),
                key,
            }
        };
        for (label, version) in versions {
            let outcome = connect_with(
                Side::new(issue(SERVER_ID), exactly(CLIENT_ID)),
                Side::new(issue(CLIENT_ID), exactly(SERVER_ID)),
                &bundles,
                version,
            )
            .await;
            let what = format!("{key_type}, {label}");
            assert_eq!(outcome.server.expect(&what), id(CLIENT_ID), "{what}");
            assert_eq!(outcome.client.expect(&what), id(SERVER_ID), "{what}");
        }
    }
}

/// Both sides present [leaf, intermediate] made with rcgen.
#[tokio::test]
async fn chains_through_an_intermediate_connect() {
    let w = World::new();
    let intermediate = w.ca.intermediate(ca_params(Some("spiffe://example.org")));
    let outcome = connect(
        Side::new(intermediate.leaf(SERVER_ID).build(), any()),
        Side::new(intermediate.leaf(CLIENT_ID).build(), any()),
        &w.bundles,
    )
    .await;
    assert_eq!(outcome.server.expect("server"), id(CLIENT_ID));
    assert_eq!(outcome.client.expect("client"), id(SERVER_ID));
}

// ---------------------------------------------------------------------------------------------
// Refused client certificates
// ---------------------------------------------------------------------------------------------

/// Every negative case, presented by the client: the server refuses it with the case's error.
#[tokio::test]
async fn server_refuses_every_bad_client_certificate() {
    let w = World::new();
    let cases = negative_cases(&w);
    assert!(cases.len() >= 20);
    for case in cases {
        let outcome = connect(
            Side::new(w.ca.leaf(SERVER_ID).build(), any()),
            Side::new(case.svid, any()),
            &w.bundles,
        )
        .await;
        assert_refused(
            case.name,
            &outcome.server,
            &outcome.client,
            PeerError::Invalid(case.expected),
        );
    }
}

#[tokio::test]
async fn server_refuses_a_valid_client_it_does_not_admit() {
    let w = World::new();
    let outcome = connect(
        Side::new(w.ca.leaf(SERVER_ID).build(), exactly(CLIENT_ID)),
        Side::new(w.ca.leaf(WORKLOAD).build(), any()),
        &w.bundles,
    )
    .await;
    assert_refused(
        "client not admitted",
        &outcome.server,
        &outcome.client,
        PeerError::NotAdmitted(id(WORKLOAD)),
    );
}

// ---------------------------------------------------------------------------------------------
// Refused server certificates
// ---------------------------------------------------------------------------------------------

/// A representative subset of the negative cases, presented by the server: the client refuses.
#[tokio::test]
async fn client_refuses_bad_server_certificates() {
    let w = World::new();
    for name in [
        "expired",
        "other CA of the same trust domain",
        "no URI SAN (DNS only)",
        "two URI SANs",
        "tampered signature",
        "intermediate whose ID has a path",
    ] {
        let case = negative_case(&w, name);
        let outcome = connect(
            Side::new(case.svid, any()),
            Side::new(w.ca.leaf(CLIENT_ID).build(), any()),
            &w.bundles,
        )
        .await;
        assert_refused(
            case.name,
            &outcome.client,
            &outcome.server,
            PeerError::Invalid(case.expected),
        );
    }
}

/// A valid server with the wrong ID: the client expected another.
#[tokio::test]
async fn client_refuses_a_server_with_the_wrong_id() {
    let w = World::new();
    let outcome = connect(
        Side::new(w.ca.leaf(WORKLOAD).build(), any()),
        Side::new(w.ca.leaf(CLIENT_ID).build(), exactly(SERVER_ID)),
        &w.bundles,
    )
    .await;
    assert_refused(
        "wrong server ID",
        &outcome.client,
        &outcome.server,
        PeerError::NotAdmitted(id(WORKLOAD)),
    );
}

/// The client's verifier asks webpki for serverAuth: a server whose EKU is clientAuth only is
/// refused (by our leaf rule, which wants both).
#[tokio::test]
async fn client_refuses_a_server_without_server_auth() {
    let w = World::new();
    let server =
        w.ca.leaf(SERVER_ID)
            .extended_key_usages(&[rcgen::ExtendedKeyUsagePurpose::ClientAuth])
            .build();
    let outcome = connect(
        Side::new(server, any()),
        Side::new(w.ca.leaf(CLIENT_ID).build(), any()),
        &w.bundles,
    )
    .await;
    assert_refused(
        "server without serverAuth",
        &outcome.client,
        &outcome.server,
        PeerError::Invalid(SvidError::ExtendedKeyUsage),
    );
}

/// The verifiers remember chains they accepted; what they remember must not outlive the chain's
/// validity, and must not lend an intermediate's acceptance to another chain.
#[test]
fn remembered_chains_still_expire_and_are_not_shared() {
    use rustls::server::danger::ClientCertVerifier;
    use rustls_pki_types::UnixTime;

    let ca = TestCa::root("example.org");
    let mut bundles = TrustBundleSet::new();
    bundles.insert(ca.bundle("example.org"));
    let verifier = SpiffeClientVerifier::new(Arc::new(bundles), Arc::new(AnyTrustedId));
    let svid = ca.leaf("spiffe://example.org/ns/a/sa/b").build();
    let at = |offset_secs: i64| {
        UnixTime::since_unix_epoch(Duration::from_secs(
            (now().unix_timestamp() + offset_secs) as u64,
        ))
    };
    let check = |t| verifier.verify_client_cert(&svid.chain[0], &svid.chain[1..], t);

    assert!(check(at(0)).is_ok(), "fresh and valid");
    assert!(check(at(60)).is_ok(), "remembered, still valid");
    let later = check(at(2 * 3600)).expect_err("the leaf expired an hour ago");
    assert!(
        matches!(
            peer_error(&later),
            Some(PeerError::Invalid(SvidError::Expired(_)))
        ),
        "{later:?}"
    );
    let before = check(at(-2 * 3600)).expect_err("not valid yet two hours ago");
    assert!(
        matches!(
            peer_error(&before),
            Some(PeerError::Invalid(SvidError::NotYetValid(_)))
        ),
        "{before:?}"
    );
    // A tampered copy of the accepted leaf is a different chain: verified afresh, refused.
    let tampered = ca.leaf("spiffe://example.org/ns/a/sa/b").build().tampered();
    assert!(verifier
        .verify_client_cert(&tampered.chain[0], &[], at(0))
        .is_err());
}
