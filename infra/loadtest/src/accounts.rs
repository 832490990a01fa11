//! The account pool the workers draw from, with each account's client-side expected balance.
//!
//! Expectations are integer minor units. A deposit or withdrawal moves the expectation only when the server
//! answered 201; a 4xx means nothing moved; a 5xx or a lost response leaves the outcome unknown, and the
//! request is kept so the audit can settle it by replaying it with the same `Idempotency-Key` (the server
//! either replays the stored result or runs it now). Transfers move money only when `GET /transfers/{id}`
//! says `COMPLETED`.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use http::Uri;
use http::uri::InvalidUri;

fn account_uri(base: &str, id: &str, route: Route) -> Result<Uri, InvalidUri> {
    format!("{base}/accounts/{id}/{}", route.segment()).parse()
}

/// The account routes the load uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Deposits,
    Withdrawals,
    Balance,
    History,
}

impl Route {
    fn segment(self) -> &'static str {
        match self {
            Route::Deposits => "deposits",
            Route::Withdrawals => "withdrawals",
            Route::Balance => "balance",
            Route::History => "history",
        }
    }
}

/// Request URIs parsed once; `Uri::clone` is a few reference-count increments.
#[derive(Debug)]
struct Uris {
    deposits: Uri,
    withdrawals: Uri,
    balance: Uri,
    history: Uri,
}

/// One account of the run.
///
/// Seeded accounts (which take most of the traffic, the hot slice among them) carry precomputed URIs;
/// accounts created during the load build theirs per request, so a long run that creates hundreds of
/// accounts a second keeps about 100 bytes per account instead of about 800.
#[derive(Debug)]
pub(crate) struct Account {
    pub(crate) id: String,
    uris: Option<Box<Uris>>,
    expected: AtomicI64,
    unresolved: AtomicU32,
}

impl Account {
    /// An account whose URIs are built per request.
    pub(crate) fn new(id: String) -> Self {
        Self { id, uris: None, expected: AtomicI64::new(0), unresolved: AtomicU32::new(0) }
    }

    /// An account with precomputed URIs; `base` is the API base URL without a trailing slash.
    pub(crate) fn with_uris(base: &str, id: String) -> Result<Self, InvalidUri> {
        let mut account = Self::new(id);
        let uri = |route: Route| account_uri(base, &account.id, route);
        let uris = Uris {
            deposits: uri(Route::Deposits)?,
            withdrawals: uri(Route::Withdrawals)?,
            balance: uri(Route::Balance)?,
            history: uri(Route::History)?,
        };
        account.uris = Some(Box::new(uris));
        Ok(account)
    }

    /// The URI of one of the account's routes.
    pub(crate) fn uri(&self, base: &str, route: Route) -> Result<Uri, InvalidUri> {
        match &self.uris {
            Some(uris) => Ok(match route {
                Route::Deposits => uris.deposits.clone(),
                Route::Withdrawals => uris.withdrawals.clone(),
                Route::Balance => uris.balance.clone(),
                Route::History => uris.history.clone(),
            }),
            None => account_uri(base, &self.id, route),
        }
    }

    /// A page of the account's history, at `min_version` or later when given.
    pub(crate) fn history_page(
        &self,
        base: &str,
        limit: usize,
        offset: usize,
        min_version: Option<u64>,
    ) -> Result<Uri, InvalidUri> {
        let mut uri = format!("{base}/accounts/{}/history?limit={limit}&offset={offset}", self.id);
        if let Some(v) = min_version.filter(|v| *v > 0) {
            uri.push_str("&minVersion=");
            uri.push_str(&v.to_string());
        }
        uri.parse()
    }

    /// The balance the client expects, in minor units.
    pub(crate) fn expected(&self) -> i64 {
        self.expected.load(Ordering::Relaxed)
    }

    pub(crate) fn apply(&self, delta: i64) {
        self.expected.fetch_add(delta, Ordering::Relaxed);
    }

    /// Counts a money movement whose outcome the client could not learn.
    pub(crate) fn mark_unresolved(&self) {
        self.unresolved.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unresolved(&self) -> u32 {
        self.unresolved.load(Ordering::Relaxed)
    }
}

/// What a deposit's or withdrawal's reply says about its money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settlement {
    /// 201: the money moved.
    Applied,
    /// Any other 1xx-4xx: the command was rejected and nothing moved.
    Rejected,
    /// A 5xx or no response: it may or may not have moved.
    Unknown,
}

pub(crate) fn settle(status: Option<u16>) -> Settlement {
    match status {
        Some(201) => Settlement::Applied,
        Some(s) if s >= 500 => Settlement::Unknown,
        Some(_) => Settlement::Rejected,
        None => Settlement::Unknown,
    }
}

