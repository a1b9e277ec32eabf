//! The Palisade sidecar: the mTLS data plane beside each workload.
//!
//! Not built yet (issue #3). It will terminate and originate mutual TLS with the verifiers of
//! `palisade_ca` ([`palisade_ca::SpiffeClientVerifier`], [`palisade_ca::SpiffeServerVerifier`]) and
//! admit peers by SPIFFE ID.
