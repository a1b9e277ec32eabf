//! Reading a policy file: YAML with a position on every node (marked-yaml), walked by hand so
//! that every error — syntax, unknown field, unknown segment, bad CIDR, bad port range, invalid
//! SPIFFE ID, identity outside the trust domain, duplicate names — gets `file:line:column` and a
//! sentence, and all errors of a file are reported together.
//!
//! serde_yaml would stop at the first error and keeps no positions on values, so a semantic error
//! ("unknown segment") could not say where it is; that is why this file does not use it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{LoaderOptions, Node, Span};
use palisade_identity::{IdPattern, TrustDomain};

use crate::addrs::{Addrs, Cidr};
use crate::model::{Action, Host, Policy, PortRange, Pos, Protocol, Rule, Segment, SegmentRef};
use crate::OUTSIDE;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Where the problem is.
    pub pos: Pos,
    /// One sentence, without the position.
    pub message: String,
}

/// Every error found in one policy file, in the order of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors {
    /// The file as named to [`load_file`] or [`load_str`].
    pub file: PathBuf,
    /// The problems, sorted by position.
    pub errors: Vec<Located>,
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                e.pos.line,
                e.pos.column,
                e.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Reads and checks a policy file.
pub fn load_file(path: &Path) -> Result<Policy, LoadErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadErrors {
        file: path.to_owned(),
        errors: vec![Located {
            pos: Pos { line: 1, column: 1 },
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    load_str(&text, path)
}

/// Parses and checks policy text; `file` only names it in errors.
pub fn load_str(text: &str, file: &Path) -> Result<Policy, LoadErrors> {
    let mut loader = Loader::default();
    let policy = loader.policy(text);
    let mut errors = loader.errors;
    errors.sort_by_key(|e| e.pos);
    match policy {
        Some(policy) if errors.is_empty() => Ok(policy),
        _ => Err(LoadErrors {
            file: file.to_owned(),
            errors,
        }),
    }
}

fn pos_of(span: &Span) -> Pos {
    span.start()
        .map(|m| Pos {
            line: m.line(),
            column: m.column(),
        })
        .unwrap_or(Pos { line: 1, column: 1 })
}

fn node_pos(node: &Node) -> Pos {
    let own = pos_of(node.span());
    // A block mapping's span starts at its first `:`, not at its first key.
    match node
        .as_mapping()
        .and_then(|m| m.keys().map(|k| pos_of(k.span())).min())
    {
        Some(first_key) => own.min(first_key),
        None => own,
    }
}

/// An empty value (`version:` with nothing after it) is placed by the parser at the next token,
/// often on a later line; place it at its key instead, so that errors about it point there.
fn place_empty_values(node: &mut Node) {
    match node {
        Node::Mapping(map) => {
            for (key, value) in map.iter_mut() {
                if let Node::Scalar(s) = value {
                    if s.as_str().is_empty() && s.may_coerce() {
                        s.span_mut().set_start(key.span().start().copied());
                    }
                }
                place_empty_values(value);
            }
        }
        Node::Sequence(seq) => seq.iter_mut().for_each(place_empty_values),
        Node::Scalar(_) => {}
    }
}

/// How deep the YAML may nest. A policy needs five levels (the policy, `segments`, a segment,
/// `addresses`, an address). The YAML parser recurses once per level, and so does dropping the
/// node tree: a deeply nested file (`- - - - …`, two bytes a level) would overflow the stack and
/// abort the process (`policy sync` included) instead of being reported.
const MAX_DEPTH: usize = 64;

/// Where (line, column) YAML text first nests deeper than 64 levels, if it does: a check to run
/// before loading the text into a tree, whose loading and dropping recurse once per level (the
/// Kubernetes manifest loader uses it too).
pub fn yaml_nesting_too_deep(text: &str) -> Option<(usize, usize)> {
    too_deep(text).map(|p| (p.line, p.column))
}

/// Where the YAML first nests deeper than [`MAX_DEPTH`], read with the parser's own events (which
/// do not recurse). Syntax errors are left to the loader, which reports them.
fn too_deep(text: &str) -> Option<Pos> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        match parser.next_token() {
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), mark)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(Pos {
                        line: mark.line(),
                        column: mark.col() + 1,
                    });
                }
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            // The loader reads the first document only.
            Ok((Event::DocumentEnd | Event::StreamEnd, _)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[derive(Default)]
struct Loader {
    errors: Vec<Located>,
    /// Segments declared but refused (with an error): naming them elsewhere is not a second error.
    refused: HashSet<String>,
}

/// A mapping's fields, checked against the names a section allows.
struct Fields<'a> {
    map: &'a MarkedMappingNode,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a Node> {
        self.map.get_node(name)
    }
}

