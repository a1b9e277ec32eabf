//! Which peers a listener admits: SPIFFE ID patterns and the allow-lists made of them.
//!
//! A pattern is a SPIFFE ID in which
//! - a path segment that is exactly `*` matches any one segment (never empty, never crossing `/`);
//! - a final `/**` matches one or more further segments (so `spiffe://td/ns/shop/**` matches
//!   `spiffe://td/ns/shop/sa/a` but not `spiffe://td/ns/shop` itself, which is another workload);
//! - everything else matches itself exactly, case-sensitively.
//!
//! The trust domain is always literal: a pattern never admits another trust domain. `*` inside a
//! segment (`front*`) and `**` anywhere but at the end are errors, not literal text, so that a
//! typo cannot silently admit nothing or everything.

use std::fmt;

use crate::{AuthorizeId, IdError, SpiffeId, TrustDomain};

/// Why a string is not an [`IdPattern`]; every variant carries the pattern as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `*` inside a segment (`front*`) rather than as a whole segment.
    #[error("\"{0}\": \"*\" must be a whole path segment (\"/*/\"), not part of one")]
    PartialWildcard(String),
    /// `**` anywhere but as the last segment.
    #[error("\"{0}\": \"**\" may only be the last segment")]
    InnerDoubleWildcard(String),
    /// A wildcard in the trust domain: a pattern never spans trust domains.
    #[error("\"{0}\": wildcards are not allowed in the trust domain")]
    WildcardTrustDomain(String),
    /// A bare trust domain (`spiffe://td`), which names its CA, never a workload.
    #[error("\"{0}\" names a trust domain, not a workload: add a path, or \"/**\" for all of it")]
    NoPath(String),
    /// Not a SPIFFE ID once every `*` segment is read as a literal segment.
    #[error("\"{pattern}\" is not a valid SPIFFE ID pattern: {reason}")]
    Invalid {
        /// The pattern as written.
        pattern: String,
        /// The SPIFFE ID rule it breaks.
        reason: IdError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    AnyOne,
}

/// One SPIFFE ID pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct IdPattern {
    text: String,
    trust_domain: TrustDomain,
    segments: Vec<Segment>,
    /// Ends in `/**`: one or more further segments.
    any_suffix: bool,
}

