//! The transfer aggregate and the pure part of its process manager.
//!
//! A transfer moves money between two accounts of the same currency in four steps, each a command
//! on one account: hold on the source, credit the destination, capture the hold; or, when the credit
//! is impossible, release the hold. The transfer's own stream records which steps are done, so a
//! process manager that crashes anywhere resumes from the stream, and [`next_step`] says what to do
//! next. Every step is idempotent on its own (a deterministic transaction id per leg), so repeating a
//! step never moves money twice.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{AccountCommand, AccountId, Amount, Currency, DomainError, TransactionId, TransferId};

/// The schema version every transfer event is written with today.
pub const TRANSFER_EVENT_SCHEMA_VERSION: u32 = 1;

/// What a transfer is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferTerms {
    /// The transfer.
    pub transfer_id: TransferId,
    /// Debited account.
    pub source_account_id: AccountId,
    /// Credited account.
    pub destination_account_id: AccountId,
    /// How much.
    #[serde(rename = "amountMinorUnits")]
    pub amount: Amount,
    /// The currency of both accounts.
    pub currency: Currency,
    /// The principal that asked for the transfer (absent on transfers requested before principals
    /// were recorded). Not part of the movement: the same movement asked for again by another
    /// principal is the same transfer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiated_by: Option<String>,
}

impl TransferTerms {
    /// Whether two requests ask for the same movement: everything but who asked.
    pub fn same_movement(&self, other: &TransferTerms) -> bool {
        self.transfer_id == other.transfer_id
            && self.source_account_id == other.source_account_id
            && self.destination_account_id == other.destination_account_id
            && self.amount == other.amount
            && self.currency == other.currency
    }
}

/// Commands on a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    /// Start a transfer (or confirm the same one again).
    Request(TransferTerms),
    /// The source hold was placed.
    RecordHoldPlaced,
    /// The destination was credited.
    RecordCredited,
    /// The source hold was captured: the transfer is done.
    Complete,
    /// The destination cannot be credited; the hold must be released.
    RecordCreditFailed {
        /// A failure code (`ACCOUNT_NOT_FOUND`, `ACCOUNT_NOT_ACTIVE`, ...).
        reason: String,
    },
    /// The transfer failed and any compensation is done.
    Fail {
        /// A failure code.
        reason: String,
    },
}

/// Payload of the failure events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferReason {
    /// A failure code.
    pub reason: String,
}

/// Facts about a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEvent {
    /// `TransferRequested`.
    Requested(TransferTerms),
    /// `TransferHoldPlaced`.
    HoldPlaced,
    /// `TransferCredited`.
    Credited,
    /// `TransferCompleted`.
    Completed,
    /// `TransferCreditFailed`.
    CreditFailed(TransferReason),
    /// `TransferFailed`.
    Failed(TransferReason),
}

impl TransferEvent {
    /// The stored type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Requested(_) => "TransferRequested",
            Self::HoldPlaced => "TransferHoldPlaced",
            Self::Credited => "TransferCredited",
            Self::Completed => "TransferCompleted",
            Self::CreditFailed(_) => "TransferCreditFailed",
            Self::Failed(_) => "TransferFailed",
        }
    }

    /// The stored payload.
    pub fn payload(&self) -> serde_json::Value {
        let value = match self {
            Self::Requested(t) => serde_json::to_value(t),
            Self::CreditFailed(r) | Self::Failed(r) => serde_json::to_value(r),
            Self::HoldPlaced | Self::Credited | Self::Completed => Ok(serde_json::json!({})),
        };
        value.unwrap_or(serde_json::Value::Null)
    }

    /// Reads a stored transfer event.
    pub fn decode(
        event_type: &str,
        schema_version: u32,
        payload: &serde_json::Value,
    ) -> Result<Self, crate::account::DecodeError> {
        let fail = |reason: String| crate::account::DecodeError {
            event_type: event_type.to_owned(),
            schema_version,
            reason,
        };
        if schema_version != TRANSFER_EVENT_SCHEMA_VERSION {
            return Err(fail("unknown schema version".to_owned()));
        }
        let de = |e: serde_json::Error| fail(e.to_string());
        Ok(match event_type {
            "TransferRequested" => Self::Requested(TransferTerms::deserialize(payload).map_err(de)?),
            "TransferHoldPlaced" => Self::HoldPlaced,
            "TransferCredited" => Self::Credited,
            "TransferCompleted" => Self::Completed,
            "TransferCreditFailed" => Self::CreditFailed(TransferReason::deserialize(payload).map_err(de)?),
            "TransferFailed" => Self::Failed(TransferReason::deserialize(payload).map_err(de)?),
            other => return Err(fail(format!("unknown event type {other}"))),
        })
    }
}

