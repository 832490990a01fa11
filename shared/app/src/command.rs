//! The account command service: every account command, from a client or from the transfer process
//! manager, runs through the generic [`Engine`] with its Idempotency-Key and, for money movements
//! and transfer legs, its transaction record.
//!
//! A command runs as: claim the Idempotency-Key; answer from a transaction record if the
//! transaction id was seen; load the aggregate (in-process cache, else snapshot + tail); `decide`;
//! append the events together with the idempotency completion and the transaction record in one
//! atomic write; on a version conflict reload and decide again, a bounded number of times with jitter.
//! Decisions (acceptances and business rejections) are stored under the key and replayed; transient
//! failures release the key so the client's retry can run.

use std::sync::Arc;

use corebank_domain::{AccountAggregate, AccountCommand, AccountId, AccountState, EventMetadata, TransferId};
use corebank_store::{StoredResponse, TransactionIntent};
use uuid::Uuid;

use crate::AppError;
pub use crate::engine::SNAPSHOT_SCHEMA_VERSION;
use crate::engine::{Decided, Engine, GuardedCommand, Guards, IdempotencyGuard, TransactionGuard};

/// Idempotency keys of account commands live in this family: a client's under
/// `accounts/<principal id>`, the transfer process manager's legs under `accounts` itself.
pub const ACCOUNTS_SCOPE: &str = "accounts";

/// Idempotency keys of transfer requests live in this family, under `transfers/<principal id>`.
pub const TRANSFERS_SCOPE: &str = "transfers";

/// Whose namespace a command's Idempotency-Key is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyScope {
    /// The principal's own (client requests): the same key from two principals is two requests.
    Principal,
    /// The process manager's (a transfer's legs, whose keys are derived from the leg and unique).
    Process,
}

/// The idempotency scope of a key of `family` (`accounts`, `transfers`) for this context.
///
/// Principal ids never hold `#`, which the DynamoDB adapter uses to join scope and key.
pub fn idempotency_scope(family: &str, ctx: &CommandContext) -> String {
    match ctx.key_scope {
        KeyScope::Principal => format!("{family}/{}", ctx.principal),
        KeyScope::Process => family.to_owned(),
    }
}

/// The commands, named as in the idempotency records and transaction intents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// `POST /accounts`.
    CreateAccount,
    /// `POST /accounts/{id}/deposits`.
    Deposit,
    /// `POST /accounts/{id}/withdrawals`.
    Withdraw,
    /// `POST /accounts/{id}/freeze`.
    Freeze,
    /// `POST /accounts/{id}/unfreeze`.
    Unfreeze,
    /// `POST /transfers`.
    StartTransfer,
    /// A transfer's hold on its source (issued by the process manager).
    TransferHold,
    /// A transfer's credit of its destination.
    TransferCredit,
    /// A transfer's capture of its source hold.
    TransferCapture,
    /// A transfer's release of its source hold.
    TransferRelease,
}

impl Operation {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateAccount => "create-account",
            Self::Deposit => "deposit",
            Self::Withdraw => "withdraw",
            Self::Freeze => "freeze",
            Self::Unfreeze => "unfreeze",
            Self::StartTransfer => "start-transfer",
            Self::TransferHold => "transfer-hold",
            Self::TransferCredit => "transfer-credit",
            Self::TransferCapture => "transfer-capture",
            Self::TransferRelease => "transfer-release",
        }
    }
}

/// What arrives with every command besides the command itself.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// The validated Idempotency-Key.
    pub idempotency_key: String,
    /// Canonical hash of the request (see [`RequestFingerprint`](crate::fingerprint::RequestFingerprint)).
    pub request_hash: String,
    /// Which command.
    pub operation: Operation,
    /// The request id, used as correlation and causation id.
    pub request_id: String,
    /// The principal the command acts for (an authenticated caller's id; for a transfer's legs, the
    /// principal that started the transfer): the events' actor.
    pub principal: String,
    /// The `actor` the client named in the body, recorded beside the principal and never as it.
    pub requested_actor: Option<String>,
    /// Whose namespace the Idempotency-Key is in.
    pub key_scope: KeyScope,
    /// The X-Ray trace id of the invocation, if it is traced: recorded in the events' metadata.
    pub trace_id: Option<String>,
}