/// The signed change of a deposit (+) or withdrawal (-) of `minor` units.
pub(crate) fn delta(deposit: bool, minor: i64) -> i64 {
    if deposit { minor } else { -minor }
}

/// Applies a reply to an account's expectation; `true` when the outcome is unknown and must be settled.
pub(crate) fn book(account: &Account, status: Option<u16>, delta: i64) -> bool {
    match settle(status) {
        Settlement::Applied => {
            account.apply(delta);
            false
        }
        Settlement::Rejected => false,
        Settlement::Unknown => true,
    }
}

/// A transfer's state as `GET /transfers/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferState {
    Completed,
    Failed,
    Pending,
}

pub(crate) fn transfer_state(status: &str) -> TransferState {
    match status {
        "COMPLETED" => TransferState::Completed,
        "FAILED" => TransferState::Failed,
        _ => TransferState::Pending,
    }
}

/// A deposit or withdrawal whose reply did not tell whether it moved money.
#[derive(Debug, Clone)]
pub(crate) struct PendingWrite {
    pub(crate) account: Arc<Account>,
    pub(crate) deposit: bool,
    pub(crate) major: u64,
    pub(crate) minor: i64,
    pub(crate) transaction_id: String,
    pub(crate) idempotency_key: String,
}

/// A transfer the server may have accepted.
#[derive(Debug, Clone)]
pub(crate) struct TransferRecord {
    pub(crate) id: String,
    pub(crate) source: Arc<Account>,
    pub(crate) destination: Arc<Account>,
    pub(crate) minor: i64,
    /// `true` when the server answered 202; `false` when the reply was lost or a 5xx.
    pub(crate) accepted: bool,
}

impl TransferRecord {
    /// Moves the expectations once the transfer is known to be completed.
    pub(crate) fn complete(&self) {
        self.source.apply(-self.minor);
        self.destination.apply(self.minor);
    }
}

/// How many of `accounts` are hot: `ceil(accounts * ratio)`, tolerant of binary rounding
/// (`0.07 * 100` is 7, not 8).
pub(crate) fn hot_count(accounts: usize, ratio: f64) -> usize {
    let raw = (accounts as f64 * ratio - 1e-9).ceil().max(0.0) as usize;
    raw.min(accounts)
}

/// The index range `(start, len)` to draw from in a pool of `len` accounts whose first `hot` are hot.
/// A request that wants the hot slice gets it unless it is empty; one that wants the rest gets it unless
/// it is empty; `None` for an empty pool.
pub(crate) fn slice_for(len: usize, hot: usize, want_hot: bool) -> Option<(usize, usize)> {
    if len == 0 {
        return None;
    }
    let hot = hot.min(len);
    let rest = len - hot;
    if (want_hot && hot > 0) || rest == 0 { Some((0, hot)) } else { Some((hot, rest)) }
}

/// The accounts of the run: the seeded ones in seeding order (the hot slice first), then those the load
/// created.
#[derive(Debug)]
pub(crate) struct Pool {
    accounts: RwLock<Vec<Arc<Account>>>,
    hot: usize,
}

impl Pool {
    pub(crate) fn new(accounts: Vec<Arc<Account>>, hot: usize) -> Self {
        Self { accounts: RwLock::new(accounts), hot }
    }

    pub(crate) fn push(&self, account: Arc<Account>) {
        self.accounts.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(account);
    }

    pub(crate) fn snapshot(&self) -> Vec<Arc<Account>> {
        self.accounts.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.accounts.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// An account: from the hot slice with probability `hot_rate`, else from the rest.
    pub(crate) fn pick(&self, rng: &mut fastrand::Rng, hot_rate: f64) -> Option<Arc<Account>> {
        let want_hot = rng.f64() < hot_rate;
        let accounts = self.accounts.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, len) = slice_for(accounts.len(), self.hot, want_hot)?;
        accounts.get(start + rng.usize(..len)).cloned()
    }

