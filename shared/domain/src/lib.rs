//! The pure domain of the core bank.
//!
//! Everything here is synchronous and free of I/O, clocks and randomness: time and ids arrive inside the
//! commands, so every rule can be tested as a plain function. Money is an exact `i64` number of minor
//! units; decimal text from the edge is parsed exactly with the currency's ISO 4217 exponent.
//!
//! The account and transfer aggregates are `decide(&state, command) -> Result<Vec<event>, DomainError>`
//! plus `evolve(state, &event) -> state`, so state is always the fold of the stream. The transfer module
//! also holds the pure half of the transfer process manager: which account command comes next
//! ([`transfer::leg_command`], with a deterministic transaction id per leg) and how its outcome is
//! recorded ([`transfer::record_leg`]).
#![deny(clippy::float_arithmetic, clippy::cast_precision_loss, clippy::cast_possible_truncation)]
#![warn(missing_docs)]

pub mod account;
pub mod aggregate;
pub mod currency;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod money;
pub mod stream;
pub mod testing;
pub mod transfer;

pub use account::{Account, AccountCommand, AccountEvent, AccountState, AccountStatus};
pub use aggregate::{AccountAggregate, Aggregate, TransferAggregate};
pub use currency::Currency;
pub use envelope::{EventEnvelope, EventMetadata};
pub use error::DomainError;
pub use ids::{AccountId, IdError, OwnerId, Reason, TransactionId, TransferId, has_control};
pub use money::{Amount, MoneyError};
pub use stream::{StreamId, StreamIdError, StreamKind};
pub use transfer::{TransferCommand, TransferEvent, TransferState, TransferTerms};
