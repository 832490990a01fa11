//! Event stream ids: `account-{AccountId}` and `transfer-{TransferId}`, parsed once.
//!
//! The stores and the wire keep a stream id as text; code that branches on which aggregate a stream
//! holds parses it into a [`StreamId`] (or, when only the family matters, asks [`StreamKind::of`]).
//! The prefixes are written down only in [`StreamKind::prefix`].

use std::fmt;

use crate::ids::{AccountId, IdError, TransferId};

/// The family of an event stream: which aggregate it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// `account-{id}`: one account's events.
    Account,
    /// `transfer-{id}`: one transfer's events.
    Transfer,
}

impl StreamKind {
    /// Every kind, in the order their stream ids sort (`account-` before `transfer-`).
    pub const ALL: [Self; 2] = [Self::Account, Self::Transfer];

    /// The text every stream id of this kind starts with, e.g. `account-`.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Account => "account-",
            Self::Transfer => "transfer-",
        }
    }

    /// The kind of `stream_id` judged by its prefix alone; the id after it is not checked.
    pub fn of(stream_id: &str) -> Option<Self> {
        Self::split(stream_id).map(|(kind, _)| kind)
    }

    /// The stream id of this kind for an id given as text (not checked), e.g. a stored row's id.
    pub fn stream_id(self, id: &str) -> String {
        let prefix = self.prefix();
        let mut stream_id = String::with_capacity(prefix.len() + id.len());
        stream_id.push_str(prefix);
        stream_id.push_str(id);
        stream_id
    }

    /// The kind and the text after its prefix.
    fn split(stream_id: &str) -> Option<(Self, &str)> {
        Self::ALL.into_iter().find_map(|kind| stream_id.strip_prefix(kind.prefix()).map(|id| (kind, id)))
    }
}

/// Why a text is not a stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// The text starts with no known stream prefix.
    #[error("stream id {stream_id} has no known stream prefix")]
    UnknownKind {
        /// The refused text.
        stream_id: String,
    },
    /// The prefix is known but the id after it is not a valid id of that kind.
    #[error("stream id {stream_id}: {source}")]
    InvalidId {
        /// The refused text.
        stream_id: String,
        /// The kind its prefix names.
        kind: StreamKind,
        /// Why the id after the prefix was refused.
        #[source]
        source: IdError,
    },
}

/// A parsed event stream id. It renders (`Display`) as the text the stores keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamId {
    /// `account-{id}`.
    Account(AccountId),
    /// `transfer-{id}`.
    Transfer(TransferId),
}

impl StreamId {
    /// Reads `account-{id}` or `transfer-{id}`, checking the id as [`AccountId::parse`] or
    /// [`TransferId::parse`] does.
    pub fn parse(stream_id: &str) -> Result<Self, StreamIdError> {
        let Some((kind, id)) = StreamKind::split(stream_id) else {
            return Err(StreamIdError::UnknownKind { stream_id: stream_id.to_owned() });
        };
        let invalid = |source| StreamIdError::InvalidId { stream_id: stream_id.to_owned(), kind, source };
        match kind {
            StreamKind::Account => AccountId::parse(id).map(Self::Account).map_err(invalid),
            StreamKind::Transfer => TransferId::parse(id).map(Self::Transfer).map_err(invalid),
        }
    }

    /// Which aggregate the stream holds.
    pub const fn kind(&self) -> StreamKind {
        match self {
            Self::Account(_) => StreamKind::Account,
            Self::Transfer(_) => StreamKind::Transfer,
        }
    }

    /// The id after the prefix, as text.
    pub fn id(&self) -> &str {
        match self {
            Self::Account(id) => id.as_str(),
            Self::Transfer(id) => id.as_str(),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().prefix())?;
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str) -> AccountId {
        AccountId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    fn transfer(id: &str) -> TransferId {
        TransferId::parse(id).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn account_and_transfer_streams_round_trip() {
        let a = StreamId::Account(account("acc-1"));
        assert_eq!(a.to_string(), "account-acc-1");
        assert_eq!(a.kind(), StreamKind::Account);
        assert_eq!(a.id(), "acc-1");
        assert_eq!(StreamId::parse("account-acc-1"), Ok(a));

        let t = StreamId::Transfer(transfer("t-9"));
        assert_eq!(t.to_string(), "transfer-t-9");
        assert_eq!(t.kind(), StreamKind::Transfer);
        assert_eq!(StreamId::parse("transfer-t-9"), Ok(t));
    }

    #[test]
    fn the_typed_ids_render_the_same_text_as_their_stream_id_methods() {
        let a = account("acc-1");
        let t = transfer("8c4e9a3a-3a43-4a3e-9f4c-0c3c1a2b3c4d");
        assert_eq!(StreamId::Account(a.clone()).to_string(), a.stream_id());
        assert_eq!(StreamId::Transfer(t.clone()).to_string(), t.stream_id());
        assert_eq!(StreamKind::Account.stream_id(a.as_str()), a.stream_id());
        assert_eq!(StreamKind::Transfer.stream_id(t.as_str()), t.stream_id());
    }

    #[test]
    fn unknown_prefixes_are_refused() {
        for text in ["", "acc-1", "accounts-acc-1", "Account-acc-1", "transfers-t1", "-acc-1"] {
            assert_eq!(
                StreamId::parse(text),
                Err(StreamIdError::UnknownKind { stream_id: text.to_owned() }),
                "{text}"
            );
            assert_eq!(StreamKind::of(text), None, "{text}");
        }
    }

    #[test]
    fn ids_that_fail_their_own_validation_are_refused() {
        let short = StreamId::parse("account-ab");
        assert!(
            matches!(&short, Err(StreamIdError::InvalidId { kind: StreamKind::Account, source, .. })
                if source.field == "accountId"),
            "{short:?}"
        );
        assert!(StreamId::parse("account-acc/1").is_err());
        assert!(StreamId::parse(&format!("account-{}", "a".repeat(65))).is_err());
        let empty = StreamId::parse("transfer-");
        assert!(
            matches!(&empty, Err(StreamIdError::InvalidId { kind: StreamKind::Transfer, source, .. })
                if source.field == "transferId"),
            "{empty:?}"
        );
        assert!(StreamId::parse("transfer-t 1").is_err());
        assert_eq!(
            StreamId::parse("account-ab").map_err(|e| e.to_string()),
            Err("stream id account-ab: accountId must be 3 to 64 characters of [A-Za-z0-9._:-]".to_owned())
        );
    }

    #[test]
    fn the_kind_alone_is_judged_by_the_prefix() {
        assert_eq!(StreamKind::of("account-a"), Some(StreamKind::Account));
        assert_eq!(StreamKind::of("transfer-"), Some(StreamKind::Transfer));
        assert_eq!(StreamKind::of("account"), None);
    }

    #[test]
    fn stream_ids_sort_as_their_text() {
        let mut typed = [
            StreamId::Transfer(transfer("a")),
            StreamId::Account(account("zzz")),
            StreamId::Account(account("acc-2")),
            StreamId::Transfer(transfer("t-1")),
        ];
        typed.sort();
        let texts: Vec<String> = typed.iter().map(ToString::to_string).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
    }
}
