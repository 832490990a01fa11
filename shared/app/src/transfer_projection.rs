//! The pure part of the transfer status projection: one transfer event onto its `transfer_status` row.
//!
//! Shared by the live projector, the rebuild and the read-your-writes fallback of queries, so the
//! three can never disagree. Leg times are the times of the events that recorded them.

use corebank_domain::transfer::Leg;
use corebank_domain::{EventEnvelope, TransferAggregate, TransferEvent};
use corebank_store::{LegStatus, TransferLegStatus, TransferPhase, TransferStatus};

use crate::AppError;
use crate::engine::decode;

/// Folds one transfer event into the status row.
pub fn project_transfer(
    status: Option<TransferStatus>,
    envelope: &EventEnvelope,
) -> Result<TransferStatus, AppError> {
    let event = decode::<TransferAggregate>(envelope)?;
    let at = envelope.occurred_at;
    let leg = |leg: Leg, status: LegStatus| TransferLegStatus { leg, status, at };
    let mut row = match (event, status) {
        (TransferEvent::Requested(terms), _) => {
            return Ok(TransferStatus {
                transfer_id: terms.transfer_id.as_str().to_owned(),
                status: TransferPhase::Pending,
                failure_reason: None,
                source_account_id: terms.source_account_id.as_str().to_owned(),
                destination_account_id: terms.destination_account_id.as_str().to_owned(),
                amount_minor: terms.amount.minor(),
                currency: terms.currency,
                legs: Vec::new(),
                version: envelope.version,
                created_at: at,
                updated_at: at,
            });
        }
        (_, None) => {
            return Err(AppError::Corrupt(format!(
                "{} v{}: event before TransferRequested",
                envelope.stream_id, envelope.version
            )));
        }
        (event, Some(mut row)) => {
            match event {
                TransferEvent::Requested(_) => {}
                TransferEvent::HoldPlaced => row.legs.push(leg(Leg::Hold, LegStatus::Completed)),
                TransferEvent::Credited => row.legs.push(leg(Leg::Credit, LegStatus::Completed)),
                TransferEvent::Completed => {
                    row.legs.push(leg(Leg::Capture, LegStatus::Completed));
                    row.status = TransferPhase::Completed;
                }
                TransferEvent::CreditFailed(_) => row.legs.push(leg(Leg::Credit, LegStatus::Failed)),
                TransferEvent::Failed(r) => {
                    // A transfer fails either at its hold (nothing to undo) or after a refused credit,
                    // once its hold was released.
                    let held =
                        row.legs.iter().any(|l| l.leg == Leg::Hold && l.status == LegStatus::Completed);
                    if held {
                        row.legs.push(leg(Leg::Release, LegStatus::Completed));
                    } else {
                        row.legs.push(leg(Leg::Hold, LegStatus::Failed));
                    }
                    row.status = TransferPhase::Failed;
                    row.failure_reason = Some(r.reason);
                }
            }
            row
        }
    };
    row.version = envelope.version;
    row.updated_at = at;
    Ok(row)
}

/// Folds a run of events (in version order) onto a status row.
pub fn project_transfer_all<'a>(
    mut status: Option<TransferStatus>,
    envelopes: impl IntoIterator<Item = &'a EventEnvelope>,
) -> Result<Option<TransferStatus>, AppError> {
    for envelope in envelopes {
        status = Some(project_transfer(status, envelope)?);
    }
    Ok(status)
}
