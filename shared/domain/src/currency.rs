//! ISO 4217 currencies with a defined minor unit.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Active ISO 4217 codes whose minor unit is not 2, with that minor unit.
const NON_TWO_DIGIT: &[(&str, u8)] = &[
    ("BHD", 3),
    ("BIF", 0),
    ("CLF", 4),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("PYG", 0),
    ("RWF", 0),
    ("TND", 3),
    ("UGX", 0),
    ("UYI", 0),
    ("UYW", 4),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
];

/// Active ISO 4217 codes whose minor unit is 2. Codes without a minor unit (precious metals, XDR, test
/// codes) are deliberately absent: an account cannot hold them.
const TWO_DIGIT: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BMD", "BND",
    "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE", "CHF", "CHW", "CNY", "COP",
    "COU", "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD",
    "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK",
    "NPR", "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT",
    "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "USN", "UYU", "UZS", "VED", "VES", "WST", "XCD", "XCG",
    "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 currency: its upper-case code and the number of minor digits it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    minor_digits: u8,
}

/// Why a currency code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("currency must be an active ISO 4217 code in upper case with a minor unit, got {0:?}")]
pub struct UnknownCurrency(pub String);

impl Currency {
    /// Looks up an upper-case ISO 4217 code. Lower case is refused rather than folded, so a stored code
    /// always reads back exactly as it was sent.
    pub fn parse(code: &str) -> Result<Self, UnknownCurrency> {
        let unknown = || UnknownCurrency(code.chars().take(16).collect());
        let bytes: [u8; 3] = code.as_bytes().try_into().map_err(|_| unknown())?;
        if !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(unknown());
        }
        let minor_digits = if let Some((_, d)) = NON_TWO_DIGIT.iter().find(|(c, _)| *c == code) {
            *d
        } else if TWO_DIGIT.contains(&code) {
            2
        } else {
            return Err(unknown());
        };
        Ok(Self { code: bytes, minor_digits })
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // The bytes were checked to be ASCII upper case in `parse`, so this never falls back.
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    /// The ISO 4217 minor unit: how many decimal places an amount may have.
    pub fn minor_digits(&self) -> u8 {
        self.minor_digits
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl AsRef<str> for Currency {
    fn as_ref(&self) -> &str {
        self.code()
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_carry_their_iso_minor_unit() {
        let digits = |c: &str| Currency::parse(c).map(|c| c.minor_digits());
        assert_eq!(digits("USD"), Ok(2));
        assert_eq!(digits("JPY"), Ok(0));
        assert_eq!(digits("BHD"), Ok(3));
        assert_eq!(digits("NGN"), Ok(2));
    }

    #[test]
    fn lower_case_unknown_and_minorless_codes_are_refused() {
        for bad in ["usd", "US", "USDX", "XAU", "XXX", "ABC", "", "ÜSD"] {
            assert!(Currency::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn the_tables_hold_no_duplicates() {
        let mut all: Vec<&str> = TWO_DIGIT.to_vec();
        all.extend(NON_TWO_DIGIT.iter().map(|(c, _)| *c));
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }
}
