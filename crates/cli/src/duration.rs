//! Durations on the command line: milliseconds, or a number with a unit.

/// `1500`, `500ms`, `30s`, `1m`, `1h`, `1d`, as milliseconds.
pub fn parse_ms(s: &str) -> Result<u64, String> {
    let expected = || format!("{s:?}: expected milliseconds, or a number with ms, s, m, h or d");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| expected())?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(expected()),
    };
    n.checked_mul(scale).ok_or_else(expected)
}

/// A retention: as [`parse_ms`] (`30d`, `12h`), `0` keeping forever.
pub fn parse_retention(s: &str) -> Result<u64, String> {
    parse_ms(s).map_err(|_| {
        format!("{s:?}: expected a duration such as 30d, 12h, 90m or 45s (0 keeps forever)")
    })
}

/// A duration as the flags take it: `30d`, `12h`, `90s`, `250ms`; `0` for none.
pub fn show_ms(ms: u64) -> String {
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    if ms == 0 {
        "0".into()
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_ms("1500"), Ok(1_500));
        assert_eq!(parse_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_retention("0"), Ok(0));
        assert!(parse_retention("30 days").unwrap_err().contains("30d"));
        assert!(parse_ms("1w").is_err());
        assert!(parse_ms("99999999999999999999d").is_err());
        assert_eq!(show_ms(30 * 86_400_000), "30d");
        assert_eq!(show_ms(90_000), "90s");
        assert_eq!(show_ms(1_500), "1500ms");
        assert_eq!(show_ms(0), "0");
    }
}
