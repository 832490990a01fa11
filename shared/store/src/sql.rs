//! What the SQL adapters (Postgres, SQLite) share: conversions between our unsigned counts and SQL's
//! signed 64-bit integers, stored names read back, decoding errors, key arithmetic for range scans,
//! and raising the feed head.

use corebank_domain::{AccountStatus, Currency};
use tokio::sync::watch;

use crate::{StoreError, TransferPhase};

/// A stored value that does not decode into its Rust type.
pub(crate) fn decode_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// A count or version as a signed 64-bit column (`BIGINT`, `INTEGER`); values beyond `i64::MAX`
/// cannot be stored.
pub(crate) fn to_i64(what: &str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Invalid(format!("{what} {value} does not fit a 64-bit integer")))
}

/// A signed 64-bit column read back as a count or version.
pub(crate) fn to_u64(what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{what} is negative: {value}")))
}

/// A stored account status read back.
pub(crate) fn account_status(status: &str) -> Result<AccountStatus, StoreError> {
    match status {
        "ACTIVE" => Ok(AccountStatus::Active),
        "FROZEN" => Ok(AccountStatus::Frozen),
        other => Err(StoreError::Corrupt(format!("unknown account status {other:?}"))),
    }
}

/// A stored currency code read back.
pub(crate) fn currency(code: &str) -> Result<Currency, StoreError> {
    Currency::parse(code).map_err(|e| decode_error("currency", e))
}

/// A stored transfer status read back.
pub(crate) fn transfer_phase(status: &str) -> Result<TransferPhase, StoreError> {
    TransferPhase::parse(status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown transfer status {status:?}")))
}

/// An offset or limit for `OFFSET`/`LIMIT`: anything beyond `i64::MAX` means "all".
pub(crate) fn clamp_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Raises the feed head to `position`, never lowers it (concurrent appends may report out of order);
/// only a change wakes the tailing readers.
pub(crate) fn raise(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|current| {
        let higher = position > *current;
        if higher {
            *current = position;
        }
        higher
    });
}

/// The least string above every string that starts with `prefix` (in code point order, which is the
/// byte order of UTF-8, of Postgres' `C` collation and of SQLite's `BINARY` collation), or `None` when
/// no string is above them all: listing streams by prefix is then a range scan
/// `prefix <= id < upper` on the key's index.
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn prefix_upper_bound_is_the_least_string_above_every_extension() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("account-").as_deref(), Some("account."));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}\u{10FFFF}"), None);
        assert_eq!(prefix_upper_bound("x\u{D7FF}").as_deref(), Some("x\u{E000}"));
        let upper = prefix_upper_bound("ab").unwrap();
        for extension in ["ab", "ab\u{0}", "ab\u{10FFFF}\u{10FFFF}", "abzzzz"] {
            assert!(extension < upper.as_str(), "{extension:?} sorts below {upper:?}");
        }
        assert!("ac" >= upper.as_str());
    }
}
