//! The bank's own figures: every metric the code records, by name, with its unit and what it
//! counts. The code records them through the `metrics` facade; the process chooses where they go
//! (CloudWatch embedded metric format from a Lambda function, `GET /metrics` on the runner). Without
//! a recorder installed, recording costs next to nothing.
//!
//! `docs/operations/metrics.md` lists each with what to do when its alarm fires; a test holds that
//! page, and the alarms in `template.yaml`, to [`CATALOGUE`].

use chrono::{DateTime, Utc};
use corebank_store::ParkedStats;

use crate::reconcile::ReconcileReport;

/// A metric's kind, as the facade records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Counts events; each export sends the increase since the last.
    Counter,
    /// The latest value of a level.
    Gauge,
    /// A distribution of samples.
    Histogram,
}

/// A metric's unit, named as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count.
    Count,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Its name, the same in CloudWatch and on the runner's `/metrics`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its unit.
    pub unit: Unit,
    /// The labels (CloudWatch dimensions) it is recorded with.
    pub labels: &'static [&'static str],
    /// What it measures.
    pub help: &'static str,
}

/// Commands that were accepted (2xx), by operation.
pub const COMMANDS_ACCEPTED: &str = "commands_accepted";
/// Commands answered with an error (4xx or 5xx), by operation and error code.
pub const COMMANDS_REJECTED: &str = "commands_rejected";
/// Appends that lost an optimistic-concurrency race and were retried by the server.
pub const CONCURRENCY_RETRIES: &str = "concurrency_retries";
/// Commands that ran out of retries and answered `CONCURRENCY_CONFLICT`.
pub const CONCURRENCY_CONFLICTS: &str = "concurrency_conflicts";
/// Commands answered from a stored response (a retried Idempotency-Key or transaction id).
pub const IDEMPOTENT_REPLAYS: &str = "idempotent_replays";
/// Milliseconds from an event's commit to its projection into the read tables.
pub const PROJECTION_LAG_MS: &str = "projection_lag_ms";
/// Rows of the Postgres outbox not yet published.
pub const OUTBOX_BACKLOG: &str = "outbox_backlog";
/// Seconds since the oldest unpublished outbox row was written.
pub const OUTBOX_OLDEST_AGE_SECONDS: &str = "outbox_oldest_age_seconds";
/// Transient failures met while delivering events (broker down, timeouts, throttling), by stage.
pub const DELIVERY_TRANSIENT_FAILURES: &str = "delivery_transient_failures";
/// Records a consumer parked (failed permanently, or behind a parked record of their stream).
pub const RECORDS_PARKED: &str = "records_parked";
/// Records parked now, waiting for an operator.
pub const PARKED_RECORDS: &str = "parked_records";
/// Seconds since the oldest parked record was parked.
pub const PARKED_OLDEST_AGE_SECONDS: &str = "parked_oldest_age_seconds";
/// Transfers `PENDING` beyond the reconciler's bound, found by its last pass.
pub const STALLED_TRANSFERS: &str = "stalled_transfers";
/// Seconds since the oldest stalled `PENDING` transfer last moved.
pub const OLDEST_PENDING_TRANSFER_AGE_SECONDS: &str = "oldest_pending_transfer_age_seconds";
/// Stalled transfers the reconciler drove to their end.
pub const TRANSFERS_REDRIVEN: &str = "transfers_redriven";
/// Read-side rows the reconciler found missing or behind their stream and repaired.
pub const READ_SIDE_REPAIRS: &str = "read_side_repairs";
/// Transfers the process manager compensated (the credit failed, the source hold was released).
pub const SAGA_COMPENSATIONS: &str = "saga_compensations";
/// Lambda execution environments started, by function.
pub const COLD_STARTS: &str = "cold_starts";

