//! Request bodies and their conversion into commands (parse, don't validate).

use corebank_app::transfers::transfer_id_for_key;
use corebank_domain::transfer::LEG_TRANSACTION_PREFIX;
use corebank_domain::{
    AccountCommand, AccountId, Amount, Currency, IdError, OwnerId, Reason, TransactionId, TransferId,
    TransferTerms, has_control,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ApiError;

/// The longest accepted `actor`, in characters.
pub const MAX_ACTOR_CHARS: usize = 128;

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::Validation(e.to_string())
}

fn currency(code: &str) -> Result<Currency, ApiError> {
    Currency::parse(code).map_err(|e| ApiError::Validation(format!("currency: {e}")))
}

/// Checks the optional `actor` of a body: the actor the client names, recorded as the requested
/// actor beside the authenticated principal, never as the actor.
pub fn actor(actor: Option<String>) -> Result<Option<String>, ApiError> {
    match actor {
        Some(a) if a.trim().is_empty() || a.chars().count() > MAX_ACTOR_CHARS || has_control(&a) => {
            Err(ApiError::Validation(
                "actor must be a non-blank text of at most 128 characters without control characters"
                    .to_owned(),
            ))
        }
        other => Ok(other),
    }
}

/// `POST /accounts`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// The new account's id.
    pub account_id: String,
    /// Its owner.
    pub owner_id: String,
    /// Its currency.
    pub currency: String,
    /// Who asks.
    #[serde(default)]
    pub actor: Option<String>,
}

impl CreateAccountRequest {
    /// The account id and the command.
    pub fn into_command(self) -> Result<(AccountId, AccountCommand, Option<String>), ApiError> {
        let account_id = AccountId::parse(&self.account_id).map_err(invalid)?;
        let owner_id = OwnerId::parse(&self.owner_id).map_err(invalid)?;
        let currency = currency(&self.currency)?;
        let command = AccountCommand::Create { account_id: account_id.clone(), owner_id, currency };
        Ok((account_id, command, actor(self.actor)?))
    }
}

/// `POST /accounts/{id}/deposits` and `/withdrawals`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MoneyRequest {
    /// A JSON number in major units, kept as its text.
    pub amount: Box<RawValue>,
    /// The currency.
    pub currency: String,
    /// The business transaction id.
    pub transaction_id: String,
    /// Who asks.
    #[serde(default)]
    pub actor: Option<String>,
}

/// Whether a money request is a deposit or a withdrawal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Credit.
    Deposit,
    /// Debit.
    Withdraw,
}

impl MoneyRequest {
    /// The command.
    pub fn into_command(self, direction: Direction) -> Result<(AccountCommand, Option<String>), ApiError> {
        let currency = currency(&self.currency)?;
        let amount = Amount::parse_major(self.amount.get(), currency)
            .map_err(|e| ApiError::Validation(format!("amount: {e}")))?;
        let transaction_id = TransactionId::parse(&self.transaction_id).map_err(invalid)?;
        if transaction_id.as_str().starts_with(LEG_TRANSACTION_PREFIX) {
            return Err(ApiError::Validation(format!(
                "transactionId must not start with {LEG_TRANSACTION_PREFIX:?}: that prefix is reserved for transfer legs"
            )));
        }
        let command = match direction {
            Direction::Deposit => AccountCommand::Deposit { amount, currency, transaction_id },
            Direction::Withdraw => AccountCommand::Withdraw { amount, currency, transaction_id },
        };
        Ok((command, actor(self.actor)?))
    }
}

/// `POST /accounts/{id}/freeze` and `/unfreeze`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusRequest {
    /// Why.
    pub reason: String,
    /// Who asks.
    #[serde(default)]
    pub actor: Option<String>,
}

impl StatusRequest {
    /// The command.
    pub fn into_command(self, freeze: bool) -> Result<(AccountCommand, Option<String>), ApiError> {
        let reason = Reason::parse(&self.reason).map_err(invalid)?;
        let command =
            if freeze { AccountCommand::Freeze { reason } } else { AccountCommand::Unfreeze { reason } };
        Ok((command, actor(self.actor)?))
    }
}

/// `POST /transfers`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferRequest {
    /// The client's id for the transfer; without one, the server derives it from the Idempotency-Key.
    #[serde(default)]
    pub transfer_id: Option<String>,
    /// Debited account.
    pub source_account_id: String,
    /// Credited account.
    pub destination_account_id: String,
    /// A JSON number in major units, kept as its text.
    pub amount: Box<RawValue>,
    /// The currency of both accounts.
    pub currency: String,
    /// Who asks.
    #[serde(default)]
    pub actor: Option<String>,
}

fn named(field: &str, e: &IdError) -> ApiError {
    ApiError::Validation(format!("{field} must be {}", e.rule))
}

impl TransferRequest {
    /// The transfer's terms, asked for by `principal`, and the requested actor. Only the request's
    /// shape is checked here (ids, amount, distinct accounts); existence, currency, funds and status
    /// are the saga's to find out.
    pub fn into_terms(
        self,
        principal: &str,
        idempotency_key: &str,
    ) -> Result<(TransferTerms, Option<String>), ApiError> {
        let transfer_id = match &self.transfer_id {
            Some(id) => TransferId::parse(id).map_err(invalid)?,
            None => transfer_id_for_key(principal, idempotency_key),
        };
        let source = AccountId::parse(&self.source_account_id).map_err(|e| named("sourceAccountId", &e))?;
        let destination =
            AccountId::parse(&self.destination_account_id).map_err(|e| named("destinationAccountId", &e))?;
        if source == destination {
            return Err(ApiError::Validation(
                "destinationAccountId must differ from sourceAccountId".to_owned(),
            ));
        }
        let currency = currency(&self.currency)?;
        let amount = Amount::parse_major(self.amount.get(), currency)
            .map_err(|e| ApiError::Validation(format!("amount: {e}")))?;
        let terms = TransferTerms {
            transfer_id,
            source_account_id: source,
            destination_account_id: destination,
            amount,
            currency,
            initiated_by: Some(principal.to_owned()),
        };
        Ok((terms, actor(self.actor)?))
    }
}