/// A command that was accepted and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Which command.
    pub operation: Operation,
    /// The account.
    pub account_id: AccountId,
    /// The stream version after the command.
    pub version: u64,
    /// The ids of the events written.
    pub event_ids: Vec<Uuid>,
    /// The command, for renderers that echo fields (create echoes owner and currency).
    pub command: AccountCommand,
}

/// A transfer request that was accepted (new, or the same request again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferAccepted {
    /// The transfer.
    pub transfer_id: TransferId,
    /// `PENDING`, `COMPLETED` or `FAILED`: where the transfer stands at the time of the answer.
    pub status: &'static str,
    /// The transfer stream's version.
    pub version: u64,
}

/// Turns decisions into the HTTP responses that are stored and replayed. Implemented by the API
/// layer, which owns the wire format.
///
/// An acceptance's response has no `code`; a rejection's carries its stable error code in
/// [`StoredResponse::code`]: the transfer process manager reads the outcome of its account commands
/// from that code, stored beside the body.
pub trait ResponseRenderer: Send + Sync + std::fmt::Debug {
    /// The response of an accepted account command (`code` is `None`).
    fn accepted(&self, accepted: &Accepted) -> StoredResponse;
    /// The response of an accepted transfer request (`code` is `None`).
    fn transfer_accepted(&self, accepted: &TransferAccepted) -> StoredResponse;
    /// The response of a command refused by a decision (`AppError::is_decision`), with its error
    /// code in `code`.
    fn rejected(&self, error: &AppError) -> StoredResponse;
}

/// Who and what caused a command, as its events record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// Correlates every event of one business flow.
    pub correlation_id: String,
    /// The request or event that directly caused the command.
    pub causation_id: String,
    /// The X-Ray trace id the flow started under, if it was traced.
    pub trace_id: Option<String>,
}

/// The account command service.
#[derive(Debug)]
pub struct CommandService {
    engine: Engine<AccountAggregate>,
    renderer: Arc<dyn ResponseRenderer>,
}

impl CommandService {
    /// The service over an engine of account streams.
    pub fn new(engine: Engine<AccountAggregate>, renderer: Arc<dyn ResponseRenderer>) -> Self {
        Self { engine, renderer }
    }

