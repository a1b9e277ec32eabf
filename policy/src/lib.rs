//! Palisade's segmentation policy: one YAML file, compiled to an nftables ruleset per host and to
//! the admitted SPIFFE IDs of each sidecar.
//!
//! - [`load_file`] / [`load_str`]: YAML to a checked [`Policy`], every error with file:line:column.
//! - [`lint`]: what is legal but suspicious.
//! - [`decide`]: the policy's meaning for one connection (`palisade policy explain`), and the oracle
//!   the kernel is tested against.
//! - [`compile`]: a host's `inet palisade` table, as nft text or JSON.
//! - [`Admission`]: whether a sidecar admits a peer's SPIFFE ID, by the same decision as `explain`.
//! - [`apply`]: one-transaction apply, read-back and diff; [`sync::Sync`]: the `policy sync` service.
//!
//! Where a policy rule travels: `load.rs` (YAML, positions) → `model.rs` → `compile.rs`
//! (address atoms, tuple sets) → `render.rs` (nft text) / `json.rs` (nftables crate).

pub mod addrs;
mod admission;
pub mod apply;
mod compile;
mod explain;
mod json;
mod lint;
mod load;
pub mod model;
mod overlap;
mod render;
pub mod sync;

pub use admission::Admission;
pub use compile::{compile, CompileError, Ruleset, TABLE};
pub use explain::{decide, decide_segments, Decision, Reason};
pub use json::nft_json;
pub use lint::{lint, Warning};
pub use load::{load_file, load_str, parse_port_range, LoadErrors, Located};
pub use model::{Action, Endpoint, Policy, Protocol, Rule, Segment, SegmentRef};
pub use render::nft_text;

/// The built-in segment of every address that is in no segment.
pub const OUTSIDE: &str = "outside";
