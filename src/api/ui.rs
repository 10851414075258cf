//! The operator's web page under `/dcm4chee-arc/ui2/`, in the spirit of
//! dcm4chee's "Monitoring → Export" tab: export tasks with filters, paging,
//! per-instance results, cancel and reschedule; the exporters and their
//! schedule windows; live throughput from `/metrics/summary`.
//!
//! Plain HTML, JavaScript and CSS compiled into the binary: no build step,
//! and nothing loaded from elsewhere (hospital networks are often offline).
//! The files hold no data, so they need no token; the page sends the token
//! (kept in `sessionStorage`) with each API request it makes.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Where the page is served: static files with no data in them, so they
/// are served without the control API's token (the page's own requests
/// carry it).
pub const UI_PREFIX: &str = "/dcm4chee-arc/ui2";

/// (method, path) of the page's routes, paths relative to `/dcm4chee-arc`
/// like [`crate::api::routes`] (and `openapi.json`'s server URL). The
/// router is built from this list, so the two cannot drift apart.
pub const UI_ROUTES: &[(&str, &str)] = &[
    ("GET", "/ui2"),
    ("GET", "/ui2/"),
    ("GET", "/ui2/app.js"),
    ("GET", "/ui2/style.css"),
];

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// Only the page's own files and API: the task messages shown come from
/// remote servers, so no inline script or style may run even if some text
/// ever reached the DOM as markup.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The router of the page and its assets.
pub fn router() -> Router {
    let mut r = Router::new();
    for (method, path) in UI_ROUTES {
        // Every route is a GET (axum answers HEAD with it).
        assert_eq!(*method, "GET", "UI_ROUTES: {method} {path}");
        let full = format!("{}{path}", super::BASE);
        let handler = match *path {
            "/ui2" => get(redirect),
            "/ui2/" => get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
            "/ui2/app.js" => get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
            "/ui2/style.css" => get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
            other => panic!("UI_ROUTES: no handler for {other}"),
        };
        r = r.route(&full, handler);
    }
    r
}

/// The page's relative URLs (`app.js`, `style.css`) resolve only under the
/// trailing slash.
async fn redirect() -> Redirect {
    Redirect::permanent(&format!("{UI_PREFIX}/"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated on every load: after an upgrade the page must not mix an
    // old script with a new API.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}
