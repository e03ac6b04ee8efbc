//! The live dashboard: a one-page app (plain HTML, JS and CSS, no build step) embedded in the
//! binary and served at `/`, with its assets under `/assets/`. It reads the `/v1` JSON API and
//! follows the `/v1/events` stream; it holds no state and no privileges of its own.
//!
//! Invariants: the assets are the files under `crates/server/assets/`, byte for byte
//! (`include_bytes!`), so what is reviewed is what is served; they carry no data, so they are
//! served without authentication (the API they call checks every request). The page is sent
//! with a Content-Security-Policy that allows scripts, styles, workers and requests from this
//! origin only: with no inline script and no `innerHTML`, data cannot become code.
//!
//! Graph layout is dagre (`assets/vendor/dagre`, version and licence beside it), run in a Web
//! Worker so that laying out a workflow of thousands of tasks does not freeze the page.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: Asset = Asset {
    path: "/",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../assets/index.html"),
};

const ASSETS: &[Asset] = &[
    INDEX,
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/app.js"),
    },
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
    },
    Asset {
        path: "/assets/layout.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/layout.js"),
    },
    Asset {
        path: "/assets/layout-worker.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/layout-worker.js"),
    },
    Asset {
        path: "/assets/dagre.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../assets/vendor/dagre/dagre.min.js"),
    },
    Asset {
        path: "/assets/dagre/LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../assets/vendor/dagre/LICENSE"),
    },
    Asset {
        path: "/assets/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../assets/favicon.svg"),
    },
];

/// The page may load scripts, styles, workers and data from its own origin only. Styles set
/// through the CSSOM (`el.style.width`) are not inline styles and need no exception.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes: `GET /` and `GET /assets/…`. Stateless; merge into the API router.
pub fn routes() -> Router {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &headers) }),
        )
    })
}

/// Answers with the file, or `304 Not Modified` when the browser's copy is current. Browsers
/// revalidate every time (`no-cache`), so a new binary's dashboard shows at once.
fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let etag = etag(asset.body);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if asset.path == INDEX.path {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    res
}

/// A strong validator: FNV-1a of the content. Not a security hash; it only has to change when
/// the file does, and is cheap enough to compute per request for these few small files.
fn etag(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}-{}\"", body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_served() {
        let index = std::str::from_utf8(INDEX.body).unwrap();
        for name in ["/assets/app.js", "/assets/app.css", "/assets/dagre.min.js"] {
            assert!(index.contains(name), "index.html loads {name}");
            assert!(ASSETS.iter().any(|a| a.path == name), "{name} is served");
        }
        let worker = std::str::from_utf8(
            ASSETS
                .iter()
                .find(|a| a.path == "/assets/layout-worker.js")
                .unwrap()
                .body,
        )
        .unwrap();
        assert!(worker.contains("importScripts('/assets/dagre.min.js', '/assets/layout.js')"));
    }

    #[test]
    fn etags_follow_the_content() {
        assert_eq!(etag(b"abc"), etag(b"abc"));
        assert_ne!(etag(b"abc"), etag(b"abd"));
    }
}
