//! Response bodies: the wire format of every answer, money included.
//!
//! Money goes out as an exact JSON number in major units (`balance`, `amount`) beside a string of
//! minor units (`balanceMinorUnits`, `amountMinorUnits`). The number is written from its decimal
//! text, never through a binary float.

use chrono::{DateTime, SecondsFormat, Utc};
use corebank_app::AppError;
use corebank_app::command::{Accepted, ResponseRenderer, TransferAccepted};
use corebank_domain::money::format_major;
use corebank_domain::{AccountCommand, Currency};
use corebank_store::{AccountSummary, StatementEntry, StoredResponse, TransferStatus};
use http::StatusCode;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::ApiError;
use crate::error::{classify, error_body};

/// An exact JSON number in major units, kept as its decimal text.
fn money(minor: i64, currency: Currency) -> Box<RawValue> {
    let text = format_major(minor, currency);
    // `format_major` always yields valid JSON number text, so the fallback is never taken.
    RawValue::from_string(text).unwrap_or_else(|_| zero())
}

fn zero() -> Box<RawValue> {
    serde_json::value::to_raw_value(&0).unwrap_or_default()
}

/// Millisecond RFC 3339 time, as the seed's clients expect.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Stores the responses of decisions.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonRenderer;

impl ResponseRenderer for JsonRenderer {
    fn accepted(&self, accepted: &Accepted) -> StoredResponse {
        let mut body = Map::new();
        body.insert("status".into(), "accepted".into());
        body.insert("accountId".into(), accepted.account_id.as_str().into());
        if let AccountCommand::Create { owner_id, currency, .. } = &accepted.command {
            body.insert("ownerId".into(), owner_id.as_str().into());
            body.insert("currency".into(), currency.code().into());
        }
        body.insert("version".into(), accepted.version.into());
        body.insert(
            "eventIds".into(),
            accepted.event_ids.iter().map(|id| Value::from(id.to_string())).collect::<Vec<_>>().into(),
        );
        StoredResponse {
            status: StatusCode::CREATED.as_u16(),
            body: Value::Object(body).to_string(),
            code: None,
        }
    }

    fn transfer_accepted(&self, accepted: &TransferAccepted) -> StoredResponse {
        let body = serde_json::json!({
            "transferId": accepted.transfer_id.as_str(),
            "status": accepted.status,
        });
        StoredResponse { status: StatusCode::ACCEPTED.as_u16(), body: body.to_string(), code: None }
    }

    fn rejected(&self, error: &AppError) -> StoredResponse {
        let api = ApiError::App(clone_decision(error));
        let (status, code, message) = classify(&api);
        StoredResponse {
            status: status.as_u16(),
            body: error_body(status, code, &message),
            code: Some(code.to_owned()),
        }
    }
}

fn clone_decision(error: &AppError) -> AppError {
    match error {
        AppError::Domain(d) => AppError::Domain(d.clone()),
        AppError::TransactionIdConflict => AppError::TransactionIdConflict,
        // Only decisions are stored; anything else renders as an internal error.
        other => AppError::Corrupt(format!("not a decision: {other}")),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryBody<'a> {
    account_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_id: Option<&'a str>,
    currency: &'a str,
    status: &'a str,
    balance: Box<RawValue>,
    balance_minor_units: String,
    available_balance: Box<RawValue>,
    available_balance_minor_units: String,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

impl<'a> From<&'a AccountSummary> for SummaryBody<'a> {
    fn from(s: &'a AccountSummary) -> Self {
        let available = s.balance_minor - s.held_minor;
        Self {
            account_id: &s.account_id,
            owner_id: Some(&s.owner_id),
            currency: s.currency.code(),
            status: s.status.as_str(),
            balance: money(s.balance_minor, s.currency),
            balance_minor_units: s.balance_minor.to_string(),
            available_balance: money(available, s.currency),
            available_balance_minor_units: available.to_string(),
            version: s.version,
            created_at: Some(time(s.created_at)),
            updated_at: Some(time(s.updated_at)),
        }
    }
}

/// The `GET /accounts/{id}` body.
pub fn summary_body(s: &AccountSummary) -> String {
    to_json(&SummaryBody::from(s))
}

/// The `GET /accounts/{id}/balance` body: the summary without the owner and the times.
pub fn balance_body(s: &AccountSummary) -> String {
    to_json(&SummaryBody { owner_id: None, created_at: None, updated_at: None, ..SummaryBody::from(s) })
}

/// One history entry.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryBody<'a> {
    event_id: String,
    account_id: &'a str,
    stream_version: u64,
    event_type: &'a str,
    occurred_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_minor_units: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance_after: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    balance_after_minor_units: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl<'a> From<&'a StatementEntry> for EntryBody<'a> {
    fn from(e: &'a StatementEntry) -> Self {
        let with_currency = |minor: Option<i64>| minor.zip(e.currency);
        Self {
            event_id: e.event_id.to_string(),
            account_id: &e.account_id,
            stream_version: e.stream_version,
            event_type: &e.event_type,
            occurred_at: time(e.occurred_at),
            amount: with_currency(e.amount_minor).map(|(m, c)| money(m, c)),
            amount_minor_units: e.amount_minor.map(|m| m.to_string()),
            currency: e.currency.as_ref().map(Currency::code),
            transaction_id: e.transaction_id.as_deref(),
            balance_after: with_currency(e.balance_after_minor).map(|(m, c)| money(m, c)),
            balance_after_minor_units: e.balance_after_minor.map(|m| m.to_string()),
            reason: e.reason.as_deref(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryBody<'a> {
    account_id: &'a str,
    offset: usize,
    limit: usize,
    entries: Vec<EntryBody<'a>>,
}

/// The `GET /accounts/{id}/history` body.
pub fn history_body(account_id: &str, entries: &[StatementEntry], offset: usize, limit: usize) -> String {
    to_json(&HistoryBody {
        account_id,
        offset,
        limit,
        entries: entries.iter().map(EntryBody::from).collect(),
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LegBody<'a> {
    leg: &'a str,
    status: &'a str,
    at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TransferBody<'a> {
    transfer_id: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'a str>,
    source_account_id: &'a str,
    destination_account_id: &'a str,
    amount: Box<RawValue>,
    amount_minor_units: String,
    currency: &'a str,
    legs: Vec<LegBody<'a>>,
    version: u64,
    created_at: String,
    updated_at: String,
}

/// The `GET /transfers/{id}` body.
pub fn transfer_body(t: &TransferStatus) -> String {
    let legs = t
        .legs
        .iter()
        .map(|l| LegBody {
            leg: l.leg.as_str(),
            status: match l.status {
                corebank_store::LegStatus::Completed => "COMPLETED",
                corebank_store::LegStatus::Failed => "FAILED",
            },
            at: time(l.at),
        })
        .collect();
    to_json(&TransferBody {
        transfer_id: &t.transfer_id,
        status: t.status.as_str(),
        failure_reason: t.failure_reason.as_deref(),
        source_account_id: &t.source_account_id,
        destination_account_id: &t.destination_account_id,
        amount: money(t.amount_minor, t.currency),
        amount_minor_units: t.amount_minor.to_string(),
        currency: t.currency.code(),
        legs,
        version: t.version,
        created_at: time(t.created_at),
        updated_at: time(t.updated_at),
    })
}
