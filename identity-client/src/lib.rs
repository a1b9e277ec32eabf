//! Getting and renewing a workload's X.509-SVID from `palisade ca serve`; used by
//! `palisade cert request|renew` and by the sidecar when its identity names a CA.
//!
//! - [`CaClient`]: the CA's three calls (sign with a [`Credential`], renew over mTLS, bundle),
//!   the CA checked by its SPIFFE ID.
//! - [`KeyAndCsr`]: a key made locally (it never leaves) and the CSR for it.
//! - [`Svid`]: the CA's answer, checked (chain to bundle, ID, key) before use.
//! - [`https::HttpsClient`]: the one HTTPS client, also used by `policy sync`'s URL source and the
//!   CA benchmark: hyper-util's client over rustls with the caller's own config, a deadline and a
//!   bound on the body.
//! - [`Renewer`]: when to renew ([`RenewalTiming`]: half the lifetime ± 10%, backoff with
//!   jitter, wall-clock deadlines), handing each new SVID to an [`SvidSink`].

#![warn(missing_docs)]

mod client;
mod csr;
pub mod https;
mod renewer;
pub mod sandbox;
pub mod schedule;
mod svid;

pub use client::{CaClient, ClientError, Credential};
pub use csr::{CsrError, KeyAndCsr};
pub use renewer::{unix, Bootstrap, RenewalStatus, Renewer, SvidDirSink, SvidSink};
pub use schedule::RenewalTiming;
pub use svid::Svid;
