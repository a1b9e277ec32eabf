//! What Palisade's tests share, so that each rule is written once (a dev-dependency only):
//!
//! - [`skip`]: whether a test may run here. A test that needs root is `#[ignore = "needs root:
//!   ..."]` (the runner shows it as ignored, with the reason) and calls [`skip::require_root`];
//!   `scripts/test` runs them as root with `--include-ignored`. A missing tool skips a test, or
//!   fails it when `PALISADE_TEST_STRICT=1` (scripts/test as root), and is counted.
//! - [`process`]: a command run with a time bound.
//! - [`netns`]: network namespaces a test makes and removes ([`netns::Netns`]).
//! - [`mutate`]: the deterministic mutations and the bounded loop of the fuzz smoke tests.
//! - [`jwks`]: a Kubernetes cluster's service-account signing keys, their JWKS and tokens.

pub mod jwks;
pub mod mutate;
pub mod netns;
pub mod process;
pub mod skip;
