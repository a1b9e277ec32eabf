//! Compiling a policy into a host's `inet palisade` table.
//!
//! The address space of each family is cut into *atoms*: maximal ranges whose addresses belong to
//! exactly the same segments (addresses in no segment form the `outside` atoms). Every rule, the
//! same-segment allowance and `egress_to_outside` then become tuples (source atom, destination
//! atom, match), where a match is "any protocol", "this protocol" or "this protocol and port
//! range". Per (source, destination, protocol) the port ranges are merged, so the elements of each
//! set are disjoint, which the kernel's concatenated-interval sets require.
//!
//! The chain then decides with a fixed number of set lookups, whatever the number of rules:
//! deny sets first (deny beats allow), then allow sets, then a default drop of anything touching a
//! local segment. Only tuples with an end in one of the host's segments are kept.

use std::collections::{BTreeMap, BTreeSet};

use crate::addrs::{AddrSet, Addrs, Family};
use crate::model::{Action, Policy, PortRange, Protocol, SegmentRef};

/// The table's name; the family is `inet`.
pub const TABLE: &str = "palisade";

/// Why a policy does not compile for a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The host asked for is not in the policy's `hosts`.
    #[error("there is no host `{host}` in the policy (hosts: {known})")]
    UnknownHost {
        /// The name asked for.
        host: String,
        /// The policy's host names, comma-separated.
        known: String,
    },
}

/// What a set's elements are keyed by: which of source address, destination address, protocol
/// and destination port, concatenated in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The packet's source address.
    pub src: bool,
    /// The packet's destination address.
    pub dst: bool,
    /// The layer 4 protocol (`meta l4proto`).
    pub proto: bool,
    /// The destination port (`th dport`).
    pub port: bool,
}

impl Key {
    /// One address (`local_*`, `segmented_*`).
    pub const ADDR: Key = Key {
        src: true,
        dst: false,
        proto: false,
        port: false,
    };
}

/// The end of a tuple that is any address outside every segment: it is not in the key, and the
/// chain checks it against `segmented_*` instead, so that `outside` costs one element per rule
/// rather than one per gap between segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutsideEnd {
    /// The source is outside every segment (the `*_in_*` sets).
    Src,
    /// The destination is outside every segment (the `*_out_*` sets).
    Dst,
}

/// One element of a set. `dst`, `proto` and `ports` are used as `key` says.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    /// Source address range, inclusive, as integers; `(0, 0)` when the key has no source.
    pub src: (u128, u128),
    /// Destination address range, inclusive; `(0, 0)` when the key has no destination.
    pub dst: (u128, u128),
    /// Protocol number ([`proto_number`]); 0 when the key has no protocol.
    pub proto: u8,
    /// Destination ports; [`PortRange::ALL`] when the key has no port.
    pub ports: PortRange,
}

/// One named set of the table, with its elements.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetDef {
    /// Its name in the table, e.g. `local_v4`, `deny_out_port_v6`.
    pub name: String,
    /// The family of every address in its elements.
    pub family: Family,
    /// What its elements are keyed by.
    pub key: Key,
    /// For tuples with an end outside every segment: which end.
    pub outside: Option<OutsideEnd>,
    /// Its elements, disjoint as the kernel's interval sets require; may be empty.
    pub elements: Vec<Element>,
}

/// Which sets the decision chain consults, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// Log the packet (no verdict) with this prefix.
    Log(&'static str),
    /// Drop the packet, counted.
    Deny,
    /// Accept the packet.
    Allow,
    /// Leave this chain (`return`): the check it holds is passed, and the caller goes on.
    Pass,
}

/// A set of a ruleset, by its place in [`Ruleset::sets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetId(pub usize);

/// A chain of a ruleset, by its place in [`Ruleset::chains`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainId(pub usize);

/// What the first rule of a table of ours says in its comment, so that a live table can be
/// recognised as ours: the compiled policy's generation, or the fail-closed baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mark {
    /// A compiled policy: the comment carries [`Ruleset::generation`].
    Generation,
    /// The fail-closed baseline: the comment is [`BASELINE_MARK`].
    Baseline,
}