/// Every metric the code records.
pub const CATALOGUE: &[Metric] = &[
    Metric {
        name: COMMANDS_ACCEPTED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["operation"],
        help: "commands accepted (2xx), by operation",
    },
    Metric {
        name: COMMANDS_REJECTED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["operation", "code"],
        help: "commands answered with an error, by operation and error code",
    },
    Metric {
        name: CONCURRENCY_RETRIES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        help: "appends that lost a version race and were retried by the server",
    },
    Metric {
        name: CONCURRENCY_CONFLICTS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        help: "commands that ran out of retries (CONCURRENCY_CONFLICT)",
    },
    Metric {
        name: IDEMPOTENT_REPLAYS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        help: "commands answered from a stored response",
    },
    Metric {
        name: PROJECTION_LAG_MS,
        kind: Kind::Histogram,
        unit: Unit::Milliseconds,
        labels: &[],
        help: "milliseconds from an event's commit to its projection (the oldest of each batch)",
    },
    Metric {
        name: OUTBOX_BACKLOG,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        help: "unpublished rows of the Postgres outbox",
    },
    Metric {
        name: OUTBOX_OLDEST_AGE_SECONDS,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        labels: &[],
        help: "age of the oldest unpublished outbox row",
    },
    Metric {
        name: DELIVERY_TRANSIENT_FAILURES,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["stage"],
        help: "transient delivery failures (broker down, timeouts, throttling), by stage",
    },
    Metric {
        name: RECORDS_PARKED,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["consumer"],
        help: "records parked by a consumer",
    },
    Metric {
        name: PARKED_RECORDS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        help: "records parked now, waiting for an operator",
    },
    Metric {
        name: PARKED_OLDEST_AGE_SECONDS,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        labels: &[],
        help: "age of the oldest parked record",
    },
    Metric {
        name: STALLED_TRANSFERS,
        kind: Kind::Gauge,
        unit: Unit::Count,
        labels: &[],
        help: "transfers PENDING beyond the reconciler's bound at its last pass",
    },
    Metric {
        name: OLDEST_PENDING_TRANSFER_AGE_SECONDS,
        kind: Kind::Gauge,
        unit: Unit::Seconds,
        labels: &[],
        help: "seconds since the oldest stalled PENDING transfer last moved",
    },
    Metric {
        name: TRANSFERS_REDRIVEN,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        help: "stalled transfers the reconciler drove to their end",
    },
    Metric {
        name: READ_SIDE_REPAIRS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        help: "read-side rows the reconciler found missing or behind and repaired",
    },
    Metric {
        name: SAGA_COMPENSATIONS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &[],
        help: "transfers compensated by the process manager",
    },
    Metric {
        name: COLD_STARTS,
        kind: Kind::Counter,
        unit: Unit::Count,
        labels: &["function"],
        help: "Lambda execution environments started, by function",
    },
];

/// Registers every metric's unit and help with the installed recorder (call once, after installing
/// it: exporters read units from here).
pub fn describe() {
    for m in CATALOGUE {
        let unit = match m.unit {
            Unit::Count => metrics::Unit::Count,
            Unit::Milliseconds => metrics::Unit::Milliseconds,
            Unit::Seconds => metrics::Unit::Seconds,
        };
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, unit, m.help),
        }
    }
}

/// Records what a reconciler pass found and did, and the parked records it saw after it.
pub fn record_reconcile(report: &ReconcileReport, parked: Option<&ParkedStats>, now: DateTime<Utc>) {
    metrics::gauge!(STALLED_TRANSFERS).set(report.examined as f64);
    metrics::gauge!(OLDEST_PENDING_TRANSFER_AGE_SECONDS).set(report.oldest_pending_secs.unwrap_or(0) as f64);
    metrics::counter!(TRANSFERS_REDRIVEN).increment(report.settled as u64);
    metrics::counter!(READ_SIDE_REPAIRS)
        .increment((report.transfer_rows_repaired + report.streams_repaired) as u64);
    if let Some(parked) = parked {
        record_parked(parked, now);
    }
}

/// Records the parked records' count and the age of the oldest.
pub fn record_parked(parked: &ParkedStats, now: DateTime<Utc>) {
    metrics::gauge!(PARKED_RECORDS).set(parked.count as f64);
    let age = parked.oldest_parked_at.map_or(0, |at| (now - at).num_seconds().max(0));
    metrics::gauge!(PARKED_OLDEST_AGE_SECONDS).set(age as f64);
}

/// Records the projection lag of a batch: the age of its oldest event at the time it was applied.
pub fn record_projection_lag(oldest_occurred_at: DateTime<Utc>, now: DateTime<Utc>) {
    let lag = (now - oldest_occurred_at).num_milliseconds().max(0);
    metrics::histogram!(PROJECTION_LAG_MS).record(lag as f64);
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_and_shaped_for_both_exporters() {
        let mut seen = HashSet::new();
        for m in CATALOGUE {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(
                m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}: lower case and underscores only (a Prometheus name and a CloudWatch name)",
                m.name
            );
            assert!(m.labels.len() <= 2, "{}: few dimensions keep CloudWatch's metric count small", m.name);
        }
    }
}
