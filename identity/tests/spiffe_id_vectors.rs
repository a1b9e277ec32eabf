//! SPIFFE ID and trust domain parsing, checked against the cases of go-spiffe's `spiffeid` package
//! tests (`id_test.go`, `trustdomain_test.go`, `path_test.go`), rewritten for our API.
//!
//! go-spiffe reports one generic error per part ("bad trust domain char", "bad path segment char");
//! we report a specific variant for URI syntax the spec forbids (port, userinfo, query, fragment,
//! percent-encoding). Where our answer differs from go-spiffe's, the table row says so.
//!
//! Deliberate differences from go-spiffe (all stricter):
//! - IDs over 2048 bytes and trust domains over 255 bytes are refused (SPIFFE-ID §2.3);
//!   go-spiffe has no length limit.
//! - `TrustDomain::parse("spiffe://td/path")` is refused: only a trust domain's own ID (no path)
//!   names a trust domain. go-spiffe drops the path and accepts it.
//! - An empty string is not a valid ID or trust domain when deserializing; go-spiffe maps it to a
//!   zero value (use `Option` for that in Rust).

use palisade_identity::{IdError, SpiffeId, TrustDomain, MAX_ID_LEN, MAX_TRUST_DOMAIN_LEN};

const TD: &str = "trustdomain";
const BASE: &str = "spiffe://trustdomain";

/// Trust domain characters (SPIFFE-ID §2.1): lowercase letters, digits, `.`, `-`, `_`.
const TD_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789.-_";
/// Path segment characters (SPIFFE-ID §2.2): letters of both cases, digits, `.`, `-`, `_`.
const PATH_CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_";

fn td() -> TrustDomain {
    TrustDomain::parse(TD).expect("trustdomain is a valid trust domain")
}

/// Parses `input`, expects it to be valid with the given trust domain and path, and checks that
/// every accessor and the Display/FromStr/from_path round trips agree.
fn assert_ok(input: &str, want_td: &str, want_path: &str) -> SpiffeId {
    let id = SpiffeId::parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e:?}"));
    assert_eq!(id.as_str(), input);
    assert_eq!(id.to_string(), input);
    assert_eq!(
        id.trust_domain().as_str(),
        want_td,
        "trust domain of {input:?}"
    );
    assert_eq!(id.path(), want_path, "path of {input:?}");
    assert_eq!(
        id.has_path(),
        !want_path.is_empty(),
        "has_path of {input:?}"
    );
    let rejoined: String = id.segments().map(|s| format!("/{s}")).collect();
    assert_eq!(rejoined, want_path, "segments of {input:?}");
    assert_eq!(format!("{}{}", id.trust_domain().id(), id.path()), input);
    assert_eq!(input.parse::<SpiffeId>().as_ref(), Ok(&id));
    assert_eq!(
        SpiffeId::from_path(id.trust_domain(), id.path()).as_ref(),
        Ok(&id)
    );
    id
}

/// Expects `input` to be refused by `SpiffeId::parse` and `FromStr` with exactly `want`.
fn assert_err(input: &str, want: IdError) {
    assert_eq!(
        SpiffeId::parse(input),
        Err(want.clone()),
        "parsing {input:?}"
    );
    assert_eq!(input.parse::<SpiffeId>(), Err(want), "FromStr of {input:?}");
}

/// The test string for a byte: ASCII as itself; 0x80..=0xFF as the char U+0080..U+00FF, which is
/// two UTF-8 bytes (a lone non-ASCII byte cannot be in a `&str`). Like go-spiffe's `string(rune(i))`.
fn byte_str(b: u8) -> String {
    char::from(b).to_string()
}

/// What the parser must say about byte `b` inside a trust domain.
fn td_char_verdict(b: u8) -> Result<(), IdError> {
    if TD_CHARS.as_bytes().contains(&b) {
        return Ok(());
    }
    Err(match b {
        b':' => IdError::Port,
        b'@' => IdError::Userinfo,
        b'%' => IdError::PercentEncoded,
        b'?' => IdError::Query,
        b'#' => IdError::Fragment,
        _ => IdError::BadTrustDomainChar,
    })
}

