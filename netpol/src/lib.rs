//! Kubernetes NetworkPolicy as a first-class input: the `networking.k8s.io/v1` objects users
//! already have, and the pods and namespaces they select, read from manifests; their meaning
//! for one connection ([`decide`], `palisade policy explain`) and for every pair of pods
//! ([`matrix`], `palisade policy matrix`); and a node's share of them compiled into the host's
//! `inet palisade` table ([`compile`]), beside or instead of a Palisade policy; and whom a
//! sidecar admits by the same objects ([`ingress_admits_account`]). [`Watched`] re-reads
//! manifests when they change.
//!
//! Where a NetworkPolicy travels: `load.rs` (YAML with positions, the API's defaults and checks)
//! → `model.rs` (typed objects, label selectors) → `explain.rs` (the meaning, the one definition)
//! → `compile.rs` (per node: the isolated pods and what their rules admit, as sets of the same
//! typed ruleset `palisade-policy` compiles to) → `palisade-nft` (applied in one transaction).

#![warn(missing_docs)]

mod admission;
pub mod compile;
mod explain;
mod load;
mod matrix;
pub mod model;
mod watch;

pub use admission::ingress_admits_account;
pub use compile::compile;
pub use explain::{
    decide, peer_matches, port_matches, rule_admits, End, Explained, RuleRef, Side, Verdict,
};
pub use load::{
    load_partial, load_paths, load_str, load_str_partial, LoadErrors, Loaded, Refused,
    MAX_FILE_BYTES,
};
pub use matrix::{matrix, Matrix};
pub use model::{Cluster, Inventory, NetworkPolicy, Pod, Proto};
pub use watch::Watched;
