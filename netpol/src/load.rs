//! Reading manifests: files or directories of multi-document YAML (or JSON) holding
//! NetworkPolicies, Pods, Namespaces and `List`s of them (what `kubectl get pods,namespaces,
//! networkpolicies -A -o yaml` prints); other kinds are skipped. Walked by hand over a YAML tree
//! with positions (marked-yaml, as the policy loader does), so every error names
//! file:line:column, and all errors of a load are reported together. A NetworkPolicy's fields are
//! checked as the API server checks them, unknown ones refused; of a Pod or Namespace only the
//! fields that matter here are read (a live object has many more).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use marked_yaml::types::MarkedMappingNode;
use marked_yaml::{LoaderOptions, Node, Span};
use palisade_policy::addrs::{Addrs, Cidr, CidrError};

use crate::model::{
    Cluster, ContainerPort, Labels, NetworkPolicy, Operator, Peer, Pod, Port, PortRef, Proto,
    Requirement, Rule, Selector, Source, NAMESPACE_NAME_LABEL,
};

/// Every problem of one load, each located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors {
    /// The problems, in the order found.
    pub errors: Vec<(Source, String)>,
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (at, message)) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{at}: {message}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// A NetworkPolicy the loader refused, and what stands in for it.
///
/// Its namespace and name could be read, so it is known which object is wrong; in its place the
/// load holds a policy of the same name that admits nothing: it isolates the pods its
/// `podSelector` selects (every pod of its namespace when the selector itself is wrong), in the
/// directions its `policyTypes` name (both when they are wrong), and has no rules. Dropping the
/// object instead would leave the pods it isolates open (a deny-all policy with a typo would
/// allow everything); keeping some of its rules could widen them (a rule whose every port is
/// wrong would be left with none, which means every port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `NetworkPolicy namespace/name`.
    pub object: String,
    /// Where the object starts.
    pub source: Source,
    /// Its problems, each located.
    pub errors: Vec<(Source, String)>,
}

/// What a load that tolerates refused NetworkPolicies produced ([`load_partial`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The objects, with a stand-in for each refused NetworkPolicy (see [`Refused`]).
    pub cluster: Cluster,
    /// The NetworkPolicies refused, in the order read.
    pub refused: Vec<Refused>,
    /// What was read other than as written, each located (a CIDR with host bits set is read as
    /// its network).
    pub warnings: Vec<(Source, String)>,
}

/// Files larger than this are refused: manifests of a large cluster are tens of megabytes.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Loads every path (a file, or a directory whose `*.yaml`, `*.yml` and `*.json` files are read
/// in name order; names starting with `.` are skipped, as a mounted ConfigMap's are). Any
/// problem fails the load (warnings are dropped; [`load_partial`] returns them).
pub fn load_paths(paths: &[PathBuf]) -> Result<Cluster, LoadErrors> {
    let mut loader = Loader::default();
    for path in paths {
        loader.path(path);
    }
    loader.finish()
}

/// Loads manifests from text; `file` only names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<Cluster, LoadErrors> {
    let mut loader = Loader::default();
    loader.text(text, file);
    loader.finish()
}

/// As [`load_paths`], but a NetworkPolicy with problems is refused alone (see [`Refused`]) and
/// the rest loads. The load fails, with every problem found, only when some problem belongs to
/// no one NetworkPolicy: a file that cannot be read, YAML that does not parse, a policy whose
/// name cannot be read, a Pod or Namespace that is wrong (a pod left out would be a pod no
/// policy isolates).
pub fn load_partial(paths: &[PathBuf]) -> Result<Loaded, LoadErrors> {
    let mut loader = Loader::default();
    for path in paths {
        loader.path(path);
    }
    loader.finish_partial()
}

/// [`load_partial`] from text; `file` only names it in errors.
pub fn load_str_partial(text: &str, file: &str) -> Result<Loaded, LoadErrors> {
    let mut loader = Loader::default();
    loader.text(text, file);
    loader.finish_partial()
}

