//! Services a fresh machine may lack (here, Chromium and ChromeDriver for the dashboard's
//! browser tests). A test that needs one it cannot find says so on stderr and returns, passing
//! without having run; with `BATON_REQUIRE_ALL=1` (as `.ci/run` sets) it fails instead.
//! `./test`, at the repository's root, provides them where it can.
//!
//! PostgreSQL is not optional here: the end-to-end tests use it only when asked to
//! (`BATON_E2E_STORE=postgres`), and then fail without it.

use std::path::PathBuf;

// `postgres_url` and `missing`, as the store's tests have them.
include!("../../../store/tests/common/skip.rs");

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
