//! Whole numbers as JSON may spell them: `2` or `2.0`. JSON does not tell the two apart, and
//! neither does JSON Schema (`2.0` is an `integer`), but serde takes only the first for an
//! integer field: these read both, so that no request the API's schema admits is refused for
//! how a client's JSON library writes a number. Used with `#[serde(deserialize_with)]`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

/// An integer field that also takes a float with no fractional part, in `T`'s range.
pub fn de<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    d.deserialize_any(Whole(PhantomData))
}

/// [`de`] for an optional field (`null` is `None`).
pub fn opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    d.deserialize_option(Opt(PhantomData))
}

/// [`de`] for a fencing token, a `u64` the API declares `int64`: from 0 to 2^63 - 1, so that a
/// request is refused exactly when its schema refuses it. The refusal names `token`, which a
/// batched report's path (`reports[i]`) does not reach.
pub fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v: u64 = de(d)?;
    if v > i64::MAX as u64 {
        return Err(de::Error::invalid_value(
            de::Unexpected::Unsigned(v),
            &"a fencing token (`token`) from 0 to 2^63 - 1",
        ));
    }
    Ok(v)
}

struct Whole<T>(PhantomData<T>);

impl<T: TryFrom<u64> + TryFrom<i64>> Whole<T> {
    fn expected() -> &'static str {
        // The type's name (`u64`): what serde says for an integer field.
        std::any::type_name::<T>()
    }
}

impl<'de, T: TryFrom<u64> + TryFrom<i64>> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(Self::expected())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        let refused = || E::invalid_type(de::Unexpected::Float(v), &self);
        // Up to 2^53 a float is the integer it spells; past it, it may not be.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.fract() != 0.0 || !(-EXACT..=EXACT).contains(&v) {
            return Err(refused());
        }
        if v >= 0.0 {
            self.visit_u64(v as u64)
        } else {
            self.visit_i64(v as i64)
        }
    }
}

struct Opt<T>(PhantomData<T>);

impl<'de, T: TryFrom<u64> + TryFrom<i64>> Visitor<'de> for Opt<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(Whole::<T>::expected())
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        de(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Probe {
        #[serde(deserialize_with = "super::de")]
        n: u32,
        #[serde(default, deserialize_with = "super::opt")]
        o: Option<i32>,
    }

    #[test]
    fn whole_floats_are_integers_and_others_are_not() {
        let read = |s: &str| serde_json::from_str::<Probe>(s);
        assert_eq!(read(r#"{"n": 2}"#).unwrap(), Probe { n: 2, o: None });
        assert_eq!(
            read(r#"{"n": 2.0, "o": -3.0}"#).unwrap(),
            Probe { n: 2, o: Some(-3) }
        );
        assert_eq!(read(r#"{"n": 1, "o": null}"#).unwrap().o, None);
        for bad in [
            r#"{"n": 2.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": "2"}"#,
            r#"{"n": 1e300}"#,
        ] {
            let err = read(bad).unwrap_err().to_string();
            assert!(err.contains("u32"), "{bad}: {err}");
        }
    }

    #[derive(Debug, Deserialize)]
    struct Token {
        #[serde(deserialize_with = "super::int64")]
        t: u64,
    }

    #[test]
    fn an_int64_stops_at_two_to_the_63() {
        let read = |s: &str| serde_json::from_str::<Token>(s).map(|t| t.t);
        assert_eq!(
            read(r#"{"t": 9223372036854775807}"#).unwrap(),
            i64::MAX as u64
        );
        assert_eq!(read(r#"{"t": 7.0}"#).unwrap(), 7);
        for bad in [r#"{"t": 9223372036854775808}"#, r#"{"t": -1}"#] {
            assert!(read(bad).is_err(), "{bad}");
        }
        let past = read(r#"{"t": 9223372036854775808}"#)
            .unwrap_err()
            .to_string();
        assert!(
            past.contains("fencing token (`token`) from 0 to 2^63 - 1"),
            "{past}"
        );
    }
}
