//! The run report: built once from the statistics and the audit, printed as text or written as JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::accounts;
use crate::args::{Config, Model};
use crate::audit::AuditOutcome;
use crate::scenario::{LoadOutcome, OpenOutcome, SetupOutcome};
use crate::stats::{Histogram, LoadStats, Op, OpStats, Timeline, ms};

/// How many error codes the report lists per operation.
const TOP_ERRORS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram) -> Self {
        Self {
            p50: ms(h.percentile(0.50)),
            p95: ms(h.percentile(0.95)),
            p99: ms(h.percentile(0.99)),
            max: ms(h.max()),
            mean: h.mean().round() / 1000.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ErrorCount {
    pub(crate) code: String,
    pub(crate) count: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OpReport {
    pub(crate) name: &'static str,
    pub(crate) count: u64,
    pub(crate) rps: f64,
    pub(crate) success: u64,
    pub(crate) intended: u64,
    /// 429 answers, apart from `failures`.
    pub(crate) throttled: u64,
    pub(crate) failures: u64,
    /// Status code -> count; `"ERR"` counts requests without an HTTP response.
    pub(crate) statuses: BTreeMap<String, u64>,
    pub(crate) latency_ms: Latency,
    pub(crate) top_errors: Vec<ErrorCount>,
}

fn status_key(status: u16) -> String {
    if status == 0 { "ERR".to_owned() } else { status.to_string() }
}

fn statuses(stats: &OpStats) -> BTreeMap<String, u64> {
    stats.statuses.iter().map(|&(s, n)| (status_key(s), n)).collect()
}

fn top_errors(stats: &OpStats) -> Vec<ErrorCount> {
    stats.top_errors(TOP_ERRORS).into_iter().map(|(code, count)| ErrorCount { code, count }).collect()
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { (count as f64 / secs * 10.0).round() / 10.0 } else { 0.0 }
}

fn op_report(op: Op, stats: &OpStats, secs: f64) -> OpReport {
    OpReport {
        name: op.name(),
        count: stats.count(),
        rps: rate(stats.count(), secs),
        success: stats.success,
        intended: stats.intended,
        throttled: stats.throttled,
        failures: stats.failures,
        statuses: statuses(stats),
        latency_ms: Latency::of(&stats.latency),
        top_errors: top_errors(stats),
    }
}

/// The run's configuration as the report shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigReport {
    #[serde(flatten)]
    pub(crate) config: Config,
    pub(crate) hot_accounts: usize,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetupReport {
    pub(crate) accounts_requested: usize,
    pub(crate) accounts_created: usize,
    pub(crate) create_statuses: BTreeMap<String, u64>,
    pub(crate) create_top_errors: Vec<ErrorCount>,
    pub(crate) initial_deposits_ok: u64,
    pub(crate) initial_deposits: u64,
    pub(crate) deposit_statuses: BTreeMap<String, u64>,
    pub(crate) deposit_top_errors: Vec<ErrorCount>,
    pub(crate) status_5xx: u64,
    pub(crate) elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LoadReport {
    pub(crate) elapsed_secs: f64,
    pub(crate) interrupted: bool,
    pub(crate) total_requests: u64,
    pub(crate) throughput_rps: f64,
    pub(crate) latency_ms: Latency,
    /// Deposits, withdrawals, creates and transfers.
    pub(crate) write_latency_ms: Latency,
    pub(crate) read_latency_ms: Latency,
    /// Requests that failed with anything but an intended 4xx (`INSUFFICIENT_FUNDS` on a withdrawal) or
    /// a 429, which `status_429` counts.
    pub(crate) failures: u64,
    pub(crate) failure_share: f64,
    pub(crate) intended_4xx: u64,
    pub(crate) status_409: u64,
    /// Requests shed with 429 Too Many Requests; neither failures nor part of any other count.
    pub(crate) status_429: u64,
    pub(crate) status_5xx: u64,
    pub(crate) transport_errors: u64,
    pub(crate) accounts_at_end: usize,
    pub(crate) operations: Vec<OpReport>,
    /// The `--rate` schedule; absent in the closed model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) open_model: Option<OpenModelReport>,
}

/// What the open model's schedule did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OpenModelReport {
    pub(crate) rate: u64,
    pub(crate) max_in_flight: usize,
    pub(crate) scheduled: u64,
    pub(crate) issued: u64,
    /// Scheduled requests not sent because `max_in_flight` were outstanding at their instant.
    pub(crate) missed: u64,
    pub(crate) peak_in_flight: usize,
}

fn open_model_report(config: &Config, open: Option<OpenOutcome>) -> Option<OpenModelReport> {
    match (config.model, open) {
        (Model::Open { rate, max_in_flight }, Some(o)) => Some(OpenModelReport {
            rate,
            max_in_flight,
            scheduled: o.scheduled,
            issued: o.issued,
            missed: o.missed,
            peak_in_flight: o.peak_in_flight,
        }),
        _ => None,
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TimelinePoint {
    pub(crate) second: usize,
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) write_p50_ms: f64,
    pub(crate) write_p99_ms: f64,
}

pub(crate) fn timeline_points(timeline: &Timeline) -> Vec<TimelinePoint> {
    timeline
        .seconds
        .iter()
        .enumerate()
        .map(|(second, s)| TimelinePoint {
            second,
            requests: s.requests,
            failures: s.failures,
            p50_ms: ms(s.all.percentile(0.5)),
            p99_ms: ms(s.all.percentile(0.99)),
            write_p50_ms: ms(s.writes.percentile(0.5)),
            write_p99_ms: ms(s.writes.percentile(0.99)),
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Verdict {
    pub(crate) pass: bool,
    pub(crate) exit_code: u8,
    pub(crate) reasons: Vec<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    pub(crate) tool: &'static str,
    pub(crate) version: &'static str,
    pub(crate) run_id: String,
    pub(crate) started_at: String,
    pub(crate) scenario_seed: u64,
    pub(crate) config: ConfigReport,
    pub(crate) setup: SetupReport,
    pub(crate) load: LoadReport,
    pub(crate) audit: AuditOutcome,
    pub(crate) verdict: Verdict,
    pub(crate) timeline: Vec<TimelinePoint>,
}

fn config_report(config: &Config) -> ConfigReport {
    ConfigReport {
        config: config.clone(),
        hot_accounts: accounts::hot_count(config.accounts, config.hot_account_ratio),
    }
}

fn count_5xx(stats: &OpStats) -> u64 {
    stats.statuses.iter().filter(|(s, _)| *s >= 500).map(|(_, n)| n).sum()
}

fn setup_report(config: &Config, setup: &SetupOutcome) -> SetupReport {
    SetupReport {
        accounts_requested: config.accounts,
        accounts_created: setup.accounts_created,
        create_statuses: statuses(&setup.create),
        create_top_errors: top_errors(&setup.create),
        initial_deposits_ok: setup.deposit.success,
        initial_deposits: setup.deposit.count(),
        deposit_statuses: statuses(&setup.deposit),
        deposit_top_errors: top_errors(&setup.deposit),
        status_5xx: count_5xx(&setup.create) + count_5xx(&setup.deposit),
        elapsed_ms: u64::try_from(setup.elapsed.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The load totals; operations with weight 0 and no requests are left out.
pub(crate) fn load_report(
    config: &Config,
    stats: &LoadStats,
    secs: f64,
    interrupted: bool,
    accounts: usize,
) -> LoadReport {
    let w = config.weights;
    let weight = |op: Op| match op {
        Op::Deposit => w.deposit,
        Op::Withdraw => w.withdraw,
        Op::Balance => w.balance,
        Op::History => w.history,
        Op::Create => w.create,
        Op::Transfer => w.transfer,
    };
    let total = stats.total();
    let failures: u64 = stats.ops.iter().map(|o| o.failures).sum();
    LoadReport {
        elapsed_secs: (secs * 1000.0).round() / 1000.0,
        interrupted,
        total_requests: total,
        throughput_rps: rate(total, secs),
        latency_ms: Latency::of(&stats.latency_of(|_| true)),
        write_latency_ms: Latency::of(&stats.latency_of(Op::is_write)),
        read_latency_ms: Latency::of(&stats.latency_of(|op| !op.is_write())),
        failures,
        failure_share: if total == 0 { 0.0 } else { failures as f64 / total as f64 },
        intended_4xx: stats.ops.iter().map(|o| o.intended).sum(),
        status_409: stats.count_status(|s| s == 409),
        status_429: stats.count_status(|s| s == 429),
        status_5xx: stats.count_status(|s| s >= 500),
        transport_errors: stats.count_status(|s| s == 0),
        accounts_at_end: accounts,
        operations: Op::ALL
            .iter()
            .filter(|&&op| weight(op) > 0 || stats.op(op).count() > 0)
            .map(|&op| op_report(op, stats.op(op), secs))
            .collect(),
        open_model: None,
    }
}

/// The pass/fail decision: a clean audit and no 5xx anywhere.
pub(crate) fn verdict(
    setup: &SetupReport,
    load: &LoadReport,
    audit: &AuditOutcome,
    timeout_secs: u64,
) -> Verdict {
    let mut reasons = Vec::new();
    let server_errors = setup.status_5xx + load.status_5xx;
    if server_errors > 0 {
        reasons.push(format!("{server_errors} responses were 5xx"));
    }
    if !audit.converged {
        reasons.push(format!(
            "{} of {} balances did not reach the expected value within {timeout_secs} s of the load's end",
            audit.mismatches, audit.accounts
        ));
    }
    if audit.drifted > 0 {
        reasons.push(format!("{} balances changed after matching", audit.drifted));
    }
    if audit.negative_balances > 0 {
        reasons.push(format!("{} negative balances", audit.negative_balances));
    }
    if audit.history.problems > 0 {
        reasons.push(format!("{} histories are not versions 1..N", audit.history.problems));
    }
    if audit.pending_writes.unresolved > 0 {
        reasons.push(format!(
            "{} writes with a lost reply could not be settled",
            audit.pending_writes.unresolved
        ));
    }
    if audit.transfers.unsettled > 0 {
        reasons.push(format!("{} transfers were still unsettled", audit.transfers.unsettled));
    }
    let pass = reasons.is_empty();
    Verdict { pass, exit_code: if pass { 0 } else { 1 }, reasons }
}

pub(crate) fn build(
    config: &Config,
    run_id: &str,
    setup: &SetupOutcome,
    load: &LoadOutcome,
    audit: AuditOutcome,
) -> Report {
    let setup = setup_report(config, setup);
    let mut load_report =
        load_report(config, &load.stats, load.elapsed.as_secs_f64(), load.interrupted, load.accounts_at_end);
    load_report.open_model = open_model_report(config, load.open);
    let verdict = verdict(&setup, &load_report, &audit, config.audit_timeout_secs);
    Report {
        tool: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        run_id: run_id.to_owned(),
        started_at: load.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        scenario_seed: load.scenario_seed,
        config: config_report(config),
        setup,
        load: load_report,
        audit,
        verdict,
        timeline: timeline_points(&load.timeline),
    }
}

fn codes(errors: &[ErrorCount]) -> String {
    errors.iter().map(|e| format!("{} x{}", e.code, e.count)).collect::<Vec<_>>().join(", ")
}

fn status_line(statuses: &BTreeMap<String, u64>) -> String {
    statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect::<Vec<_>>().join(" ")
}

fn latency_row(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    count: u64,
    rps: f64,
    l: &Latency,
    tail: &str,
) -> fmt::Result {
    writeln!(
        f,
        "  {name:<10} {count:>9} {rps:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {tail}",
        l.p50, l.p95, l.p99, l.max
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, hot_accounts) = (&self.config.config, self.config.hot_accounts);
        let w = &c.weights;
        writeln!(f, "{} {}  run {}  started {}", self.tool, self.version, self.run_id, self.started_at)?;
        let pacing = match c.model {
            Model::Closed => format!("{} workers", c.workers),
            Model::Open { rate, max_in_flight } => {
                format!("{rate} req/s scheduled (at most {max_in_flight} in flight)")
            }
        };
        writeln!(
            f,
            "target {}  {} s  {}  {} accounts ({} hot, {:.0}% of picks)  {}  scenario seed {}",
            c.base_url,
            c.duration_secs,
            pacing,
            c.accounts,
            hot_accounts,
            c.hot_selection_rate * 100.0,
            c.currency,
            self.scenario_seed
        )?;
        writeln!(
            f,
            "weights deposit {} withdraw {} balance {} history {} create {} transfer {}; amounts {}..{}",
            w.deposit, w.withdraw, w.balance, w.history, w.create, w.transfer, c.min_amount, c.max_amount
        )?;

        let s = &self.setup;
        writeln!(f)?;
        writeln!(
            f,
            "SETUP  {}/{} accounts created, {}/{} initial deposits of {} {}, {:.2} s",
            s.accounts_created,
            s.accounts_requested,
            s.initial_deposits_ok,
            s.initial_deposits,
            c.initial_deposit,
            c.currency,
            s.elapsed_ms as f64 / 1000.0
        )?;
        if !s.create_top_errors.is_empty() {
            writeln!(f, "  create errors: {}", codes(&s.create_top_errors))?;
        }
        if !s.deposit_top_errors.is_empty() {
            writeln!(f, "  deposit errors: {}", codes(&s.deposit_top_errors))?;
        }

        let l = &self.load;
        writeln!(f)?;
        writeln!(
            f,
            "LOAD   {:.2} s{}, {} requests, {:.1} req/s, {} accounts at the end",
            l.elapsed_secs,
            if l.interrupted { " (interrupted)" } else { "" },
            l.total_requests,
            l.throughput_rps,
            l.accounts_at_end
        )?;
        writeln!(
            f,
            "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  statuses / top error codes",
            "operation", "count", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
        )?;
        for op in &l.operations {
            latency_row(f, op.name, op.count, op.rps, &op.latency_ms, &status_line(&op.statuses))?;
            if !op.top_errors.is_empty() {
                writeln!(f, "  {:<70}  {}", "", codes(&op.top_errors))?;
            }
        }
        let write_count: u64 =
            l.operations.iter().filter(|o| o.name != "balance" && o.name != "history").map(|o| o.count).sum();
        let write_rps = rate(write_count, l.elapsed_secs);
        latency_row(
            f,
            "writes",
            write_count,
            write_rps,
            &l.write_latency_ms,
            "deposit+withdraw+create+transfer",
        )?;
        latency_row(
            f,
            "reads",
            l.total_requests - write_count,
            // Its own rounding: the difference of two rounded rates can show -0.1 for none at all.
            rate(l.total_requests - write_count, l.elapsed_secs),
            &l.read_latency_ms,
            "",
        )?;
        latency_row(f, "all", l.total_requests, l.throughput_rps, &l.latency_ms, "")?;
        writeln!(
            f,
            "  failures {} of {} ({:.3}%), not counting {} intended 4xx (INSUFFICIENT_FUNDS on withdrawals) \
             or {} throttled (429)",
            l.failures,
            l.total_requests,
            l.failure_share * 100.0,
            l.intended_4xx,
            l.status_429
        )?;
        writeln!(
            f,
            "  409 {}   429 {}   5xx {}   transport errors {}",
            l.status_409, l.status_429, l.status_5xx, l.transport_errors
        )?;
        if let Some(o) = &l.open_model {
            writeln!(
                f,
                "  open model: {} scheduled at {} req/s, {} issued, {} missed (the {} in-flight cap was reached), \
                 peak {} in flight",
                o.scheduled, o.rate, o.issued, o.missed, o.max_in_flight, o.peak_in_flight
            )?;
        }

        let a = &self.audit;
        writeln!(f)?;
        writeln!(
            f,
            "AUDIT  {} accounts, {:.2} s, {} requests{}",
            a.accounts,
            a.elapsed_ms as f64 / 1000.0,
            a.requests,
            if a.cut_short { " (cut short)" } else { "" }
        )?;
        let p = &a.pending_writes;
        writeln!(
            f,
            "  lost replies    {} writes replayed with their key: {} applied, {} rejected, {} unresolved",
            p.total, p.applied, p.rejected, p.unresolved
        )?;
        let t = &a.transfers;
        if t.tracked > 0 || c.weights.transfer > 0 {
            writeln!(
                f,
                "  transfers       {} tracked: {} completed, {} failed, {} never created, {} unsettled{}",
                t.tracked,
                t.completed,
                t.failed,
                t.never_created,
                t.unsettled,
                t.settled_after_ms.map(|ms| format!("; settled {ms} ms after the load")).unwrap_or_default()
            )?;
        }
        match a.convergence_ms {
            Some(ms) if a.converged => writeln!(
                f,
                "  balances        all {} equal the expectation: converged within {ms} ms of the load's end \
                 ({}/{} matched on the first read; {} rounds)",
                a.accounts, a.first_read_matched, a.accounts, a.balance_rounds
            )?,
            _ => writeln!(
                f,
                "  balances        {} MISMATCHES of {} after {} s{}",
                a.mismatches,
                a.accounts,
                c.audit_timeout_secs,
                if a.drifted > 0 {
                    format!(" ({} drifted after matching)", a.drifted)
                } else {
                    String::new()
                }
            )?,
        }
        if let Some(ms) = a.server_caught_up_ms {
            writeln!(
                f,
                "  read side       the server reported pipeline lag 0 at {ms} ms after the load's end"
            )?;
        }
        for m in &a.mismatch_sample {
            writeln!(
                f,
                "    {}: expected {} minor units, observed {}{}",
                m.account_id,
                m.expected_minor,
                serde_json::to_string(&m.observed).unwrap_or_default(),
                if m.unresolved_moves > 0 {
                    format!(" ({} unresolved moves)", m.unresolved_moves)
                } else {
                    String::new()
                }
            )?;
        }
        writeln!(
            f,
            "  money           expected {} {c2}, observed {} {c2}",
            a.expected_total,
            a.observed_total,
            c2 = c.currency
        )?;
        writeln!(
            f,
            "  negative        {}{}",
            a.negative_balances,
            if a.negative_sample.is_empty() {
                String::new()
            } else {
                format!(" ({})", a.negative_sample.join(", "))
            }
        )?;
        let h = &a.history;
        writeln!(
            f,
            "  history         {}/{} contiguous 1..N ({} events)",
            h.contiguous, h.checked, h.events
        )?;
        for problem in &h.sample {
            writeln!(f, "    {}: {}", problem.account_id, problem.problem)?;
        }

        writeln!(f)?;
        if self.verdict.pass {
            writeln!(f, "VERDICT PASS (exit 0)")
        } else {
            writeln!(f, "VERDICT FAIL (exit {}): {}", self.verdict.exit_code, self.verdict.reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Class, classify};

    fn stats() -> LoadStats {
        let mut s = LoadStats::default();
        let mut add = |op: Op, micros: u64, status: Option<u16>, code: Option<&str>| {
            let class: Class = classify(op, status, code);
            s.op_mut(op).record(micros, status, code, class);
        };
        for i in 0..90 {
            add(Op::Deposit, 1_000 + i, Some(201), None);
        }
        add(Op::Withdraw, 2_000, Some(400), Some("INSUFFICIENT_FUNDS"));
        add(Op::Withdraw, 2_000, Some(409), Some("CONCURRENCY_CONFLICT"));
        add(Op::Withdraw, 2_000, Some(500), Some("INTERNAL"));
        add(Op::Balance, 500, None, Some("TRANSPORT_IO"));
        add(Op::Balance, 500, Some(429), Some("TOO_MANY_REQUESTS"));
        add(Op::Deposit, 1_000, Some(429), Some("TOO_MANY_REQUESTS"));
        for _ in 0..4 {
            add(Op::Balance, 500, Some(200), None);
        }
        s
    }

    #[test]
    fn load_totals() {
        let config = Config::default();
        let r = load_report(&config, &stats(), 10.0, false, 100);
        assert_eq!(r.total_requests, 100);
        assert!((r.throughput_rps - 10.0).abs() < 1e-9);
        assert_eq!(r.failures, 3, "409, 500 and the transport error");
        assert!((r.failure_share - 0.03).abs() < 1e-9);
        assert_eq!((r.intended_4xx, r.status_409, r.status_5xx, r.transport_errors), (1, 1, 1, 1));
        assert_eq!(r.status_429, 2, "429s are counted apart, not as failures");
        assert_eq!((r.operations[0].throttled, r.operations[2].throttled), (1, 1));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!((json["status429"].as_u64(), json["failures"].as_u64()), (Some(2), Some(3)));
        assert_eq!(
            r.operations.iter().map(|o| o.name).collect::<Vec<_>>(),
            ["deposit", "withdraw", "balance", "history", "create"]
        );
        let withdraw = &r.operations[1];
        assert_eq!(withdraw.statuses.get("409"), Some(&1));
        assert_eq!(r.operations[2].statuses.get("ERR"), Some(&1));
        assert_eq!(withdraw.top_errors.len(), 3);
        assert!(r.write_latency_ms.p50 >= 1.0 && r.write_latency_ms.p50 < 1.2);
        assert!((r.read_latency_ms.max - 0.5).abs() < 1e-9);
    }

    fn clean_audit() -> AuditOutcome {
        AuditOutcome {
            accounts: 3,
            pending_writes: crate::audit::PendingAudit::default(),
            transfers: crate::audit::TransferAudit::default(),
            converged: true,
            convergence_ms: Some(12),
            server_caught_up_ms: Some(3),
            balance_rounds: 1,
            first_read_matched: 3,
            mismatches: 0,
            mismatch_sample: Vec::new(),
            drifted: 0,
            negative_balances: 0,
            negative_sample: Vec::new(),
            expected_total_minor: 300,
            observed_total_minor: 300,
            expected_total: "3.00".into(),
            observed_total: "3.00".into(),
            history: crate::audit::HistoryAudit {
                checked: 3,
                contiguous: 3,
                events: 9,
                ..Default::default()
            },
            requests: 6,
            elapsed_ms: 20,
            cut_short: false,
            clean: true,
        }
    }

    fn full_report(audit: AuditOutcome, stats: LoadStats) -> Report {
        let config = Config::default();
        let setup = SetupOutcome {
            create: OpStats::default(),
            deposit: OpStats::default(),
            accounts_created: 3,
            elapsed: std::time::Duration::from_millis(5),
        };
        let load = LoadOutcome {
            stats,
            timeline: Timeline::default(),
            started_at: chrono::Utc::now(),
            elapsed: std::time::Duration::from_secs(10),
            end: std::time::Instant::now(),
            interrupted: false,
            scenario_seed: 42,
            accounts_at_end: 3,
            open: None,
        };
        build(&config, "abc", &setup, &load, audit)
    }

    #[test]
    fn verdict_passes_only_clean_runs_without_5xx() {
        let ok = LoadStats::default();
        let report = full_report(clean_audit(), ok.clone());
        assert!(report.verdict.pass);
        assert_eq!(report.verdict.exit_code, 0);
        let text = report.to_string();
        assert!(text.contains("VERDICT PASS (exit 0)"), "{text}");
        assert!(text.contains("converged within 12 ms of the load's end (3/3 matched"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["verdict"]["pass"], true);
        assert_eq!(json["audit"]["convergenceMs"], 12);
        assert!(text.contains("pipeline lag 0 at 3 ms after the load's end"), "{text}");
        assert_eq!(json["audit"]["serverCaughtUpMs"], 3);
        assert_eq!(json["scenarioSeed"], 42);

        let failing = full_report(clean_audit(), stats());
        assert!(!failing.verdict.pass, "a 5xx fails the run");
        assert_eq!(failing.verdict.reasons, vec!["1 responses were 5xx".to_owned()]);

        let mut mismatched = clean_audit();
        mismatched.converged = false;
        mismatched.mismatches = 1;
        mismatched.mismatch_sample.push(crate::audit::Mismatch {
            account_id: "lt-abc-1".into(),
            expected_minor: 100,
            observed: crate::audit::Observation::Balance { minor: 90, version: Some(2) },
            unresolved_moves: 0,
        });
        mismatched.history.problems = 1;
        let report = full_report(mismatched, ok);
        assert_eq!(report.verdict.exit_code, 1);
        assert_eq!(report.verdict.reasons.len(), 2);
        let text = report.to_string();
        assert!(text.contains("1 MISMATCHES of 3"), "{text}");
        assert!(text.contains("lt-abc-1: expected 100 minor units"), "{text}");
        assert!(text.starts_with("corebank-loadtest"), "{text}");
    }

    #[test]
    fn timeline_points_per_second() {
        let mut t = Timeline::default();
        let mut s = crate::stats::Second::default();
        s.record(2_000, true, false);
        s.record(4_000, false, true);
        t.merge_second(1, &s);
        let points = timeline_points(&t);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].requests, 0);
        assert_eq!((points[1].requests, points[1].failures), (2, 1));
        assert!((points[1].write_p99_ms - 2.0).abs() < 0.1);
        assert!((points[1].p99_ms - 4.0).abs() < 0.2);
    }
}
