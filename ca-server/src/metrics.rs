//! Every metric `palisade ca serve` exports, under `palisade_ca_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a request's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `sign`, `renew`, `bundle`.
    pub endpoint: &'static str,
    /// `ok` or the refusal's code.
    pub code: &'static str,
}

/// Labels of an issuance.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuedLabels {
    /// `join_token`, `service_account` or `mtls`.
    pub credential: &'static str,
}

/// Labels of a reload of the CA directory or the JWKS.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ca` or `jwks`.
    pub files: &'static str,
    /// `success` or `failure`.
    pub result: &'static str,
}

/// The CA service's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by endpoint and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Certificates issued, by credential.
    pub issued: Family<IssuedLabels, Counter>,
    /// Reloads of the files the service runs from.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Unix time at which the signing CA expires.
    pub issuer_expiry_seconds: Gauge,
    /// Unix time at which the first root of the bundle expires.
    pub root_expiry_seconds: Gauge,
    /// Roots in the bundle served now.
    pub bundle_roots: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade_ca");
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests by endpoint and outcome (ok or the refusal's code)",
            requests.clone(),
        );
        let issued = Family::default();
        registry.register(
            "issued",
            "Certificates issued, by credential",
            issued.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Reloads of the CA directory and the JWKS, by result",
            reloads.clone(),
        );
        let issuer_expiry_seconds = Gauge::default();
        registry.register(
            "issuer_expiry_seconds",
            "Unix time at which the signing CA expires",
            issuer_expiry_seconds.clone(),
        );
        let root_expiry_seconds = Gauge::default();
        registry.register(
            "root_expiry_seconds",
            "Unix time at which the earliest root of the bundle expires",
            root_expiry_seconds.clone(),
        );
        let bundle_roots = Gauge::default();
        registry.register(
            "bundle_roots",
            "Roots in the bundle served now",
            bundle_roots.clone(),
        );
        Metrics {
            registry,
            requests,
            issued,
            reloads,
            issuer_expiry_seconds,
            root_expiry_seconds,
            bundle_roots,
        }
    }

    /// Counts one request's outcome.
    pub fn request(&self, endpoint: &'static str, code: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, code })
            .inc();
    }

    /// Counts one reload.
    pub fn reload(&self, files: &'static str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ReloadLabels { files, result })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
