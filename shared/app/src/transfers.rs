//! The transfer command service: requests (`POST /transfers`) under the `transfers` idempotency scope,
//! and the steps the process manager records, both through the generic [`Engine`].

use std::sync::Arc;

use corebank_domain::transfer::TransferStep;
use corebank_domain::{
    DomainError, EventMetadata, TransferAggregate, TransferCommand, TransferId, TransferState, TransferTerms,
};
use corebank_store::StoredResponse;
use uuid::Uuid;

use crate::AppError;
use crate::command::{
    CommandContext, ResponseRenderer, TRANSFERS_SCOPE, TransferAccepted, idempotency_scope,
};
use crate::engine::{Decided, Engine, GuardedCommand, Guards, IdempotencyGuard};

/// The UUID v5 namespace of server-chosen transfer ids. Fixed for ever: the id of a request without
/// a `transferId` is derived from its Idempotency-Key, so a retry names the same transfer.
const TRANSFER_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3c9a_61f0_5e2d_4b8a_a1f7_0d6e_93b4_c258);

/// The transfer id of a request that did not name one: a UUID v5 of the principal and its
/// Idempotency-Key (`<principal>#<key>`; principal ids never hold `#`). The same principal and key
/// always give the same transfer, so the answer (and its `Location`) is the same on every retry, and
/// two principals using the same key ask for two transfers.
pub fn transfer_id_for_key(principal: &str, idempotency_key: &str) -> TransferId {
    let name = format!("{principal}#{idempotency_key}");
    TransferId::from_uuid(Uuid::new_v5(&TRANSFER_ID_NAMESPACE, name.as_bytes()))
}

/// `PENDING`, `COMPLETED` or `FAILED`.
pub fn status_of(state: &TransferState) -> &'static str {
    state.step.as_ref().map_or("PENDING", TransferStep::status)
}

/// Transfer use cases on the write side.
#[derive(Debug)]
pub struct TransferService {
    engine: Engine<TransferAggregate>,
    renderer: Arc<dyn ResponseRenderer>,
}

impl TransferService {
    /// The service over an engine of transfer streams.
    pub fn new(engine: Engine<TransferAggregate>, renderer: Arc<dyn ResponseRenderer>) -> Self {
        Self { engine, renderer }
    }

    /// Requests a transfer under the idempotency contract (scope `transfers`) and returns the
    /// response to send, fresh or replayed: 202 with the transfer id and status for a new transfer or
    /// the same terms again, the stored rejection (`TRANSFER_ID_CONFLICT`) for other terms.
    #[tracing::instrument(
        level = "debug",
        name = "start_transfer",
        skip_all,
        fields(transfer_id = %terms.transfer_id, idempotency_key = %ctx.idempotency_key, request_id = %ctx.request_id)
    )]
    pub async fn start(
        &self,
        ctx: &CommandContext,
        terms: &TransferTerms,
    ) -> Result<StoredResponse, AppError> {
        let scope = idempotency_scope(TRANSFERS_SCOPE, ctx);
        let guards = Guards {
            idempotency: Some(IdempotencyGuard {
                scope: &scope,
                key: &ctx.idempotency_key,
                operation: ctx.operation.as_str(),
                request_hash: &ctx.request_hash,
            }),
            transaction: None,
        };
        let metadata = EventMetadata {
            correlation_id: Some(ctx.request_id.clone()),
            causation_id: Some(ctx.request_id.clone()),
            command_id: Some(ctx.idempotency_key.clone()),
            transaction_id: None,
            actor: Some(ctx.principal.clone()),
            requested_actor: ctx.requested_actor.clone(),
            trace_id: ctx.trace_id.clone(),
        };
        let render = |decided: Decided<'_, TransferState>| match decided {
            Decided::Accepted { state, version, .. } => self.renderer.transfer_accepted(&TransferAccepted {
                transfer_id: terms.transfer_id.clone(),
                status: status_of(state),
                version,
            }),
            Decided::Rejected(error) => self.renderer.rejected(error),
        };
        let command = TransferCommand::Request(terms.clone());
        let stream_id = terms.transfer_id.stream_id();
        let guarded = GuardedCommand {
            guards,
            stream_id: &stream_id,
            command: &command,
            metadata: &metadata,
            render: &render,
        };
        self.engine.execute(&guarded).await
    }

    /// The current state of a transfer (the default state when it was never requested).
    pub async fn load(&self, transfer_id: &TransferId) -> Result<TransferState, AppError> {
        self.engine.load(&transfer_id.stream_id()).await
    }

    /// The terms a transfer was requested with, which never change once requested (`None`: never
    /// requested), read from the cache when they can be.
    pub async fn terms(&self, transfer_id: &TransferId) -> Result<Option<TransferTerms>, AppError> {
        let state = self.engine.load_settled(&transfer_id.stream_id(), |s| s.terms.is_some()).await?;
        Ok(state.terms)
    }

    /// Records a step of the process: the state after it, or the rule that refused it.
    pub async fn record(
        &self,
        transfer_id: &TransferId,
        command: &TransferCommand,
        metadata: &EventMetadata,
    ) -> Result<Result<TransferState, DomainError>, AppError> {
        self.engine.decide_and_append(&transfer_id.stream_id(), command, metadata).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_and_key_always_name_the_same_transfer_and_others_other_ones() {
        assert_eq!(transfer_id_for_key("p1", "key-1"), transfer_id_for_key("p1", "key-1"));
        assert_ne!(transfer_id_for_key("p1", "key-1"), transfer_id_for_key("p1", "key-2"));
        assert_ne!(transfer_id_for_key("p1", "key-1"), transfer_id_for_key("p2", "key-1"));
        assert_eq!(transfer_id_for_key("p1", "key-1").as_str().len(), 36);
    }
}
