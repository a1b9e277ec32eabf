//! Which segments overlap, by address and by identity pattern, without comparing every pair:
//! `policy check` must stay fast at hundreds of thousands of segments, where comparing pairs
//! (n²/2 set intersections) took minutes.
//!
//! - Addresses: a sweep over every segment's ranges sorted by start, keeping the ranges still open;
//!   each range is compared only with those, which all overlap it. The cost is n log n plus the
//!   overlaps found.
//! - Identities: the patterns in a trie by path segment (`*` is its own edge); each pattern walks
//!   only the branches that could match something it matches.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use palisade_identity::IdPattern;

use crate::addrs::{AddrSet, Addrs, Family};
use crate::model::Policy;

/// Pairs of segments (by index, first < second) with the addresses they share.
pub fn address_overlaps(policy: &Policy) -> BTreeMap<(usize, usize), Addrs> {
    // Per pair of segments: the shared ranges of each family.
    type Shared = [Vec<(u128, u128)>; 2];
    let mut shared: BTreeMap<(usize, usize), Shared> = BTreeMap::new();
    for (f, family) in [Family::V4, Family::V6].into_iter().enumerate() {
        let mut ranges: Vec<(u128, u128, usize)> = policy
            .segments
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.members
                    .get(family)
                    .ranges()
                    .iter()
                    .map(move |&(a, b)| (a, b, i))
            })
            .collect();
        ranges.sort_unstable();
        // Ranges that started before the current one, by the end of each (smallest first).
        let mut open: BinaryHeap<Reverse<(u128, usize)>> = BinaryHeap::new();
        for (start, end, segment) in ranges {
            while open.peek().is_some_and(|Reverse((e, _))| *e < start) {
                open.pop();
            }
            for &Reverse((other_end, other)) in open.iter() {
                // A segment's own ranges are disjoint, so `other` is another segment.
                let pair = (other.min(segment), other.max(segment));
                shared.entry(pair).or_default()[f].push((start, end.min(other_end)));
            }
            open.push(Reverse((end, segment)));
        }
    }
    shared
        .into_iter()
        .map(|(pair, [v4, v6])| {
            let addrs = Addrs {
                v4: AddrSet::from_ranges(v4),
                v6: AddrSet::from_ranges(v6),
            };
            (pair, addrs)
        })
        .collect()
}

/// Pairs of segments (first < second) holding patterns that some SPIFFE ID matches both of, with
/// a pair of such patterns (the first in policy order).
pub fn identity_overlaps(policy: &Policy) -> BTreeMap<(usize, usize), (IdPattern, IdPattern)> {
    let patterns: Vec<(usize, &IdPattern)> = policy
        .segments
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.identities.iter().map(move |(p, _)| (i, p)))
        .collect();
    let mut tries: BTreeMap<&str, Trie> = BTreeMap::new();
    for (index, (_, pattern)) in patterns.iter().enumerate() {
        tries
            .entry(pattern.trust_domain().as_str())
            .or_default()
            .insert(pattern, index);
    }
    let mut first: BTreeMap<(usize, usize), (usize, usize)> = BTreeMap::new();
    for trie in tries.values() {
        trie.overlapping_pairs(&mut |p, q| {
            let (sp, sq) = (patterns[p].0, patterns[q].0);
            if sp == sq {
                return;
            }
            let (pair, example) = if sp < sq {
                ((sp, sq), (p, q))
            } else {
                ((sq, sp), (q, p))
            };
            let kept = first.entry(pair).or_insert(example);
            *kept = (*kept).min(example);
        });
    }
    first
        .into_iter()
        .map(|(pair, (p, q))| (pair, (patterns[p].1.clone(), patterns[q].1.clone())))
        .collect()
}

/// Patterns of one trust domain by path segment.
#[derive(Default)]
struct Trie {
    nodes: Vec<Node>,
}

#[derive(Default)]
struct Node {
    /// By literal segment (looked up by `&str`, without allocating).
    children: HashMap<String, usize>,
    /// The `*` edge.
    any: Option<usize>,
    /// Patterns whose fixed part ends here, without and with a final `/**`.
    exact: Vec<usize>,
    suffix: Vec<usize>,
}

impl Node {
    /// Every child: literal edges and the `*` edge.
    fn edges(&self) -> impl Iterator<Item = usize> + '_ {
        self.children.values().copied().chain(self.any)
    }
}

impl Trie {
    fn insert(&mut self, pattern: &IdPattern, index: usize) {
        if self.nodes.is_empty() {
            self.nodes.push(Node::default());
        }
        let mut node = 0;
        for segment in pattern.path_segments() {
            let existing = match segment {
                Some(literal) => self.nodes[node].children.get(literal).copied(),
                None => self.nodes[node].any,
            };
            node = match existing {
                Some(child) => child,
                None => {
                    self.nodes.push(Node::default());
                    let child = self.nodes.len() - 1;
                    match segment {
                        Some(literal) => {
                            self.nodes[node].children.insert(literal.to_owned(), child);
                        }
                        None => self.nodes[node].any = Some(child),
                    }
                    child
                }
            };
        }
        let end = &mut self.nodes[node];
        if pattern.has_any_suffix() {
            end.suffix.push(index);
        } else {
            end.exact.push(index);
        }
    }