/// The comment of the baseline's first rule.
pub const BASELINE_MARK: &str = "palisade baseline";

/// One rule of a chain. The printers (nft text and JSON, both in `palisade-nft`) turn every kind
/// into their form; which rules a table has, and in which order, is decided here once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChainRule {
    /// `ct state established,related accept`, with the table's mark as its comment.
    AcceptEstablished(Mark),
    /// `ct state invalid counter drop`.
    DropInvalid,
    /// IPv6 neighbour discovery, without which IPv6 does not work (and redirects, if `redirect`).
    AcceptNeighbourDiscovery {
        /// Redirects too: in a compiled table, not in the baseline.
        redirect: bool,
    },
    /// The packet's key looked up in `set`; for a set of tuples with an end outside every
    /// segment, only when that end is not in `guard` (the `segmented_*` set).
    Lookup {
        /// The set the packet is looked up in.
        set: SetId,
        /// For a set with an end outside every segment: the `segmented_*` set that end must
        /// not be in.
        guard: Option<SetId>,
        /// What a match does.
        verdict: Lookup,
    },
    /// Default deny for the host's segments: packets from (`source`) or to an address in `set`.
    DropLocal {
        /// The `local_*` set: the addresses of the host's segments.
        set: SetId,
        /// Whether the packet's source (`true`) or destination (`false`) is checked.
        source: bool,
    },
    /// Continue in another chain: each hook chain jumps to `decide`.
    Jump(ChainId),
    /// `ct state established,related return`: a chain of checks for new connections only.
    ReturnEstablished,
    /// Continue in `chain` when the packet's source (`source`) or destination address is in
    /// `set` (an address set): the Kubernetes checks of isolated pods.
    JumpIf {
        /// The address set.
        set: SetId,
        /// Whether the source (`true`) or the destination address is looked up.
        source: bool,
        /// Where to continue.
        chain: ChainId,
    },
    /// `counter drop`: what is left at the end of a chain of checks.
    Drop,
}

/// A chain: a base chain on a hook (`type filter`, priority `filter`) or a regular one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// Its name in the table: `input`, `forward`, `output` or `decide`.
    pub name: String,
    /// `Some` for a base chain, `None` for a chain reached only by a jump.
    pub hook: Option<Hook>,
    /// Its rules, in order.
    pub rules: Vec<ChainRule>,
}

/// Where a base chain hangs, and its policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hook {
    /// `input`, `forward` or `output`.
    pub name: &'static str,
    /// The chain's policy: accept in a compiled table (whose `decide` chain drops what it must),
    /// drop in the baseline.
    pub accept: bool,
}

/// Base chains: every hook a packet of a local segment can cross, at priority `filter` (0), after
/// DNAT (-100), so that they see real endpoint addresses.
pub const HOOKS: [&str; 3] = ["input", "forward", "output"];

/// A compiled table, typed: what the printers turn into nft text or JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// The host compiled for; `None` for all hosts at once, and for the baseline.
    pub host: Option<String>,
    /// A hash of the whole table, stamped into it so that a live table can be compared cheaply.
    pub generation: String,
    /// Every set, the IPv4 ones first; a [`SetId`] indexes it.
    pub sets: Vec<SetDef>,
    /// Every chain; a [`ChainId`] indexes it.
    pub chains: Vec<Chain>,
}

impl Ruleset {
    /// The table of a policy with no segments: it governs nothing (established flows accepted,
    /// invalid ones dropped, the rest accepted), a base to add other checks to (the Kubernetes
    /// NetworkPolicy input).
    pub fn open(host: Option<&str>) -> Ruleset {
        let mut ruleset = Ruleset {
            host: host.map(str::to_owned),
            generation: String::new(),
            sets: Vec::new(),
            chains: chains(&[], &[]),
        };
        ruleset.restamp();
        ruleset
    }

