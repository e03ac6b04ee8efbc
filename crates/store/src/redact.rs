//! Store URLs without their secrets, for logs and error messages.

/// `url` with every password replaced by `***`, whatever the form: the `user:password@` of a
/// URL's authority, and each `password=` parameter (any case) of a URL's query or of a
/// `key=value` connection string. A password with a raw `?` or `#` in the authority is not a
/// valid URL; it is not looked for there.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = url.find("://").map(|i| i + 3) {
        let rest = &url[start..];
        let before_query = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
        if let Some(at) = before_query.rfind('@') {
            if let Some(colon) = before_query[..at].find(':') {
                out = format!("{}{}:***{}", &url[..start], &rest[..colon], &rest[at..]);
            }
        }
    }
    const KEY: &str = "password=";
    let mut from = 0;
    while let Some(i) = out[from..].to_ascii_lowercase().find(KEY).map(|i| from + i) {
        let value = i + KEY.len();
        let bounded = i == 0
            || out[..i]
                .chars()
                .next_back()
                .is_some_and(|c| matches!(c, '?' | '&' | ';') || c.is_whitespace());
        if !bounded {
            from = value;
            continue;
        }
        let end = out[value..]
            .find(|c: char| matches!(c, '&' | '#' | ';') || c.is_whitespace())
            .map_or(out.len(), |n| value + n);
        out.replace_range(value..end, "***");
        from = value + 3;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_whatever_the_form() {
        for (url, shown) in [
            (
                "postgres://baton:s3cret@db:5432/x",
                "postgres://baton:***@db:5432/x",
            ),
            ("postgres://baton@db/x", "postgres://baton@db/x"),
            ("postgres://db/x", "postgres://db/x"),
            (
                "postgres://baton:s3/cr@et@db/x",
                "postgres://baton:***@db/x",
            ),
            (
                "host=db user=baton password=s3cret dbname=x",
                "host=db user=baton password=*** dbname=x",
            ),
            (
                "postgresql://db/x?user=a&password=b&sslmode=disable",
                "postgresql://db/x?user=a&password=***&sslmode=disable",
            ),
            (
                "postgres://db/x?PassWord=s3cret",
                "postgres://db/x?PassWord=***",
            ),
            (
                "postgres://db/x?password=a@b:c#frag",
                "postgres://db/x?password=***#frag",
            ),
            (
                "postgres://u:p@db/x?password=q&sslmode=require&password=r",
                "postgres://u:***@db/x?password=***&sslmode=require&password=***",
            ),
            // Not a password parameter: left as it is.
            (
                "postgres://db/x?sslpassword_hint=1&application_name=password=",
                "postgres://db/x?sslpassword_hint=1&application_name=password=",
            ),
            (
                "sqlite:///var/lib/baton/baton.db",
                "sqlite:///var/lib/baton/baton.db",
            ),
            ("/var/lib/baton/baton.db", "/var/lib/baton/baton.db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
