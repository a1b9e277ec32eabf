//! The webhook's metrics (`palisade_webhook_`), on the read-only listener.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    pub outcome: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    /// Reviews answered, by outcome (injected, unchanged, refused) or refused as a bad request.
    reviews: Family<OutcomeLabel, Counter>,
    /// Connections closed at accept: too many open.
    pub connections_refused: Counter,
    /// TLS handshakes that failed or took too long.
    pub handshake_failures: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("palisade_webhook");
        let reviews = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by outcome (injected, unchanged, refused, bad_request)",
            reviews.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept because too many were open",
            connections_refused.clone(),
        );
        let handshake_failures = Counter::default();
        registry.register(
            "handshake_failures",
            "TLS handshakes that failed or did not finish in time",
            handshake_failures.clone(),
        );
        Metrics {
            registry,
            reviews,
            connections_refused,
            handshake_failures,
        }
    }

    /// Counts one review answered (or refused as a bad request) with `outcome`.
    pub fn reviewed(&self, outcome: &'static str) {
        self.reviews.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