    /// Sets [`Ruleset::generation`] again, after sets or chains were added.
    pub fn restamp(&mut self) {
        self.generation = generation_of(self);
    }

    /// The fail-closed table used when no policy has ever loaded and none is configured as
    /// baseline: nothing new is forwarded (workloads are isolated), while the host itself,
    /// replies and IPv6 neighbour discovery keep working.
    pub fn baseline() -> Ruleset {
        Ruleset {
            host: None,
            generation: String::new(),
            sets: Vec::new(),
            chains: vec![Chain {
                name: "forward".into(),
                hook: Some(Hook {
                    name: "forward",
                    accept: false,
                }),
                rules: vec![
                    ChainRule::AcceptEstablished(Mark::Baseline),
                    ChainRule::AcceptNeighbourDiscovery { redirect: false },
                ],
            }],
        }
    }
}

/// The protocol numbers nft matches with `meta l4proto`.
pub fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Icmp => 1,
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Icmpv6 => 58,
        Protocol::Sctp => 132,
        Protocol::Any => 0,
    }
}

/// An atom: a range of addresses with one membership.
#[derive(Debug, Clone)]
struct Atom {
    range: (u128, u128),
    segments: BTreeSet<usize>,
}

fn atoms(policy: &Policy, family: Family) -> Vec<Atom> {
    let sets: Vec<&AddrSet> = policy
        .segments
        .iter()
        .map(|s| s.members.get(family))
        .collect();
    let mut cuts: BTreeSet<u128> = BTreeSet::new();
    cuts.insert(0);
    for set in &sets {
        for &(a, b) in set.ranges() {
            cuts.insert(a);
            if let Some(next) = b.checked_add(1) {
                cuts.insert(next);
            }
        }
    }
    let max = AddrSet::full(family).ranges()[0].1;
    let cuts: Vec<u128> = cuts.into_iter().filter(|c| *c <= max).collect();
    // The segments of each piece between two cuts. Every range starts at a cut and ends just
    // before one, so it covers a run of consecutive pieces: visiting only those keeps this
    // proportional to the output, not to pieces × segments.
    let mut membership: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); cuts.len()];
    for (s, set) in sets.iter().enumerate() {
        for &(a, b) in set.ranges() {
            let mut piece = cuts.partition_point(|&c| c < a);
            while piece < cuts.len() && cuts[piece] <= b {
                membership[piece].insert(s);
                piece += 1;
            }
        }
    }
    let mut out: Vec<Atom> = Vec::new();
    for (i, (&start, segments)) in cuts.iter().zip(membership).enumerate() {
        let end = cuts.get(i + 1).map_or(max, |next| next - 1);
        match out.last_mut() {
            Some(last) if last.segments == segments => last.range.1 = end,
            _ => out.push(Atom {
                range: (start, end),
                segments,
            }),
        }
    }
    out
}

/// Stands for every address outside every segment in a tuple (see [`OutsideEnd`]).
const OUT: usize = usize::MAX;

/// The atoms of each segment, as sorted indices into the atom list.
struct AtomIndex {
    of_segment: Vec<Vec<usize>>,
}

impl AtomIndex {
    fn new(segments: usize, atoms: &[Atom]) -> AtomIndex {
        let mut index = AtomIndex {
            of_segment: vec![Vec::new(); segments],
        };
        for (i, atom) in atoms.iter().enumerate() {
            for &s in &atom.segments {
                index.of_segment[s].push(i);
            }
        }
        index
    }

    /// The atoms a rule's `from`/`to` list covers, sorted, each once; `outside` is [`OUT`].
    fn covered(&self, refs: &[SegmentRef]) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for r in refs {
            match r {
                SegmentRef::Segment(i) => out.extend_from_slice(&self.of_segment[*i]),
                SegmentRef::Outside => out.push(OUT),
            }
        }
        if refs.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }
}