/// What the parser must say about byte `b` inside a path segment.
fn path_char_verdict(b: u8) -> Result<(), IdError> {
    if PATH_CHARS.as_bytes().contains(&b) {
        return Ok(());
    }
    Err(match b {
        b'%' => IdError::PercentEncoded,
        b'?' => IdError::Query,
        b'#' => IdError::Fragment,
        _ => IdError::BadPathSegmentChar,
    })
}

// SPIFFE-ID §2.1: every byte 0..=255 (but '/', which ends the trust domain) as a trust domain
// character in a full ID. go-spiffe expects its single "bad trust domain char" error for every
// rejected byte; we expect the specific variant where there is one.
#[test]
fn every_byte_as_trust_domain_char_in_id() {
    for b in 0..=255u8 {
        if b == b'/' {
            continue;
        }
        let c = byte_str(b);
        let input = format!("spiffe://trustdomain{c}/path");
        match td_char_verdict(b) {
            Ok(()) => {
                assert_ok(&input, &format!("trustdomain{c}"), "/path");
            }
            Err(want) => assert_err(&input, want),
        }
    }
}

// SPIFFE-ID §2.1: every byte 0..=255 as a character of a bare trust domain name, and, for the
// accepted ones, in the trust domain's own ID. '/' is included: in a bare name it is just a bad char.
#[test]
fn every_byte_as_trust_domain_char_in_name() {
    for b in 0..=255u8 {
        let c = byte_str(b);
        let name = format!("trustdomain{c}");
        match td_char_verdict(b) {
            Ok(()) => {
                let want = TrustDomain::parse(&name).expect("good trust domain char");
                assert_eq!(want.as_str(), name);
                assert_eq!(
                    TrustDomain::parse(&format!("spiffe://{name}")),
                    Ok(want.clone())
                );
                assert_eq!(name.parse::<TrustDomain>(), Ok(want));
            }
            Err(want) => {
                assert_eq!(
                    TrustDomain::parse(&name),
                    Err(want),
                    "trust domain {name:?}"
                );
            }
        }
    }
}

// SPIFFE-ID §2.2: every byte 0..=255 (but '/', the segment separator) as a path character, through
// `parse`, `from_path` and `from_segments`.
#[test]
fn every_byte_as_path_char() {
    let td = td();
    for b in 0..=255u8 {
        if b == b'/' {
            continue;
        }
        let c = byte_str(b);
        let path = format!("/path{c}");
        let input = format!("{BASE}{path}");
        let segment = format!("path{c}");
        match path_char_verdict(b) {
            Ok(()) => {
                let id = assert_ok(&input, TD, &path);
                assert_eq!(SpiffeId::from_segments(&td, &[&segment]), Ok(id));
            }
            Err(want) => {
                assert_err(&input, want.clone());
                assert_eq!(
                    SpiffeId::from_path(&td, &path),
                    Err(want.clone()),
                    "{path:?}"
                );
                assert_eq!(
                    SpiffeId::from_segments(&td, &[&segment]),
                    Err(want),
                    "{segment:?}"
                );
            }
        }
    }
}

// SPIFFE-ID §2: the scheme is exactly lowercase `spiffe://`, and the trust domain is not empty.
#[test]
fn scheme_and_missing_trust_domain() {
    let cases: &[(&str, IdError)] = &[
        ("", IdError::Empty),
        ("s", IdError::WrongScheme),
        ("spiffe:/", IdError::WrongScheme),
        ("Spiffe://", IdError::WrongScheme),
        ("SPIFFE://trustdomain", IdError::WrongScheme),
        ("spiffe:/trustdomain/path", IdError::WrongScheme),
        ("spiffe:trustdomain/path", IdError::WrongScheme),
        ("https://trustdomain/path", IdError::WrongScheme),
        (" spiffe://trustdomain", IdError::WrongScheme),
        ("trustdomain/path", IdError::WrongScheme),
        ("spiffe://", IdError::MissingTrustDomain),
        ("spiffe:///", IdError::MissingTrustDomain),
        ("spiffe:///path", IdError::MissingTrustDomain),
    ];
    for (input, want) in cases {
        assert_err(input, want.clone());
    }
}

