//! The audit after the load: settle what the client could not know, then check the server's books.
//!
//! 1. Deposits and withdrawals whose reply was lost or a 5xx are replayed with their own `Idempotency-Key`
//!    and body: the server answers with the stored outcome, or runs them now.
//! 2. Transfers are polled at `GET /transfers/{id}` until `COMPLETED` (money moves) or `FAILED` (none).
//! 3. Every account's `GET /accounts/{id}/balance` is polled until `balanceMinorUnits` equals the expectation
//!    or `--audit-timeout` (counted from the end of the load) expires; converged accounts are read once more
//!    to catch late double-applies.
//! 4. Every account's history is read (1000 entries a page) and its `streamVersion`s must be exactly 1..N,
//!    with N the balance's `version`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::accounts::{self, Account, PendingWrite, Route, Settlement, TransferRecord, TransferState};
use crate::args::Config;
use crate::error::Error;
use crate::http::{BodyMode, Reply, Transport};
use crate::money;
use crate::scenario::{Ctx, money_body, run_indexed};

const POLL_INTERVAL: Duration = Duration::from_millis(100);
const HISTORY_PAGE: usize = 1000;
/// Polls of an unconfirmed transfer (lost reply) answered 404 before it counts as never created.
const NOT_FOUND_POLLS: u32 = 5;
/// How many ids the report lists per problem.
pub(crate) const SAMPLE: usize = 10;

/// What one balance read showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub(crate) enum Observation {
    Balance { minor: i64, version: Option<u64> },
    Http { status: u16, code: String },
    Transport { code: String },
    Unparsable,
}

impl Observation {
    fn minor(&self) -> Option<i64> {
        match self {
            Observation::Balance { minor, .. } => Some(*minor),
            Observation::Http { .. } | Observation::Transport { .. } | Observation::Unparsable => None,
        }
    }

    fn version(&self) -> Option<u64> {
        match self {
            Observation::Balance { version, .. } => *version,
            Observation::Http { .. } | Observation::Transport { .. } | Observation::Unparsable => None,
        }
    }
}

/// Reads the balance out of a `GET /accounts/{id}/balance` reply; `balanceMinorUnits` may be a string (the
/// contract) or an integer.
pub(crate) fn observe(reply: &Reply) -> Observation {
    match reply {
        Reply::Transport(kind) => Observation::Transport { code: kind.code().to_owned() },
        Reply::Response { status: 200, body } => {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
                return Observation::Unparsable;
            };
            let minor = match value.get("balanceMinorUnits") {
                Some(serde_json::Value::String(s)) => s.parse::<i64>().ok(),
                Some(serde_json::Value::Number(n)) => n.as_i64(),
                _ => None,
            };
            match minor {
                Some(minor) => Observation::Balance {
                    minor,
                    version: value.get("version").and_then(serde_json::Value::as_u64),
                },
                None => Observation::Unparsable,
            }
        }
        Reply::Response { status, .. } => Observation::Http {
            status: *status,
            code: reply.error_code().map(|c| c.into_owned()).unwrap_or_default(),
        },
    }
}

/// An account whose balance did not reach its expectation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Mismatch {
    pub(crate) account_id: String,
    pub(crate) expected_minor: i64,
    pub(crate) observed: Observation,
    /// Money movements of this account whose outcome stayed unknown.
    pub(crate) unresolved_moves: u32,
}

/// A history that is not exactly versions 1..N.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryProblem {
    pub(crate) account_id: String,
    pub(crate) problem: String,
}

/// The outcome of settling unknown deposits and withdrawals.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PendingAudit {
    pub(crate) total: usize,
    pub(crate) applied: usize,
    pub(crate) rejected: usize,
    pub(crate) unresolved: usize,
}

/// The outcome of polling transfers.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TransferAudit {
    pub(crate) tracked: usize,
    pub(crate) completed: usize,
    pub(crate) failed: usize,
    /// Unconfirmed submissions (lost reply or 5xx) the server does not know.
    pub(crate) never_created: usize,
    /// Still pending (or unreadable) when the audit timed out.
    pub(crate) unsettled: usize,
    /// From the end of the load until every tracked transfer was settled.
    pub(crate) settled_after_ms: Option<u64>,
}

