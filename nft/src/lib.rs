//! nftables for Palisade: a compiled [`palisade_policy::Ruleset`] as nft's JSON ([`nft_json`]),
//! applied in one transaction ([`apply::apply`]), our live table read back
//! ([`apply::live_table`]) and compared element by element and rule by rule ([`apply::diff`]);
//! and a pod's redirect table ([`redirect`]), written the same way.
//!
//! Only `palisade policy apply` and `palisade-sync` link this crate; the sidecar never does.
//!
//! Where a ruleset travels: `json.rs` (the ruleset as nftables crate objects) → `apply.rs` (one
//! `nft -j -f` transaction: add, delete, recreate the table; read back; diff).

#![warn(missing_docs)]

pub mod apply;
mod json;
mod parts;
pub mod redirect;
mod text;

pub use json::nft_json;
pub use text::nft_text;