// SPIFFE-ID §2.2: the path is optional.
#[test]
fn path_is_optional() {
    let id = assert_ok(BASE, TD, "");
    assert_eq!(id, td().id());
    assert_eq!(id.segments().count(), 0);
}

// SPIFFE-ID §2.2: no empty segments, and no trailing '/'.
#[test]
fn empty_segments_and_trailing_slash() {
    let cases: &[(&str, IdError)] = &[
        ("/", IdError::TrailingSlash),
        ("//", IdError::EmptySegment),
        ("//path", IdError::EmptySegment),
        ("/path/", IdError::TrailingSlash),
        ("/path//other", IdError::EmptySegment),
        ("/path/other/", IdError::TrailingSlash),
    ];
    for (path, want) in cases {
        assert_err(&format!("{BASE}{path}"), want.clone());
    }
}

// SPIFFE-ID §2.2: no relative segments `.` or `..`; segments that merely contain dots are fine.
#[test]
fn dot_segments() {
    let refused = [
        "/.",
        "/./path",
        "/path/./other",
        "/path/..",
        "/..",
        "/../path",
        "/path/../other",
        "/path/.",
    ];
    for path in refused {
        assert_err(&format!("{BASE}{path}"), IdError::DotSegment);
    }
    let accepted = [
        "/.path",
        "/..path",
        "/...",
        "/path./other..",
        "/a/.b/..c/...d",
    ];
    for path in accepted {
        assert_ok(&format!("{BASE}{path}"), TD, path);
    }
}

// RFC 3986 syntax the SPIFFE ID forbids: percent-encoding (§2.1/§2.2 character sets), query and
// fragment (§2), port and userinfo (§2.1). go-spiffe reports percent-encoding as a bad trust
// domain / path char; we say PercentEncoded.
#[test]
fn uri_syntax_refused() {
    let cases: &[(&str, IdError)] = &[
        // Percent-encoded UTF-8 and ASCII, in the trust domain and in the path.
        ("spiffe://%F0%9F%A4%AF/path", IdError::PercentEncoded),
        ("spiffe://trustdomain/%F0%9F%A4%AF", IdError::PercentEncoded),
        ("spiffe://%62%61%64/path", IdError::PercentEncoded),
        ("spiffe://trustdomain/%62%61%64", IdError::PercentEncoded),
        ("spiffe://trustdomain/path%2Fother", IdError::PercentEncoded),
        // Query.
        ("spiffe://trustdomain/path?x=1", IdError::Query),
        ("spiffe://trustdomain?x=1", IdError::Query),
        ("spiffe://trustdomain/?x", IdError::Query),
        ("spiffe://trustdomain?x=/path", IdError::Query),
        // Fragment.
        ("spiffe://trustdomain/path#frag", IdError::Fragment),
        ("spiffe://trustdomain#frag", IdError::Fragment),
        ("spiffe://trustdomain/#", IdError::Fragment),
        // Port, with or without a number, with or without a path.
        ("spiffe://trustdomain:8080/path", IdError::Port),
        ("spiffe://trustdomain:8080", IdError::Port),
        ("spiffe://trustdomain:/path", IdError::Port),
        ("spiffe://trustdomain:", IdError::Port),
        ("spiffe://trustdomain:8080?x@y", IdError::Port),
        // Userinfo; a ':' before the '@' is the password separator, not a port.
        ("spiffe://user@trustdomain/path", IdError::Userinfo),
        ("spiffe://@trustdomain", IdError::Userinfo),
        ("spiffe://user:pass@trustdomain/path", IdError::Userinfo),
        (
            "spiffe://user:pass@trustdomain:8080/path",
            IdError::Userinfo,
        ),
        // In the path, ':' and '@' are plain bad characters (RFC 3986 allows them, SPIFFE does not).
        (
            "spiffe://trustdomain/path:8080",
            IdError::BadPathSegmentChar,
        ),
        (
            "spiffe://trustdomain/user@path",
            IdError::BadPathSegmentChar,
        ),
    ];
    for (input, want) in cases {
        assert_err(input, want.clone());
    }
}

