//! The transfer process manager (saga): drives a transfer through hold, credit and capture, or
//! releases the hold when the credit is impossible.
//!
//! It reacts to transfer events and to the hold events of accounts (which name their transfer). The
//! delivered event is only a trigger: each pass loads the transfer's current state, asks the pure
//! [`next_step`] what comes next, runs that account command, records its outcome on the transfer, and
//! repeats until the transfer is done. So a duplicate, stale or reordered delivery finds the transfer
//! where it is and does only what is left.
//!
//! # Why a crash anywhere is safe
//!
//! Every step is an account command with a deterministic transaction id per leg
//! ([`leg_transaction_id`](corebank_domain::transfer::leg_transaction_id)) and an Idempotency-Key per
//! leg (`saga:<leg transaction id>`):
//! - the transaction record makes an accepted leg move money at most once: running it again answers
//!   as the first run did;
//! - the idempotency record makes a leg's first *decision* final, refusals included. Without it, a
//!   duplicate delivery running concurrently could see a refused hold succeed a moment later (funds
//!   arrived) or a refused credit succeed (the destination was unfrozen) after the first run had
//!   recorded the refusal, and money would be stranded in a hold or created by a credit that the
//!   release then undoes on the source only.
//!
//! A crash between the account step and the transfer step is resumed by the next delivery: the
//! transfer is still at the earlier step, the leg replays its stored answer, and the outcome is
//! recorded then. A crash while a leg holds its key makes the next run wait for the lease (answering
//! `IDEMPOTENCY_REQUEST_IN_PROGRESS`, a retryable error) and then take the key over.
//!
//! # How the outcome of an account command is read
//!
//! From the error code stored beside its response ([`StoredResponse::code`]): none is accepted, a code
//! is the stable error code that becomes the transfer's `failureReason`. A replayed leg only has its
//! stored response, and the idempotency and transaction records keep the code with the status and
//! body, so fresh and replayed outcomes are read the same way and can never be interpreted
//! differently. The HTTP body is never parsed. A rejection stored before codes were kept reads back
//! with the code `UNKNOWN`, so it is never mistaken for an acceptance.
//!
//! [`StoredResponse::code`]: corebank_store::StoredResponse::code

use std::sync::Arc;

use corebank_domain::transfer::{
    LEG_IDEMPOTENCY_KEY_PREFIX, Leg, LegCommand, LegOutcome, leg_command, next_step, record_leg,
};
use corebank_domain::{AccountAggregate, DomainError, EventEnvelope, EventMetadata, StreamId, TransferId};

use crate::AppError;
use crate::command::{CommandContext, CommandService, KeyScope, Trace, transaction_id_of};
use crate::engine::decode;
use crate::fingerprint::RequestFingerprint;
use crate::transfers::{TransferService, status_of};

/// A transfer takes at most four steps; a pass that needs more is looping on a bug.
const STEPS_MAX: usize = 8;

/// The actor the process manager's commands carry for a transfer that does not name who started it
/// (requested before principals were recorded).
pub const SAGA_ACTOR: &str = "transfer-saga";

/// What one delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaOutcome {
    /// Not an event the process manager reacts to.
    Ignored,
    /// The transfer was driven as far as it goes.
    Settled {
        /// Steps taken by this pass (0 when the transfer was already done).
        steps: usize,
        /// `COMPLETED` or `FAILED`.
        status: &'static str,
    },
}

/// The transfer process manager.
pub struct TransferSaga {
    accounts: Arc<CommandService>,
    transfers: Arc<TransferService>,
}

impl std::fmt::Debug for TransferSaga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransferSaga").finish_non_exhaustive()
    }
}

/// The transfer an event concerns: its own stream, or the transfer a hold event names.
pub fn transfer_of(envelope: &EventEnvelope) -> Result<Option<TransferId>, AppError> {
    let is_hold_event = matches!(
        envelope.event_type.as_str(),
        "FundsReserved" | "ReservationCaptured" | "ReservationReleased"
    );
    match envelope.stream() {
        Ok(StreamId::Transfer(id)) => Ok(Some(id)),
        Ok(StreamId::Account(_)) if is_hold_event => {
            Ok(decode::<AccountAggregate>(envelope)?.transfer_id().cloned())
        }
        Ok(StreamId::Account(_)) | Err(_) => Ok(None),
    }
}

impl TransferSaga {
    /// A process manager issuing account commands through `accounts` and recording steps through
    /// `transfers`.
    pub fn new(accounts: Arc<CommandService>, transfers: Arc<TransferService>) -> Self {
        Self { accounts, transfers }
    }