/// Where a transfer is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE", tag = "step")]
pub enum TransferStep {
    /// Requested; the source hold is next.
    Requested,
    /// Hold placed; the credit is next.
    HoldPlaced,
    /// Credited; capturing the hold is next.
    Credited,
    /// The credit failed; releasing the hold is next.
    CreditFailed {
        /// Why the credit failed.
        reason: String,
    },
    /// Done: money moved.
    Completed,
    /// Done: no money moved.
    Failed {
        /// Why.
        reason: String,
    },
}

impl TransferStep {
    /// `PENDING`, `COMPLETED` or `FAILED`.
    pub fn status(&self) -> &'static str {
        match self {
            Self::Completed => "COMPLETED",
            Self::Failed { .. } => "FAILED",
            _ => "PENDING",
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::HoldPlaced => "hold placed",
            Self::Credited => "credited",
            Self::CreditFailed { .. } => "credit failed",
            Self::Completed => "completed",
            Self::Failed { .. } => "failed",
        }
    }
}

/// The state of one transfer stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferState {
    /// Events folded so far.
    pub version: u64,
    /// The terms, once requested.
    pub terms: Option<TransferTerms>,
    /// The step reached, once requested.
    pub step: Option<TransferStep>,
}

/// Decides a transfer command. Recording a step that is already recorded is accepted with no
/// events, so a process manager may repeat itself freely.
pub fn decide(state: &TransferState, command: &TransferCommand) -> Result<Vec<TransferEvent>, DomainError> {
    let not_allowed = |step: &'static str, current: &TransferStep| DomainError::TransferStepNotAllowed {
        state: current.name(),
        step,
    };
    let (Some(terms), Some(step)) = (&state.terms, &state.step) else {
        return match command {
            TransferCommand::Request(terms) if terms.source_account_id == terms.destination_account_id => {
                Err(DomainError::TransferToSameAccount)
            }
            TransferCommand::Request(terms) => Ok(vec![TransferEvent::Requested(terms.clone())]),
            _ => Err(DomainError::TransferNotFound),
        };
    };
    use TransferStep as S;
    Ok(match (command, step) {
        (TransferCommand::Request(new), _) => {
            if new.same_movement(terms) {
                vec![]
            } else {
                return Err(DomainError::TransferIdConflict);
            }
        }
        (TransferCommand::RecordHoldPlaced, S::Requested) => vec![TransferEvent::HoldPlaced],
        (
            TransferCommand::RecordHoldPlaced,
            S::HoldPlaced | S::Credited | S::CreditFailed { .. } | S::Completed,
        ) => {
            vec![]
        }
        (TransferCommand::RecordCredited, S::HoldPlaced) => vec![TransferEvent::Credited],
        (TransferCommand::RecordCredited, S::Credited | S::Completed) => vec![],
        (TransferCommand::Complete, S::Credited) => vec![TransferEvent::Completed],
        (TransferCommand::Complete, S::Completed) => vec![],
        (TransferCommand::RecordCreditFailed { reason }, S::HoldPlaced) => {
            vec![TransferEvent::CreditFailed(TransferReason { reason: reason.clone() })]
        }
        (TransferCommand::RecordCreditFailed { .. }, S::CreditFailed { .. } | S::Failed { .. }) => vec![],
        (TransferCommand::Fail { reason }, S::Requested | S::CreditFailed { .. }) => {
            vec![TransferEvent::Failed(TransferReason { reason: reason.clone() })]
        }
        (TransferCommand::Fail { .. }, S::Failed { .. }) => vec![],
        (TransferCommand::RecordHoldPlaced, S::Failed { .. }) => return Err(not_allowed("hold", step)),
        (TransferCommand::RecordCredited, _) => return Err(not_allowed("credit", step)),
        (TransferCommand::Complete, _) => return Err(not_allowed("complete", step)),
        (TransferCommand::RecordCreditFailed { .. }, _) => return Err(not_allowed("credit failure", step)),
        (TransferCommand::Fail { .. }, _) => return Err(not_allowed("fail", step)),
    })
}