// SPIFFE-ID §2.1: the trust domain is a host name made only of [a-z0-9._-]; anything that looks
// like an address but fits the character set is accepted, the rest refused.
#[test]
fn trust_domain_shapes() {
    let accepted: &[(&str, &str)] = &[
        ("spiffe://192.168.0.1/path", "192.168.0.1"),
        ("spiffe://trust_domain/path", "trust_domain"),
        ("spiffe://example-1.org", "example-1.org"),
        ("spiffe://xn--bcher-kva.example/a", "xn--bcher-kva.example"),
        ("spiffe://a", "a"),
    ];
    for (input, want_td) in accepted {
        let path = &input[format!("spiffe://{want_td}").len()..];
        assert_ok(input, want_td, path);
    }
    let refused: &[(&str, IdError)] = &[
        ("spiffe://[::1]/path", IdError::BadTrustDomainChar),
        ("spiffe://Example.org/path", IdError::BadTrustDomainChar),
        ("spiffe://ex ample.org", IdError::BadTrustDomainChar),
        ("spiffe://trust$domain", IdError::BadTrustDomainChar),
        ("spiffe://bücher.example", IdError::BadTrustDomainChar),
        ("spiffe://trustdomain/path$", IdError::BadPathSegmentChar),
        ("spiffe://trustdomain/pâth", IdError::BadPathSegmentChar),
    ];
    for (input, want) in refused {
        assert_err(input, want.clone());
    }
}

// SPIFFE-ID §2.3: an ID is at most 2048 bytes, a trust domain at most 255. (go-spiffe has no limit.)
#[test]
fn length_limits() {
    assert_eq!(MAX_ID_LEN, 2048);
    assert_eq!(MAX_TRUST_DOMAIN_LEN, 255);
    let td = td();
    let path_of = |len: usize| format!("/{}", "a".repeat(len - 1));

    // The whole ID, scheme included, counts.
    let fits = path_of(MAX_ID_LEN - BASE.len());
    let id = assert_ok(&format!("{BASE}{fits}"), TD, &fits);
    assert_eq!(id.as_str().len(), 2048);
    assert_eq!(SpiffeId::from_path(&td, &fits), Ok(id.clone()));
    assert_eq!(SpiffeId::from_segments(&td, &[&fits[1..]]), Ok(id));

    let over = path_of(MAX_ID_LEN + 1 - BASE.len());
    assert_err(&format!("{BASE}{over}"), IdError::TooLong(2049));
    assert_eq!(SpiffeId::from_path(&td, &over), Err(IdError::TooLong(2049)));
    assert_eq!(
        SpiffeId::from_segments(&td, &[&over[1..]]),
        Err(IdError::TooLong(2049))
    );
    // Made of many short segments, too.
    let segments = vec!["abc"; 600]; // 9 + 11 + 600 * 4 = 2420 bytes
    assert_eq!(
        SpiffeId::from_segments(&td, &segments),
        Err(IdError::TooLong(2420))
    );
    // Length is checked first, so an over-long string of anything is TooLong.
    assert_err(&"x".repeat(2049), IdError::TooLong(2049));
    // Bytes, not chars: 1024 'é' are 2048 bytes plus the prefix.
    let wide = format!("{BASE}/{}", "é".repeat(1024));
    assert_err(&wide, IdError::TooLong(wide.len()));

    // Trust domain: 255 bytes fit, 256 do not, as a name and inside an ID.
    let td255 = "a".repeat(255);
    let td256 = "a".repeat(256);
    assert_eq!(
        TrustDomain::parse(&td255).map(|t| t.as_str().len()),
        Ok(255)
    );
    assert_ok(&format!("spiffe://{td255}/path"), &td255, "/path");
    assert_ok(&format!("spiffe://{td255}"), &td255, "");
    assert_eq!(
        TrustDomain::parse(&td256),
        Err(IdError::TrustDomainTooLong(256))
    );
    assert_err(
        &format!("spiffe://{td256}/path"),
        IdError::TrustDomainTooLong(256),
    );
    assert_eq!(
        TrustDomain::parse(&format!("spiffe://{td256}")),
        Err(IdError::TrustDomainTooLong(256))
    );

    // The numbers make it into the messages.
    assert!(IdError::TooLong(2049).to_string().contains("2049"));
    assert!(IdError::TrustDomainTooLong(256).to_string().contains("256"));
}

