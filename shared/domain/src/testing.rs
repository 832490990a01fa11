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

use crate::aggregate::{AccountAggregate, Aggregate, TransferAggregate};
use crate::{AccountEvent, DomainError, TransferEvent};

/// The state after some past events.
#[derive(Debug)]
pub struct Given<A: Aggregate = AccountAggregate> {
    state: A::State,
}

/// The outcome of one command on a given state.
#[derive(Debug)]
pub struct When<A: Aggregate = AccountAggregate> {
    before: A::State,
    outcome: Result<Vec<A::Event>, DomainError>,
}

/// Starts an account scenario from past events.
pub fn given(events: &[AccountEvent]) -> Given<AccountAggregate> {
    given_events::<AccountAggregate>(events)
}

/// Starts a transfer scenario from past events.
pub fn given_transfer(events: &[TransferEvent]) -> Given<TransferAggregate> {
    given_events::<TransferAggregate>(events)
}

/// Starts a scenario of any aggregate from past events.
pub fn given_events<A: Aggregate>(events: &[A::Event]) -> Given<A> {
    Given { state: events.iter().fold(A::State::default(), A::evolve) }
}

impl<A: Aggregate> Given<A> {
    /// Runs a command through `decide`.
    pub fn when(self, command: &A::Command) -> When<A> {
        let outcome = A::decide(&self.state, command);
        When { before: self.state, outcome }
    }

    /// The state the past events fold to.
    pub fn state(&self) -> &A::State {
        &self.state
    }
}

impl<A: Aggregate> When<A> {
    /// Asserts the command produced exactly these events; returns the state after them.
    #[track_caller]
    pub fn then_events(self, expected: &[A::Event]) -> A::State {
        match self.outcome {
            Ok(events) => {
                assert_eq!(events, expected, "unexpected events");
                events.iter().fold(self.before, A::evolve)
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