/// Folds one transfer event.
pub fn evolve(mut state: TransferState, event: &TransferEvent) -> TransferState {
    state.version += 1;
    state.step = Some(match event {
        TransferEvent::Requested(terms) => {
            state.terms = Some(terms.clone());
            TransferStep::Requested
        }
        TransferEvent::HoldPlaced => TransferStep::HoldPlaced,
        TransferEvent::Credited => TransferStep::Credited,
        TransferEvent::Completed => TransferStep::Completed,
        TransferEvent::CreditFailed(r) => TransferStep::CreditFailed { reason: r.reason.clone() },
        TransferEvent::Failed(r) => TransferStep::Failed { reason: r.reason.clone() },
    });
    state
}

/// What the process manager does next for a transfer in this state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Place a hold on the source.
    PlaceHold,
    /// Credit the destination.
    Credit,
    /// Capture the source hold.
    Capture,
    /// Release the source hold.
    Release,
    /// Nothing: the transfer is done.
    Done,
}

/// The next step of a transfer's process.
pub fn next_step(state: &TransferState) -> NextStep {
    match &state.step {
        Some(TransferStep::Requested) => NextStep::PlaceHold,
        Some(TransferStep::HoldPlaced) => NextStep::Credit,
        Some(TransferStep::Credited) => NextStep::Capture,
        Some(TransferStep::CreditFailed { .. }) => NextStep::Release,
        Some(TransferStep::Completed | TransferStep::Failed { .. }) | None => NextStep::Done,
    }
}

/// The four account steps of a transfer, each with its own transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Leg {
    /// The hold on the source.
    Hold,
    /// The credit of the destination.
    Credit,
    /// The capture of the source hold.
    Capture,
    /// The release of the source hold (compensation).
    Release,
}

impl Leg {
    /// `hold`, `credit`, `capture` or `release`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hold => "hold",
            Self::Credit => "credit",
            Self::Capture => "capture",
            Self::Release => "release",
        }
    }
}

/// Every leg transaction id starts with this prefix; the API refuses client transaction ids that do,
/// so no client command can collide with a transfer's leg.
pub const LEG_TRANSACTION_PREFIX: &str = "xfer-";

/// Every Idempotency-Key the saga gives a leg's account command starts with this prefix (followed by
/// the leg's transaction id); the API refuses client keys that do, so a client cannot claim a leg's
/// key first and leave the leg with `IDEMPOTENCY_KEY_REUSED` for ever.
pub const LEG_IDEMPOTENCY_KEY_PREFIX: &str = "saga:";

/// The UUID v5 namespace of leg transaction ids. Fixed for ever: changing it would give running
/// transfers new leg ids and let a replayed step move money again.
const LEG_NAMESPACE: Uuid = Uuid::from_u128(0x8f1e_0c52_7a4b_5d3e_9c61_2b7f_4e0a_9d13);