// go-spiffe TrustDomainFromString: a bare name, or the ID of a trust domain.
#[test]
fn trust_domain_parse() {
    let accepted: &[(&str, &str)] = &[
        ("trustdomain", "trustdomain"),
        ("example.org", "example.org"),
        ("192.168.0.1", "192.168.0.1"),
        ("trust_domain", "trust_domain"),
        ("spiffe://trustdomain", "trustdomain"),
        ("spiffe://example.org", "example.org"),
    ];
    for (input, want) in accepted {
        let td = TrustDomain::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e:?}"));
        assert_eq!(td.as_str(), *want);
        assert_eq!(td.to_string(), *want);
        assert_eq!(input.parse::<TrustDomain>(), Ok(td));
    }

    let refused: &[(&str, IdError)] = &[
        ("", IdError::MissingTrustDomain),
        // go-spiffe accepts this and drops the path; a workload's ID is not a trust domain name.
        ("spiffe://trustdomain/path", IdError::BadTrustDomainChar),
        ("spiffe:/trustdomain/path", IdError::WrongScheme),
        ("https://trustdomain", IdError::WrongScheme),
        ("SPIFFE://trustdomain", IdError::WrongScheme),
        ("spiffe://", IdError::MissingTrustDomain),
        ("spiffe:///path", IdError::MissingTrustDomain),
        ("spiffe://trustdomain/", IdError::TrailingSlash),
        ("spiffe://trustdomain/path/", IdError::TrailingSlash),
        ("spiffe://%F0%9F%A4%AF/path", IdError::PercentEncoded),
        ("spiffe://trustdomain/%F0%9F%A4%AF", IdError::PercentEncoded),
        ("BAD", IdError::BadTrustDomainChar),
        ("trust$domain", IdError::BadTrustDomainChar),
        ("trustdomain/path", IdError::BadTrustDomainChar),
        ("example.org:443", IdError::Port),
        ("user@example.org", IdError::Userinfo),
        ("user:pass@example.org", IdError::Userinfo),
        ("%62%61%64", IdError::PercentEncoded),
    ];
    for (input, want) in refused {
        assert_eq!(TrustDomain::parse(input), Err(want.clone()), "{input:?}");
    }
}

// A trust domain's own ID: no path (SPIFFE-ID §3.1, the signing authority's ID), and the same
// whichever form the trust domain was parsed from.
#[test]
fn trust_domain_id() {
    let want = SpiffeId::parse(BASE).unwrap();
    for input in ["trustdomain", "spiffe://trustdomain"] {
        let td = TrustDomain::parse(input).unwrap();
        let id = td.id();
        assert_eq!(id, want);
        assert_eq!(id.to_string(), BASE);
        assert_eq!(id.trust_domain(), &td);
        assert_eq!(id.path(), "");
        assert!(!id.has_path());
        assert_eq!(id.segments().count(), 0);
    }
}

// Trust domains order and compare by name (go-spiffe TrustDomain.Compare).
#[test]
fn trust_domain_ordering() {
    let a = TrustDomain::parse("a").unwrap();
    let b = TrustDomain::parse("b").unwrap();
    assert!(a < b);
    assert_eq!(a.cmp(&a.clone()), std::cmp::Ordering::Equal);
    assert!(b > a);
    assert_ne!(a, b);
}

