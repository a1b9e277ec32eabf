//! The sidecar's Prometheus metrics. Hot-path handles (per-listener counters) are resolved once
//! when a listener starts, so forwarding a chunk costs one atomic add, not a label lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `direction` label: `inbound` (mTLS in, plaintext to the app) or `outbound`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Direction {
    /// mTLS in from a peer, plaintext on to the app.
    Inbound,
    /// Plaintext in from the app, mTLS on to a peer.
    Outbound,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// `flow` label: bytes from the app sent on to the peer, or from the peer delivered to the app.
const APP_TO_PEER: &str = "app_to_peer";
const PEER_TO_APP: &str = "peer_to_app";

/// Labels of per-listener metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// The listener's configured name.
    pub listener: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
}

/// Labels of refused and closed connections: the listener, and why.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The listener's configured name.
    pub listener: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// Why: a refusal's reason (`not_admitted`, ...) or how a relay ended (`idle_timeout`, ...).
    pub reason: &'static str,
}

/// Labels of the byte counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// The listener's configured name.
    pub listener: String,
    /// `app_to_peer` or `peer_to_app`.
    pub flow: &'static str,
}

/// `files`: `identity` (certificate, key and bundle, loaded together) or `policy`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `identity` or `policy`.
    pub files: &'static str,
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels of a finished handshake's key exchange.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyExchangeLabels {
    /// The listener's configured name.
    pub listener: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The TLS named group agreed (`X25519MLKEM768`, `X25519`, ...).
    pub group: String,
}

type HistogramFamily = Family<ListenerLabels, Histogram, fn() -> Histogram>;