/// What is matched between two atoms: every protocol, some protocols, some ports.
#[derive(Debug, Default, Clone)]
struct Matches {
    any: bool,
    protos: BTreeSet<u8>,
    ports: BTreeMap<u8, Vec<PortRange>>,
}

impl Matches {
    fn add(&mut self, protocol: Protocol, ports: &[PortRange]) {
        match protocol {
            Protocol::Any => self.any = true,
            p if ports.is_empty() || !p.has_ports() => {
                self.protos.insert(proto_number(p));
            }
            p => self
                .ports
                .entry(proto_number(p))
                .or_default()
                .extend_from_slice(ports),
        }
    }
}

/// Tuples between atom pairs (indices into the family's atom list).
type Table = BTreeMap<(usize, usize), Matches>;

fn family_covers(family: Family, protocol: Protocol) -> bool {
    !matches!(
        (family, protocol),
        (Family::V4, Protocol::Icmpv6) | (Family::V6, Protocol::Icmp)
    )
}

/// Compiles the table for `host`, or for every host (all segments local) when `host` is None.
pub fn compile(policy: &Policy, host: Option<&str>) -> Result<Ruleset, CompileError> {
    let local_segments: BTreeSet<usize> = match host {
        None => (0..policy.segments.len()).collect(),
        Some(name) => match policy.host(name) {
            Some(h) => h.segments.iter().copied().collect(),
            None => {
                return Err(CompileError::UnknownHost {
                    host: name.to_owned(),
                    known: crate::few::a_few(policy.hosts.iter().map(|h| h.name.as_str())),
                })
            }
        },
    };
    let local = Addrs::union_all(local_segments.iter().map(|&i| &policy.segments[i].members));
    let any_log = policy.rules.iter().any(|r| r.log);
    let mut sets = Vec::new();
    for family in [Family::V4, Family::V6] {
        let suffix = match family {
            Family::V4 => "v4",
            Family::V6 => "v6",
        };
        let atoms = atoms(policy, family);
        let index = AtomIndex::new(policy.segments.len(), &atoms);
        let local_atom: Vec<bool> = atoms
            .iter()
            .map(|a| a.segments.iter().any(|s| local_segments.contains(s)))
            .collect();
        let local_atom = |i: usize| i != OUT && local_atom[i];
        // Only tuples with an end in a local segment are kept: from a source atom that is not
        // local, only the local destinations are visited. Every loop below is proportional to
        // the tuples it produces, not to rules × atoms².
        let pairs = |sources: &[usize], destinations: &[usize], f: &mut dyn FnMut(usize, usize)| {
            let local_destinations: Vec<usize> = destinations
                .iter()
                .copied()
                .filter(|&d| local_atom(d))
                .collect();
            for &si in sources {
                let ds = if local_atom(si) {
                    destinations
                } else {
                    &local_destinations
                };
                for &di in ds {
                    f(si, di);
                }
            }
        };

        let mut deny = Table::new();
        let mut allow = Table::new();
        let mut log_deny = Table::new();
        let mut log_allow = Table::new();
        for rule in &policy.rules {
            if !family_covers(family, rule.protocol) {
                continue;
            }
            let (table, log_table) = match rule.action {
                Action::Deny => (&mut deny, &mut log_deny),
                Action::Allow => (&mut allow, &mut log_allow),
            };
            pairs(
                &index.covered(&rule.from),
                &index.covered(&rule.to),
                &mut |si, di| {
                    table
                        .entry((si, di))
                        .or_default()
                        .add(rule.protocol, &rule.ports);
                    if rule.log {
                        log_table
                            .entry((si, di))
                            .or_default()
                            .add(rule.protocol, &rule.ports);
                    }
                },
            );
        }
        // Within a segment, and from a segment with `egress_to_outside` to the outside.
        for (i, segment) in policy.segments.iter().enumerate() {
            let own = &index.of_segment[i];
            let mut allow_any =
                |si: usize, di: usize| allow.entry((si, di)).or_default().any = true;
            pairs(own, own, &mut allow_any);
            if segment.egress_to_outside {
                pairs(own, &[OUT], &mut allow_any);
            }
        }
        let address_set = |name: &str, addrs: &Addrs| SetDef {
            name: format!("{name}_{suffix}"),
            family,
            key: Key::ADDR,
            outside: None,
            elements: addrs
                .get(family)
                .ranges()
                .iter()
                .map(|&r| Element {
                    src: r,
                    dst: (0, 0),
                    proto: 0,
                    ports: PortRange::ALL,
                })
                .collect(),
        };
        sets.push(address_set("local", &local));
        sets.push(address_set("segmented", &policy.all_members()));
        // Each local segment's members, by name: not consulted by the chain (the tuple sets hold
        // atoms), but what an operator lists to see who is in a segment on this host.
        for &i in &local_segments {
            let segment = &policy.segments[i];
            let set = address_set(&format!("seg_{}", segment.name), &segment.members);
            if !set.elements.is_empty() {
                sets.push(set);
            }
        }
        let mut emit = |prefix: &str, table: &Table| {
            sets.extend(sets_of(prefix, suffix, family, &atoms, table));
        };
        if any_log {
            emit("log_deny", &log_deny);
            emit("log_allow", &log_allow);
        }
        emit("deny", &deny);
        emit("allow", &allow);
    }
    let mut lookups = Vec::new();
    for (prefix, lookup) in [
        ("log_deny", Lookup::Log("palisade deny: ")),
        ("log_allow", Lookup::Log("palisade allow: ")),
        ("deny", Lookup::Deny),
        ("allow", Lookup::Allow),
    ] {
        if prefix.starts_with("log") && !any_log {
            continue;
        }
        for suffix in ["v4", "v6"] {
            for ends in ["", "out_", "in_"] {
                for key in ["any", "proto", "port"] {
                    lookups.push((format!("{prefix}_{ends}{key}_{suffix}"), lookup));
                }
            }
        }
    }
    // Empty tuple sets would only be noise in the table; the address sets stay, since the default
    // drop and the outside checks refer to them.
    sets.retain(|s| !s.elements.is_empty() || s.key == Key::ADDR);
    let chains = chains(&sets, &lookups);
    let mut ruleset = Ruleset {
        host: host.map(str::to_owned),
        generation: String::new(),
        sets,
        chains,
    };
    ruleset.generation = generation_of(&ruleset);
    Ok(ruleset)
}

