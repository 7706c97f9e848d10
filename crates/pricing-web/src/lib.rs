//! pricing-web: the dashboard that people watch.
//!
//! It is not a cluster member: a cluster client of the pricing nodes ([`feed`]) feeds it price
//! updates (see [`PriceHub::publish`]), and it serves them to browsers.
//!
//! - [`hub`]: the latest prices and a bounded history per ticker, fanned out to every
//!   connected browser.
//! - [`http`]: the axum routes: `/` the dashboard, `/ws` the live stream, `/api/tickers`,
//!   `/api/prices/{ticker}`, `/alive`, `/ready`.
//! - [`assets`]: the dashboard's HTML, CSS and JavaScript and the vendored uPlot charting
//!   library, compiled into the binary so the dashboard works offline.
//! - [`protocol`]: the JSON messages pushed over the WebSocket;
//! - [`feed`]: the cluster client that feeds the hub from the pricing nodes.
//! - [`metrics`]: what its `/metrics` shows (browsers connected, the transport's counters).

pub mod assets;
pub mod feed;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod protocol;

pub use feed::PriceFeed;
pub use http::router;
pub use hub::{HubError, PriceHub};
pub use protocol::{PricePoint, ServerMessage};