impl IdPattern {
    /// Parses `spiffe://td/a/*/b` or `spiffe://td/a/**`: `*` is exactly one whole segment, a final
    /// `/**` one or more segments. A misplaced wildcard is an error, never literal text.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let invalid = |reason| PatternError::Invalid {
            pattern: text.to_owned(),
            reason,
        };
        let (base, any_suffix) = match text.strip_suffix("/**") {
            Some(base) => (base, true),
            None => (text, false),
        };
        let authority_end = base
            .strip_prefix("spiffe://")
            .map(|rest| rest.find('/').map_or(base.len(), |i| i + "spiffe://".len()))
            .unwrap_or(base.len());
        if base[..authority_end].contains('*') {
            return Err(PatternError::WildcardTrustDomain(text.to_owned()));
        }
        // Validate the pattern as an ID in which every `*` segment is a placeholder segment.
        let mut segments = Vec::new();
        let mut placeholder = String::from(&base[..authority_end]);
        for segment in base[authority_end..].split('/').skip(1) {
            placeholder.push('/');
            match segment {
                "**" => return Err(PatternError::InnerDoubleWildcard(text.to_owned())),
                "*" => {
                    placeholder.push('x');
                    segments.push(Segment::AnyOne);
                }
                s if s.contains('*') => {
                    return Err(PatternError::PartialWildcard(text.to_owned()));
                }
                s => {
                    placeholder.push_str(s);
                    segments.push(Segment::Literal(s.to_owned()));
                }
            }
        }
        let id = SpiffeId::parse(&placeholder).map_err(invalid)?;
        if !id.has_path() && !any_suffix {
            // A bare trust domain ID names the CA, never a workload that could connect.
            return Err(PatternError::NoPath(text.to_owned()));
        }
        Ok(IdPattern {
            text: text.to_owned(),
            trust_domain: id.trust_domain().clone(),
            segments,
            any_suffix,
        })
    }

    /// Whether `id` is in the pattern's trust domain and its path matches segment by segment.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        if id.trust_domain() != &self.trust_domain {
            return false;
        }
        let mut path = id.segments();
        for segment in &self.segments {
            match (segment, path.next()) {
                (Segment::Literal(want), Some(got)) if want == got => {}
                (Segment::AnyOne, Some(_)) => {}
                _ => return false,
            }
        }
        let rest = path.count();
        if self.any_suffix {
            rest >= 1
        } else {
            rest == 0
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The path's segments before any final `/**`: `Some(literal)`, or `None` for `*`.
    pub fn path_segments(&self) -> impl Iterator<Item = Option<&str>> {
        self.segments.iter().map(|s| match s {
            Segment::Literal(l) => Some(l.as_str()),
            Segment::AnyOne => None,
        })
    }

    /// Whether the pattern ends in `/**` (one or more further segments).
    pub fn has_any_suffix(&self) -> bool {
        self.any_suffix
    }

    /// Whether some SPIFFE ID matches both patterns.
    pub fn overlaps(&self, other: &IdPattern) -> bool {
        if self.trust_domain != other.trust_domain {
            return false;
        }
        let clash = self
            .segments
            .iter()
            .zip(&other.segments)
            .any(|pair| matches!(pair, (Segment::Literal(a), Segment::Literal(b)) if a != b));
        if clash {
            return false;
        }
        let (n, m) = (self.segments.len(), other.segments.len());
        // Past the shorter fixed part, a `/**` takes the other's remaining segments (at least one).
        match (self.any_suffix, other.any_suffix) {
            (false, false) => n == m,
            (true, false) => m > n,
            (false, true) => n > m,
            (true, true) => true,
        }
    }

    /// The (literal) trust domain every matching ID is in.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }
}

impl fmt::Display for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for IdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdPattern({})", self.text)
    }
}