/// The history check.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryAudit {
    pub(crate) checked: usize,
    pub(crate) contiguous: usize,
    pub(crate) events: u64,
    pub(crate) problems: usize,
    pub(crate) sample: Vec<HistoryProblem>,
}

/// Everything the audit found.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuditOutcome {
    pub(crate) accounts: usize,
    pub(crate) pending_writes: PendingAudit,
    pub(crate) transfers: TransferAudit,
    pub(crate) converged: bool,
    /// From the end of the load until the read that found the last balance equal to its expectation
    /// completed: an upper bound, with the resolution of one polling round.
    pub(crate) convergence_ms: Option<u64>,
    /// From the end of the load until the server's `GET /health` first reported a pipeline lag of 0
    /// (polled every 5 ms); `None` when the server reports no pipeline or never reached 0.
    pub(crate) server_caught_up_ms: Option<u64>,
    /// Rounds of balance reads (each reads every account not yet matching).
    pub(crate) balance_rounds: u32,
    /// Accounts whose very first read already matched.
    pub(crate) first_read_matched: usize,
    pub(crate) mismatches: usize,
    pub(crate) mismatch_sample: Vec<Mismatch>,
    /// Accounts that matched during polling and no longer did on the confirming read.
    pub(crate) drifted: usize,
    pub(crate) negative_balances: usize,
    pub(crate) negative_sample: Vec<String>,
    pub(crate) expected_total_minor: i128,
    pub(crate) observed_total_minor: i128,
    pub(crate) expected_total: String,
    pub(crate) observed_total: String,
    pub(crate) history: HistoryAudit,
    pub(crate) requests: u64,
    pub(crate) elapsed_ms: u64,
    pub(crate) cut_short: bool,
    pub(crate) clean: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn stop(ctx: &Ctx, deadline: Instant) -> bool {
    Instant::now() >= deadline || ctx.interrupts() >= 2
}

async fn pause(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(POLL_INTERVAL.min(left)).await;
}

/// How often the server's health is polled for its pipeline lag.
const HEALTH_POLL: Duration = Duration::from_millis(5);

/// The pipeline lag `GET /health` reports (`checks.pipeline.lag`), if it reports one.
fn pipeline_lag(body: &[u8]) -> Option<u64> {
    let health: serde_json::Value = serde_json::from_slice(body).ok()?;
    health.get("checks")?.get("pipeline")?.get("lag")?.as_u64()
}

