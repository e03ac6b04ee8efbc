//! The live dashboard: a one-page app (plain HTML, CSS and JavaScript modules, no build step)
//! embedded in the binary and served at `/`, with its assets under `/assets/`. It reads the
//! `/v1` JSON API and follows the `/v1/events` stream; it holds no state and no privileges of
//! its own. The script is ES modules under `assets/js/` (`main.js` routes to one module per
//! page), which the browser loads by following their static imports.
//!
//! Invariants: the assets are the files under `crates/server/assets/`, byte for byte
//! (`include_bytes!`), so what is reviewed is what is served; they carry no data, so they are
//! served without authentication (the API they call checks every request). Every file is sent
//! with a Content-Security-Policy that allows scripts, styles, workers and requests from this
//! origin only: with no inline script, no `eval` and no `innerHTML`, data cannot become code.
//! Scripts are served as `text/javascript` (modules are refused under any other type).
//!
//! Graph layout is dagre (`assets/vendor/dagre`, version and licence beside it), run in a Web
//! Worker so that laying out a workflow of thousands of tasks does not freeze the page.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Scripts, classic and modules alike. Browsers refuse to run a module served with any other
/// type, and `nosniff` makes them refuse a classic script too.
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// One of the dashboard's ES modules, `assets/js/NAME`, served at `/assets/js/NAME`, where the
/// relative imports between modules (`./dom.js`) resolve.
macro_rules! module {
    ($name:literal) => {
        Asset {
            path: concat!("/assets/js/", $name),
            content_type: JAVASCRIPT,
            body: include_bytes!(concat!("../assets/js/", $name)),
        }
    };
}

const INDEX: Asset = Asset {
    path: "/",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../assets/index.html"),
};

/// Every file the dashboard serves. A new module is one `module!` line here; the tests below
/// check that every module imported is listed and every module listed is imported.
const ASSETS: &[Asset] = &[
    INDEX,
    // The page's script: `main.js` is the entry point, the others its imports.
    module!("main.js"),
    module!("errors.js"),
    module!("dom.js"),
    module!("format.js"),
    module!("counts.js"),
    module!("api.js"),
    module!("events.js"),
    module!("widgets.js"),
    module!("controls.js"),
    module!("graph-view.js"),
    module!("groups.js"),
    module!("graph.js"),
    module!("timeline.js"),
    module!("spend.js"),
    module!("limits.js"),
    module!("overview.js"),
    module!("workflow.js"),
    module!("task.js"),
    module!("waiting.js"),
    module!("schedules.js"),
    module!("agents.js"),
    module!("audit.js"),
    module!("lifecycle.js"),
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/app.css"),
    },
    // Classic scripts: dagre and the one function that calls it, loaded by the page (a
    // fallback) and by the layout worker (`importScripts`, which takes no modules).
    Asset {
        path: "/assets/layout.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("../assets/layout.js"),
    },
    Asset {
        path: "/assets/layout-worker.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("../assets/layout-worker.js"),
    },
    Asset {
        path: "/assets/dagre.min.js",
        content_type: JAVASCRIPT,
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
    // The API reference page's own files (`/reference`): Redoc and the script that starts it.
    Asset {
        path: "/assets/reference.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/reference.css"),
    },
    Asset {
        path: "/assets/reference.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("../assets/reference.js"),
    },
    Asset {
        path: "/assets/redoc/redoc.standalone.js",
        content_type: JAVASCRIPT,
        body: include_bytes!("../assets/vendor/redoc/redoc.standalone.js"),
    },
    Asset {
        path: "/assets/redoc/LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../assets/vendor/redoc/LICENSE"),
    },
    Asset {
        path: "/assets/redoc/THIRD-PARTY-LICENSES.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../assets/vendor/redoc/THIRD-PARTY-LICENSES.txt"),
    },
];

/// The API reference: Redoc rendering `/v1/openapi.json`, linked from the dashboard.
const REFERENCE: Asset = Asset {
    path: "/reference",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../assets/reference.html"),
};

/// The page may load scripts, styles, workers and data from its own origin only. Styles set
/// through the CSSOM (`el.style.width`) are not inline styles and need no exception.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The API reference page's policy: the dashboard's, except that inline styles are allowed
/// (Redoc styles itself with styled-components, which writes `<style>` elements) and its search
/// runs in a worker made from a `blob:`. Scripts still come from this origin only, and the page
/// shows nothing but the server's own OpenAPI document.
const REFERENCE_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; frame-ancestors 'none'";

/// The page's route.
pub const INDEX_ROUTE: &str = "/";
/// The route of every other file: `/assets/…`, looked up in [`ASSETS`].
pub const ASSETS_ROUTE: &str = "/assets/{*path}";

/// `GET /`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// The API reference page's route.
pub const REFERENCE_ROUTE: &str = "/reference";

/// `GET /reference`: the API reference page.
pub async fn reference(headers: HeaderMap) -> Response {
    serve_under(&REFERENCE, &headers, REFERENCE_POLICY)
}

