//! The pure part of the account projection: one event onto a summary row, one statement row.
//!
//! Shared by the live projector, the rebuild and the read-your-writes fallback of queries, so the
//! three can never disagree.

use corebank_domain::{AccountAggregate, AccountEvent, AccountId, AccountStatus, EventEnvelope};
use corebank_store::{AccountSummary, StatementEntry};

use crate::AppError;
use crate::engine::decode;

/// Folds one event into the summary row and returns the statement row it adds.
pub fn project(
    summary: Option<AccountSummary>,
    envelope: &EventEnvelope,
) -> Result<(Option<AccountSummary>, StatementEntry), AppError> {
    let event = decode::<AccountAggregate>(envelope)?;
    let account_id = AccountId::from_stream_id(&envelope.stream_id)
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| envelope.stream_id.clone());
    let mut entry = StatementEntry {
        event_id: envelope.event_id,
        account_id: account_id.clone(),
        stream_version: envelope.version,
        event_type: envelope.event_type.clone(),
        occurred_at: envelope.occurred_at,
        amount_minor: None,
        currency: None,
        transaction_id: None,
        balance_after_minor: None,
        reason: None,
    };
    let summary = match (event, summary) {
        (AccountEvent::Created(c), _) => Some(AccountSummary {
            account_id,
            owner_id: c.owner_id.as_str().to_owned(),
            currency: c.currency,
            status: AccountStatus::Active,
            balance_minor: 0,
            held_minor: 0,
            version: envelope.version,
            created_at: envelope.occurred_at,
            updated_at: envelope.occurred_at,
        }),
        (event, Some(mut s)) => {
            match &event {
                AccountEvent::Deposited(m) | AccountEvent::Withdrawn(m) => {
                    let signed = if matches!(event, AccountEvent::Deposited(_)) {
                        m.amount.minor()
                    } else {
                        -m.amount.minor()
                    };
                    s.balance_minor = s.balance_minor.saturating_add(signed);
                    entry.amount_minor = Some(m.amount.minor());
                    entry.currency = Some(m.currency);
                    entry.transaction_id = Some(m.transaction_id.as_str().to_owned());
                    entry.balance_after_minor = Some(s.balance_minor);
                }
                AccountEvent::Frozen(r) => {
                    s.status = AccountStatus::Frozen;
                    entry.reason = Some(r.reason.as_str().to_owned());
                }
                AccountEvent::Unfrozen(r) => {
                    s.status = AccountStatus::Active;
                    entry.reason = Some(r.reason.as_str().to_owned());
                }
                AccountEvent::FundsReserved(h) => {
                    s.held_minor = s.held_minor.saturating_add(h.amount.minor());
                    entry.amount_minor = Some(h.amount.minor());
                    entry.currency = Some(h.currency);
                    entry.transaction_id = Some(h.transaction_id.as_str().to_owned());
                    entry.balance_after_minor = Some(s.balance_minor);
                }
                AccountEvent::ReservationCaptured(h) | AccountEvent::ReservationReleased(h) => {
                    s.held_minor = s.held_minor.saturating_sub(h.amount.minor());
                    if matches!(event, AccountEvent::ReservationCaptured(_)) {
                        s.balance_minor = s.balance_minor.saturating_sub(h.amount.minor());
                    }
                    entry.amount_minor = Some(h.amount.minor());
                    entry.currency = Some(h.currency);
                    entry.transaction_id = Some(h.transaction_id.as_str().to_owned());
                    entry.balance_after_minor = Some(s.balance_minor);
                }
                AccountEvent::Created(_) => {}
            }
            s.version = envelope.version;
            s.updated_at = envelope.occurred_at;
            Some(s)
        }
        (_, None) => {
            return Err(AppError::Corrupt(format!(
                "{} v{}: event before AccountCreated",
                envelope.stream_id, envelope.version
            )));
        }
    };
    Ok((summary, entry))
}

/// Folds a whole run of events (in version order) onto a summary.
pub fn project_all<'a>(
    mut summary: Option<AccountSummary>,
    envelopes: impl IntoIterator<Item = &'a EventEnvelope>,
) -> Result<(Option<AccountSummary>, Vec<StatementEntry>), AppError> {
    let mut rows = Vec::new();
    for e in envelopes {
        let (next, row) = project(summary, e)?;
        summary = next;
        rows.push(row);
    }
    Ok((summary, rows))
}
