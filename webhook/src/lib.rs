//! `palisade inject serve`: the mutating admission webhook, so that pods made by controllers,
//! operators and Helm releases are injected as `palisade inject FILE` would inject them.
//!
//! - [`review`]: an AdmissionReview v1 in, its answer out: the object goes through
//!   `palisade_inject::inject` (the same transform as the command) and the answer carries the JSON
//!   Patch between the two (`patchType: JSONPatch`), inject's warnings as admission warnings, and a
//!   refusal (a pod that could bypass the sidecar) as `allowed: false` with inject's sentence.
//!   Pure: no I/O.
//! - [`Webhook`]: HTTPS (rustls; the certificate files are read again when they change), one
//!   path, `POST /inject`, bounded before anything is parsed: [`MAX_BODY`], [`REQUEST_TIMEOUT`],
//!   [`MAX_CONNECTIONS`], [`MAX_REVIEWS_IN_FLIGHT`]; metrics on the read-only listener of `palisade_admin`.

#![warn(missing_docs)]

mod metrics;
mod review;
mod server;

pub use review::{review, Outcome, ReviewError};
pub use server::{
    BoundWebhook, Webhook, WebhookConfig, WebhookError, MAX_BODY, MAX_CONNECTIONS,
    MAX_REVIEWS_IN_FLIGHT, REQUEST_TIMEOUT,
};