impl Loader {
    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(Located {
            pos,
            message: message.into(),
        });
    }

    /// A mapping whose keys must be among `allowed`; unknown keys are errors.
    fn fields<'a>(&mut self, node: &'a Node, what: &str, allowed: &[&str]) -> Option<Fields<'a>> {
        let Some(map) = node.as_mapping() else {
            self.error(node_pos(node), format!("{what} must be a mapping"));
            return None;
        };
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                self.error(
                    pos_of(key.span()),
                    format!(
                        "unknown field `{}` in {what} (expected {})",
                        key.as_str(),
                        allowed
                            .iter()
                            .map(|a| format!("`{a}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
        Some(Fields { map })
    }

    fn scalar<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a MarkedScalarNode> {
        match node.as_scalar() {
            Some(s) => Some(s),
            None => {
                self.error(node_pos(node), format!("{what} must be a single value"));
                None
            }
        }
    }

    fn sequence<'a>(&mut self, node: &'a Node, what: &str) -> Option<&'a MarkedSequenceNode> {
        match node.as_sequence() {
            Some(s) => Some(s),
            None => {
                self.error(node_pos(node), format!("{what} must be a list"));
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> bool {
        match self.scalar(node, what).map(|s| s.as_str()) {
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                self.error(
                    node_pos(node),
                    format!("{what} must be true or false, not \"{other}\""),
                );
                false
            }
            None => false,
        }
    }

    fn policy(&mut self, text: &str) -> Option<Policy> {
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true)
            .toplevel_mapping();
        if let Some(pos) = too_deep(text) {
            self.error(
                pos,
                format!("the YAML nests deeper than {MAX_DEPTH} levels; a policy needs five"),
            );
            return None;
        }
        let mut root = match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(root) => root,
            Err(e) => {
                self.yaml_error(e);
                return None;
            }
        };
        place_empty_values(&mut root);
        let top = self.fields(
            &root,
            "the policy",
            &["version", "trust_domain", "segments", "rules", "hosts"],
        )?;
        let root_pos = node_pos(&root);
        match top.get("version") {
            None => self.error(root_pos, "`version: 1` is missing"),
            Some(v) => {
                if self.scalar(v, "version").map(|s| s.as_str()) != Some("1") {
                    self.error(node_pos(v), "this release reads `version: 1` only");
                }
            }
        }
        let trust_domain = match top.get("trust_domain") {
            None => {
                self.error(root_pos, "`trust_domain` is missing");
                None
            }
            Some(node) => self.scalar(node, "trust_domain").and_then(|s| {
                TrustDomain::parse(s.as_str())
                    .map_err(|e| self.error(node_pos(node), format!("trust_domain: {e}")))
                    .ok()
            }),
        };
        let segments = match top.get("segments") {
            Some(node) => self.segments(node, trust_domain.as_ref()),
            None => {
                self.error(root_pos, "`segments` is missing");
                Vec::new()
            }
        };
        let names: HashMap<String, usize> = segments
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let rules = top
            .get("rules")
            .map(|node| self.rules(node, &names))
            .unwrap_or_default();
        let hosts = top
            .get("hosts")
            .map(|node| self.hosts(node, &names))
            .unwrap_or_default();
        Some(Policy {
            trust_domain: trust_domain?,
            segments,
            rules,
            hosts,
        })
    }

    fn yaml_error(&mut self, error: marked_yaml::LoadError) {
        use marked_yaml::LoadError as E;
        let (marker, message) = match &error {
            E::TopLevelMustBeMapping(m) => (Some(*m), "the policy must be a YAML mapping".into()),
            E::TopLevelMustBeSequence(m) => (Some(*m), "unexpected top-level list".into()),
            E::UnexpectedAnchor(m) => (Some(*m), "YAML anchors are not supported".into()),
            E::MappingKeyMustBeScalar(m) => {
                (Some(*m), "a mapping key must be a plain value".into())
            }
            E::UnexpectedTag(m) => (Some(*m), "YAML tags are not supported".into()),
            E::ScanError(m, e) => (Some(*m), format!("YAML syntax: {}", e.info())),
            E::DuplicateKey(d) => {
                let first = d
                    .prev_key
                    .span()
                    .start()
                    .map(|m| format!(" (first at line {})", m.line()))
                    .unwrap_or_default();
                (
                    d.key.span().start().copied(),
                    format!("`{}` is defined twice{first}", d.key.as_str()),
                )
            }
        };
        let pos = marker
            .map(|m| Pos {
                line: m.line(),
                column: m.column(),
            })
            .unwrap_or(Pos { line: 1, column: 1 });
        self.error(pos, message);
    }

    fn segments(&mut self, node: &Node, td: Option<&TrustDomain>) -> Vec<Segment> {
        let Some(map) = node.as_mapping() else {
            self.error(
                node_pos(node),
                "`segments` must be a mapping of segment names",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, body) in map.iter() {
            let name = key.as_str().to_owned();
            let pos = pos_of(key.span());
            if name == OUTSIDE {
                self.error(
                    pos,
                    format!("`{OUTSIDE}` is the built-in segment of addresses in no segment; choose another name"),
                );
                continue;
            }
            if !valid_name(&name) {
                self.error(pos, format!("segment name \"{}\": use lowercase letters, digits, `-` and `_`, starting with a letter", name.escape_debug()));
                self.refused.insert(name);
                continue;
            }
            let what = format!("segment `{name}`");
            let Some(fields) = self.fields(
                body,
                &what,
                &["addresses", "except", "identities", "egress_to_outside"],
            ) else {
                self.refused.insert(name);
                continue;
            };
            let errors_before = self.errors.len();
            let addresses = fields
                .get("addresses")
                .map(|n| self.cidrs(n, &format!("{what}: addresses")))
                .unwrap_or_default();
            let except = fields
                .get("except")
                .map(|n| self.cidrs(n, &format!("{what}: except")))
                .unwrap_or_default();
            let identities = fields
                .get("identities")
                .map(|n| self.identities(n, td, &what))
                .unwrap_or_default();
            // Not when its addresses or identities were refused: that error says it already.
            if addresses.is_empty() && identities.is_empty() && self.errors.len() == errors_before {
                self.error(pos, format!("{what} has neither addresses nor identities"));
            }
            let egress_to_outside = fields
                .get("egress_to_outside")
                .map(|n| self.boolean(n, "egress_to_outside"))
                .unwrap_or(false);
            let members = Addrs::of(&addresses.iter().map(|(c, _)| *c).collect::<Vec<_>>())
                .difference(&Addrs::of(
                    &except.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
                ));
            for (cidr, p) in &except {
                let inside = Addrs::of(&[*cidr]);
                let covered = Addrs::of(&addresses.iter().map(|(c, _)| *c).collect::<Vec<_>>());
                if inside.intersection(&covered).is_empty() {
                    self.error(
                        *p,
                        format!("{what}: except {cidr} is not inside any of its addresses"),
                    );
                }
            }
            out.push(Segment {
                name,
                addresses,
                except,
                identities,
                egress_to_outside,
                members,
                pos,
            });
        }
        out
    }

    fn cidrs(&mut self, node: &Node, what: &str) -> Vec<(Cidr, Pos)> {
        let Some(seq) = self.sequence(node, what) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in seq.iter() {
            if let Some(s) = self.scalar(item, what) {
                match Cidr::parse(s.as_str()) {
                    Ok(c) => out.push((c, node_pos(item))),
                    Err(e) => self.error(node_pos(item), format!("{what}: {e}")),
                }
            }
        }
        out
    }

    fn identities(
        &mut self,
        node: &Node,
        td: Option<&TrustDomain>,
        what: &str,
    ) -> Vec<(IdPattern, Pos)> {
        let Some(seq) = self.sequence(node, &format!("{what}: identities")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in seq.iter() {
            let Some(s) = self.scalar(item, "an identity") else {
                continue;
            };
            let pos = node_pos(item);
            match IdPattern::parse(s.as_str()) {
                Ok(p) => {
                    if let Some(td) = td {
                        if p.trust_domain() != td {
                            self.error(
                                pos,
                                format!(
                                    "{what}: identity {} is outside the trust domain {td}",
                                    s.as_str()
                                ),
                            );
                            continue;
                        }
                    }
                    out.push((p, pos));
                }
                Err(e) => self.error(pos, format!("{what}: {e}")),
            }
        }
        out
    }

    /// `outside_ok`: whether `outside` may be named (in rules, not in hosts).
    fn segment_refs(
        &mut self,
        node: &Node,
        names: &HashMap<String, usize>,
        what: &str,
        outside_ok: bool,
    ) -> Vec<SegmentRef> {
        // A single name is accepted for a list of one.
        let items: Vec<&Node> = match node.as_sequence() {
            Some(seq) => seq.iter().collect(),
            None => vec![node],
        };
        if items.is_empty() {
            self.error(node_pos(node), format!("{what} is empty"));
        }
        let mut out = Vec::new();
        // A host may list thousands of segments: duplicates are found by hash, not by a scan.
        let mut seen = HashSet::new();
        for item in items {
            let Some(s) = self.scalar(item, what) else {
                continue;
            };
            let r = match s.as_str() {
                OUTSIDE if outside_ok => SegmentRef::Outside,
                OUTSIDE => {
                    self.error(
                        node_pos(item),
                        format!("{what}: `{OUTSIDE}` cannot live on a host"),
                    );
                    continue;
                }
                name => match names.get(name) {
                    Some(&i) => SegmentRef::Segment(i),
                    None if self.refused.contains(name) => continue,
                    None => {
                        self.error(
                            node_pos(item),
                            format!(
                                "{what}: unknown segment `{name}` (known: {}, and `{OUTSIDE}`)",
                                crate::few::a_few(names.keys().map(String::as_str))
                            ),
                        );
                        continue;
                    }
                },
            };
            if seen.insert(r) {
                out.push(r);
            }
        }
        out
    }

    fn rules(&mut self, node: &Node, names: &HashMap<String, usize>) -> Vec<Rule> {
        let Some(seq) = self.sequence(node, "`rules`") else {
            return Vec::new();
        };
        let mut out: Vec<Rule> = Vec::new();
        let mut seen: HashMap<String, Pos> = HashMap::new();
        for (index, item) in seq.iter().enumerate() {
            let pos = node_pos(item);
            let Some(fields) = self.fields(
                item,
                &format!("rule {}", index + 1),
                &["name", "from", "to", "protocol", "ports", "action", "log"],
            ) else {
                continue;
            };
            let name = match fields.get("name") {
                Some(n) => self
                    .scalar(n, "a rule name")
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                None => format!("rule-{}", index + 1),
            };
            if let Some(first) = seen.get(&name) {
                let at = fields.get("name").map(node_pos).unwrap_or(pos);
                self.error(
                    at,
                    format!(
                        "rule name `{name}` is used twice (first at line {})",
                        first.line
                    ),
                );
            }
            seen.insert(name.clone(), pos);
            let what = format!("rule `{name}`");
            let from = match fields.get("from") {
                Some(n) => self.segment_refs(n, names, &format!("{what}: from"), true),
                None => {
                    self.error(pos, format!("{what} has no `from`"));
                    Vec::new()
                }
            };
            let to = match fields.get("to") {
                Some(n) => self.segment_refs(n, names, &format!("{what}: to"), true),
                None => {
                    self.error(pos, format!("{what} has no `to`"));
                    Vec::new()
                }
            };
            let protocol = match fields.get("protocol") {
                None => Protocol::Any,
                Some(n) => match self.scalar(n, "protocol").map(|s| s.as_str()) {
                    Some(p) => Protocol::parse(p).unwrap_or_else(|| {
                        self.error(
                            node_pos(n),
                            format!(
                                "{what}: unknown protocol \"{p}\" (expected {})",
                                Protocol::NAMES
                            ),
                        );
                        Protocol::Any
                    }),
                    None => Protocol::Any,
                },
            };
            let ports = match fields.get("ports") {
                None => Vec::new(),
                Some(n) => {
                    if !protocol.has_ports() {
                        self.error(
                            node_pos(n),
                            format!(
                                "{what}: ports apply only to tcp, udp and sctp, not to {}",
                                protocol.name()
                            ),
                        );
                    }
                    self.ports(n, &what)
                }
            };
            let action = match fields.get("action") {
                None => Action::Allow,
                Some(n) => match self.scalar(n, "action").map(|s| s.as_str()) {
                    Some("allow") => Action::Allow,
                    Some("deny") => Action::Deny,
                    Some(other) => {
                        self.error(
                            node_pos(n),
                            format!("{what}: action must be allow or deny, not \"{other}\""),
                        );
                        Action::Allow
                    }
                    None => Action::Allow,
                },
            };
            let log = fields
                .get("log")
                .map(|n| self.boolean(n, "log"))
                .unwrap_or(false);
            out.push(Rule {
                name,
                from,
                to,
                protocol,
                ports,
                action,
                log,
                pos,
            });
        }
        out
    }

    fn ports(&mut self, node: &Node, what: &str) -> Vec<PortRange> {
        let items: Vec<&Node> = match node.as_sequence() {
            Some(seq) => seq.iter().collect(),
            None => vec![node],
        };
        let mut out = Vec::new();
        for item in items {
            let Some(s) = self.scalar(item, "a port") else {
                continue;
            };
            match parse_port_range(s.as_str()) {
                Ok(r) => out.push(r),
                Err(e) => self.error(node_pos(item), format!("{what}: {e}")),
            }
        }
        out
    }

    fn hosts(&mut self, node: &Node, names: &HashMap<String, usize>) -> Vec<Host> {
        let Some(map) = node.as_mapping() else {
            self.error(node_pos(node), "`hosts` must be a mapping of host names");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, body) in map.iter() {
            let name = key.as_str().to_owned();
            // The name is written into the compiled table's header comment: a newline in it
            // would start an nft command there.
            if !valid_host_name(&name) {
                self.error(pos_of(key.span()), format!("host name \"{}\": use letters, digits, `.`, `-` and `_`, starting with a letter or digit", name.escape_debug()));
                continue;
            }
            let what = format!("host `{name}`");
            let Some(fields) = self.fields(body, &what, &["segments"]) else {
                continue;
            };
            let segments = match fields.get("segments") {
                Some(n) => self
                    .segment_refs(n, names, &format!("{what}: segments"), false)
                    .into_iter()
                    .filter_map(|r| match r {
                        SegmentRef::Segment(i) => Some(i),
                        SegmentRef::Outside => None,
                    })
                    .collect(),
                None => {
                    self.error(pos_of(key.span()), format!("{what} has no `segments`"));
                    Vec::new()
                }
            };
            out.push(Host {
                name,
                segments,
                pos: pos_of(key.span()),
            });
        }
        out
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 48
}

fn valid_host_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && name.len() <= 253
}

/// Why a text is not a port or port range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    /// A single port that is not a number from 1 to 65535.
    #[error("\"{0}\" is not a port (1 to 65535)")]
    NotAPort(String),
    /// One end of `first-last` is not a number from 1 to 65535.
    #[error("\"{range}\" is not a port range: \"{part}\" is not a port (1 to 65535)")]
    NotAPortInRange {
        /// The range as given.
        range: String,
        /// The end that is not a port.
        part: String,
    },
    /// The first port is above the last.
    #[error("the port range {text} is backwards (write {last}-{first})")]
    Backwards {
        /// The range as given.
        text: String,
        /// Its first port.
        first: u16,
        /// Its last port, below `first`.
        last: u16,
    },
}

/// `443` or `8000-8100`.
pub fn parse_port_range(s: &str) -> Result<PortRange, PortRangeError> {
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                if p == s {
                    PortRangeError::NotAPort(s.to_owned())
                } else {
                    PortRangeError::NotAPortInRange {
                        range: s.to_owned(),
                        part: p.to_owned(),
                    }
                }
            })
    };
    let range = match s.split_once('-') {
        None => {
            let p = port(s)?;
            PortRange { first: p, last: p }
        }
        Some((a, b)) => PortRange {
            first: port(a)?,
            last: port(b)?,
        },
    };
    if range.first > range.last {
        return Err(PortRangeError::Backwards {
            text: s.to_owned(),
            first: range.first,
            last: range.last,
        });
    }
    Ok(range)
}