#[derive(Default)]
struct Loader {
    cluster: Cluster,
    /// Every problem, in the order found.
    errors: Vec<(Source, String)>,
    /// How many of `errors` belong to a refused NetworkPolicy.
    attributed: usize,
    refused: Vec<Refused>,
    warnings: Vec<(Source, String)>,
    /// `kind/namespace/name` of every object read, to refuse a second one.
    seen: HashSet<String>,
    file: Arc<str>,
    /// Lines before the document being read.
    line_offset: usize,
}

fn yaml_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

impl Loader {
    fn finish(self) -> Result<Cluster, LoadErrors> {
        if self.errors.is_empty() {
            Ok(self.cluster)
        } else {
            Err(LoadErrors {
                errors: self.errors,
            })
        }
    }

    fn finish_partial(self) -> Result<Loaded, LoadErrors> {
        if self.errors.len() > self.attributed {
            return Err(LoadErrors {
                errors: self.errors,
            });
        }
        Ok(Loaded {
            cluster: self.cluster,
            refused: self.refused,
            warnings: self.warnings,
        })
    }

    fn path(&mut self, path: &Path) {
        let at = |path: &Path| Source {
            file: path.display().to_string().into(),
            line: 1,
            column: 1,
        };
        if path.is_dir() {
            let entries = match std::fs::read_dir(path) {
                Ok(entries) => entries,
                Err(e) => {
                    self.errors
                        .push((at(path), format!("cannot read the directory: {e}")));
                    return;
                }
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| yaml_file(p) && p.is_file())
                .collect();
            files.sort();
            for file in files {
                self.path(&file);
            }
            return;
        }
        let text = std::fs::metadata(path).and_then(|m| {
            if m.len() > MAX_FILE_BYTES {
                Err(std::io::Error::other(format!(
                    "it is larger than {} MiB",
                    MAX_FILE_BYTES >> 20
                )))
            } else {
                std::fs::read_to_string(path)
            }
        });
        match text {
            Ok(text) => self.text(&text, &path.display().to_string()),
            Err(e) => self
                .errors
                .push((at(path), format!("cannot read the file: {e}"))),
        }
    }

    /// Every document of a stream. Documents are cut at lines that start with `---`, as
    /// kubectl's own reader does, so each is parsed with its lines counted from the stream's
    /// start.
    fn text(&mut self, text: &str, file: &str) {
        self.file = file.into();
        // The document being gathered, and the 0-based line of the stream it starts on.
        let mut doc = String::new();
        let mut first_line = 0usize;
        for (n, line) in text.split_inclusive('\n').enumerate() {
            let marker = line.starts_with("---") || line.trim_end() == "...";
            if !marker {
                doc.push_str(line);
                continue;
            }
            self.document(&doc, first_line);
            doc.clear();
            first_line = n;
            // What follows `--- ` on the marker line belongs to the next document; the marker
            // itself becomes spaces, so columns stay right.
            match line.strip_prefix("---") {
                Some(rest) if !rest.trim().is_empty() && !rest.trim_start().starts_with('#') => {
                    doc.push_str("   ");
                    doc.push_str(rest);
                }
                _ => doc.push('\n'),
            }
        }
        self.document(&doc, first_line);
    }

