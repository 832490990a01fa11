//! The shape every aggregate shares, so use cases (the command engine, test helpers) are written once.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::DomainError;
use crate::account::{self, AccountCommand, AccountEvent, AccountState, DecodeError};
use crate::transfer::{self, TransferCommand, TransferEvent, TransferState};

/// An event-sourced aggregate: pure `decide` and `evolve`, plus the stored form of its events.
pub trait Aggregate: Send + Sync + 'static {
    /// The fold of a stream; `Default` is the state before the first event. Serialisable as a snapshot.
    type State: Clone + Default + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What may be asked of it.
    type Command: Clone + Debug + Send + Sync;
    /// What it records.
    type Event: Clone + Debug + PartialEq + Send + Sync;

    /// The schema version every event is written with today.
    const SCHEMA_VERSION: u32;

    /// The number of events folded into `state` (its stream version).
    fn version(state: &Self::State) -> u64;
    /// Every business rule: the events a command produces, or why it is refused.
    fn decide(state: &Self::State, command: &Self::Command) -> Result<Vec<Self::Event>, DomainError>;
    /// Folds one event; holds no rule.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
    /// The stored type name of an event.
    fn event_type(event: &Self::Event) -> &'static str;
    /// The stored payload of an event.
    fn payload(event: &Self::Event) -> serde_json::Value;
    /// Reads a stored event back.
    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &serde_json::Value,
    ) -> Result<Self::Event, DecodeError>;
}

/// The account aggregate (`account-{id}` streams).
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountAggregate;

impl Aggregate for AccountAggregate {
    type State = AccountState;
    type Command = AccountCommand;
    type Event = AccountEvent;

    const SCHEMA_VERSION: u32 = account::ACCOUNT_EVENT_SCHEMA_VERSION;

    fn version(state: &AccountState) -> u64 {
        state.version
    }

    fn decide(state: &AccountState, command: &AccountCommand) -> Result<Vec<AccountEvent>, DomainError> {
        account::decide(state, command)
    }

    fn evolve(state: AccountState, event: &AccountEvent) -> AccountState {
        account::evolve(state, event)
    }

    fn event_type(event: &AccountEvent) -> &'static str {
        event.event_type()
    }

    fn payload(event: &AccountEvent) -> serde_json::Value {
        event.payload()
    }

    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &serde_json::Value,
    ) -> Result<AccountEvent, DecodeError> {
        AccountEvent::decode(event_type, schema_version, payload)
    }
}

/// The transfer aggregate (`transfer-{id}` streams).
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferAggregate;

impl Aggregate for TransferAggregate {
    type State = TransferState;
    type Command = TransferCommand;
    type Event = TransferEvent;

    const SCHEMA_VERSION: u32 = transfer::TRANSFER_EVENT_SCHEMA_VERSION;

    fn version(state: &TransferState) -> u64 {
        state.version
    }

    fn decide(state: &TransferState, command: &TransferCommand) -> Result<Vec<TransferEvent>, DomainError> {
        transfer::decide(state, command)
    }

    fn evolve(state: TransferState, event: &TransferEvent) -> TransferState {
        transfer::evolve(state, event)
    }

    fn event_type(event: &TransferEvent) -> &'static str {
        event.event_type()
    }

    fn payload(event: &TransferEvent) -> serde_json::Value {
        event.payload()
    }

    fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &serde_json::Value,
    ) -> Result<TransferEvent, DecodeError> {
        TransferEvent::decode(event_type, schema_version, payload)
    }
}
