//! One test per lint: what is legal but suspicious, at the line and column of what it is about.

use std::path::Path;

use palisade_policy::{lint, load_file, load_str, Policy};

fn policy(lines: &[&str]) -> Policy {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    load_str(&text, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The warnings as (line, column, message).
fn warnings(p: &Policy) -> Vec<(usize, usize, String)> {
    lint(p)
        .into_iter()
        .map(|w| (w.pos.line, w.pos.column, w.message))
        .collect()
}

#[track_caller]
fn assert_one(p: &Policy, line: usize, column: usize, parts: &[&str]) {
    let w = warnings(p);
    assert_eq!(w.len(), 1, "one warning expected: {w:#?}");
    let (l, c, message) = &w[0];
    assert_eq!((*l, *c), (line, column), "position of {message:?}");
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} should contain {part:?}"
        );
    }
}

const HEAD: [&str; 7] = [
    "version: 1",
    "trust_domain: example.org",
    "segments:",
    "  web:",
    "    addresses: [10.0.1.0/24]",
    "  db:",
    "    addresses: [10.0.2.0/24]",
];

/// HEAD, then `more` from line 8 on.
fn with_head(more: &[&str]) -> Policy {
    policy(&HEAD.iter().chain(more).copied().collect::<Vec<_>>())
}

#[test]
fn a_clean_policy_has_no_warnings() {
    let p = with_head(&[
        "rules:",
        "  - name: web-to-db",
        "    from: web",
        "    to: db",
        "    protocol: tcp",
        "    ports: [5432]",
        "hosts:",
        "  node-a: { segments: [web, db] }",
    ]);
    assert_eq!(warnings(&p), []);
}

#[test]
fn the_examples_have_no_warnings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let p = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(warnings(&p), [], "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 2, "{seen} example policies");
}

#[test]
fn overlapping_segments() {
    let p = with_head(&[
        "  admin:",
        "    addresses: [10.0.1.0/28, \"fd00::/64\"]",
        "hosts:",
        "  node-a: { segments: [web, db, admin] }",
    ]);
    // At the second of the two segments, naming the common addresses.
    assert_one(
        &p,
        8,
        3,
        &[
            "segments `web` and `admin` overlap (10.0.1.0/28)",
            "belong to both",
        ],
    );
}

/// Review finding 1: an identity that matches patterns of two segments is in both, and a deny rule
/// of either applies to it; `check` says so as it does for addresses.
#[test]
fn overlapping_identity_patterns() {
    let p = policy(&[
        "version: 1",
        "trust_domain: example.org",
        "segments:",
        "  frontend:",
        "    identities: [\"spiffe://example.org/ns/*/sa/frontend\"]",
        "  ops:",
        "    identities: [\"spiffe://example.org/ns/ops/**\"]",
        "  payments:",
        "    identities: [spiffe://example.org/ns/shop/sa/payments]",
        "hosts:",
        "  node-a: { segments: [frontend, ops, payments] }",
    ]);
    assert_one(
        &p,
        6,
        3,
        &[
            "segments `frontend` and `ops` have overlapping identity patterns",
            "`spiffe://example.org/ns/*/sa/frontend` and `spiffe://example.org/ns/ops/**`",
            "a deny rule of either applies",
        ],
    );
}

#[test]
fn except_that_removes_every_address() {
    let p = with_head(&[
        "  cache:",
        "    addresses: [10.0.3.0/24]",
        "    except: [10.0.3.0/25, 10.0.3.128/25]",
        "hosts:",
        "  node-a: { segments: [web, db, cache] }",
    ]);
    assert_one(
        &p,
        8,
        3,
        &["segment `cache`: `except` removes every address"],
    );
}

#[test]
fn rule_shadowed_by_a_deny() {
    let p = with_head(&[
        "rules:",
        "  - name: web-to-db",
        "    from: web",
        "    to: db",
        "    protocol: tcp",
        "    ports: [5432, 6000-6010]",
        "  - name: no-web-to-db",
        "    from: [web]",
        "    to: [db]",
        "    protocol: tcp",
        "    ports: [5000-7000]",
        "    action: deny",
    ]);
    assert_one(
        &p,
        9,
        5,
        &[
            "rule `web-to-db` is shadowed by deny rule `no-web-to-db` (line 14)",
            "can never allow anything",
        ],
    );
}

