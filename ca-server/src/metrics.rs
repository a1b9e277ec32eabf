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

/// Labels of a connection refused, shed or closed by the service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `client_cap`, `pool_full` (refused or shed); `handshake_timeout`, `request_timeout`,
    /// `refusals` (closed).
    pub reason: &'static str,
}

/// Labels of the connections open now.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// `general` or `authenticated`.
    pub class: &'static str,
}

/// Labels of refusals left out of the audit trail.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeftOutLabels {
    /// The refusal's code.
    pub code: &'static str,
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
    /// Connections refused at accept, by reason.
    pub connections_refused: Family<ConnectionLabels, Counter>,
    /// Idle connections closed to make room for a new one, by reason.
    pub connections_shed: Family<ConnectionLabels, Counter>,
    /// Connections the service closed: timeouts, too many refusals.
    pub connections_closed: Family<ConnectionLabels, Counter>,
    /// Connections open now, by class.
    pub connections: Family<ClassLabels, Gauge>,
    /// Refusals not written to the audit trail (counted in its summary lines), by code.
    pub audit_left_out: Family<LeftOutLabels, Counter>,
    /// Audit lines that could not be written.
    pub audit_write_failures: Counter,
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
            "issuer_certificate_expiry_timestamp_seconds",
            "Unix time at which the signing CA expires",
            issuer_expiry_seconds.clone(),
        );
        let root_expiry_seconds = Gauge::default();
        registry.register(
            "root_certificate_expiry_timestamp_seconds",
            "Unix time at which the earliest root of the bundle expires",
            root_expiry_seconds.clone(),
        );
        let bundle_roots = Gauge::default();
        registry.register(
            "bundle_roots",
            "Roots in the bundle served now",
            bundle_roots.clone(),
        );
        let connections_refused = Family::default();
        registry.register(
            "connections_refused",
            "Connections refused at accept, by reason (client_cap, pool_full)",
            connections_refused.clone(),
        );
        let connections_shed = Family::default();
        registry.register(
            "connections_shed",
            "Idle unauthenticated connections closed to make room for a new one, by reason",
            connections_shed.clone(),
        );
        let connections_closed = Family::default();
        registry.register(
            "connections_closed",
            "Connections closed by the service (handshake_timeout, request_timeout, refusals)",
            connections_closed.clone(),
        );
        let connections = Family::default();
        registry.register(
            "connections",
            "Connections open now, by class (general, authenticated)",
            connections.clone(),
        );
        let audit_left_out = Family::default();
        registry.register(
            "audit_refusals_left_out",
            "Refusals left out of the audit trail by its rate limit (each summarized), by code",
            audit_left_out.clone(),
        );
        let audit_write_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Audit lines that could not be written",
            audit_write_failures.clone(),
        );
        Metrics {
            connections_refused,
            connections_shed,
            connections_closed,
            connections,
            audit_left_out,
            audit_write_failures,
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

    /// Counts one connection refused at accept (`refused`), shed or closed.
    pub fn connection(&self, family: &Family<ConnectionLabels, Counter>, reason: &'static str) {
        family.get_or_create(&ConnectionLabels { reason }).inc();
    }

    /// The gauge of connections open now in `class`.
    pub fn connections_in(&self, class: &'static str) -> Gauge {
        self.connections
            .get_or_create(&ClassLabels { class })
            .clone()
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
