//! The gateway's metrics, registered in the control plane's `/metrics` registry.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Counters of the Kafka gateway (`precursor_gateway_*`).
#[derive(Default)]
pub struct GatewayMetrics {
    requests: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    malformed: Family<Labels, Counter>,
    trailing_bytes: Family<Labels, Counter>,
    connections_accepted: Counter,
    connections_refused: Counter,
    connections_open: Gauge,
    sasl_authentications: Family<Labels, Counter>,
}

impl GatewayMetrics {
    /// Makes the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> GatewayMetrics {
        let metrics = GatewayMetrics::default();
        registry.register(
            "precursor_gateway_requests",
            "Kafka requests answered or under way, by API",
            metrics.requests.clone(),
        );
        registry.register(
            "precursor_gateway_errors",
            "Kafka error codes sent, by API and error (top level and per partition)",
            metrics.errors.clone(),
        );
        registry.register(
            "precursor_gateway_malformed_requests",
            "Kafka requests that could not be read, by reason; each closed its connection",
            metrics.malformed.clone(),
        );
        registry.register(
            "precursor_gateway_request_trailing_bytes",
            "Bytes after a Kafka request's body, ignored as Kafka ignores them, by API \
             (librdkafka 2.1.0 and later send 1 to 3 after an all-topics Metadata v9+)",
            metrics.trailing_bytes.clone(),
        );
        registry.register(
            "precursor_gateway_connections_accepted",
            "Kafka client connections accepted",
            metrics.connections_accepted.clone(),
        );
        registry.register(
            "precursor_gateway_connections_refused",
            "Kafka client connections closed at once because gateway.connections_max were open",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "precursor_gateway_connections_open",
            "Kafka client connections open now",
            metrics.connections_open.clone(),
        );
        registry.register(
            "precursor_sasl_authentications",
            "SASL authentications on the Kafka listeners, by mechanism and outcome (success, \
             failure, locked: refused during a lockout)",
            metrics.sasl_authentications.clone(),
        );
        metrics
    }

    /// Counts a SASL authentication of `mechanism` that ended in `outcome`.
    pub fn sasl_authentication(&self, mechanism: &'static str, outcome: &'static str) {
        self.sasl_authentications
            .get_or_create(&vec![
                ("mechanism", mechanism.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }

    pub fn request(&self, api: &'static str) {
        self.requests
            .get_or_create(&vec![("api", api.to_string())])
            .inc();
    }

    /// Requests of `api` counted so far (the dashboard's rates).
    pub fn requests_of(&self, api: &str) -> u64 {
        self.requests
            .get_or_create(&vec![("api", api.to_string())])
            .get()
    }

    /// Counts an error code sent (0 is not an error and is not counted).
    pub fn error(&self, api: &'static str, code: i16) {
        if code == 0 {
            return;
        }
        let name = kafka_protocol::error::ResponseError::try_from_code(code)
            .map_or_else(|| code.to_string(), |e| format!("{e:?}"));
        self.errors
            .get_or_create(&vec![("api", api.to_string()), ("error", name)])
            .inc();
    }

    pub fn malformed(&self, reason: &'static str) {
        self.malformed
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    /// Counts `bytes` found after the body of a request of `api` (and ignored).
    pub fn trailing_bytes(&self, api: &'static str, bytes: u64) {
        self.trailing_bytes
            .get_or_create(&vec![("api", api.to_string())])
            .inc_by(bytes);
    }

    /// Malformed requests counted so far for `reason` (tests, status).
    pub fn malformed_count(&self, reason: &'static str) -> u64 {
        self.malformed
            .get_or_create(&vec![("reason", reason.to_string())])
            .get()
    }

    pub fn connection_accepted(&self) {
        self.connections_accepted.inc();
        self.connections_open.inc();
    }

    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }
}