    /// Runs one account command under the idempotency contract and returns the response to send
    /// (fresh or replayed). Errors are failures that were not stored: the client may retry them.
    #[tracing::instrument(
        level = "debug",
        name = "command",
        skip_all,
        fields(account_id = %account_id, operation = ctx.operation.as_str(), idempotency_key = %ctx.idempotency_key, request_id = %ctx.request_id)
    )]
    pub async fn execute(
        &self,
        ctx: &CommandContext,
        account_id: &AccountId,
        command: &AccountCommand,
    ) -> Result<StoredResponse, AppError> {
        let trace = Trace {
            correlation_id: ctx.request_id.clone(),
            causation_id: ctx.request_id.clone(),
            trace_id: ctx.trace_id.clone(),
        };
        self.execute_traced(ctx, &trace, account_id, command).await
    }

    /// [`CommandService::execute`] with the correlation and causation ids given rather than taken from
    /// the request id: the transfer process manager correlates its commands with the transfer and
    /// names the event that caused each.
    pub async fn execute_traced(
        &self,
        ctx: &CommandContext,
        trace: &Trace,
        account_id: &AccountId,
        command: &AccountCommand,
    ) -> Result<StoredResponse, AppError> {
        let transaction = transaction_id_of(command)
            .zip(intent_of(account_id, command, ctx.operation))
            .map(|(transaction_id, intent)| TransactionGuard { transaction_id, intent });
        let scope = idempotency_scope(ACCOUNTS_SCOPE, ctx);
        let guards = Guards {
            idempotency: Some(IdempotencyGuard {
                scope: &scope,
                key: &ctx.idempotency_key,
                operation: ctx.operation.as_str(),
                request_hash: &ctx.request_hash,
            }),
            transaction,
        };
        let metadata = EventMetadata {
            correlation_id: Some(trace.correlation_id.clone()),
            causation_id: Some(trace.causation_id.clone()),
            command_id: Some(ctx.idempotency_key.clone()),
            transaction_id: transaction_id_of(command).map(str::to_owned),
            actor: Some(ctx.principal.clone()),
            requested_actor: ctx.requested_actor.clone(),
            trace_id: trace.trace_id.clone(),
        };
        let render = |decided: Decided<'_, AccountState>| match decided {
            Decided::Accepted { version, event_ids, .. } => self.renderer.accepted(&Accepted {
                operation: ctx.operation,
                account_id: account_id.clone(),
                version,
                event_ids: event_ids.to_vec(),
                command: command.clone(),
            }),
            Decided::Rejected(error) => self.renderer.rejected(error),
        };
        let stream_id = account_id.stream_id();
        let guarded =
            GuardedCommand { guards, stream_id: &stream_id, command, metadata: &metadata, render: &render };
        self.engine.execute(&guarded).await
    }

    /// The current state of an account stream: cached or snapshot state plus the stored tail.
    pub async fn load(&self, stream_id: &str) -> Result<AccountState, AppError> {
        self.engine.load(stream_id).await
    }

    /// The account's owner, which never changes once the account exists (`None`: no such account),
    /// read from the cache when it can be.
    pub async fn owner(&self, account_id: &AccountId) -> Result<Option<corebank_domain::OwnerId>, AppError> {
        let state = self.engine.load_settled(&account_id.stream_id(), |s| s.account.is_some()).await?;
        Ok(state.account.map(|a| a.owner_id))
    }

    /// The renderer responses are stored with.
    pub fn renderer(&self) -> &Arc<dyn ResponseRenderer> {
        &self.renderer
    }
}

/// The business transaction id of a money movement or of a transfer leg.
pub fn transaction_id_of(command: &AccountCommand) -> Option<&str> {
    match command {
        AccountCommand::Deposit { transaction_id, .. }
        | AccountCommand::Withdraw { transaction_id, .. }
        | AccountCommand::PlaceHold { transaction_id, .. }
        | AccountCommand::CaptureHold { transaction_id, .. }
        | AccountCommand::ReleaseHold { transaction_id, .. } => Some(transaction_id.as_str()),
        AccountCommand::Create { .. } | AccountCommand::Freeze { .. } | AccountCommand::Unfreeze { .. } => {
            None
        }
    }
}

/// The intent a transaction id is recorded with, compared when it is seen again.
///
/// A capture or release takes the amount of the open hold, so its intent is the account and the
/// operation alone (amount 0, no currency); its transaction id already names the transfer, since leg
/// ids are derived from the transfer id.
pub fn intent_of(
    account_id: &AccountId,
    command: &AccountCommand,
    operation: Operation,
) -> Option<TransactionIntent> {
    let intent = |amount_minor: i64, currency: &str| TransactionIntent {
        account_id: account_id.as_str().to_owned(),
        operation: operation.as_str().to_owned(),
        amount_minor,
        currency: currency.to_owned(),
    };
    match command {
        AccountCommand::Deposit { amount, currency, .. }
        | AccountCommand::Withdraw { amount, currency, .. }
        | AccountCommand::PlaceHold { amount, currency, .. } => Some(intent(amount.minor(), currency.code())),
        AccountCommand::CaptureHold { .. } | AccountCommand::ReleaseHold { .. } => Some(intent(0, "")),
        AccountCommand::Create { .. } | AccountCommand::Freeze { .. } | AccountCommand::Unfreeze { .. } => {
            None
        }
    }
}
