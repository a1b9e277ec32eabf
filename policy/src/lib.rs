//! Palisade's segmentation policy, pure: one YAML file, its meaning, and what it compiles to. No
//! nftables, no runtime, no I/O but reading the policy file: the sidecar links this crate, and
//! `palisade-nft` (printing and applying a ruleset) and `palisade-sync` (the host daemon) build on
//! it.
//!
//! - [`load_file`] / [`load_str`]: YAML to a checked [`Policy`], every error with file:line:column.
//! - [`lint`]: what is legal but suspicious.
//! - [`decide`]: the policy's meaning for one connection (`palisade policy explain`), and the oracle
//!   the kernel is tested against.
//! - [`compile`]: a host's `inet palisade` table as a typed [`Ruleset`] (sets, and chains of
//!   typed rules that name sets by id); [`Ruleset::baseline`] is the fail-closed table. This
//!   crate writes no nftables syntax: both printers of a ruleset, `palisade_nft::nft_text` and
//!   `palisade_nft::nft_json`, are in `palisade-nft`.
//! - [`Admission`]: whether a sidecar admits a peer's SPIFFE ID, by the same decision as `explain`.
//!
//! Where a policy rule travels: `load.rs` (YAML, positions) → `model.rs` → `compile.rs`
//! (address atoms, tuple sets, typed chains) → palisade-nft (text, JSON, the transaction);
//! `explain.rs` decides, `lint.rs` and `overlap.rs` warn, `admission.rs` answers the sidecar.

#![warn(missing_docs)]

pub mod addrs;
mod admission;
pub mod compile;
mod explain;
mod few;
mod lint;
mod load;
pub mod model;
mod overlap;

pub use admission::Admission;
pub use compile::{compile, CompileError, Ruleset, TABLE};
pub use explain::{decide, decide_segments, Decision, Reason};
pub use lint::{lint, Warning};
pub use load::{
    load_file, load_str, parse_port_range, yaml_nesting_too_deep, LoadErrors, Located,
    PortRangeError,
};
pub use model::{Action, Endpoint, EndpointError, Policy, Protocol, Rule, Segment, SegmentRef};

/// The built-in segment of every address that is in no segment.
pub const OUTSIDE: &str = "outside";
