//! SPIFFE IDs and trust domains, parsed exactly as the SPIFFE ID specification says.
//!
//! `spiffe://<trust-domain>/<path>`: the scheme is lowercase `spiffe`; the trust domain is
//! `[a-z0-9._-]+` (at most 255 bytes), with no userinfo or port; the path is `/`-separated segments
//! of `[A-Za-z0-9._-]+`, none empty, `.` or `..`, and no trailing `/`. Percent-encoding, queries and
//! fragments are refused. The whole ID is at most 2048 bytes: the spec sets that as the minimum
//! to support and says not to generate longer ones, and we refuse them rather than store IDs that
//! other implementations may truncate or skip.

use std::fmt;
use std::str::FromStr;

/// Longest SPIFFE ID we accept, in bytes (SPIFFE-ID §2.3).
pub const MAX_ID_LEN: usize = 2048;
/// Longest trust domain name we accept, in bytes (SPIFFE-ID §2.3).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME_PREFIX: &str = "spiffe://";

/// Why a string is not a SPIFFE ID or trust domain. Each variant is one rule of the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The input is the empty string.
    #[error("a SPIFFE ID cannot be empty")]
    Empty,
    /// The input does not start with `spiffe://`, lowercase.
    #[error("a SPIFFE ID must start with the scheme \"spiffe://\" (lowercase)")]
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("the trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain holds a character outside `[a-z0-9._-]` (uppercase included).
    /// [`TrustDomain::parse`] also says this of a `spiffe://` ID that has a path.
    #[error("trust domain characters are limited to lowercase letters, digits, dots, dashes and underscores")]
    BadTrustDomainChar,
    /// A path segment holds a character outside `[A-Za-z0-9._-]` (a `/` given to
    /// [`SpiffeId::from_segments`] included).
    #[error(
        "path segment characters are limited to letters, digits, dots, dashes and underscores"
    )]
    BadPathSegmentChar,
    /// A path segment is `.` or `..`.
    #[error("the path cannot contain \".\" or \"..\" segments")]
    DotSegment,
    /// A path given apart ([`SpiffeId::from_path`]) does not start with `/`.
    #[error("the path must start with a slash")]
    NoLeadingSlash,
    /// Two slashes in a row, or an empty segment given to [`SpiffeId::from_segments`].
    #[error("the path cannot contain empty segments (\"//\")")]
    EmptySegment,
    /// The path ends with `/`.
    #[error("the path cannot end with a slash")]
    TrailingSlash,
    /// The authority has a `:port`.
    #[error("a SPIFFE ID cannot contain a port")]
    Port,
    /// The authority has `user@` or `user:password@`.
    #[error("a SPIFFE ID cannot contain user information (\"@\")")]
    Userinfo,
    /// The input holds a `?`.
    #[error("a SPIFFE ID cannot contain a query (\"?\")")]
    Query,
    /// The input holds a `#`.
    #[error("a SPIFFE ID cannot contain a fragment (\"#\")")]
    Fragment,
    /// The input holds a `%`: percent-encoding is refused, even of allowed characters.
    #[error("a SPIFFE ID cannot contain percent-encoded characters")]
    PercentEncoded,
    /// Longer than [`MAX_ID_LEN`] bytes; the length found, in bytes.
    #[error("a SPIFFE ID can be at most {MAX_ID_LEN} bytes long, this one has {0}")]
    TooLong(usize),
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`] bytes; its length in bytes.
    #[error("a trust domain can be at most {MAX_TRUST_DOMAIN_LEN} bytes long, this one has {0}")]
    TrustDomainTooLong(usize),
}

/// A trust domain name such as `example.org`: the authority of every SPIFFE ID issued under one root
/// of trust.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain name (`example.org`) or the ID of a trust domain (`spiffe://example.org`).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.contains(":/") {
            let id = SpiffeId::parse(s)?;
            if id.has_path() {
                return Err(IdError::BadTrustDomainChar);
            }
            return Ok(id.trust_domain);
        }
        validate_trust_domain(s)?;
        Ok(TrustDomain(s.to_owned()))
    }

    /// The bare name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ID of the trust domain itself (`spiffe://example.org`), which a CA certificate carries.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            full: format!("{SCHEME_PREFIX}{}", self.0),
            trust_domain: self.clone(),
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        TrustDomain::parse(s)
    }
}

