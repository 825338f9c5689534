//! Exact money: integer picodollars (10⁻¹² USD). One unit is a millionth of a cent of a
//! millionth, so every published rate in dollars per million tokens is a whole number of
//! picodollars per token and every cost is exact. Formatting and parsing live here only.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub};

/// Picodollars per dollar.
const SCALE: i64 = 1_000_000_000_000;
const SCALE_DIGITS: usize = 12;

/// An exact amount of US dollars. Serialised as a decimal string (`"0.0123456"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, ts_rs::TS)]
#[ts(type = "string")]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("'{0}' is not a decimal number of dollars (write it like \"12.50\")")]
    Syntax(String),
    #[error("'{0}' has more than 12 decimal places (the smallest amount is $0.000000000001)")]
    TooPrecise(String),
    #[error("'{0}' is too large (the largest amount is $9,000,000)")]
    TooLarge(String),
}

impl Money {
    pub const ZERO: Money = Money(0);
    /// The largest amount accepted from input; leaves headroom so sums never overflow in practice.
    pub const MAX_INPUT: Money = Money(9_000_000 * SCALE);

    pub const fn from_picos(p: i64) -> Money {
        Money(p)
    }
    pub const fn picos(self) -> i64 {
        self.0
    }
    pub const fn from_dollars(d: i64) -> Money {
        Money(d * SCALE)
    }
    /// A rate per token times a token count, saturating (a saturated cost can only block, never admit).
    pub fn per_token(self, tokens: u64) -> Money {
        let p = i128::from(self.0) * i128::from(tokens);
        Money(i64::try_from(p).unwrap_or(i64::MAX))
    }
    /// Multiplies by `num/den`, rounding up to the next picodollar (never under-charges).
    pub fn scale(self, num: i64, den: i64) -> Money {
        if den <= 0 {
            return self;
        }
        let p = i128::from(self.0) * i128::from(num);
        let d = i128::from(den);
        let q = p.div_euclid(d) + i128::from(p.rem_euclid(d) != 0);
        Money(i64::try_from(q).unwrap_or(i64::MAX))
    }
    pub fn saturating_add(self, o: Money) -> Money {
        Money(self.0.saturating_add(o.0))
    }
    /// Dollars as a float, for Prometheus only (docs/metrics.md): never turned back into money.
    pub fn approx_dollars(self) -> f64 {
        self.picos() as f64 / 1e12
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Parses a decimal string such as `"25"`, `"0.48"` or `"1e-3"` is refused (plain decimals only).
    pub fn parse(s: &str) -> Result<Money, MoneyError> {
        let t = s.trim();
        let err = || MoneyError::Syntax(s.to_string());
        let (neg, body) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err());
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > SCALE_DIGITS {
            return Err(MoneyError::TooPrecise(s.to_string()));
        }
        let int = int.trim_start_matches('0');
        let too_large = || MoneyError::TooLarge(s.to_string());
        if int.len() > 7 {
            return Err(too_large());
        }
        let whole: i64 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| err())?
        };
        let mut f: i64 = if frac.is_empty() {
            0
        } else {
            frac.parse().map_err(|_| err())?
        };
        for _ in frac.len()..SCALE_DIGITS {
            f *= 10;
        }
        let v = whole
            .checked_mul(SCALE)
            .and_then(|w| w.checked_add(f))
            .map(Money)
            .filter(|v| *v <= Money::MAX_INPUT)
            .ok_or_else(too_large)?;
        Ok(if neg { Money(-v.0) } else { v })
    }

    /// Dollars with two decimals for messages (`$24.91`); rounds up so a cap is never understated.
    pub fn display_cents(self) -> String {
        let cents = self.scale(100, SCALE);
        let sign = if cents.0 < 0 { "-" } else { "" };
        let c = cents.0.unsigned_abs();
        format!("{sign}${}.{:02}", c / 100, c % 100)
    }
}

