//! Palisade's segmentation policy: one YAML file compiled to nftables per host and to admitted
//! SPIFFE IDs per sidecar.
//!
//! Not built yet (issue #4). It will name identities with [`palisade_ca::SpiffeId`].
