//! The operator's web page under `/dcm4chee-arc/ui2/` (placeholder; filled in
//! by the web-page work).

use axum::Router;

/// Paths the page is served from: static files, no data in them, so they
/// are exempt from the control API's token (the page's own requests carry it).
pub const UI_PREFIX: &str = "/dcm4chee-arc/ui2";

/// The router of the page and its assets.
pub fn router() -> Router {
    Router::new()
}