    /// Reacts to one delivered event. Errors are transient (or a broken invariant, logged): the
    /// delivery must be retried, and retrying is always safe.
    #[tracing::instrument(level = "debug", name = "saga", skip_all, fields(stream_id = %envelope.stream_id, version = envelope.version))]
    pub async fn handle(&self, envelope: &EventEnvelope) -> Result<SagaOutcome, AppError> {
        let Some(transfer_id) = transfer_of(envelope)? else { return Ok(SagaOutcome::Ignored) };
        let cause = envelope.event_id.to_string();
        self.advance_traced(&transfer_id, &cause, envelope.metadata.trace_id.as_deref()).await
    }

    /// Drives one transfer until it is done; `cause` is the id of the event that triggered the pass.
    pub async fn advance(&self, transfer_id: &TransferId, cause: &str) -> Result<SagaOutcome, AppError> {
        self.advance_traced(transfer_id, cause, None).await
    }

    /// [`TransferSaga::advance`], carrying the trace id of the event that triggered the pass into
    /// the events of its steps.
    async fn advance_traced(
        &self,
        transfer_id: &TransferId,
        cause: &str,
        trace_id: Option<&str>,
    ) -> Result<SagaOutcome, AppError> {
        let trace = Trace {
            correlation_id: transfer_id.stream_id(),
            causation_id: cause.to_owned(),
            trace_id: trace_id.map(str::to_owned),
        };
        let mut steps = 0;
        loop {
            let state = self.transfers.load(transfer_id).await?;
            let Some(terms) = &state.terms else { return Ok(SagaOutcome::Ignored) };
            let Some(leg) = leg_command(terms, &next_step(&state)) else {
                return Ok(SagaOutcome::Settled { steps, status: status_of(&state) });
            };
            if steps >= STEPS_MAX {
                return Err(AppError::Corrupt(format!(
                    "transfer {transfer_id} did not settle in {STEPS_MAX} steps"
                )));
            }
            // The legs act for the principal that started the transfer.
            let actor = terms.initiated_by.clone().unwrap_or_else(|| SAGA_ACTOR.to_owned());
            let outcome = self.run_leg(&leg, &trace, &actor).await?;
            let Some(command) = record_leg(&state, leg.leg, &outcome) else {
                tracing::error!(%transfer_id, leg = leg.leg.as_str(), ?outcome, "the transfer's own hold refused its settlement");
                return Err(AppError::Corrupt(format!(
                    "transfer {transfer_id}: {} refused with {outcome:?}",
                    leg.leg.as_str()
                )));
            };
            let metadata = EventMetadata {
                correlation_id: Some(trace.correlation_id.clone()),
                causation_id: Some(trace.causation_id.clone()),
                command_id: None,
                transaction_id: transaction_id_of(&leg.command).map(str::to_owned),
                actor: Some(actor),
                requested_actor: None,
                trace_id: trace.trace_id.clone(),
            };
            match self.transfers.record(transfer_id, &command, &metadata).await? {
                Ok(_) if leg.leg == Leg::Release => {
                    metrics::counter!(crate::telemetry::SAGA_COMPENSATIONS).increment(1);
                }
                Ok(_) => {}
                // Another pass recorded this step first (a concurrent duplicate delivery): reload.
                Err(DomainError::TransferStepNotAllowed { .. }) => {}
                Err(other) => return Err(AppError::Domain(other)),
            }
            steps += 1;
        }
    }

    /// Runs a leg's account command under its leg Idempotency-Key and transaction id.
    async fn run_leg(&self, leg: &LegCommand, trace: &Trace, actor: &str) -> Result<LegOutcome, AppError> {
        let txid = transaction_id_of(&leg.command).unwrap_or_default();
        let fingerprint = RequestFingerprint::of_leg(leg);
        let ctx = CommandContext {
            idempotency_key: format!("{LEG_IDEMPOTENCY_KEY_PREFIX}{txid}"),
            request_hash: fingerprint.hash(),
            operation: fingerprint.operation(),
            request_id: trace.causation_id.clone(),
            principal: actor.to_owned(),
            requested_actor: None,
            key_scope: KeyScope::Process,
            trace_id: trace.trace_id.clone(),
        };
        let response = self.accounts.execute_traced(&ctx, trace, &leg.account_id, &leg.command).await?;
        Ok(match response.code {
            None => LegOutcome::Accepted,
            Some(code) => LegOutcome::Refused(code),
        })
    }
}