    /// An account other than `not`, drawn like [`Pool::pick`]; `None` after a few unlucky draws.
    pub(crate) fn pick_other(
        &self,
        rng: &mut fastrand::Rng,
        hot_rate: f64,
        not: &Account,
    ) -> Option<Arc<Account>> {
        (0..16).filter_map(|_| self.pick(rng, hot_rate)).find(|a| a.id != not.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "http://127.0.0.1:3000/api";

    fn account(n: usize) -> Arc<Account> {
        Arc::new(Account::new(format!("lt-test-{n}")))
    }

    #[test]
    fn uris_precomputed_or_built_agree() {
        let seeded = Account::with_uris(BASE, "lt-test-1".into()).unwrap();
        let created = Account::new("lt-test-1".into());
        for route in [Route::Deposits, Route::Withdrawals, Route::Balance, Route::History] {
            assert_eq!(seeded.uri(BASE, route).unwrap(), created.uri(BASE, route).unwrap());
        }
        assert_eq!(
            seeded.uri(BASE, Route::Deposits).unwrap().to_string(),
            "http://127.0.0.1:3000/api/accounts/lt-test-1/deposits"
        );
        assert_eq!(created.uri(BASE, Route::Balance).unwrap().path(), "/api/accounts/lt-test-1/balance");
        assert_eq!(
            seeded.history_page(BASE, 1000, 2000, Some(7)).unwrap().query(),
            Some("limit=1000&offset=2000&minVersion=7")
        );
        assert_eq!(created.history_page(BASE, 1000, 0, None).unwrap().query(), Some("limit=1000&offset=0"));
        assert!(Account::with_uris("http://x/api", "bad id".into()).is_err());
    }

    #[test]
    fn only_201_moves_the_expectation() {
        let a = account(1);
        assert!(!book(&a, Some(201), delta(true, 10_000)));
        assert!(!book(&a, Some(201), delta(false, 2_500)));
        assert!(!book(&a, Some(400), delta(false, 99_999)), "insufficient funds moves nothing");
        assert!(!book(&a, Some(409), delta(true, 1)), "a conflict moves nothing");
        assert!(!book(&a, Some(404), delta(true, 1)));
        assert!(book(&a, Some(503), delta(true, 1)), "a 5xx is unknown");
        assert!(book(&a, None, delta(true, 1)), "a lost reply is unknown");
        assert_eq!(a.expected(), 7_500);
    }

    #[test]
    fn settlement_table() {
        assert_eq!(settle(Some(201)), Settlement::Applied);
        assert_eq!(settle(Some(200)), Settlement::Rejected);
        assert_eq!(settle(Some(422)), Settlement::Rejected);
        assert_eq!(settle(Some(500)), Settlement::Unknown);
        assert_eq!(settle(None), Settlement::Unknown);
    }

    #[test]
    fn completed_transfers_move_both_sides() {
        let (s, d) = (account(1), account(2));
        s.apply(10_000);
        let t = TransferRecord {
            id: "t".into(),
            source: s.clone(),
            destination: d.clone(),
            minor: 2_575,
            accepted: true,
        };
        assert_eq!(transfer_state("PENDING"), TransferState::Pending);
        assert_eq!(transfer_state("FAILED"), TransferState::Failed);
        assert_eq!(transfer_state("COMPLETED"), TransferState::Completed);
        t.complete();
        assert_eq!((s.expected(), d.expected()), (7_425, 2_575));
    }

    #[test]
    fn hot_count_is_a_ceiling() {
        assert_eq!(hot_count(100, 0.1), 10);
        assert_eq!(hot_count(100, 0.07), 7);
        assert_eq!(hot_count(250, 0.05), 13);
        assert_eq!(hot_count(15, 0.1), 2);
        assert_eq!(hot_count(100, 0.0), 0);
        assert_eq!(hot_count(100, 1.0), 100);
        assert_eq!(hot_count(1, 0.01), 1);
    }

    #[test]
    fn hot_slice_selection() {
        assert_eq!(slice_for(0, 0, true), None);
        assert_eq!(slice_for(100, 10, true), Some((0, 10)));
        assert_eq!(slice_for(100, 10, false), Some((10, 90)));
        // Accounts created during the load join the cold part.
        assert_eq!(slice_for(120, 10, false), Some((10, 110)));
        // An empty side falls back to the other.
        assert_eq!(slice_for(100, 0, true), Some((0, 100)));
        assert_eq!(slice_for(10, 10, false), Some((0, 10)));
        // A hot count larger than the pool (failed seeding) is clamped.
        assert_eq!(slice_for(5, 10, false), Some((0, 5)));
    }

    #[test]
    fn pool_picks_follow_the_hot_rate() {
        let accounts: Vec<_> = (0..100).map(account).collect();
        let pool = Pool::new(accounts, hot_count(100, 0.1));
        let mut rng = fastrand::Rng::with_seed(1);
        let n = 20_000;
        let hot = (0..n)
            .filter_map(|_| pool.pick(&mut rng, 0.8))
            .filter(|a| a.id.trim_start_matches("lt-test-").parse::<usize>().unwrap() < 10)
            .count();
        let share = hot as f64 / f64::from(n);
        assert!((share - 0.8).abs() < 0.02, "hot share {share}");
        let all_cold = (0..1000)
            .filter_map(|_| pool.pick(&mut rng, 0.0))
            .all(|a| a.id.trim_start_matches("lt-test-").parse::<usize>().unwrap() >= 10);
        assert!(all_cold);
        let first = pool.pick(&mut rng, 1.0).unwrap();
        let other = pool.pick_other(&mut rng, 1.0, &first).unwrap();
        assert_ne!(first.id, other.id);
        pool.push(account(100));
        assert_eq!(pool.len(), 101);
    }
}
