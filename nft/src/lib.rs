//! nftables for Palisade, and all of its syntax: a compiled [`palisade_policy::Ruleset`] printed
//! as nft text ([`nft_text`]) and as nft's JSON ([`nft_json`]), applied in one transaction
//! ([`apply::apply`]), our live table read back ([`apply::live_table`]) and compared element by
//! element and rule by rule ([`apply::diff`]); and a pod's redirect table ([`redirect`]), written
//! the same way.
//!
//! Only `palisade policy` (compile, apply, sync) and `palisade-sync` link this crate; the sidecar
//! never does.
//!
//! Where a ruleset travels: `parts.rs` (each typed rule as matches, actions and a comment; each
//! set key as its fields) → `text.rs` (nft text) and `json.rs` (the same parts as nftables crate
//! objects) → `apply.rs` (one `nft -j -f` transaction: add, delete, recreate the table; read
//! back; diff).

#![warn(missing_docs)]

pub mod apply;
mod json;
mod parts;
pub mod redirect;
mod text;

pub use json::nft_json;
pub use text::nft_text;
