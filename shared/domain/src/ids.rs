//! Identifiers and short texts, parsed once at the edge.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::stream::{StreamId, StreamKind};

/// Why an identifier or text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be {rule}")]
pub struct IdError {
    /// The field's name as a client sends it.
    pub field: &'static str,
    /// What the field must look like.
    pub rule: &'static str,
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $min:literal, $max:literal, $rule:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks length and alphabet (`[A-Za-z0-9._:-]`).
            pub fn parse(value: &str) -> Result<Self, IdError> {
                let len = value.chars().count();
                if (($min)..=($max)).contains(&len) && value.chars().all(is_id_char) {
                    Ok(Self(value.to_owned()))
                } else {
                    Err(IdError { field: $field, rule: $rule })
                }
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// An account's id: 3..64 characters of `[A-Za-z0-9._:-]`.
    AccountId, "accountId", 3, 64, "3 to 64 characters of [A-Za-z0-9._:-]"
);
id_type!(
    /// The owner of an account: 3..64 characters of `[A-Za-z0-9._:-]`.
    OwnerId, "ownerId", 3, 64, "3 to 64 characters of [A-Za-z0-9._:-]"
);
id_type!(
    /// A business transaction id of a deposit or withdrawal, unique across the bank: 1..128 characters.
    TransactionId, "transactionId", 1, 128, "1 to 128 characters of [A-Za-z0-9._:-]"
);

id_type!(
    /// A transfer's id, chosen by the client or the server: 1..128 characters.
    TransferId, "transferId", 1, 128, "1 to 128 characters of [A-Za-z0-9._:-]"
);

impl TransactionId {
    /// Wraps text this crate built from a fixed alphabet (the transfer legs' ids).
    pub(crate) fn from_trusted(value: String) -> Self {
        debug_assert!(Self::parse(&value).is_ok(), "{value}");
        Self(value)
    }
}

impl TransferId {
    /// A server-chosen transfer id: a hyphenated UUID, always valid.
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id.hyphenated().to_string())
    }

    /// The event stream that holds this transfer: `transfer-{id}` (see [`StreamId`]).
    pub fn stream_id(&self) -> String {
        StreamKind::Transfer.stream_id(&self.0)
    }

    /// The transfer id inside a stream id made by [`TransferId::stream_id`].
    pub fn from_stream_id(stream_id: &str) -> Option<Self> {
        match StreamId::parse(stream_id) {
            Ok(StreamId::Transfer(id)) => Some(id),
            Ok(StreamId::Account(_)) | Err(_) => None,
        }
    }
}

impl AccountId {
    /// The event stream that holds this account: `account-{id}` (see [`StreamId`]).
    pub fn stream_id(&self) -> String {
        StreamKind::Account.stream_id(&self.0)
    }

    /// The account id inside a stream id made by [`AccountId::stream_id`].
    pub fn from_stream_id(stream_id: &str) -> Option<Self> {
        match StreamId::parse(stream_id) {
            Ok(StreamId::Account(id)) => Some(id),
            Ok(StreamId::Transfer(_)) | Err(_) => None,
        }
    }
}

/// The longest reason accepted for freezing or unfreezing an account, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// A non-empty reason for freezing or unfreezing, at most [`MAX_REASON_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Reason(String);

/// Whether free text holds a control character (U+0000..=U+001F or U+007F), which free-text fields
/// refuse on every store alike.
pub fn has_control(text: &str) -> bool {
    text.chars().any(|c| c <= '\u{1f}' || c == '\u{7f}')
}

impl Reason {
    /// Refuses blank text, text over the limit and text holding a control character; keeps the
    /// text as sent.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let len = value.chars().count();
        if value.trim().is_empty() || len > MAX_REASON_CHARS || has_control(value) {
            Err(IdError {
                field: "reason",
                rule: "a non-blank text of at most 500 characters without control characters",
            })
        } else {
            Ok(Self(value.to_owned()))
        }
    }

    /// The reason as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Stored events are trusted: a reason that was accepted once always reads back.
        Ok(Self(String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_accept_the_documented_alphabet_and_lengths() {
        assert!(AccountId::parse("acc").is_ok());
        assert!(AccountId::parse("acc-1.a_b:C").is_ok());
        assert!(AccountId::parse(&"a".repeat(64)).is_ok());
        assert!(AccountId::parse("ab").is_err());
        assert!(AccountId::parse(&"a".repeat(65)).is_err());
        assert!(AccountId::parse("acc/1").is_err());
        assert!(AccountId::parse("acc 1").is_err());
        assert!(AccountId::parse("àcc").is_err());
    }

    #[test]
    fn transaction_ids_allow_one_to_128_characters() {
        assert!(TransactionId::parse("t").is_ok());
        assert!(TransactionId::parse(&"t".repeat(128)).is_ok());
        assert!(TransactionId::parse("").is_err());
        assert!(TransactionId::parse(&"t".repeat(129)).is_err());
    }

    #[test]
    fn stream_ids_round_trip() {
        let id = AccountId::parse("acc-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.stream_id(), "account-acc-1");
        assert_eq!(AccountId::from_stream_id("account-acc-1"), Some(id));
        assert_eq!(AccountId::from_stream_id("transfer-x1"), None);
        assert_eq!(AccountId::from_stream_id("account-ab"), None);
        let transfer = TransferId::parse("t-1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(transfer.stream_id(), "transfer-t-1");
        assert_eq!(TransferId::from_stream_id("transfer-t-1"), Some(transfer));
        assert_eq!(TransferId::from_stream_id("account-acc-1"), None);
    }

    #[test]
    fn blank_reasons_are_refused() {
        assert!(Reason::parse("compliance review").is_ok());
        assert!(Reason::parse("").is_err());
        assert!(Reason::parse("   ").is_err());
        assert!(Reason::parse(&"r".repeat(501)).is_err());
    }
}