/// `GET /assets/{*path}`: one of the files, or 404.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let path = format!("/assets/{path}");
    match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => serve(asset, &headers),
        None => {
            Problem::not_found("no_route", "no such endpoint; see /v1/openapi.json").into_response()
        }
    }
}

/// Answers with the file, or `304 Not Modified` when the browser's copy is current. Browsers
/// revalidate every time (`no-cache`), so a new binary's dashboard shows at once.
fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    serve_under(asset, headers, CONTENT_SECURITY_POLICY)
}

/// [`serve`], under the Content-Security-Policy `policy`.
fn serve_under(asset: &'static Asset, headers: &HeaderMap, policy: &'static str) -> Response {
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
    // On every file, not only the page: a worker runs under the policy sent with its own
    // script, and a file opened by itself gets the same limits as the page.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
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
    use std::collections::BTreeSet;

    use super::*;

    /// The entry point of the page's script.
    const MAIN_MODULE: &str = "/assets/js/main.js";
    /// A module should read at once; past this, it likely holds two concerns and wants splitting.
    const MODULE_LINES_MAX: usize = 400;

    fn asset(path: &str) -> Option<&'static Asset> {
        ASSETS.iter().find(|a| a.path == path)
    }

    fn text(asset: &'static Asset) -> &'static str {
        std::str::from_utf8(asset.body).unwrap()
    }

    /// The paths of the modules `source` imports. The dashboard writes each static import on
    /// one line of its own (`import { h } from './dom.js';`, `import './errors.js';`) with a
    /// relative specifier; this holds it to that, so that the parse cannot miss one.
    fn imports(path: &str, source: &str) -> Vec<String> {
        source
            .lines()
            .filter(|line| line.starts_with("import ") || line.contains("import("))
            .map(|line| {
                let spec = line
                    .strip_suffix("';")
                    .filter(|l| l.starts_with("import "))
                    .and_then(|l| l.rsplit_once('\''))
                    .map(|(_, spec)| spec)
                    .unwrap_or_else(|| {
                        panic!("{path}: a static import on one line, as `import … '…';`: {line}")
                    });
                let name = spec
                    .strip_prefix("./")
                    .filter(|name| name.ends_with(".js") && !name.contains('/'))
                    .unwrap_or_else(|| {
                        panic!("{path}: import a sibling module, `./name.js`: {line}")
                    });
                format!("/assets/js/{name}")
            })
            .collect()
    }

    /// Depth-first from `path`: every import served as JavaScript, none back to a module
    /// still on `stack` (a circular import).
    fn visit(path: &str, stack: &mut Vec<String>, done: &mut BTreeSet<String>) {
        if done.contains(path) {
            return;
        }
        if let Some(i) = stack.iter().position(|p| p == path) {
            panic!("circular import: {} -> {path}", stack[i..].join(" -> "));
        }
        let importer = stack.last().map_or("index.html", String::as_str);
        let module = asset(path).unwrap_or_else(|| panic!("{importer} imports {path}: not served"));
        assert_eq!(module.content_type, JAVASCRIPT, "{path}");
        let source = text(module);
        let lines = source.lines().count();
        assert!(
            lines <= MODULE_LINES_MAX,
            "{path} has {lines} lines; split it (at most {MODULE_LINES_MAX})"
        );
        stack.push(path.to_owned());
        for import in imports(path, source) {
            visit(&import, stack, done);
        }
        stack.pop();
        done.insert(path.to_owned());
    }

    #[test]
    fn every_asset_the_page_names_is_served() {
        let index = text(&INDEX);
        for name in [
            "/assets/app.css",
            "/assets/dagre.min.js",
            "/assets/layout.js",
        ] {
            assert!(index.contains(name), "index.html loads {name}");
            assert!(asset(name).is_some(), "{name} is served");
        }
        let entry = format!("<script type=\"module\" src=\"{MAIN_MODULE}\"></script>");
        assert!(index.contains(&entry), "index.html loads {entry}");
        let worker = text(asset("/assets/layout-worker.js").unwrap());
        assert!(worker.contains("importScripts('/assets/dagre.min.js', '/assets/layout.js')"));
    }

    #[test]
    fn the_modules_import_each_other_without_cycles_and_all_are_used() {
        let mut done = BTreeSet::new();
        visit(MAIN_MODULE, &mut Vec::new(), &mut done);
        let served: BTreeSet<String> = ASSETS
            .iter()
            .filter(|a| a.path.starts_with("/assets/js/"))
            .map(|a| a.path.to_owned())
            .collect();
        assert_eq!(served, done, "the modules served are those main.js imports");
    }

    #[test]
    fn imports_are_read_one_per_line() {
        let source = "// import './not-this.js';\nimport { h, s } from './dom.js';\n\
                      import './errors.js';\nconst x = 1;\n";
        assert_eq!(
            imports("x.js", source),
            ["/assets/js/dom.js", "/assets/js/errors.js"]
        );
    }

    #[test]
    fn etags_follow_the_content() {
        assert_eq!(etag(b"abc"), etag(b"abc"));
        assert_ne!(etag(b"abc"), etag(b"abd"));
    }
}
