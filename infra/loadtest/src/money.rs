//! Currency minor units and integer money arithmetic for the client-side expectations.
//!
//! The tool sends whole major units (`"amount": 250`) and keeps every expectation in integer minor units,
//! the way the server stores money; it never adds floats.

/// ISO 4217 minor digits for the currencies the tool knows; everything else is taken to have 2.
pub(crate) fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX" | "UYI"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `10^digits`, the number of minor units in one major unit.
pub(crate) fn scale(digits: u32) -> i64 {
    10_i64.pow(digits)
}

/// Whole major units to minor units; `None` when it would overflow.
pub(crate) fn to_minor(major: u64, digits: u32) -> Option<i64> {
    i64::try_from(major).ok()?.checked_mul(scale(digits))
}

/// Minor units rendered as an exact decimal in major units (`1025`, 2 digits -> `10.25`).
pub(crate) fn format_minor(minor: i64, digits: u32) -> String {
    if digits == 0 {
        return minor.to_string();
    }
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let scale = 10_u64.pow(digits);
    let width = usize::try_from(digits).unwrap_or(2);
    format!("{sign}{}.{:0width$}", abs / scale, abs % scale)
}

/// A currency code as the API accepts it: three upper-case ASCII letters.
pub(crate) fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_digits_follow_iso_4217() {
        assert_eq!(minor_digits("USD"), 2);
        assert_eq!(minor_digits("EUR"), 2);
        assert_eq!(minor_digits("JPY"), 0);
        assert_eq!(minor_digits("BHD"), 3);
        assert_eq!(minor_digits("KWD"), 3);
    }

    #[test]
    fn to_minor_scales_and_checks_overflow() {
        assert_eq!(to_minor(100, 2), Some(10_000));
        assert_eq!(to_minor(100, 0), Some(100));
        assert_eq!(to_minor(7, 3), Some(7_000));
        assert_eq!(to_minor(u64::MAX, 2), None);
        assert_eq!(to_minor(u64::MAX / 10, 2), None);
    }

    #[test]
    fn format_minor_is_exact() {
        assert_eq!(format_minor(1025, 2), "10.25");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(1_000, 3), "1.000");
        assert_eq!(format_minor(42, 0), "42");
    }

    #[test]
    fn currency_codes() {
        assert!(is_currency_code("USD"));
        assert!(!is_currency_code("usd"));
        assert!(!is_currency_code("US"));
        assert!(!is_currency_code("USDT"));
    }
}
