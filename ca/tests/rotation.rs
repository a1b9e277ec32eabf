//! Root rotation's order and its refusals, on CA directories in a temporary directory.

use std::time::Duration;

use palisade_ca::{
    CaDir, KeyType, LeafRequest, RootRotation, RotationError, CLOCK_SKEW_ALLOWANCE,
    ROTATION_RELOAD_MARGIN,
};
use palisade_identity::{PeerRole, SpiffeId, TrustBundle, TrustBundleSet, TrustDomain};
use time::OffsetDateTime;

const HOUR: Duration = Duration::from_secs(3600);

fn setup() -> (tempfile::TempDir, CaDir, CaDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = CaDir::new(dir.path().join("root"));
    let issuer = CaDir::new(dir.path().join("issuer"));
    let td = TrustDomain::parse("example.org").unwrap();
    root.init(&td, KeyType::EcdsaP256, 10 * HOUR, false)
        .unwrap();
    issuer
        .init_issuer(&root, KeyType::EcdsaP256, HOUR, false)
        .unwrap();
    (dir, root, issuer)
}

fn roots(dir: &CaDir) -> usize {
    std::fs::read_to_string(dir.bundle_path())
        .unwrap()
        .matches("BEGIN CERTIFICATE")
        .count()
}

#[test]
fn each_step_waits_for_its_time_and_the_bundle_grows_then_shrinks() {
    let (_dir, root, issuer) = setup();
    let rotation = RootRotation::new(root.clone(), issuer.clone());
    let t0 = OffsetDateTime::now_utc();
    let old_issuer = std::fs::read(issuer.cert_path()).unwrap();
    rotation
        .prepare(HOUR, KeyType::EcdsaP256, 10 * HOUR, t0)
        .unwrap();
    assert_eq!((roots(&root), roots(&issuer)), (2, 2));
    assert!(matches!(
        rotation.prepare(HOUR, KeyType::EcdsaP256, 10 * HOUR, t0),
        Err(RotationError::OutOfOrder(_))
    ));
    assert!(matches!(
        rotation.retire(false, t0),
        Err(RotationError::OutOfOrder(_))
    ));
    // One second short of a leaf lifetime plus the reload margin: refused, nothing written.
    let early = t0 + HOUR + ROTATION_RELOAD_MARGIN - Duration::from_secs(1);
    assert!(matches!(
        rotation.activate(HOUR, KeyType::EcdsaP256, false, early),
        Err(RotationError::TooEarly { .. })
    ));
    assert_eq!(std::fs::read(issuer.cert_path()).unwrap(), old_issuer);
    let t1 = early + Duration::from_secs(1);
    rotation
        .activate(HOUR, KeyType::EcdsaP256, false, t1)
        .unwrap();
    assert_ne!(
        std::fs::read(issuer.cert_path()).unwrap(),
        old_issuer,
        "a new issuer"
    );
    assert_eq!(roots(&issuer), 2, "the old root stays until retirement");
    let (new_issuer, _) = issuer.load().unwrap();
    assert!(!new_issuer.is_root());
    let safe = t1 + HOUR + ROTATION_RELOAD_MARGIN + CLOCK_SKEW_ALLOWANCE;
    assert!(matches!(
        rotation.retire(false, safe - Duration::from_secs(1)),
        Err(RotationError::TooEarly { .. })
    ));
    rotation.retire(false, safe).unwrap();
    assert_eq!((roots(&root), roots(&issuer)), (1, 1));
    assert!(rotation.state().unwrap().is_none());
    // The remaining root is the new one: a leaf of the new issuer verifies to it alone.
    let (root_ca, _) = root.load().unwrap();
    let bundle = TrustBundle::new(
        root_ca.trust_domain().clone(),
        vec![root_ca.certificate().clone()],
    )
    .unwrap();
    let id = SpiffeId::parse("spiffe://example.org/w").unwrap();
    let (leaf, _) = new_issuer
        .issue_with_new_key(&LeafRequest::new(id, HOUR), KeyType::EcdsaP256)
        .unwrap();
    let chain: Vec<_> = std::iter::once(leaf.cert.clone())
        .chain(leaf.chain.clone())
        .collect();
    palisade_identity::verify_svid(
        &chain,
        &TrustBundleSet::from(bundle),
        PeerRole::Client,
        rustls_pki_types::UnixTime::now(),
    )
    .unwrap();
}

#[test]
fn force_skips_the_waits() {
    let (_dir, root, issuer) = setup();
    let rotation = RootRotation::new(root, issuer);
    let t0 = OffsetDateTime::now_utc();
    rotation
        .prepare(HOUR, KeyType::EcdsaP256, 10 * HOUR, t0)
        .unwrap();
    rotation
        .activate(HOUR, KeyType::EcdsaP256, true, t0)
        .unwrap();
    rotation.retire(true, t0).unwrap();
}

#[test]
fn activate_refuses_a_root_as_the_issuer_directory_and_writes_nothing() {
    let (dir, root, _issuer) = setup();
    let other_root = CaDir::new(dir.path().join("other-root"));
    let td = TrustDomain::parse("example.org").unwrap();
    other_root
        .init(&td, KeyType::EcdsaP256, HOUR, false)
        .unwrap();
    let rotation = RootRotation::new(root.clone(), other_root);
    let t0 = OffsetDateTime::now_utc();
    rotation
        .prepare(HOUR, KeyType::EcdsaP256, 10 * HOUR, t0)
        .unwrap();
    let before = std::fs::read(root.cert_path()).unwrap();
    let refused = rotation.activate(HOUR, KeyType::EcdsaP256, true, t0);
    assert!(
        matches!(refused, Err(RotationError::OutOfOrder(_))),
        "{refused:?}"
    );
    assert_eq!(std::fs::read(root.cert_path()).unwrap(), before);
    assert_eq!(rotation.state().unwrap().unwrap().step, "prepared");
}