/// Polls `GET /health` until the server says its read side has applied every event, and returns how long
/// after the load's end that was. A server without a pipeline check (or an unreadable health) gives `None`
/// at once: the balance reads below are the audit's evidence either way.
async fn server_caught_up(ctx: &Ctx, deadline: Instant, load_end: Instant) -> Option<Duration> {
    let uri: http::Uri = format!("{}/health", ctx.base).parse().ok()?;
    loop {
        let reply = ctx.http.get(uri.clone(), BodyMode::Always).await;
        ctx.audit_requests.fetch_add(1, Ordering::Relaxed);
        match reply.status() {
            Some(200 | 503) => {}
            _ => return None,
        }
        if pipeline_lag(reply.body())? == 0 {
            return Some(load_end.elapsed());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(HEALTH_POLL).await;
    }
}

/// Runs the audit; `load_end` is when the last worker finished.
pub(crate) async fn run(ctx: &Arc<Ctx>, config: &Config, load_end: Instant) -> Result<AuditOutcome, Error> {
    let started = Instant::now();
    let deadline = load_end + Duration::from_secs(config.audit_timeout_secs);
    let concurrency = config.workers.max(config.seed_concurrency);
    let requests_before = ctx.audit_requests.load(Ordering::Relaxed);

    let server_caught_up = server_caught_up(ctx, deadline, load_end).await;
    let pending_writes = settle_pending(ctx, concurrency, deadline).await?;
    let transfers = settle_transfers(ctx, concurrency, deadline, load_end).await?;

    let accounts = Arc::new(ctx.pool.snapshot());
    let n = accounts.len();
    let mut observed: Vec<Option<Observation>> = vec![None; n];
    let mut open: Vec<usize> = (0..n).collect();
    let mut convergence = None;
    let (mut rounds, mut first_read_matched) = (0_u32, 0);
    loop {
        let results = read_balances(ctx, &accounts, &open, concurrency).await?;
        rounds += 1;
        let mut still = Vec::new();
        for (&i, observation) in open.iter().zip(results) {
            let expected = accounts.get(i).map(|a| a.expected());
            if observation.minor() != expected {
                still.push(i);
            }
            if let Some(slot) = observed.get_mut(i) {
                *slot = Some(observation);
            }
        }
        if rounds == 1 {
            first_read_matched = open.len() - still.len();
        }
        open = still;
        if open.is_empty() {
            convergence = Some(load_end.elapsed());
            break;
        }
        if stop(ctx, deadline) {
            break;
        }
        pause(deadline).await;
    }

    // Confirm: read every converged account once more.
    let mut drifted = 0;
    if convergence.is_some() || open.len() < n {
        let mut is_open = vec![false; n];
        for &i in &open {
            if let Some(flag) = is_open.get_mut(i) {
                *flag = true;
            }
        }
        let confirm: Vec<usize> = (0..n).filter(|&i| !is_open.get(i).copied().unwrap_or(false)).collect();
        let results = read_balances(ctx, &accounts, &confirm, concurrency).await?;
        for (&i, observation) in confirm.iter().zip(results) {
            if observation.minor() != accounts.get(i).map(|a| a.expected()) {
                drifted += 1;
                open.push(i);
            }
            if let Some(slot) = observed.get_mut(i) {
                *slot = Some(observation);
            }
        }
        open.sort_unstable();
    }
    let converged = open.is_empty();

    let mismatch_sample = open
        .iter()
        .take(SAMPLE)
        .filter_map(|&i| {
            let account = accounts.get(i)?;
            Some(Mismatch {
                account_id: account.id.clone(),
                expected_minor: account.expected(),
                observed: observed.get(i).cloned().flatten().unwrap_or(Observation::Unparsable),
                unresolved_moves: account.unresolved(),
            })
        })
        .collect();
    let negatives: Vec<String> = accounts
        .iter()
        .zip(&observed)
        .filter(|(_, o)| o.as_ref().and_then(Observation::minor).is_some_and(|m| m < 0))
        .map(|(a, _)| a.id.clone())
        .collect();
    let expected_total_minor: i128 = accounts.iter().map(|a| i128::from(a.expected())).sum();
    let observed_total_minor: i128 =
        observed.iter().filter_map(|o| o.as_ref().and_then(Observation::minor)).map(i128::from).sum();

    let versions: Vec<Option<u64>> =
        observed.iter().map(|o| o.as_ref().and_then(Observation::version)).collect();
    let history = check_histories(ctx, &accounts, &versions, concurrency).await?;

    let clean = converged
        && negatives.is_empty()
        && history.problems == 0
        && pending_writes.unresolved == 0
        && transfers.unsettled == 0;
    let format_total = |t: i128| match i64::try_from(t) {
        Ok(t) => money::format_minor(t, ctx.digits),
        Err(_) => t.to_string(),
    };
    Ok(AuditOutcome {
        accounts: n,
        pending_writes,
        transfers,
        converged,
        convergence_ms: convergence.map(millis),
        server_caught_up_ms: server_caught_up.map(millis),
        balance_rounds: rounds,
        first_read_matched,
        mismatches: open.len(),
        mismatch_sample,
        drifted,
        negative_balances: negatives.len(),
        negative_sample: negatives.into_iter().take(SAMPLE).collect(),
        expected_total: format_total(expected_total_minor),
        observed_total: format_total(observed_total_minor),
        expected_total_minor,
        observed_total_minor,
        history,
        requests: ctx.audit_requests.load(Ordering::Relaxed) - requests_before,
        elapsed_ms: millis(started.elapsed()),
        cut_short: ctx.interrupts() >= 2,
        clean,
    })
}

async fn get(ctx: &Ctx, uri: http::Uri) -> Reply {
    ctx.audit_requests.fetch_add(1, Ordering::Relaxed);
    ctx.http.get(uri, BodyMode::Always).await
}

async fn read_balances(
    ctx: &Arc<Ctx>,
    accounts: &Arc<Vec<Arc<Account>>>,
    which: &[usize],
    concurrency: usize,
) -> Result<Vec<Observation>, Error> {
    let (shared, accounts) = (Arc::clone(ctx), Arc::clone(accounts));
    let which = Arc::new(which.to_vec());
    run_indexed(which.len(), concurrency, move |j| {
        let (ctx, accounts, which) = (Arc::clone(&shared), Arc::clone(&accounts), Arc::clone(&which));
        async move {
            let Some(account) = which.get(j).and_then(|&i| accounts.get(i)) else {
                return Observation::Unparsable;
            };
            match account.uri(&ctx.base, Route::Balance) {
                Ok(uri) => observe(&get(&ctx, uri).await),
                Err(_) => Observation::Unparsable,
            }
        }
    })
    .await
}

/// Replays each unknown deposit/withdrawal until the server gives a definite answer.
async fn settle_pending(
    ctx: &Arc<Ctx>,
    concurrency: usize,
    deadline: Instant,
) -> Result<PendingAudit, Error> {
    let writes =
        Arc::new(std::mem::take(&mut *ctx.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)));
    let shared = Arc::clone(ctx);
    let list = Arc::clone(&writes);
    let outcomes = run_indexed(writes.len(), concurrency, move |i| {
        let (ctx, writes) = (Arc::clone(&shared), Arc::clone(&list));
        async move {
            let write = writes.get(i)?;
            Some(replay(&ctx, write, deadline).await)
        }
    })
    .await?;
    let mut audit = PendingAudit { total: writes.len(), ..PendingAudit::default() };
    for outcome in outcomes.into_iter().flatten() {
        match outcome {
            Settlement::Applied => audit.applied += 1,
            Settlement::Rejected => audit.rejected += 1,
            Settlement::Unknown => audit.unresolved += 1,
        }
    }
    Ok(audit)
}

