//! Key arithmetic the SQL adapters share.

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
