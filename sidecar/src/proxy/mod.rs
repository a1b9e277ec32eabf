//! The data path: connections accepted (`accept.rs`), handshaken and admitted (`inbound.rs`,
//! `outbound.rs`, and `transparent.rs` for redirected ones, which checks the original
//! destination with `local_addrs.rs`), then relayed (`relay.rs`, with `read_ahead.rs` for the
//! bytes read before the decision).

pub(crate) mod accept;
pub(crate) mod inbound;
pub(crate) mod local_addrs;
pub(crate) mod outbound;
pub(crate) mod read_ahead;
pub mod relay;
pub(crate) mod transparent;