// go-spiffe FromSegments / JoinPathSegments / ValidatePathSegment: each segment must be a valid
// segment on its own; a segment holding '/' is refused, never split.
#[test]
fn from_segments() {
    let td = td();
    let accepted: &[(&[&str], &str)] = &[
        (&[], ""),
        (&["foo"], "/foo"),
        (&["foo", "bar"], "/foo/bar"),
        (&[".foo", "...", "Bar-1_x"], "/.foo/.../Bar-1_x"),
    ];
    for (segments, want_path) in accepted {
        let id = SpiffeId::from_segments(&td, segments).unwrap();
        assert_eq!(id, assert_ok(&format!("{BASE}{want_path}"), TD, want_path));
        assert_eq!(id.segments().collect::<Vec<_>>(), *segments);
    }

    let refused: &[(&[&str], IdError)] = &[
        (&[""], IdError::EmptySegment),
        (&["foo", ""], IdError::EmptySegment),
        (&["", "foo"], IdError::EmptySegment),
        (&["/"], IdError::BadPathSegmentChar),
        (&["/foo"], IdError::BadPathSegmentChar),
        (&["foo/"], IdError::BadPathSegmentChar),
        (&["foo/bar"], IdError::BadPathSegmentChar),
        (&["ok", "foo/bar"], IdError::BadPathSegmentChar),
        (&["$"], IdError::BadPathSegmentChar),
        (&["."], IdError::DotSegment),
        (&[".."], IdError::DotSegment),
        (&["foo", ".."], IdError::DotSegment),
        (&["a?b"], IdError::Query),
        (&["a#b"], IdError::Fragment),
        (&["a%20b"], IdError::PercentEncoded),
    ];
    for (segments, want) in refused {
        assert_eq!(
            SpiffeId::from_segments(&td, segments),
            Err(want.clone()),
            "{segments:?}"
        );
    }
}

// go-spiffe FromPath / FromPathf: the path is empty or starts with '/', then follows §2.2.
#[test]
fn from_path() {
    let td = td();
    for path in ["", "/foo", "/foo/bar", "/.foo"] {
        let id = SpiffeId::from_path(&td, path).unwrap();
        assert_eq!(id, assert_ok(&format!("{BASE}{path}"), TD, path));
    }

    let refused: &[(&str, IdError)] = &[
        ("foo", IdError::NoLeadingSlash),
        // Without the leading-slash check these would run into the trust domain.
        ("?q", IdError::NoLeadingSlash),
        (":8080/foo", IdError::NoLeadingSlash),
        (".evil.org/foo", IdError::NoLeadingSlash),
        ("/", IdError::TrailingSlash),
        ("/foo/", IdError::TrailingSlash),
        ("//foo", IdError::EmptySegment),
        ("/foo/../bar", IdError::DotSegment),
        ("/foo$", IdError::BadPathSegmentChar),
        ("/foo?q", IdError::Query),
    ];
    for (path, want) in refused {
        assert_eq!(
            SpiffeId::from_path(&td, path),
            Err(want.clone()),
            "{path:?}"
        );
    }
}

// Accessors on a workload ID, and equality whichever constructor built it.
#[test]
fn accessors_and_constructors_agree() {
    let input = "spiffe://example.org/ns/shop/sa/frontend";
    let id = SpiffeId::parse(input).unwrap();
    assert_eq!(id.trust_domain().as_str(), "example.org");
    assert_eq!(id.path(), "/ns/shop/sa/frontend");
    assert_eq!(
        id.segments().collect::<Vec<_>>(),
        ["ns", "shop", "sa", "frontend"]
    );
    assert!(id.has_path());
    assert_eq!(id.as_str(), input);
    assert_eq!(format!("{id}"), input);
    assert_eq!(format!("{id:?}"), format!("SpiffeId({input})"));
    assert_eq!(
        format!("{:?}", id.trust_domain()),
        "TrustDomain(example.org)"
    );

    let td = TrustDomain::parse("example.org").unwrap();
    assert_eq!(
        SpiffeId::from_segments(&td, &["ns", "shop", "sa", "frontend"]),
        Ok(id.clone())
    );
    assert_eq!(
        SpiffeId::from_path(&td, "/ns/shop/sa/frontend"),
        Ok(id.clone())
    );

    // Same trust domain, different path: not equal; trust domain comparison still matches.
    let other = SpiffeId::from_segments(&td, &["ns", "shop"]).unwrap();
    assert_ne!(id, other);
    assert_eq!(id.trust_domain(), other.trust_domain());
    // Same path, other trust domain.
    let elsewhere = SpiffeId::parse("spiffe://example.com/ns/shop/sa/frontend").unwrap();
    assert_ne!(id, elsewhere);
    assert_ne!(id.trust_domain(), elsewhere.trust_domain());
}