#[test]
fn a_deny_on_fewer_ports_does_not_shadow() {
    let p = with_head(&[
        "rules:",
        "  - name: web-to-db",
        "    from: web",
        "    to: db",
        "    protocol: tcp",
        "  - name: no-ssh",
        "    from: web",
        "    to: db",
        "    protocol: tcp",
        "    ports: [22]",
        "    action: deny",
    ]);
    assert_eq!(warnings(&p), []);
}

#[test]
fn rule_that_can_never_match() {
    // `cache` keeps no address (and has no identity), so a rule to it matches nothing.
    let p = with_head(&[
        "  cache:",
        "    addresses: [10.0.3.0/24]",
        "    except: [10.0.3.0/24]",
        "rules:",
        "  - name: web-to-cache",
        "    from: web",
        "    to: cache",
        "hosts:",
        "  node-a: { segments: [web, db] }",
    ]);
    let w = warnings(&p);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert_eq!((w[0].0, w[0].1), (8, 3));
    assert!(w[0].2.contains("`except` removes every address"), "{w:#?}");
    assert_eq!((w[1].0, w[1].1), (12, 5));
    assert!(
        w[1].2.contains(
            "rule `web-to-cache` can never match: one side has no addresses or identities"
        ),
        "{w:#?}"
    );
}

#[test]
fn segment_used_by_no_rule_and_no_host() {
    let p = with_head(&[
        "  spare:",
        "    identities: [spiffe://example.org/spare]",
        "hosts:",
        "  node-a: { segments: [web, db] }",
    ]);
    assert_one(
        &p,
        8,
        3,
        &["segment `spare` is used by no rule and no host"],
    );
}

#[test]
fn egress_to_outside_counts_as_a_use() {
    let p = with_head(&[
        "  proxy:",
        "    addresses: [10.0.3.0/24]",
        "    egress_to_outside: true",
        "hosts:",
        "  node-a: { segments: [web, db] }",
    ]);
    assert_eq!(warnings(&p), []);
}

#[test]
fn allow_rule_only_within_its_own_segment() {
    let p = with_head(&[
        "rules:",
        "  - name: web-internal",
        "    from: web",
        "    to: [web]",
        "    protocol: tcp",
        "    ports: [8080]",
        "hosts:",
        "  node-a: { segments: [web, db] }",
    ]);
    assert_one(
        &p,
        9,
        5,
        &["rule `web-internal` only allows traffic within its own segments, which is allowed anyway"],
    );
}

#[test]
fn allow_rule_between_two_segments_listed_on_both_sides_is_not_redundant() {
    // web -> db and db -> web are allowed by this rule only: no "within its own segments" warning.
    let p = with_head(&[
        "rules:",
        "  - name: web-and-db",
        "    from: [web, db]",
        "    to: [db, web]",
        "    protocol: tcp",
    ]);
    assert_eq!(warnings(&p), []);
    let d = palisade_policy::decide(
        &p,
        &"10.0.1.5".parse().unwrap(),
        &"10.0.2.5".parse().unwrap(),
        palisade_policy::Protocol::Tcp,
        Some(5432),
    );
    assert!(d.allowed, "{d}");
}

#[test]
fn warnings_come_in_file_order() {
    let p = with_head(&[
        "  spare:",
        "    addresses: [10.0.2.128/25]",
        "rules:",
        "  - name: web-internal",
        "    from: web",
        "    to: web",
    ]);
    let w = warnings(&p);
    let at: Vec<(usize, usize)> = w.iter().map(|w| (w.0, w.1)).collect();
    // `db` is used by nothing (6:3), `spare` overlaps `db` and is used by nothing (8:3 twice),
    // the rule is redundant (11:5).
    assert_eq!(at, [(6, 3), (8, 3), (8, 3), (11, 5)], "{w:#?}");
}

#[test]
fn rule_from_outside_to_outside_has_no_effect() {
    let p = with_head(&[
        "rules:",
        "  - name: internet-transit",
        "    from: outside",
        "    to: [outside]",
        "    action: deny",
        "hosts:",
        "  node-a: { segments: [web, db] }",
    ]);
    assert_one(
        &p,
        9,
        5,
        &[
            "rule `internet-transit` is from `outside` to `outside`",
            "no effect",
        ],
    );
}
