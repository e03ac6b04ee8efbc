//! Services a fresh machine may lack (here, a PostgreSQL server). A test that needs one it
//! cannot reach says so on stderr and returns, passing without having run; with
//! `BATON_REQUIRE_ALL=1` (as `.ci/run` sets) it fails instead. `./test`, at the repository's
//! root, provides them where it can.
//!
//! Also compiled (with `#[path]`) into this crate's unit tests and into the engine's and the
//! CLI's tests.

use std::error::Error;
use std::sync::OnceLock;
use std::time::Duration;

// `postgres_url` and `missing`, shared with the server's tests.
include!("skip.rs");

/// The PostgreSQL server's URL if it answers a query (asked once per process); else `None`
/// once the calling test is reported skipped: the test returns.
pub fn postgres() -> Option<String> {
    static ANSWERS: OnceLock<Result<(), String>> = OnceLock::new();
    let url = postgres_url();
    match ANSWERS.get_or_init(|| probe(&url)) {
        Ok(()) => Some(url),
        Err(e) => {
            missing(
                "PostgreSQL",
                &format!("no server answers at {} ({e})", redact(&url)),
                "run ./test as root (it installs and starts one), or set BATON_TEST_POSTGRES_URL",
            );
            None
        }
    }
}

fn probe(url: &str) -> Result<(), String> {
    let url = url.to_owned();
    // A runtime of its own, on a thread of its own: the caller may be inside one.
    std::thread::spawn(move || {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("{e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(chain)?;
            tokio::spawn(conn);
            client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(chain)
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the probe panicked".to_owned()))
}

/// An error and its causes, `: `-separated.
fn chain(e: tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// `url` without its password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split('/').next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{}", &rest[userinfo.len() + 1..])
        }
        _ => url.to_owned(),
    }
}