// Every error has a message (they are shown to operators).
#[test]
fn error_messages() {
    let all = [
        IdError::Empty,
        IdError::WrongScheme,
        IdError::MissingTrustDomain,
        IdError::BadTrustDomainChar,
        IdError::BadPathSegmentChar,
        IdError::DotSegment,
        IdError::NoLeadingSlash,
        IdError::EmptySegment,
        IdError::TrailingSlash,
        IdError::Port,
        IdError::Userinfo,
        IdError::Query,
        IdError::Fragment,
        IdError::PercentEncoded,
        IdError::TooLong(2049),
        IdError::TrustDomainTooLong(256),
    ];
    for e in all {
        assert!(!e.to_string().is_empty(), "{e:?}");
    }
}

// Serde: IDs and trust domains are JSON strings, and deserializing applies every parse rule
// (go-spiffe MarshalText / UnmarshalText).
#[test]
fn serde_json_round_trip() {
    let id = SpiffeId::parse("spiffe://trustdomain/path").unwrap();
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, r#""spiffe://trustdomain/path""#);
    assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
    // Escaped slashes decode into an owned string first; still the same ID.
    assert_eq!(
        serde_json::from_str::<SpiffeId>(r#""spiffe:\/\/trustdomain\/path""#).unwrap(),
        id
    );

    let td = td();
    let json = serde_json::to_string(&td).unwrap();
    assert_eq!(json, r#""trustdomain""#);
    assert_eq!(serde_json::from_str::<TrustDomain>(&json).unwrap(), td);
    // TrustDomain accepts the trust domain's ID too, like TrustDomain::parse.
    assert_eq!(
        serde_json::from_str::<TrustDomain>(r#""spiffe://trustdomain""#).unwrap(),
        td
    );

    // In a structure, with an optional ID.
    let value = serde_json::json!({ "id": id, "td": td, "maybe": Option::<SpiffeId>::None });
    let want = serde_json::json!({
        "id": "spiffe://trustdomain/path",
        "td": "trustdomain",
        "maybe": null,
    });
    assert_eq!(value, want);
    let none: Option<SpiffeId> = serde_json::from_str("null").unwrap();
    assert_eq!(none, None);

    // Refused inputs carry the parse error's message. There is no zero value: "" is an error
    // (go-spiffe maps it to the zero ID); use Option for "no ID".
    let refused_ids: &[(&str, IdError)] = &[
        (r#""""#, IdError::Empty),
        (r#""BAD""#, IdError::WrongScheme),
        (r#""spiffe://trustdomain/path/""#, IdError::TrailingSlash),
        (r#""spiffe://trustdomain:8080/path""#, IdError::Port),
    ];
    for (json, want) in refused_ids {
        let err = serde_json::from_str::<SpiffeId>(json).unwrap_err();
        assert!(err.to_string().contains(&want.to_string()), "{json}: {err}");
    }
    let refused_tds: &[(&str, IdError)] = &[
        (r#""""#, IdError::MissingTrustDomain),
        (r#""BAD""#, IdError::BadTrustDomainChar),
        (
            r#""spiffe://trustdomain/path""#,
            IdError::BadTrustDomainChar,
        ),
    ];
    for (json, want) in refused_tds {
        let err = serde_json::from_str::<TrustDomain>(json).unwrap_err();
        assert!(err.to_string().contains(&want.to_string()), "{json}: {err}");
    }
    // Not a string at all.
    assert!(serde_json::from_str::<SpiffeId>("42").is_err());
    assert!(serde_json::from_str::<TrustDomain>("[]").is_err());
}