    fn document(&mut self, text: &str, line_offset: usize) {
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return;
        }
        self.line_offset = line_offset;
        if let Some((line, column)) = palisade_policy::yaml_nesting_too_deep(text) {
            self.error_at(
                line,
                column,
                "the YAML nests too deeply (64 levels at most)",
            );
            return;
        }
        // Scalars remember whether they were quoted: `"null"` is a string, `null` is null.
        let options = LoaderOptions::default().prevent_coercion(true);
        match marked_yaml::parse_yaml_with_options(0, text, options) {
            Ok(node) => self.object(&node),
            Err(e) => {
                let (line, column, message) = match &e {
                    marked_yaml::LoadError::TopLevelMustBeMapping(m) => (
                        m.line(),
                        m.column(),
                        "a manifest must be a mapping".to_owned(),
                    ),
                    marked_yaml::LoadError::ScanError(m, scan) => {
                        (m.line(), m.column(), format!("not YAML: {}", scan.info()))
                    }
                    other => (1, 1, format!("not YAML: {other}")),
                };
                self.error_at(line, column, message);
            }
        }
    }

    fn error_at(&mut self, line: usize, column: usize, message: impl Into<String>) {
        let at = Source {
            file: self.file.clone(),
            line: line + self.line_offset,
            column,
        };
        self.errors.push((at, message.into()));
    }

    fn source(&self, span: &Span) -> Source {
        let (line, column) = span.start().map_or((1, 1), |m| (m.line(), m.column()));
        Source {
            file: self.file.clone(),
            line: line + self.line_offset,
            column,
        }
    }

    /// Where a node starts (a block mapping's span starts at its first `:`; use its first key).
    fn at(&self, node: &Node) -> Source {
        let own = self.source(node.span());
        match node.as_mapping().and_then(|m| m.keys().next()) {
            Some(first) => {
                let key = self.source(first.span());
                if (key.line, key.column) < (own.line, own.column) {
                    key
                } else {
                    own
                }
            }
            None => own,
        }
    }

    fn error(&mut self, node: &Node, message: impl Into<String>) {
        let at = self.at(node);
        self.errors.push((at, message.into()));
    }

    /// A mapping whose keys must all be in `allowed` (`None`: any key is allowed).
    fn mapping<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        allowed: Option<&[&str]>,
    ) -> Option<&'a MarkedMappingNode> {
        let Some(map) = node.as_mapping() else {
            self.error(node, format!("{what} must be a mapping"));
            return None;
        };
        if let Some(allowed) = allowed {
            for key in map.keys() {
                if !allowed.contains(&key.as_str()) {
                    let at = self.source(key.span());
                    self.errors.push((
                        at,
                        format!(
                            "unknown field `{}` in {what} (expected one of {})",
                            key.as_str(),
                            allowed.join(", ")
                        ),
                    ));
                }
            }
        }
        Some(map)
    }

    /// A string; `null` is the empty string, as Go decodes it into a string.
    fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        if Self::null(node) {
            return Some(String::new());
        }
        match node.as_scalar() {
            Some(s) => Some(s.as_str().to_owned()),
            None => {
                self.error(node, format!("{what} must be a string"));
                None
            }
        }
    }

    /// A list, where `null` counts as an empty list (a nil slice).
    fn list<'a>(&mut self, node: &'a Node, what: &str) -> Vec<&'a Node> {
        match node {
            Node::Sequence(seq) => seq.iter().collect(),
            _ if Self::null(node) => Vec::new(),
            _ => {
                self.error(node, format!("{what} must be a list"));
                Vec::new()
            }
        }
    }

    /// YAML's null: an empty value, `~`, `null`, `Null` or `NULL`, unquoted (JSON's `null`
    /// too). The API server decodes it as Go's encoding/json does: a pointer, slice or map
    /// field is left nil, so `null` means the same as leaving the field out; a struct value
    /// field is left zero (`spec.podSelector: null` is `{}`); a string is left empty.
    fn null(node: &Node) -> bool {
        matches!(node, Node::Scalar(s) if s.may_coerce()
            && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The field `key` of `map`, unless it is absent or `null` (which mean the same).
    fn field<'a>(map: &'a MarkedMappingNode, key: &str) -> Option<&'a Node> {
        map.get_node(key).filter(|n| !Self::null(n))
    }

    /// The text of the field `key`, unless it is absent, `null` or not a scalar.
    fn field_text<'a>(map: &'a MarkedMappingNode, key: &str) -> Option<&'a str> {
        Self::field(map, key)
            .and_then(Node::as_scalar)
            .map(|s| s.as_str())
    }

    fn object(&mut self, node: &Node) {
        let Some(map) = node.as_mapping() else {
            self.error(node, "a manifest must be a mapping");
            return;
        };
        let kind = Self::field_text(map, "kind").map(str::to_owned);
        let api = Self::field_text(map, "apiVersion")
            .unwrap_or_default()
            .to_owned();
        match kind.as_deref() {
            None => self.error(node, "a manifest needs `kind`"),
            Some("List") | Some("PodList") | Some("NamespaceList") | Some("NetworkPolicyList") => {
                if let Some(items) = map.get_node("items") {
                    for item in self.list(items, "`items`") {
                        self.object(item);
                    }
                }
            }
            Some("NetworkPolicy") => self.network_policy(node, map, &api),
            Some("Pod") => self.pod(node, map),
            Some("Namespace") => self.namespace(map),
            // Deployments, Services and the rest hold no pods with addresses or policies.
            Some(_) => {}
        }
    }

    /// `metadata`: name (required), namespace and labels.
    fn metadata(
        &mut self,
        object: &Node,
        map: &MarkedMappingNode,
        kind: &str,
    ) -> Option<(String, String, Labels)> {
        const OBJECT_META: &[&str] = &[
            "name",
            "generateName",
            "namespace",
            "selfLink",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
            "managedFields",
        ];
        let Some(meta_node) = Self::field(map, "metadata") else {
            self.error(object, format!("{kind} needs `metadata.name`"));
            return None;
        };
        let meta = self.mapping(meta_node, "metadata", Some(OBJECT_META))?;
        let Some(name) = Self::field(meta, "name") else {
            self.error(meta_node, format!("{kind} needs `metadata.name`"));
            return None;
        };
        let name = self.string(name, "`metadata.name`")?;
        let namespace = match Self::field(meta, "namespace") {
            Some(n) => self.string(n, "`metadata.namespace`")?,
            None => "default".to_owned(),
        };
        let labels = match meta.get_node("labels") {
            Some(l) => self.labels(l, "`metadata.labels`"),
            None => Labels::new(),
        };
        Some((name, namespace, labels))
    }

    fn labels(&mut self, node: &Node, what: &str) -> Labels {
        let mut labels = Labels::new();
        if Self::null(node) {
            return labels;
        }
        let Some(map) = self.mapping(node, what, None) else {
            return labels;
        };
        for (key, value) in map.iter() {
            if let Some(v) = self.string(value, "a label's value") {
                labels.insert(key.as_str().to_owned(), v);
            }
        }
        labels
    }

    fn first_time(&mut self, node: &Node, kind: &str, key: &str) -> bool {
        if self.seen.insert(format!("{kind}/{key}")) {
            true
        } else {
            self.error(node, format!("{kind} {key} is defined twice"));
            false
        }
    }

    fn namespace(&mut self, map: &MarkedMappingNode) {
        let Some(meta) = map.get_node("metadata").and_then(Node::as_mapping) else {
            return;
        };
        let Some(name) = Self::field_text(meta, "name").map(str::to_owned) else {
            return;
        };
        let mut labels = match meta.get_node("labels") {
            Some(l) => self.labels(l, "`metadata.labels`"),
            None => Labels::new(),
        };
        labels
            .entry(NAMESPACE_NAME_LABEL.to_owned())
            .or_insert_with(|| name.clone());
        self.cluster.inventory.namespaces.insert(name, labels);
    }

    fn pod(&mut self, node: &Node, map: &MarkedMappingNode) {
        let Some((name, namespace, labels)) = self.metadata(node, map, "Pod") else {
            return;
        };
        if !self.first_time(node, "Pod", &format!("{namespace}/{name}")) {
            return;
        }
        let spec = map.get_node("spec").and_then(Node::as_mapping);
        let status = map.get_node("status").and_then(Node::as_mapping);
        let node_name = spec
            .and_then(|s| Self::field_text(s, "nodeName"))
            .map(str::to_owned);
        let host_network = spec
            .and_then(|s| s.get_scalar("hostNetwork"))
            .and_then(|h| h.as_bool())
            .unwrap_or(false);
        let service_account = spec
            .and_then(|s| {
                Self::field_text(s, "serviceAccountName")
                    .or_else(|| Self::field_text(s, "serviceAccount"))
            })
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| "default".to_owned());
        let mut ports = Vec::new();
        if let Some(containers) = spec.and_then(|s| s.get_node("containers")) {
            for container in self.list(containers, "`spec.containers`") {
                let Some(list) = container.as_mapping().and_then(|c| c.get_node("ports")) else {
                    continue;
                };
                for port in self.list(list, "a container's `ports`") {
                    if let Some(p) = self.container_port(port) {
                        ports.push(p);
                    }
                }
            }
        }
        // A pod that has ended holds no address any more (its IP may be someone else's).
        let ended = status
            .and_then(|s| s.get_scalar("phase"))
            .is_some_and(|p| matches!(p.as_str(), "Succeeded" | "Failed"));
        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(status) = status.filter(|_| !ended) {
            let mut add =
                |loader: &mut Loader, n: &Node| match n.as_scalar().map(|s| s.as_str().parse()) {
                    Some(Ok(ip)) => {
                        if !ips.contains(&ip) {
                            ips.push(ip);
                        }
                    }
                    _ => loader.error(n, "a pod IP must be an IPv4 or IPv6 address"),
                };
            if let Some(list) = status.get_node("podIPs") {
                for entry in self.list(list, "`status.podIPs`") {
                    if let Some(ip) = entry.as_mapping().and_then(|e| Self::field(e, "ip")) {
                        add(self, ip);
                    }
                }
            }
            if let Some(ip) = Self::field(status, "podIP") {
                add(self, ip);
            }
        }
        self.cluster
            .inventory
            .namespaces
            .entry(namespace.clone())
            .or_insert_with(|| {
                Labels::from([(NAMESPACE_NAME_LABEL.to_owned(), namespace.clone())])
            });
        let source = self.at(node);
        self.cluster.inventory.pods.push(Pod {
            namespace,
            name,
            labels,
            ips,
            node: node_name,
            ports,
            service_account,
            host_network,
            source,
        });
    }

    fn container_port(&mut self, node: &Node) -> Option<ContainerPort> {
        let map = self.mapping(node, "a container port", None)?;
        let port = Self::field(map, "containerPort")?;
        let number = match port
            .as_scalar()
            .and_then(|s| s.as_str().parse::<u16>().ok())
        {
            Some(n) if n > 0 => n,
            _ => {
                self.error(port, "`containerPort` must be a port number (1-65535)");
                return None;
            }
        };
        let protocol = match Self::field(map, "protocol") {
            None => Proto::Tcp,
            Some(p) => self.protocol(p)?,
        };
        Some(ContainerPort {
            name: Self::field_text(map, "name").map(str::to_owned),
            port: number,
            protocol,
        })
    }

    fn protocol(&mut self, node: &Node) -> Option<Proto> {
        let text = self.string(node, "`protocol`")?;
        match Proto::parse(&text) {
            Some(p) => Some(p),
            None => {
                self.error(
                    node,
                    format!("unknown protocol `{text}` (expected TCP, UDP or SCTP)"),
                );
                None
            }
        }
    }

    fn network_policy(&mut self, node: &Node, map: &MarkedMappingNode, api: &str) {
        // Every problem from here on belongs to this object once its name is known.
        let errors_before = self.errors.len();
        self.mapping(
            node,
            "a NetworkPolicy",
            Some(&["apiVersion", "kind", "metadata", "spec", "status"]),
        );
        if api != "networking.k8s.io/v1" {
            self.error(
                node,
                format!("NetworkPolicy must be apiVersion networking.k8s.io/v1, not `{api}`"),
            );
        }
        let Some((name, namespace, _)) = self.metadata(node, map, "NetworkPolicy") else {
            return;
        };
        let source = self.at(node);
        self.first_time(node, "NetworkPolicy", &format!("{namespace}/{name}"));
        // `spec` is a struct value: absent or null, it is the zero spec (`podSelector: {}`, no
        // rules), which the API server accepts: every pod of the namespace isolated for ingress.
        let empty = MarkedMappingNode::new_empty(Span::new_blank());
        let spec = match Self::field(map, "spec") {
            None => Some(&empty),
            Some(spec_node) => self.mapping(
                spec_node,
                "`spec`",
                Some(&["podSelector", "policyTypes", "ingress", "egress"]),
            ),
        };
        // (An unknown field in it is refused, but leaves the fields it has readable.)
        let spec_readable = spec.is_some();
        let spec = spec.unwrap_or(&empty);

        // What stands in for the object if it is refused needs to know whether its selector and
        // its policy types could be read.
        let before = self.errors.len();
        let pod_selector = match spec.get_node("podSelector") {
            // A struct value as well: absent or null, the empty selector.
            Some(s) => self.selector(s, "`spec.podSelector`").unwrap_or_default(),
            None => Selector::default(),
        };
        let selector_readable = spec_readable && self.errors.len() == before;
        let before = self.errors.len();
        let mut types = Vec::new();
        if let Some(list) = spec.get_node("policyTypes") {
            for t in self.list(list, "`spec.policyTypes`") {
                match t.as_scalar().map(|s| s.as_str()) {
                    Some(v @ ("Ingress" | "Egress")) if !Self::null(t) => types.push(v.to_owned()),
                    _ => self.error(t, "a policy type must be `Ingress` or `Egress`"),
                }
            }
        }
        let types_readable = spec_readable && self.errors.len() == before;
        let ingress = self.rules(spec.get_node("ingress"), "ingress", "from");
        let egress = self.rules(spec.get_node("egress"), "egress", "to");
        // Whether the object has egress rules, counting ones that do not read.
        let egress_given = match spec.get_node("egress") {
            None => false,
            Some(e) if Self::null(e) => false,
            Some(e) => e.as_sequence().is_none_or(|s| !s.is_empty()),
        };
        let isolation = |egress_given: bool| {
            // The API server's defaulting: no policyTypes means Ingress, and Egress too when
            // there are egress rules.
            if types.is_empty() {
                (true, egress_given)
            } else {
                (
                    types.iter().any(|t| t == "Ingress"),
                    types.iter().any(|t| t == "Egress"),
                )
            }
        };
        if self.errors.len() > errors_before {
            self.attributed += self.errors.len() - errors_before;
            self.refused.push(Refused {
                object: format!("NetworkPolicy {namespace}/{name}"),
                source: source.clone(),
                errors: self.errors[errors_before..].to_vec(),
            });
            // The stand-in (see `Refused`): it admits nothing, and isolates at least what the
            // object would have.
            let (ingress_isolation, egress_isolation) = if types_readable {
                isolation(egress_given)
            } else {
                (true, true)
            };
            self.cluster.policies.push(NetworkPolicy {
                namespace,
                name,
                source,
                pod_selector: if selector_readable {
                    pod_selector
                } else {
                    Selector::default()
                },
                ingress_isolation,
                egress_isolation,
                ingress: Vec::new(),
                egress: Vec::new(),
            });
            return;
        }
        let (ingress_isolation, egress_isolation) = isolation(!egress.is_empty());
        self.cluster.policies.push(NetworkPolicy {
            namespace,
            name,
            source,
            pod_selector,
            ingress_isolation,
            egress_isolation,
            ingress,
            egress,
        });
    }

    fn rules(&mut self, node: Option<&Node>, direction: &str, peers_field: &str) -> Vec<Rule> {
        let Some(node) = node else {
            return Vec::new();
        };
        let mut rules = Vec::new();
        for (index, rule_node) in self
            .list(node, &format!("`spec.{direction}`"))
            .into_iter()
            .enumerate()
        {
            let source = self.at(rule_node);
            if Self::null(rule_node) {
                // `- {}` written as `-` alone: a rule that allows everything.
                rules.push(Rule {
                    source,
                    index,
                    peers: Vec::new(),
                    ports: Vec::new(),
                });
                continue;
            }
            let what = format!("an {direction} rule");
            let Some(map) = self.mapping(rule_node, &what, Some(&[peers_field, "ports"])) else {
                continue;
            };
            let mut peers = Vec::new();
            if let Some(list) = map.get_node(peers_field) {
                for peer in self.list(list, &format!("`{peers_field}`")) {
                    if let Some(p) = self.peer(peer) {
                        peers.push(p);
                    }
                }
            }
            let mut ports = Vec::new();
            if let Some(list) = map.get_node("ports") {
                for port in self.list(list, "`ports`") {
                    if let Some(p) = self.port(port) {
                        ports.push(p);
                    }
                }
            }
            rules.push(Rule {
                source,
                index,
                peers,
                ports,
            });
        }
        rules
    }

    fn peer(&mut self, node: &Node) -> Option<Peer> {
        let empty = MarkedMappingNode::new_empty(Span::new_blank());
        // A null peer is the zero peer, which names nothing (refused below).
        let map = if Self::null(node) {
            &empty
        } else {
            self.mapping(
                node,
                "a peer",
                Some(&["podSelector", "namespaceSelector", "ipBlock"]),
            )?
        };
        // All three are pointers: null is absent. (`namespaceSelector: null` is not `{}`, every
        // namespace, but the policy's own namespace.)
        let pods = Self::field(map, "podSelector");
        let namespaces = Self::field(map, "namespaceSelector");
        match (Self::field(map, "ipBlock"), pods, namespaces) {
            (Some(block), None, None) => self.ip_block(block),
            (Some(_), _, _) => {
                self.error(
                    node,
                    "a peer with `ipBlock` may not also have `podSelector` or `namespaceSelector`",
                );
                None
            }
            (None, None, None) => {
                self.error(
                    node,
                    "a peer needs `podSelector`, `namespaceSelector` or `ipBlock`",
                );
                None
            }
            (None, pods, namespaces) => {
                let pods = match pods {
                    Some(p) => Some(self.selector(p, "`podSelector`")?),
                    None => None,
                };
                let namespaces = match namespaces {
                    Some(n) => Some(self.selector(n, "`namespaceSelector`")?),
                    None => None,
                };
                Some(Peer::Pods { pods, namespaces })
            }
        }
    }

    fn ip_block(&mut self, node: &Node) -> Option<Peer> {
        let map = self.mapping(node, "`ipBlock`", Some(&["cidr", "except"]))?;
        let Some(cidr_node) = Self::field(map, "cidr") else {
            self.error(node, "`ipBlock` needs `cidr`");
            return None;
        };
        let cidr = self.cidr(cidr_node)?;
        let mut except = Vec::new();
        if let Some(list) = map.get_node("except") {
            for e in self.list(list, "`except`") {
                let Some(c) = self.cidr(e) else { continue };
                if c.family() != cidr.family() || c.first() < cidr.first() || c.last() > cidr.last()
                {
                    self.error(e, format!("`{c}` is not inside the block's cidr `{cidr}`"));
                    continue;
                }
                except.push(c);
            }
        }
        let addrs = Addrs::of(std::slice::from_ref(&cidr)).difference(&Addrs::of(&except));
        Some(Peer::IpBlock {
            cidr,
            except,
            addrs,
        })
    }

    fn cidr(&mut self, node: &Node) -> Option<Cidr> {
        let text = self.string(node, "a CIDR")?;
        // The API requires the prefix length (`10.0.0.1/32`, not `10.0.0.1`).
        if !text.contains('/') {
            self.error(
                node,
                format!("`{text}` is not a CIDR (it needs a prefix length)"),
            );
            return None;
        }
        match Cidr::parse(&text) {
            Ok(c) => Some(c),
            // The API server accepts host bits (unless its StrictIPCIDRValidation gate is on),
            // upstream's own conformance tests write `<pod IP>/4`, and other implementations
            // take the network: refusing them would stop a cluster's valid objects.
            Err(CidrError::HostBitsSet { network, .. }) => match Cidr::parse(&network) {
                Ok(c) => {
                    let at = self.at(node);
                    self.warnings.push((
                        at,
                        format!("`{text}` has host bits set; read as the network `{c}`, as Kubernetes does"),
                    ));
                    Some(c)
                }
                Err(e) => {
                    self.error(node, format!("`{text}` is not a CIDR: {e}"));
                    None
                }
            },
            Err(e) => {
                self.error(node, format!("`{text}` is not a CIDR: {e}"));
                None
            }
        }
    }

    fn port(&mut self, node: &Node) -> Option<Port> {
        let empty = MarkedMappingNode::new_empty(Span::new_blank());
        // A null entry is the zero port: TCP, every port.
        let map = if Self::null(node) {
            &empty
        } else {
            self.mapping(node, "a port", Some(&["protocol", "port", "endPort"]))?
        };
        // All three are pointers: null is absent.
        let protocol = match Self::field(map, "protocol") {
            None => Proto::Tcp,
            Some(p) => self.protocol(p)?,
        };
        let port = match Self::field(map, "port") {
            None => None,
            Some(p) => {
                let text = self.string(p, "`port`")?;
                match text.parse::<u32>() {
                    Ok(n) if (1..=65535).contains(&n) => Some(PortRef::Number(n as u16)),
                    Ok(_) => {
                        self.error(p, format!("port {text} is not in 1-65535"));
                        return None;
                    }
                    Err(_) if valid_port_name(&text) => Some(PortRef::Name(text)),
                    Err(_) => {
                        self.error(
                            p,
                            format!("`{text}` is neither a port number nor a port name (at most 15 lowercase letters, digits and `-`, with a letter)"),
                        );
                        return None;
                    }
                }
            }
        };
        let end_port = match Self::field(map, "endPort") {
            None => None,
            Some(e) => {
                let end = e.as_scalar().and_then(|s| s.as_str().parse::<u16>().ok());
                match (&port, end) {
                    (Some(PortRef::Number(first)), Some(end)) if end >= *first => Some(end),
                    (Some(PortRef::Number(_)), Some(_)) => {
                        self.error(e, "`endPort` must not be below `port`");
                        return None;
                    }
                    (Some(PortRef::Number(_)), None) => {
                        self.error(e, "`endPort` must be a port number (1-65535)");
                        return None;
                    }
                    _ => {
                        self.error(e, "`endPort` needs a numeric `port`");
                        return None;
                    }
                }
            }
        };
        Some(Port {
            protocol,
            port,
            end_port,
        })
    }

    fn selector(&mut self, node: &Node, what: &str) -> Option<Selector> {
        if Self::null(node) {
            return Some(Selector::default());
        }
        let map = self.mapping(node, what, Some(&["matchLabels", "matchExpressions"]))?;
        let mut selector = Selector::default();
        if let Some(labels) = map.get_node("matchLabels") {
            selector.match_labels = self.labels(labels, "`matchLabels`");
        }
        if let Some(list) = map.get_node("matchExpressions") {
            for e in self.list(list, "`matchExpressions`") {
                let Some(m) =
                    self.mapping(e, "an expression", Some(&["key", "operator", "values"]))
                else {
                    continue;
                };
                let (Some(key), Some(op)) =
                    (Self::field_text(m, "key"), Self::field_text(m, "operator"))
                else {
                    self.error(e, "an expression needs `key` and `operator`");
                    continue;
                };
                let operator = match op {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    other => {
                        self.error(e, format!("unknown operator `{other}` (expected In, NotIn, Exists or DoesNotExist)"));
                        continue;
                    }
                };
                let mut values = Vec::new();
                if let Some(v) = m.get_node("values") {
                    for value in self.list(v, "`values`") {
                        if let Some(s) = self.string(value, "a value") {
                            values.push(s);
                        }
                    }
                }
                let needs_values = matches!(operator, Operator::In | Operator::NotIn);
                if needs_values && values.is_empty() {
                    self.error(e, format!("operator `{op}` needs at least one value"));
                    continue;
                }
                if !needs_values && !values.is_empty() {
                    self.error(e, format!("operator `{op}` takes no values"));
                    continue;
                }
                selector.match_expressions.push(Requirement {
                    key: key.to_owned(),
                    operator,
                    values,
                });
            }
        }
        Some(selector)
    }
}

/// An IANA service name, as a container port's name must be.
fn valid_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}
