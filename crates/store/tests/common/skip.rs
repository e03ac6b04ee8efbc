// Included (`include!`) by the store's and the server's `tests/common/require.rs`: where
// PostgreSQL is looked for, and how a test missing a service is skipped or, under
// `BATON_REQUIRE_ALL=1`, failed.

/// `BATON_TEST_POSTGRES_URL`, by default `postgres://postgres@127.0.0.1:5432/test`.
pub fn postgres_url() -> String {
    std::env::var("BATON_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Reports the calling test skipped for want of `service`, on stderr past the test harness's
/// capture; or, with `BATON_REQUIRE_ALL=1`, fails it.
pub fn missing(service: &str, why: &str, how: &str) {
    use std::io::Write;
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
