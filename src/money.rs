//! USD amounts. Every known payment asset is USDC with 6 decimals, so one USD is
//! exactly 1_000_000 atomic token units. Config and responses use decimal strings
//! (`"0.05"`); everything inside uses atomic `u64` units. Floats never appear.

use std::fmt;

/// Atomic units per USD (USDC has 6 decimals).
pub const UNITS_PER_USD: u64 = 1_000_000;
const DECIMALS: usize = 6;

/// An amount of USD(C) in atomic units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsdParseError {
    #[error("empty amount")]
    Empty,
    #[error("`{0}` is not a decimal USD amount like \"0.05\" (digits and at most one '.')")]
    Syntax(String),
    #[error("`{0}` has more than 6 decimal places (USDC's precision)")]
    TooPrecise(String),
    #[error("`{0}` is too large")]
    Overflow(String),
}

impl Usd {
    pub const ZERO: Usd = Usd(0);

    /// Parses a decimal USD string such as `"0.05"`, `"2"` or `"10.000001"`.
    pub fn parse(s: &str) -> Result<Usd, UsdParseError> {
        if s.is_empty() {
            return Err(UsdParseError::Empty);
        }
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() && frac.is_empty()
            || !all_digits(int)
            || !all_digits(frac)
            || (s.contains('.') && frac.is_empty())
        {
            return Err(UsdParseError::Syntax(s.to_string()));
        }
        if frac.len() > DECIMALS {
            return Err(UsdParseError::TooPrecise(s.to_string()));
        }
        let overflow = || UsdParseError::Overflow(s.to_string());
        let int_units: u64 = if int.is_empty() {
            0
        } else {
            int.parse::<u64>().map_err(|_| overflow())?
        };
        let mut frac_units: u64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_units += u64::from(b - b'0') * 10u64.pow((DECIMALS - 1 - i) as u32);
        }
        int_units
            .checked_mul(UNITS_PER_USD)
            .and_then(|v| v.checked_add(frac_units))
            .map(Usd)
            .ok_or_else(overflow)
    }

    pub fn atomic(self) -> u64 {
        self.0
    }

    pub fn saturating_add(self, o: Usd) -> Usd {
        Usd(self.0.saturating_add(o.0))
    }

    pub fn saturating_sub(self, o: Usd) -> Usd {
        Usd(self.0.saturating_sub(o.0))
    }
}

impl fmt::Display for Usd {
    /// Shortest exact decimal: 1000 → `0.001`, 1_500_000 → `1.5`, 0 → `0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let int = self.0 / UNITS_PER_USD;
        let frac = self.0 % UNITS_PER_USD;
        if frac == 0 {
            return write!(f, "{int}");
        }
        let digits = format!("{frac:06}");
        write!(f, "{int}.{}", digits.trim_end_matches('0'))
    }
}

impl serde::Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Usd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Usd;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal USD string such as \"0.05\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Usd, E> {
                Usd::parse(v).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Usd, E> {
                Err(E::custom(format!(
                    "USD amounts must be quoted decimal strings, write \"{v}\" instead of {v}"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Usd, E> {
                Err(E::custom(format!(
                    "USD amounts must be quoted decimal strings, write \"{v}\" instead of {v}"
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Usd, E> {
                self.visit_i64(v as i64)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        for (s, units, back) in [
            ("0.05", 50_000, "0.05"),
            ("2", 2_000_000, "2"),
            ("2.00", 2_000_000, "2"),
            (".5", 500_000, "0.5"),
            ("0.000001", 1, "0.000001"),
            ("0.001", 1_000, "0.001"),
            ("100.123456", 100_123_456, "100.123456"),
        ] {
            let u = Usd::parse(s).unwrap();
            assert_eq!(u.0, units, "{s}");
            assert_eq!(u.to_string(), back);
        }
        assert_eq!(Usd(0).to_string(), "0");
    }

    #[test]
    fn refuses_bad_amounts() {
        for s in ["", "-1", "+1", "1e3", "0x10", "1.", ".", " 1", "1,5", "abc"] {
            assert!(Usd::parse(s).is_err(), "{s:?} should fail");
        }
        assert!(matches!(
            Usd::parse("0.0000001"),
            Err(UsdParseError::TooPrecise(_))
        ));
        assert!(matches!(
            Usd::parse("99999999999999999999"),
            Err(UsdParseError::Overflow(_))
        ));
    }
}