    /// Calls `found(p, q)` for every two patterns that some ID matches both of (each pair at
    /// least once, in either order, and a pattern with itself). The trie is walked against itself,
    /// node pair by node pair, so a `*` meets all the literals beside it once, not once per
    /// pattern that has it.
    fn overlapping_pairs(&self, found: &mut impl FnMut(usize, usize)) {
        if self.nodes.is_empty() {
            return;
        }
        // Node pairs at the same depth whose paths some ID prefix matches both of.
        let mut stack = vec![(0usize, 0usize)];
        while let Some((a, b)) = stack.pop() {
            let (na, nb) = (&self.nodes[a], &self.nodes[b]);
            for (&p, &q) in pairs(&na.exact, &nb.exact).chain(pairs(&na.suffix, &nb.suffix)) {
                found(p, q);
            }
            // A `/**` ending here takes every longer pattern below the other node.
            if !na.suffix.is_empty() {
                for q in self.below(b) {
                    na.suffix.iter().for_each(|&p| found(p, q));
                }
            }
            if !nb.suffix.is_empty() {
                for p in self.below(a) {
                    nb.suffix.iter().for_each(|&q| found(p, q));
                }
            }
            for (literal, &ca) in &na.children {
                if let Some(&cb) = nb.children.get(literal) {
                    stack.push((ca, cb));
                }
            }
            if let Some(any_b) = nb.any {
                stack.extend(na.edges().map(|ca| (ca, any_b)));
            }
            if let Some(any_a) = na.any {
                stack.extend(nb.children.values().map(|&cb| (any_a, cb)));
            }
        }
    }

    /// Every pattern whose fixed part goes further than `node`.
    fn below(&self, node: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut todo: Vec<usize> = self.nodes[node].edges().collect();
        while let Some(n) = todo.pop() {
            let n = &self.nodes[n];
            out.extend(n.exact.iter().chain(&n.suffix));
            todo.extend(n.edges());
        }
        out
    }
}

fn pairs<'a>(a: &'a [usize], b: &'a [usize]) -> impl Iterator<Item = (&'a usize, &'a usize)> {
    a.iter().flat_map(move |p| b.iter().map(move |q| (p, q)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so that failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    fn random_policy(rng: &mut Rng, segments: usize) -> Policy {
        let mut text = String::from("version: 1\ntrust_domain: td\nsegments:\n");
        for s in 0..segments {
            text.push_str(&format!("  s{s}:\n    addresses: ["));
            for c in 0..1 + rng.below(3) {
                let sep = if c > 0 { ", " } else { "" };
                let len = 24 + rng.below(9);
                let host = (rng.below(4) << 8) | (rng.below(256) & !((1 << (32 - len)) - 1));
                text.push_str(&format!("{sep}\"10.0.{}.{}/{len}\"", host >> 8, host & 255));
                if rng.below(4) == 0 {
                    text.push_str(&format!(", \"fd00::{:x}/126\"", rng.below(16) * 4));
                }
            }
            text.push_str("]\n    identities: [");
            let mut seen = Vec::new();
            for _ in 0..rng.below(3) {
                let path: String = (0..rng.below(3))
                    .map(|_| ["/a", "/b", "/*"][rng.below(3)])
                    .collect();
                let tail = if path.is_empty() || rng.below(2) == 0 {
                    "/**"
                } else {
                    ""
                };
                let pattern = format!("\"spiffe://td{path}{tail}\"");
                if !seen.contains(&pattern) {
                    seen.push(pattern);
                }
            }
            text.push_str(&seen.join(", "));
            text.push_str("]\n");
        }
        crate::load_str(&text, "gen.yaml".as_ref()).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// The sweep and the trie find exactly what comparing every pair finds.
    #[test]
    fn fast_overlaps_equal_every_pair_compared() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200 {
            let count = 2 + rng.below(12);
            let policy = random_policy(&mut rng, count);
            let segs = &policy.segments;
            let mut addresses = BTreeMap::new();
            let mut identities = std::collections::BTreeSet::new();
            for i in 0..segs.len() {
                for j in i + 1..segs.len() {
                    let both = segs[i].members.intersection(&segs[j].members);
                    if !both.is_empty() {
                        addresses.insert((i, j), both);
                    }
                    let overlap = segs[i]
                        .identities
                        .iter()
                        .any(|(p, _)| segs[j].identities.iter().any(|(q, _)| p.overlaps(q)));
                    if overlap {
                        identities.insert((i, j));
                    }
                }
            }
            assert_eq!(address_overlaps(&policy), addresses);
            let found = identity_overlaps(&policy);
            assert_eq!(
                found
                    .keys()
                    .copied()
                    .collect::<std::collections::BTreeSet<_>>(),
                identities
            );
            for (p, q) in found.values() {
                assert!(p.overlaps(q), "{p} {q}");
            }
        }
    }
}