impl std::str::FromStr for IdPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, PatternError> {
        IdPattern::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for IdPattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        IdPattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The peers a listener admits: any ID that matches one of the patterns.
#[derive(Debug, Clone, Default)]
pub struct AllowList(Vec<IdPattern>);

impl AllowList {
    /// Admits any ID matching one of `patterns`; an empty list admits nobody.
    pub fn new(patterns: Vec<IdPattern>) -> Self {
        AllowList(patterns)
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[IdPattern] {
        &self.0
    }
}

impl AuthorizeId for AllowList {
    fn authorize(&self, peer: &SpiffeId) -> bool {
        self.0.iter().any(|p| p.matches(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn exact_patterns_match_only_themselves() {
        let p = IdPattern::parse("spiffe://td/ns/shop/sa/frontend").unwrap();
        assert!(p.matches(&id("spiffe://td/ns/shop/sa/frontend")));
        for other in [
            "spiffe://td/ns/shop/sa/frontend2",
            "spiffe://td/ns/shop/sa/Frontend",
            "spiffe://td/ns/shop/sa/frontend/x",
            "spiffe://td/ns/shop/sa",
            "spiffe://other/ns/shop/sa/frontend",
        ] {
            assert!(!p.matches(&id(other)), "{other}");
        }
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        let p = IdPattern::parse("spiffe://td/ns/*/sa/frontend").unwrap();
        assert!(p.matches(&id("spiffe://td/ns/shop/sa/frontend")));
        assert!(p.matches(&id("spiffe://td/ns/a.b-c_d/sa/frontend")));
        assert!(
            !p.matches(&id("spiffe://td/ns/shop/x/sa/frontend")),
            "never two segments"
        );
        assert!(
            !p.matches(&id("spiffe://td/ns/sa/frontend")),
            "never zero segments"
        );
        let last = IdPattern::parse("spiffe://td/ns/shop/sa/*").unwrap();
        assert!(last.matches(&id("spiffe://td/ns/shop/sa/anything")));
        assert!(!last.matches(&id("spiffe://td/ns/shop/sa")));
        assert!(!last.matches(&id("spiffe://td/ns/shop/sa/a/b")));
    }

    #[test]
    fn double_star_matches_one_or_more_trailing_segments() {
        let p = IdPattern::parse("spiffe://td/ns/shop/**").unwrap();
        assert!(p.matches(&id("spiffe://td/ns/shop/sa")));
        assert!(p.matches(&id("spiffe://td/ns/shop/sa/frontend")));
        assert!(p.matches(&id("spiffe://td/ns/shop/a/b/c/d")));
        assert!(
            !p.matches(&id("spiffe://td/ns/shop")),
            "the prefix itself is another ID"
        );
        assert!(
            !p.matches(&id("spiffe://td/ns/shopping/sa/x")),
            "segments, not prefixes"
        );
        let all = IdPattern::parse("spiffe://td/**").unwrap();
        assert!(all.matches(&id("spiffe://td/x")));
        assert!(!all.matches(&id("spiffe://td")));
        assert!(
            !all.matches(&id("spiffe://other/x")),
            "never another trust domain"
        );
        let mixed = IdPattern::parse("spiffe://td/ns/*/sa/**").unwrap();
        assert!(mixed.matches(&id("spiffe://td/ns/a/sa/b/c")));
        assert!(!mixed.matches(&id("spiffe://td/ns/a/xx/b")));
    }

    #[test]
    fn malformed_patterns_are_errors() {
        for bad in [
            "spiffe://td/ns/front*",
            "spiffe://td/ns/*end",
            "spiffe://td/**/sa/x",
            "spiffe://td/ns/**/x",
            "spiffe://*.td/x",
            "spiffe://td/ns//x",
            "spiffe://td/ns/x/",
            "spiffe://td",
            "https://td/x",
            "*",
            "spiffe://td/***",
        ] {
            assert!(IdPattern::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    /// `overlaps` against brute force: every ID of up to four segments over a small alphabet.
    #[test]
    fn overlap_is_exactly_a_common_matching_id() {
        let alphabet = ["a", "b", "*"];
        let mut patterns = Vec::new();
        let mut ids = Vec::new();
        for len in 0..=3usize {
            for combo in 0..alphabet.len().pow(len as u32) {
                let segs: Vec<&str> = (0..len)
                    .map(|i| alphabet[combo / alphabet.len().pow(i as u32) % alphabet.len()])
                    .collect();
                let path: String = segs.iter().map(|s| format!("/{s}")).collect();
                for suffix in ["", "/**"] {
                    if let Ok(p) = IdPattern::parse(&format!("spiffe://td{path}{suffix}")) {
                        patterns.push(p);
                    }
                }
            }
        }
        for len in 1..=4usize {
            for combo in 0..2usize.pow(len as u32) {
                let path: String = (0..len).map(|i| ["/a", "/b"][combo >> i & 1]).collect();
                ids.push(id(&format!("spiffe://td{path}")));
            }
        }
        let other_td = IdPattern::parse("spiffe://other/a").unwrap();
        for p in &patterns {
            assert!(!p.overlaps(&other_td));
            for q in &patterns {
                // Fixed parts have at most three segments, so a common ID, if any, has at most
                // four, and `a` and `b` are the only literals.
                let common = ids.iter().any(|i| p.matches(i) && q.matches(i));
                assert_eq!(p.overlaps(q), common, "{p} and {q}");
            }
        }
    }

    #[test]
    fn allow_list_admits_any_matching_pattern() {
        let list = AllowList::new(vec![
            IdPattern::parse("spiffe://td/a").unwrap(),
            IdPattern::parse("spiffe://td/b/**").unwrap(),
        ]);
        assert!(list.authorize(&id("spiffe://td/a")));
        assert!(list.authorize(&id("spiffe://td/b/c")));
        assert!(!list.authorize(&id("spiffe://td/c")));
        assert!(
            !AllowList::default().authorize(&id("spiffe://td/a")),
            "empty admits nobody"
        );
    }
}