/// The chains: each hook jumps to `decide`, which accepts established flows, drops invalid ones,
/// lets neighbour discovery through, looks the packet up in every set of tuples in `lookups` order
/// (deny before allow), and drops what is left to or from the host's segments.
fn chains(sets: &[SetDef], lookups: &[(String, Lookup)]) -> Vec<Chain> {
    let set_id = |name: &str| sets.iter().position(|s| s.name == name).map(SetId);
    let family_suffix = |family: Family| match family {
        Family::V4 => "v4",
        Family::V6 => "v6",
    };
    let mut decide = vec![
        ChainRule::AcceptEstablished(Mark::Generation),
        ChainRule::DropInvalid,
        ChainRule::AcceptNeighbourDiscovery { redirect: true },
    ];
    for (name, verdict) in lookups {
        let Some(id) = set_id(name) else { continue };
        let set = &sets[id.0];
        if set.elements.is_empty() {
            continue;
        }
        let guard = set.outside.map(|_| {
            set_id(&format!("segmented_{}", family_suffix(set.family)))
                .expect("the address sets are always kept")
        });
        decide.push(ChainRule::Lookup {
            set: id,
            guard,
            verdict: *verdict,
        });
    }
    for family in [Family::V4, Family::V6] {
        let local = set_id(&format!("local_{}", family_suffix(family)));
        if let Some(id) = local.filter(|id| !sets[id.0].elements.is_empty()) {
            decide.push(ChainRule::DropLocal {
                set: id,
                source: true,
            });
            decide.push(ChainRule::DropLocal {
                set: id,
                source: false,
            });
        }
    }
    let decide_id = ChainId(HOOKS.len());
    let mut chains: Vec<Chain> = HOOKS
        .iter()
        .map(|&hook| Chain {
            name: hook.into(),
            hook: Some(Hook {
                name: hook,
                accept: true,
            }),
            rules: vec![ChainRule::Jump(decide_id)],
        })
        .collect();
    chains.push(Chain {
        name: "decide".into(),
        hook: None,
        rules: decide,
    });
    chains
}

