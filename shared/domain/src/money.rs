//! Exact money: integer minor units inside, exact decimal text at the edge.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Currency;

/// The largest amount a single command may move: 10^15 minor units.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

/// The largest balance an account may hold: 10^17 minor units.
pub const MAX_BALANCE_MINOR: i64 = 100_000_000_000_000_000;

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The text is not a plain JSON number (a string, `null`, exponent notation, ...).
    #[error("amount must be a plain decimal number without exponent")]
    NotANumber,
    /// Zero or negative.
    #[error("amount must be greater than zero")]
    NotPositive,
    /// More decimal places than the currency's minor unit allows.
    #[error("amount has more decimal places than {currency} allows ({digits})")]
    TooPrecise {
        /// The currency of the command.
        currency: Currency,
        /// Its ISO 4217 minor unit.
        digits: u8,
    },
    /// Above 10^15 minor units.
    #[error("amount exceeds the maximum of {MAX_AMOUNT_MINOR} minor units")]
    TooLarge,
}

/// A strictly positive amount of money in minor units, at most [`MAX_AMOUNT_MINOR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

impl Amount {
    /// Wraps a number of minor units, checking the range `1 ..= 10^15`.
    pub fn from_minor(minor: i64) -> Result<Self, MoneyError> {
        if minor <= 0 {
            Err(MoneyError::NotPositive)
        } else if minor > MAX_AMOUNT_MINOR {
            Err(MoneyError::TooLarge)
        } else {
            Ok(Self(minor))
        }
    }

    /// Parses the exact text of a JSON number in major units (`1000`, `10.25`) for `currency`.
    ///
    /// The text is never converted through a binary float: `10.255` USD is refused, `10.250` is
    /// accepted, and exponent notation is refused outright.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let minor = parse_decimal_minor(text.trim(), currency)?;
        Self::from_minor(minor)
    }

    /// The number of minor units.
    pub fn minor(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Events and snapshots carry minor units as decimal strings so that no consumer reads them through a
/// binary float.
impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let minor = minor_string::deserialize(d)?;
        Amount::from_minor(minor).map_err(serde::de::Error::custom)
    }
}

/// Serde helper for `i64` minor units written as a decimal string (`"1025"`).
pub mod minor_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the integer as a string.
    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// Reads a string (or, leniently, an integer) of minor units.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Raw::Int(i) => Ok(i),
        }
    }
}

fn parse_decimal_minor(text: &str, currency: Currency) -> Result<i64, MoneyError> {
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if body.bytes().any(|b| b == b'e' || b == b'E') {
        return Err(MoneyError::NotANumber);
    }
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(int_part) || (int_part.len() > 1 && int_part.starts_with('0')) {
        return Err(MoneyError::NotANumber);
    }
    let frac = match frac_part {
        Some(f) if !digits_only(f) => return Err(MoneyError::NotANumber),
        Some(f) => f.trim_end_matches('0'),
        None => "",
    };
    let digits = currency.minor_digits();
    if frac.len() > usize::from(digits) {
        return Err(MoneyError::TooPrecise { currency, digits });
    }
    let int_significant = int_part.trim_start_matches('0');
    if negative && (int_significant.len() + frac.len()) > 0 {
        return Err(MoneyError::NotPositive);
    }
    // 10^15 minor units never needs more than 19 integer digits whatever the exponent; anything longer
    // is too large and is refused before any arithmetic.
    if int_significant.len() > 19 {
        return Err(MoneyError::TooLarge);
    }
    let scale = 10_i128.pow(u32::from(digits));
    let int_value: i128 = int_part.parse().map_err(|_| MoneyError::NotANumber)?;
    let mut frac_value: i128 = 0;
    for (i, b) in frac.bytes().enumerate() {
        let place = u32::from(digits) - 1 - u32::try_from(i).map_err(|_| MoneyError::TooLarge)?;
        frac_value += i128::from(b - b'0') * 10_i128.pow(place);
    }
    let total = int_value * scale + frac_value;
    if total > i128::from(MAX_AMOUNT_MINOR) {
        return Err(MoneyError::TooLarge);
    }
    i64::try_from(total).map_err(|_| MoneyError::TooLarge)
}