/// The deterministic transaction id of one leg: `xfer-<uuid v5 of the transfer id>-<leg>`, at most
/// 49 characters whatever the transfer id's length. The same transfer and leg always give the same id,
/// so the transaction-record guard answers a repeated step as the first one was answered and never
/// moves money twice.
pub fn leg_transaction_id(transfer_id: &TransferId, leg: Leg) -> TransactionId {
    let id = Uuid::new_v5(&LEG_NAMESPACE, transfer_id.as_str().as_bytes());
    // Always a valid transaction id: 41 to 49 characters of [a-z0-9-].
    TransactionId::from_trusted(format!("{LEG_TRANSACTION_PREFIX}{}-{}", id.hyphenated(), leg.as_str()))
}

/// The account command one step issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegCommand {
    /// Which leg.
    pub leg: Leg,
    /// The account it runs on.
    pub account_id: AccountId,
    /// The command, carrying the leg's transaction id.
    pub command: AccountCommand,
}

/// The account command of a step: the hold and its capture or release on the source, the credit (a
/// deposit) on the destination. `None` when the transfer is done.
pub fn leg_command(terms: &TransferTerms, step: &NextStep) -> Option<LegCommand> {
    let id = &terms.transfer_id;
    let (leg, account_id, command) = match step {
        NextStep::PlaceHold => (
            Leg::Hold,
            &terms.source_account_id,
            AccountCommand::PlaceHold {
                transfer_id: id.clone(),
                amount: terms.amount,
                currency: terms.currency,
                transaction_id: leg_transaction_id(id, Leg::Hold),
            },
        ),
        NextStep::Credit => (
            Leg::Credit,
            &terms.destination_account_id,
            AccountCommand::Deposit {
                amount: terms.amount,
                currency: terms.currency,
                transaction_id: leg_transaction_id(id, Leg::Credit),
            },
        ),
        NextStep::Capture => (
            Leg::Capture,
            &terms.source_account_id,
            AccountCommand::CaptureHold {
                transfer_id: id.clone(),
                transaction_id: leg_transaction_id(id, Leg::Capture),
            },
        ),
        NextStep::Release => (
            Leg::Release,
            &terms.source_account_id,
            AccountCommand::ReleaseHold {
                transfer_id: id.clone(),
                transaction_id: leg_transaction_id(id, Leg::Release),
            },
        ),
        NextStep::Done => return None,
    };
    Some(LegCommand { leg, account_id: account_id.clone(), command })
}

/// How an account answered a leg's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegOutcome {
    /// The command was accepted (now or, for a repeated step, the first time).
    Accepted,
    /// The command was refused with this error code (`INSUFFICIENT_FUNDS`, `ACCOUNT_NOT_ACTIVE`, ...).
    Refused(String),
}

/// The transfer command that records a leg's outcome, or `None` when the outcome breaks the process's
/// own guarantees (a capture or release refused: the hold was placed by this transfer and only this
/// transfer settles it), which a caller must treat as an error to retry and investigate.
///
/// A refused hold fails the transfer at once (nothing moved); a refused credit records the failure so
/// that the release runs next; the release then fails the transfer with the credit's reason.
pub fn record_leg(state: &TransferState, leg: Leg, outcome: &LegOutcome) -> Option<TransferCommand> {
    match (leg, outcome) {
        (Leg::Hold, LegOutcome::Accepted) => Some(TransferCommand::RecordHoldPlaced),
        (Leg::Hold, LegOutcome::Refused(code)) => Some(TransferCommand::Fail { reason: code.clone() }),
        (Leg::Credit, LegOutcome::Accepted) => Some(TransferCommand::RecordCredited),
        (Leg::Credit, LegOutcome::Refused(code)) => {
            Some(TransferCommand::RecordCreditFailed { reason: code.clone() })
        }
        (Leg::Capture, LegOutcome::Accepted) => Some(TransferCommand::Complete),
        (Leg::Release, LegOutcome::Accepted) => match &state.step {
            Some(TransferStep::CreditFailed { reason }) => {
                Some(TransferCommand::Fail { reason: reason.clone() })
            }
            _ => None,
        },
        (Leg::Capture | Leg::Release, LegOutcome::Refused(_)) => None,
    }
}