/// A valid SPIFFE ID. The ID of a trust domain itself (no path) is a valid `SpiffeId` too; a
/// workload's ID always has a path ([`SpiffeId::has_path`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    full: String,
    trust_domain: TrustDomain,
}

impl SpiffeId {
    /// Parses `spiffe://trust-domain/path`, applying every rule of the spec.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong(s.len()));
        }
        let rest = s.strip_prefix(SCHEME_PREFIX).ok_or(IdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        validate_trust_domain(td)?;
        validate_path(path)?;
        Ok(SpiffeId {
            full: s.to_owned(),
            trust_domain: TrustDomain(td.to_owned()),
        })
    }

    /// Builds an ID from a trust domain and path segments, validating each segment, e.g.
    /// `SpiffeId::from_segments(&td, &["ns", "shop", "sa", "frontend"])`.
    pub fn from_segments(trust_domain: &TrustDomain, segments: &[&str]) -> Result<Self, IdError> {
        let mut full = format!("{SCHEME_PREFIX}{}", trust_domain.0);
        for segment in segments {
            // Checked one by one before joining: joined, "" would read as a trailing slash or "//",
            // and a segment holding "/" as several segments. "/" is refused as a bad character.
            if segment.is_empty() {
                return Err(IdError::EmptySegment);
            }
            validate_segment(segment)?;
            full.push('/');
            full.push_str(segment);
        }
        SpiffeId::parse(&full)
    }

    /// Builds an ID from a trust domain and a path that starts with `/`.
    pub fn from_path(trust_domain: &TrustDomain, path: &str) -> Result<Self, IdError> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(IdError::NoLeadingSlash);
        }
        SpiffeId::parse(&format!("{SCHEME_PREFIX}{}{path}", trust_domain.0))
    }

    /// The trust domain the ID belongs to (its authority).
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path including its leading `/`, or `""` for a trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.full[SCHEME_PREFIX.len() + self.trust_domain.0.len()..]
    }

    /// The path's segments, without the slashes.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }

    /// Workload IDs have a path; the ID of a trust domain (and of its CA) has none.
    pub fn has_path(&self) -> bool {
        !self.path().is_empty()
    }

    /// The whole ID, `spiffe://` included, exactly as parsed.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.full)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        SpiffeId::parse(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        SpiffeId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for TrustDomain {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TrustDomain {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        TrustDomain::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Characters that are not allowed anywhere but that say something specific about what the user
/// tried (a URL with a port, a query, ...), so they get their own error.
fn uri_syntax_error(b: u8) -> Option<IdError> {
    match b {
        b'%' => Some(IdError::PercentEncoded),
        b'?' => Some(IdError::Query),
        b'#' => Some(IdError::Fragment),
        _ => None,
    }
}

fn validate_trust_domain(td: &str) -> Result<(), IdError> {
    if td.is_empty() {
        return Err(IdError::MissingTrustDomain);
    }
    for (i, &b) in td.as_bytes().iter().enumerate() {
        if matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_') {
            continue;
        }
        return Err(match b {
            // In `user:pass@host` the first ':' belongs to the userinfo, not to a port.
            b':' if authority_has_userinfo_after(&td[i..]) => IdError::Userinfo,
            b':' => IdError::Port,
            b'@' => IdError::Userinfo,
            _ => uri_syntax_error(b).unwrap_or(IdError::BadTrustDomainChar),
        });
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong(td.len()));
    }
    Ok(())
}

/// Whether an `@` follows in the authority (before any query or fragment), i.e. userinfo is set.
fn authority_has_userinfo_after(rest: &str) -> bool {
    rest.split(['?', '#'])
        .next()
        .is_some_and(|a| a.contains('@'))
}

fn validate_path(path: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(IdError::NoLeadingSlash);
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment.is_empty() {
            return Err(if last {
                IdError::TrailingSlash
            } else {
                IdError::EmptySegment
            });
        }
        validate_segment(segment)?;
    }
    Ok(())
}

/// One non-empty path segment: its characters, then that it is not `.` or `..`.
fn validate_segment(segment: &str) -> Result<(), IdError> {
    for &b in segment.as_bytes() {
        if !matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_') {
            return Err(uri_syntax_error(b).unwrap_or(IdError::BadPathSegmentChar));
        }
    }
    if segment == "." || segment == ".." {
        return Err(IdError::DotSegment);
    }
    Ok(())
}
