//! A small given/when/then helper for aggregate tests.
//!
//! ```
//! use corebank_domain::testing::given;
//! use corebank_domain::{AccountCommand, DomainError, Reason};
//!
//! let reason = Reason::parse("review").map_err(|e| e.to_string())?;
//! given(&[]).when(&AccountCommand::Freeze { reason }).then_error(&DomainError::AccountNotFound);
//! # Ok::<(), String>(())
//! ```

use crate::account::{decide, replay};
use crate::{AccountCommand, AccountEvent, AccountState, DomainError};

/// The state after some past events.
#[derive(Debug)]
pub struct Given {
    state: AccountState,
}

/// The outcome of one command on a given state.
#[derive(Debug)]
pub struct When {
    before: AccountState,
    outcome: Result<Vec<AccountEvent>, DomainError>,
}

/// Starts a scenario from past events.
pub fn given(events: &[AccountEvent]) -> Given {
    Given { state: replay(AccountState::default(), events) }
}

impl Given {
    /// Runs a command through `decide`.
    pub fn when(self, command: &AccountCommand) -> When {
        let outcome = decide(&self.state, command);
        When { before: self.state, outcome }
    }
}

impl When {
    /// Asserts the command produced exactly these events; returns the state after them.
    #[track_caller]
    pub fn then_events(self, expected: &[AccountEvent]) -> AccountState {
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected, "unexpected events");
                replay(self.before, &events)
            }
            Err(e) => panic!("expected events, got error {e:?}"),
        }
    }

    /// Asserts the command was refused with this error.
    #[track_caller]
    pub fn then_error(self, expected: &DomainError) {
        match self.outcome {
            Ok(events) => panic!("expected {expected:?}, got events {events:?}"),
            Err(e) => assert_eq!(&e, expected),
        }
    }
}