impl fmt::Display for Money {
    /// Exact decimal: no trailing zeros, no exponent (`0.0123456`, `25`, `-1.5`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0.unsigned_abs();
        let sign = if self.0 < 0 { "-" } else { "" };
        let (whole, frac) = (v / SCALE as u64, v % SCALE as u64);
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let digits = format!("{frac:012}");
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, o: Money) -> Money {
        self.saturating_add(o)
    }
}
impl AddAssign for Money {
    fn add_assign(&mut self, o: Money) {
        *self = self.saturating_add(o);
    }
}
impl Sub for Money {
    type Output = Money;
    fn sub(self, o: Money) -> Money {
        Money(self.0.saturating_sub(o.0))
    }
}
impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    /// Accepts a decimal string (read exactly) or a JSON number. A whole number is exact; a
    /// fractional one arrives as the nearest binary float, which is read back as the shortest
    /// decimal that names it (`0.000001`, never `1e-6`). That is the literal itself for up to
    /// 15 significant digits; the REST API refuses longer fractional literals before they get
    /// here (the REST API's parser), so no amount is ever rounded silently.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        d.deserialize_any(MoneyVisitor)
    }
}

struct MoneyVisitor;

impl serde::de::Visitor<'_> for MoneyVisitor {
    type Value = Money;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a decimal string of dollars, like \"12.50\"")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Money, E> {
        Money::parse(v).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Money, E> {
        Money::parse(&v.to_string()).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Money, E> {
        Money::parse(&v.to_string()).map_err(E::custom)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Money, E> {
        if !v.is_finite() {
            return Err(E::custom("expected a finite amount of dollars"));
        }
        // Rust's `Display` for floats: the shortest round-trip digits, never an exponent.
        Money::parse(&format!("{v}")).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_exactly() {
        for (input, picos, shown) in [
            ("25", 25 * SCALE, "25"),
            ("0.48", 480_000_000_000, "0.48"),
            ("0.0123456", 12_345_600_000, "0.0123456"),
            ("0.000000000001", 1, "0.000000000001"),
            ("007.50", 7_500_000_000_000, "7.5"),
            (".5", 500_000_000_000, "0.5"),
            ("-1.25", -1_250_000_000_000, "-1.25"),
        ] {
            let m = Money::parse(input).unwrap();
            assert_eq!(m.picos(), picos, "{input}");
            assert_eq!(m.to_string(), shown, "{input}");
        }
    }

    #[test]
    fn refuses_bad_amounts() {
        for bad in ["", ".", "abc", "1e3", "1.2.3", "1,5", "0x10", " - 1"] {
            assert!(
                matches!(Money::parse(bad), Err(MoneyError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Money::parse("0.0000000000001"),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(
            Money::parse("9000000.01"),
            Err(MoneyError::TooLarge(_))
        ));
        // Seven digits fit the syntax check but overflow picodollars (found by tests/properties).
        for big in ["123456789", "9999999", "9999999.999999999999"] {
            assert!(
                matches!(Money::parse(big), Err(MoneyError::TooLarge(_))),
                "{big}"
            );
        }
    }

    #[test]
    fn json_number_and_string_are_the_same_exact_value() {
        let a: Money = serde_json::from_str("0.1").unwrap();
        let b: Money = serde_json::from_str("\"0.1\"").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.picos(), 100_000_000_000);
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"0.1\"");
        assert!(serde_json::from_str::<Money>("true").is_err());
        for (json, picos) in [
            ("0.000001", 1_000_000),
            ("1e-6", 1_000_000),
            ("0.000000000001", 1),
            ("123456.789012", 123_456_789_012_000_000),
            ("25", 25 * SCALE),
            ("-3", -3 * SCALE),
        ] {
            let m: Money = serde_json::from_str(json).unwrap();
            assert_eq!(m.picos(), picos, "{json}");
        }
        assert!(serde_json::from_str::<Money>("1e300").is_err());
    }

    #[test]
    fn scale_rounds_up_and_cents_display_never_understates() {
        assert_eq!(Money(10).scale(11, 10), Money(11));
        assert_eq!(Money(5).scale(1, 2), Money(3));
        assert_eq!(Money::parse("24.911").unwrap().display_cents(), "$24.92");
        assert_eq!(Money::parse("25").unwrap().display_cents(), "$25.00");
        assert_eq!(Money::ZERO.display_cents(), "$0.00");
    }

    #[test]
    fn per_token_saturates_instead_of_wrapping() {
        assert_eq!(
            Money(3_000_000).per_token(1_000_000),
            Money(3_000_000_000_000)
        );
        assert_eq!(Money(i64::MAX / 2).per_token(10), Money(i64::MAX));
    }
}
