//! pricing-web's metrics: owns the registration of what its `/metrics` (on the HTTP port,
//! since pricing-web is not a cluster member and has no management port) shows: the number
//! of connected browsers (`websocket_server_active_connections`, read from the hub's own
//! count when scraped) and the transport's per-peer counters (`runtime::metrics`).

use std::sync::Arc;

use runtime::Remoting;
use runtime::metrics::NodeInstruments;
use telemetry::Metrics;
use telemetry::instruments as ins;
use telemetry::opentelemetry::metrics::ObservableUpDownCounter;

use crate::hub::PriceHub;

/// The instruments of [`register`]; they report while this lives.
#[derive(Debug)]
pub struct WebInstruments {
    _clients: ObservableUpDownCounter<i64>,
    _transport: Option<NodeInstruments>,
}

/// Registers the WebSocket client gauge of `hub` and, when given, the transport's
/// instruments of `remoting` on `metrics`.
pub fn register(
    metrics: &Metrics,
    hub: &Arc<PriceHub>,
    remoting: Option<&Remoting>,
) -> WebInstruments {
    let h = Arc::clone(hub);
    let clients = ins::observed_gauge(
        &metrics.meter_with_scope("pricing-web"),
        ins::WEBSOCKET_CLIENTS,
        "WebSocket clients connected to the live stream",
        "{connection}",
        move || vec![(Vec::new(), h.clients() as i64)],
    );
    WebInstruments {
        _clients: clients,
        _transport: remoting.map(|r| runtime::metrics::register_transport(metrics, r)),
    }
}