async fn replay(ctx: &Ctx, write: &PendingWrite, deadline: Instant) -> Settlement {
    let route = if write.deposit { Route::Deposits } else { Route::Withdrawals };
    let delta = accounts::delta(write.deposit, write.minor);
    loop {
        let body = Bytes::from(money_body(write.major, &ctx.currency, &write.transaction_id));
        ctx.audit_requests.fetch_add(1, Ordering::Relaxed);
        let reply = match write.account.uri(&ctx.base, route) {
            Ok(uri) => ctx.http.post(uri, &write.idempotency_key, body, BodyMode::ErrorsOnly).await,
            Err(_) => Reply::Transport(Transport::Build),
        };
        let in_progress = reply.error_code().as_deref() == Some("IDEMPOTENCY_REQUEST_IN_PROGRESS");
        match accounts::settle(reply.status()) {
            Settlement::Applied => {
                write.account.apply(delta);
                return Settlement::Applied;
            }
            Settlement::Rejected if !in_progress => return Settlement::Rejected,
            Settlement::Rejected | Settlement::Unknown => {}
        }
        if stop(ctx, deadline) {
            write.account.mark_unresolved();
            return Settlement::Unknown;
        }
        pause(deadline).await;
    }
}

#[derive(Deserialize)]
struct TransferBody {
    status: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferPoll {
    State(TransferState),
    NotFound,
    Unreadable,
}

fn poll_transfer(reply: &Reply) -> TransferPoll {
    match reply.status() {
        Some(200) => match serde_json::from_slice::<TransferBody>(reply.body()) {
            Ok(body) => TransferPoll::State(accounts::transfer_state(&body.status)),
            Err(_) => TransferPoll::Unreadable,
        },
        Some(404) => TransferPoll::NotFound,
        _ => TransferPoll::Unreadable,
    }
}

/// Polls every tracked transfer until it is settled; completed ones move the expectations.
async fn settle_transfers(
    ctx: &Arc<Ctx>,
    concurrency: usize,
    deadline: Instant,
    load_end: Instant,
) -> Result<TransferAudit, Error> {
    let records: Arc<Vec<TransferRecord>> = Arc::new(std::mem::take(
        &mut *ctx.transfers.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
    ));
    let mut audit = TransferAudit { tracked: records.len(), ..TransferAudit::default() };
    let mut not_found = vec![0_u32; records.len()];
    let mut open: Vec<usize> = (0..records.len()).collect();
    while !open.is_empty() {
        let (shared, list, which) = (Arc::clone(ctx), Arc::clone(&records), Arc::new(open.clone()));
        let polls = run_indexed(open.len(), concurrency, move |j| {
            let (ctx, records, which) = (Arc::clone(&shared), Arc::clone(&list), Arc::clone(&which));
            async move {
                let Some(record) = which.get(j).and_then(|&i| records.get(i)) else {
                    return TransferPoll::Unreadable;
                };
                match format!("{}/transfers/{}", ctx.base, record.id).parse() {
                    Ok(uri) => poll_transfer(&get(&ctx, uri).await),
                    Err(_) => TransferPoll::Unreadable,
                }
            }
        })
        .await?;
        let mut still = Vec::new();
        for (&i, poll) in open.iter().zip(polls) {
            let Some(record) = records.get(i) else { continue };
            match poll {
                TransferPoll::State(TransferState::Completed) => {
                    record.complete();
                    audit.completed += 1;
                }
                TransferPoll::State(TransferState::Failed) => audit.failed += 1,
                TransferPoll::NotFound => {
                    let count = not_found.get_mut(i).map_or(NOT_FOUND_POLLS, |c| {
                        *c += 1;
                        *c
                    });
                    if !record.accepted && count >= NOT_FOUND_POLLS {
                        audit.never_created += 1;
                    } else {
                        still.push(i);
                    }
                }
                TransferPoll::State(TransferState::Pending) | TransferPoll::Unreadable => still.push(i),
            }
        }
        open = still;
        if open.is_empty() {
            audit.settled_after_ms = Some(millis(load_end.elapsed()));
            break;
        }
        if stop(ctx, deadline) {
            break;
        }
        pause(deadline).await;
    }
    for record in open.iter().filter_map(|&i| records.get(i)) {
        record.source.mark_unresolved();
        record.destination.mark_unresolved();
        audit.unsettled += 1;
    }
    Ok(audit)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryEntry {
    stream_version: u64,
}

#[derive(Deserialize)]
struct HistoryBody {
    entries: Vec<HistoryEntry>,
}

/// Checks that `pages` of history entries carry versions exactly 1..N; returns N.
pub(crate) fn check_versions(next: &mut u64, versions: impl IntoIterator<Item = u64>) -> Result<(), String> {
    for version in versions {
        if version != *next {
            return Err(format!("expected streamVersion {next}, found {version}"));
        }
        *next += 1;
    }
    Ok(())
}

async fn history_of(ctx: &Ctx, account: &Account, version: Option<u64>) -> Result<u64, String> {
    let mut next = 1_u64;
    let mut offset = 0;
    for _ in 0..100_000 {
        let uri =
            account.history_page(&ctx.base, HISTORY_PAGE, offset, version).map_err(|e| e.to_string())?;
        let reply = get(ctx, uri).await;
        match reply.status() {
            Some(200) => {}
            Some(status) => {
                let code = reply.error_code().map(|c| c.into_owned()).unwrap_or_default();
                return Err(format!("history page at offset {offset}: HTTP {status} {code}"));
            }
            None => {
                let code = reply.error_code().map(|c| c.into_owned()).unwrap_or_default();
                return Err(format!("history page at offset {offset}: {code}"));
            }
        }
        let body: HistoryBody = serde_json::from_slice(reply.body())
            .map_err(|e| format!("history page at offset {offset}: unreadable body ({e})"))?;
        let len = body.entries.len();
        check_versions(&mut next, body.entries.iter().map(|e| e.stream_version))?;
        if len < HISTORY_PAGE {
            break;
        }
        offset += len;
    }
    let n = next - 1;
    match version {
        Some(v) if v != n => Err(format!("history ends at version {n}, the balance says version {v}")),
        _ => Ok(n),
    }
}

async fn check_histories(
    ctx: &Arc<Ctx>,
    accounts: &Arc<Vec<Arc<Account>>>,
    versions: &[Option<u64>],
    concurrency: usize,
) -> Result<HistoryAudit, Error> {
    let (shared, list, versions) = (Arc::clone(ctx), Arc::clone(accounts), Arc::new(versions.to_vec()));
    let results = run_indexed(accounts.len(), concurrency, move |i| {
        let (ctx, accounts, versions) = (Arc::clone(&shared), Arc::clone(&list), Arc::clone(&versions));
        async move {
            let account = accounts.get(i)?;
            let version = versions.get(i).copied().flatten();
            Some((account.id.clone(), history_of(&ctx, account, version).await))
        }
    })
    .await?;
    let mut audit = HistoryAudit::default();
    for (account_id, result) in results.into_iter().flatten() {
        audit.checked += 1;
        match result {
            Ok(n) => {
                audit.contiguous += 1;
                audit.events += n;
            }
            Err(problem) => {
                audit.problems += 1;
                if audit.sample.len() < SAMPLE {
                    audit.sample.push(HistoryProblem { account_id, problem });
                }
            }
        }
    }
    Ok(audit)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pipeline_lag_reads_the_health_check() {
        let body =
            br#"{"status":"ok","checks":{"eventStore":{"status":"ok"},"pipeline":{"status":"ok","lag":7}}}"#;
        assert_eq!(super::pipeline_lag(body), Some(7));
        assert_eq!(super::pipeline_lag(br#"{"status":"ok","checks":{}}"#), None);
        assert_eq!(super::pipeline_lag(b"not json"), None);
    }

    use super::*;

    fn ok(body: &'static str) -> Reply {
        Reply::Response { status: 200, body: Bytes::from_static(body.as_bytes()) }
    }

    #[test]
    fn observes_balance_minor_units() {
        let reply = ok(r#"{"accountId":"a","balance":10.25,"balanceMinorUnits":"1025","currency":"USD",
                          "status":"ACTIVE","version":3}"#);
        assert_eq!(observe(&reply), Observation::Balance { minor: 1025, version: Some(3) });
        assert_eq!(
            observe(&ok(r#"{"balanceMinorUnits":-5}"#)),
            Observation::Balance { minor: -5, version: None }
        );
        assert_eq!(observe(&ok(r#"{"balance":10.25}"#)), Observation::Unparsable);
        assert_eq!(observe(&ok("nope")), Observation::Unparsable);
        let missing =
            Reply::Response { status: 404, body: Bytes::from_static(br#"{"code":"ACCOUNT_NOT_FOUND"}"#) };
        assert_eq!(observe(&missing), Observation::Http { status: 404, code: "ACCOUNT_NOT_FOUND".into() });
        assert_eq!(
            observe(&Reply::Transport(Transport::Connect)),
            Observation::Transport { code: "TRANSPORT_CONNECT".into() }
        );
    }

    #[test]
    fn history_versions_must_be_contiguous_from_one() {
        let mut next = 1;
        assert!(check_versions(&mut next, [1, 2, 3]).is_ok());
        assert!(check_versions(&mut next, [4, 5]).is_ok(), "pages continue");
        assert_eq!(next, 6);
        let mut next = 1;
        assert_eq!(check_versions(&mut next, [1, 3]), Err("expected streamVersion 2, found 3".into()));
        let mut next = 1;
        assert!(check_versions(&mut next, [2]).is_err(), "must start at 1");
        let mut next = 1;
        assert!(check_versions(&mut next, [1, 1]).is_err(), "no duplicates");
    }

    #[test]
    fn transfer_polls() {
        assert_eq!(
            poll_transfer(&ok(r#"{"status":"COMPLETED"}"#)),
            TransferPoll::State(TransferState::Completed)
        );
        assert_eq!(
            poll_transfer(&ok(
                r#"{"transferId":"t","status":"FAILED","failureReason":"INSUFFICIENT_FUNDS"}"#
            )),
            TransferPoll::State(TransferState::Failed)
        );
        assert_eq!(
            poll_transfer(&ok(r#"{"status":"PENDING"}"#)),
            TransferPoll::State(TransferState::Pending)
        );
        assert_eq!(
            poll_transfer(&Reply::Response { status: 404, body: Bytes::new() }),
            TransferPoll::NotFound
        );
        assert_eq!(poll_transfer(&Reply::Transport(Transport::Io)), TransferPoll::Unreadable);
    }
}