/// Renders minor units as an exact decimal in major units, without trailing zeros (`1050` USD -> `10.5`,
/// `-3` JPY -> `-3`). The result is valid JSON number text.
pub fn format_major(minor: i64, currency: Currency) -> String {
    let digits = u32::from(currency.minor_digits());
    let abs = minor.unsigned_abs();
    let sign = if minor < 0 { "-" } else { "" };
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10_u64.pow(digits);
    let int = abs / scale;
    let frac = abs % scale;
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let width = digits as usize;
    let frac_text = format!("{frac:0width$}");
    format!("{sign}{int}.{}", frac_text.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap_or_else(|e| panic!("{e}"))
    }

    fn cur(code: &str) -> Currency {
        Currency::parse(code).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn whole_and_decimal_major_units_parse_exactly() {
        assert_eq!(Amount::parse_major("1000", usd()).map(Amount::minor), Ok(100_000));
        assert_eq!(Amount::parse_major("10.25", usd()).map(Amount::minor), Ok(1025));
        assert_eq!(Amount::parse_major("10.250", usd()).map(Amount::minor), Ok(1025));
        assert_eq!(Amount::parse_major("0.01", usd()).map(Amount::minor), Ok(1));
        assert_eq!(Amount::parse_major("1000", cur("JPY")).map(Amount::minor), Ok(1000));
        assert_eq!(Amount::parse_major("1.234", cur("BHD")).map(Amount::minor), Ok(1234));
    }

    #[test]
    fn too_many_decimals_for_the_currency_are_refused() {
        assert!(matches!(Amount::parse_major("10.255", usd()), Err(MoneyError::TooPrecise { .. })));
        assert!(matches!(Amount::parse_major("1.5", cur("JPY")), Err(MoneyError::TooPrecise { .. })));
        assert!(matches!(Amount::parse_major("1.2345", cur("BHD")), Err(MoneyError::TooPrecise { .. })));
    }

    #[test]
    fn zero_negative_exponent_and_non_numbers_are_refused() {
        assert_eq!(Amount::parse_major("0", usd()), Err(MoneyError::NotPositive));
        assert_eq!(Amount::parse_major("0.00", usd()), Err(MoneyError::NotPositive));
        assert_eq!(Amount::parse_major("-5", usd()), Err(MoneyError::NotPositive));
        assert_eq!(Amount::parse_major("-0", usd()), Err(MoneyError::NotPositive));
        assert_eq!(Amount::parse_major("1e3", usd()), Err(MoneyError::NotANumber));
        assert_eq!(Amount::parse_major("1E3", usd()), Err(MoneyError::NotANumber));
        for bad in ["\"10\"", "null", "true", "", ".5", "5.", "01", "1.2.3", "[1]", "+5"] {
            assert_eq!(Amount::parse_major(bad, usd()), Err(MoneyError::NotANumber), "{bad}");
        }
    }

    #[test]
    fn the_amount_limit_is_inclusive_at_ten_to_the_fifteen_minor_units() {
        assert_eq!(Amount::parse_major("10000000000000", usd()).map(Amount::minor), Ok(MAX_AMOUNT_MINOR));
        assert_eq!(Amount::parse_major("10000000000000.01", usd()), Err(MoneyError::TooLarge));
        assert_eq!(Amount::parse_major("99999999999999999999999999", usd()), Err(MoneyError::TooLarge));
    }

    #[test]
    fn major_units_render_without_trailing_zeros() {
        assert_eq!(format_major(100_000, usd()), "1000");
        assert_eq!(format_major(1050, usd()), "10.5");
        assert_eq!(format_major(1025, usd()), "10.25");
        assert_eq!(format_major(1, usd()), "0.01");
        assert_eq!(format_major(-1, usd()), "-0.01");
        assert_eq!(format_major(0, usd()), "0");
        assert_eq!(format_major(1234, cur("BHD")), "1.234");
        assert_eq!(format_major(7, cur("JPY")), "7");
    }

    #[test]
    fn amounts_travel_as_strings_of_minor_units() {
        let a = Amount::from_minor(1025).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(serde_json::to_string(&a).ok(), Some("\"1025\"".to_owned()));
        assert_eq!(serde_json::from_str::<Amount>("\"1025\"").ok(), Some(a));
    }
}