fn handshake_histogram() -> Histogram {
    // 0.5 ms .. ~4 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

/// Every metric the sidecar exports, registered under `palisade_sidecar_`.
pub struct Metrics {
    registry: Registry,
    opened: Family<ListenerLabels, Counter>,
    active: Family<ListenerLabels, Gauge>,
    refused: Family<ReasonLabels, Counter>,
    closed: Family<ReasonLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    handshake_seconds: HistogramFamily,
    key_exchanges: Family<KeyExchangeLabels, Counter>,
    /// NotAfter of the certificate in use, Unix seconds; 0 until one has loaded.
    pub certificate_expiry_seconds: Gauge,
    /// Attempts to load changed identity or policy files, by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Roots in the trust bundle in use.
    pub bundle_roots: Gauge,
    /// 1 once shutdown has begun.
    pub draining: Gauge,
    /// Certificates obtained from the CA service (bootstrap or renewal), by result.
    pub renewals: Family<ResultLabels, Counter>,
    /// Failed attempts in a row to get a certificate from the CA service (0 after a success):
    /// above 0, the sidecar is backing off.
    pub renewal_failures_in_a_row: Gauge,
    /// Unix time of the next attempt to get a certificate from the CA service.
    pub next_renewal_timestamp_seconds: Gauge,
}

/// Labels of an attempt's result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero, under the prefix `palisade_sidecar`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade_sidecar");
        let opened = Family::default();
        registry.register(
            "connections_opened",
            "Connections accepted by a listener",
            opened.clone(),
        );
        let active = Family::default();
        registry.register("connections_active", "Connections open now", active.clone());
        let refused = Family::default();
        registry.register(
            "connections_refused",
            "Connections refused before any byte was forwarded, by reason",
            refused.clone(),
        );
        let closed = Family::default();
        registry.register(
            "connections_closed",
            "Forwarded connections that ended, by how they ended",
            closed.clone(),
        );
        let bytes = Family::default();
        registry.register("bytes", "Bytes forwarded, by flow", bytes.clone());
        let handshake_seconds: HistogramFamily = Family::new_with_constructor(handshake_histogram);
        registry.register(
            "handshake_duration_seconds",
            "Time from accept (inbound) or connect (outbound) to a finished mTLS handshake",
            handshake_seconds.clone(),
        );
        let key_exchanges = Family::default();
        registry.register(
            "handshake_key_exchanges",
            "Finished handshakes by the key exchange group agreed (X25519MLKEM768 between Palisade sidecars)",
            key_exchanges.clone(),
        );
        let certificate_expiry_seconds = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "NotAfter of the certificate in use, as a Unix timestamp (0: none loaded)",
            certificate_expiry_seconds.clone(),
        );
        let reloads = Family::default();
        registry.register(
            "reloads",
            "Attempts to load changed files, by which (identity: certificate, key and bundle; policy) and result",
            reloads.clone(),
        );
        let bundle_roots = Gauge::default();
        registry.register(
            "bundle_roots",
            "Roots in the trust bundle in use",
            bundle_roots.clone(),
        );
        let draining = Gauge::default();
        registry.register(
            "draining",
            "1 once shutdown has begun: no new connections, open ones finishing",
            draining.clone(),
        );
        let renewals = Family::default();
        registry.register(
            "identity_renewals",
            "Certificates obtained from the CA service (identity.ca), by result",
            renewals.clone(),
        );
        let renewal_failures_in_a_row = Gauge::default();
        registry.register(
            "identity_renewal_failures_in_a_row",
            "Failed attempts in a row to get a certificate from the CA service (backing off while above 0)",
            renewal_failures_in_a_row.clone(),
        );
        let next_renewal_timestamp_seconds = Gauge::default();
        registry.register(
            "identity_next_renewal_timestamp_seconds",
            "Unix time of the next attempt to get a certificate from the CA service",
            next_renewal_timestamp_seconds.clone(),
        );
        Metrics {
            renewals,
            renewal_failures_in_a_row,
            next_renewal_timestamp_seconds,
            registry,
            opened,
            active,
            refused,
            closed,
            bytes,
            handshake_seconds,
            key_exchanges,
            certificate_expiry_seconds,
            reloads,
            bundle_roots,
            draining,
        }
    }

    /// The handles one listener updates.
    pub fn listener(&self, name: &str, direction: Direction) -> ListenerMetrics {
        let labels = ListenerLabels {
            listener: name.to_owned(),
            direction: direction.label(),
        };
        let bytes = |flow| {
            self.bytes
                .get_or_create(&BytesLabels {
                    listener: name.to_owned(),
                    flow,
                })
                .clone()
        };
        ListenerMetrics {
            name: name.to_owned(),
            direction,
            opened: self.opened.get_or_create(&labels).clone(),
            active: self.active.get_or_create(&labels).clone(),
            handshake_seconds: self.handshake_seconds.get_or_create(&labels).clone(),
            app_to_peer: bytes(APP_TO_PEER),
            peer_to_app: bytes(PEER_TO_APP),
            refused: self.refused.clone(),
            closed: self.closed.clone(),
            key_exchanges: self.key_exchanges.clone(),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// One listener's metric handles.
#[derive(Clone)]
pub struct ListenerMetrics {
    name: String,
    direction: Direction,
    /// Connections accepted.
    pub opened: Counter,
    /// Connections open now.
    pub active: Gauge,
    /// Seconds from accept (inbound) or connect (outbound) to a finished mTLS handshake.
    pub handshake_seconds: Histogram,
    /// Bytes from the app sent on to the peer.
    pub app_to_peer: Counter,
    /// Bytes from the peer delivered to the app.
    pub peer_to_app: Counter,
    refused: Family<ReasonLabels, Counter>,
    closed: Family<ReasonLabels, Counter>,
    key_exchanges: Family<KeyExchangeLabels, Counter>,
}

impl ListenerMetrics {
    /// Counts a finished handshake by the key exchange group it agreed on.
    pub fn key_exchange(&self, connection: &rustls::CommonState) {
        let group = connection
            .negotiated_key_exchange_group()
            .map_or_else(|| "none".to_owned(), |g| format!("{:?}", g.name()));
        self.key_exchanges
            .get_or_create(&KeyExchangeLabels {
                listener: self.name.clone(),
                direction: self.direction.label(),
                group,
            })
            .inc();
    }

    /// Counts a connection refused before any byte was forwarded, with its reason label.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&self.reason(reason)).inc();
    }

    /// Counts a forwarded connection that ended, with how it ended
    /// ([`crate::proxy::relay::RelayEnd::reason`]).
    pub fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&self.reason(reason)).inc();
    }

    fn reason(&self, reason: &'static str) -> ReasonLabels {
        ReasonLabels {
            listener: self.name.clone(),
            direction: self.direction.label(),
            reason,
        }
    }
}
