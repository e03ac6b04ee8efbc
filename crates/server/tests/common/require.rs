//! Services a fresh machine may lack (here, Chromium and ChromeDriver for the dashboard's
//! browser tests). A test that needs one it cannot find says so on stderr and returns, passing
//! without having run; with `BATON_REQUIRE_ALL=1` (as `.ci/run` sets) it fails instead.
//! `./test`, at the repository's root, provides them where it can.
//!
//! PostgreSQL is not optional here: the end-to-end tests use it only when asked to
//! (`BATON_E2E_STORE=postgres`), and then fail without it.

use std::io::Write;
use std::path::PathBuf;

/// `BATON_TEST_POSTGRES_URL`, by default `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("BATON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Chromium and ChromeDriver (`BATON_CHROMIUM` and `BATON_CHROMEDRIVER`, else found on the
/// `PATH` or in `/usr/bin`); `None` once the calling test is reported skipped: the test returns.
pub fn chromium() -> Option<(PathBuf, PathBuf)> {
    let chromium = find_binary(&["chromium", "chromium-browser"], "BATON_CHROMIUM");
    let chromedriver = find_binary(&["chromedriver"], "BATON_CHROMEDRIVER");
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Some((chromium, chromedriver)),
        (chromium, _) => {
            let absent = if chromium.is_none() {
                "chromium"
            } else {
                "chromedriver"
            };
            missing(
                "Chromium",
                &format!("{absent} is not on the PATH"),
                "run ./test as root (it installs Debian's chromium and chromium-driver), \
                 or set BATON_CHROMIUM and BATON_CHROMEDRIVER",
            );
            None
        }
    }
}

fn find_binary(names: &[&str], env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Reports the calling test skipped for want of `service`, on stderr past the test harness's
/// capture; or, with `BATON_REQUIRE_ALL=1`, fails it.
pub fn missing(service: &str, why: &str, how: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let target = concat!(env!("CARGO_PKG_NAME"), "/", env!("CARGO_CRATE_NAME"));
    if std::env::var("BATON_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{target} {test} needs {service}: {why}; {how} (BATON_REQUIRE_ALL=1: nothing is skipped)");
    }
    let line = format!(
        "SKIPPED (no {service}) {target} {test}: {why}; {how} (BATON_REQUIRE_ALL=1 makes this a failure)\n"
    );
    // One write, so that the line stays whole among the harness's.
    let _ = std::io::stderr().write_all(line.as_bytes());
}