/// The sets of one table of tuples: any protocol, protocol, protocol and port; each for tuples
/// between segments, to outside (`out_`) and from outside (`in_`).
fn sets_of(
    prefix: &str,
    suffix: &str,
    family: Family,
    atoms: &[Atom],
    table: &Table,
) -> Vec<SetDef> {
    let range = |i: usize| if i == OUT { (0, 0) } else { atoms[i].range };
    let groups = [
        ("", None),
        ("out_", Some(OutsideEnd::Dst)),
        ("in_", Some(OutsideEnd::Src)),
    ];
    let mut out = Vec::new();
    for (infix, outside) in groups {
        let mut any = Vec::new();
        let mut proto = Vec::new();
        let mut port = Vec::new();
        let in_group = |si: usize, di: usize| match outside {
            None => si != OUT && di != OUT,
            Some(OutsideEnd::Dst) => di == OUT,
            Some(OutsideEnd::Src) => si == OUT,
        };
        for (&(si, di), m) in table.iter().filter(|((si, di), _)| in_group(*si, *di)) {
            let element = |proto: u8, ports: PortRange| Element {
                src: range(si),
                dst: range(di),
                proto,
                ports,
            };
            if m.any {
                // Every protocol is covered: more specific entries would only duplicate it.
                any.push(element(0, PortRange::ALL));
                continue;
            }
            for &p in &m.protos {
                proto.push(element(p, PortRange::ALL));
            }
            for (&p, ranges) in &m.ports {
                if m.protos.contains(&p) {
                    continue;
                }
                for r in merge_ports(ranges) {
                    port.push(element(p, r));
                }
            }
        }
        let key = |proto: bool, port: bool| Key {
            src: outside != Some(OutsideEnd::Src),
            dst: outside != Some(OutsideEnd::Dst),
            proto,
            port,
        };
        for (kind, k, elements) in [
            ("any", key(false, false), any),
            ("proto", key(true, false), proto),
            ("port", key(true, true), port),
        ] {
            out.push(SetDef {
                name: format!("{prefix}_{infix}{kind}_{suffix}"),
                family,
                key: k,
                outside,
                elements,
            });
        }
    }
    out
}

/// Sorted, disjoint, non-adjacent port ranges covering the same ports.
pub fn merge_ports(ranges: &[PortRange]) -> Vec<PortRange> {
    let mut sorted = ranges.to_vec();
    sorted.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.first <= last.last.saturating_add(1) => {
                last.last = last.last.max(r.last)
            }
            _ => out.push(r),
        }
    }
    out
}

/// A short, stable hash of the table's text (FNV-1a, 64 bits): the generation stamped into it.
/// Bumped when the printers change what a ruleset becomes, so that a table printed differently
/// gets another generation.
const PRINTED_FORM: u32 = 1;

/// A hash of the typed ruleset (FNV-1a over its fields, in order), not of one printer's output:
/// the text and the JSON are two printers of the same ruleset, and neither has to run for it.
fn generation_of(ruleset: &Ruleset) -> String {
    use std::hash::{Hash, Hasher};
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 ^= b as u64;
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut hash = Fnv(0xcbf2_9ce4_8422_2325);
    PRINTED_FORM.hash(&mut hash);
    ruleset.host.hash(&mut hash);
    ruleset.sets.hash(&mut hash);
    ruleset.chains.hash(&mut hash);
    format!("{:016x}", hash.finish())
}
