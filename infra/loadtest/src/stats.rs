//! Latency histograms, per-operation counters and the per-second timeline.
//!
//! Latencies are recorded in microseconds into an HDR histogram with two significant figures (a reported
//! percentile is within 0.8% of the recorded value; values below 256 µs are exact). Workers each keep their own [`LoadStats`] and merge them at the end, so the hot path takes no lock.

use std::collections::HashMap;

/// The operations of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    Deposit,
    Withdraw,
    Balance,
    History,
    Create,
    Transfer,
}

impl Op {
    pub(crate) const ALL: [Op; 6] =
        [Op::Deposit, Op::Withdraw, Op::Balance, Op::History, Op::Create, Op::Transfer];

    pub(crate) fn index(self) -> usize {
        match self {
            Op::Deposit => 0,
            Op::Withdraw => 1,
            Op::Balance => 2,
            Op::History => 3,
            Op::Create => 4,
            Op::Transfer => 5,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Deposit => "deposit",
            Op::Withdraw => "withdraw",
            Op::Balance => "balance",
            Op::History => "history",
            Op::Create => "create",
            Op::Transfer => "transfer",
        }
    }

    /// Writes change state; their latency is the "write" latency of the report.
    pub(crate) fn is_write(self) -> bool {
        !matches!(self, Op::Balance | Op::History)
    }

    /// The status the API answers when the operation succeeds.
    pub(crate) fn expected_status(self) -> u16 {
        match self {
            Op::Deposit | Op::Withdraw | Op::Create => 201,
            Op::Balance | Op::History => 200,
            Op::Transfer => 202,
        }
    }
}

/// How a response counts in the totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The operation's success status.
    Success,
    /// A 4xx the scenario provokes on purpose: `INSUFFICIENT_FUNDS` on a withdrawal.
    Intended,
    /// 429 Too Many Requests: the API (or API Gateway's throttle) shed the request. Counted on its own, not as
    /// a failure: it says the offered load is above a limit, not that the bank misbehaved.
    Throttled,
    /// Anything else: another 4xx, a 5xx, an unexpected status or a transport error.
    Failure,
}

/// Classifies one response (`status` is `None` for a transport error).
pub(crate) fn classify(op: Op, status: Option<u16>, code: Option<&str>) -> Class {
    match status {
        Some(s) if s == op.expected_status() => Class::Success,
        Some(400) if op == Op::Withdraw && code == Some("INSUFFICIENT_FUNDS") => Class::Intended,
        Some(429) => Class::Throttled,
        _ => Class::Failure,
    }
}

/// Significant decimal figures the histograms keep: a recorded value is within 1/128 (under 0.8%) of
/// the value it stands for, and values below 256 µs are exact.
const SIGNIFICANT_FIGURES: u8 = 2;
/// Latencies are clamped to 2^32 - 1 µs (about 71 minutes) before they are recorded; the request
/// timeout is far below that.
const MAX_MICROS: u64 = (1 << 32) - 1;

fn empty_histogram() -> hdrhistogram::Histogram<u64> {
    // Creation fails only for more than 5 significant figures; the histogram grows on demand, so an idle
    // one (a worker's per-second slot, an operation with weight 0) stays a few kilobytes.
    hdrhistogram::Histogram::new(SIGNIFICANT_FIGURES)
        .unwrap_or_else(|_| unreachable!("{SIGNIFICANT_FIGURES} significant figures are accepted"))
}

/// Microsecond latencies: an HDR histogram for the percentiles, plus the exact count, minimum, maximum
/// and sum, so `max` and `mean` are not rounded to a bucket.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    hdr: hdrhistogram::Histogram<u64>,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub(crate) fn new() -> Self {
        Self { hdr: empty_histogram(), min: u64::MAX, max: 0, sum: 0 }
    }

    pub(crate) fn record(&mut self, micros: u64) {
        let value = micros.min(MAX_MICROS);
        if self.hdr.record(value).is_err() {
            // Growing the counts failed (it cannot below 2^32): keep the count, at the top bucket.
            self.hdr.saturating_record(value);
        }
        self.min = self.min.min(micros);
        self.max = self.max.max(micros);
        self.sum += u128::from(micros);
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        if other.count() == 0 {
            return;
        }
        if self.hdr.add(&other.hdr).is_err() {
            // Only when growing the counts failed: fall back to the values one bucket at a time.
            for v in other.hdr.iter_recorded() {
                let (value, n) = (v.value_iterated_to(), v.count_at_value());
                if self.hdr.record_n(value, n).is_err() {
                    self.hdr.saturating_record_n(value, n);
                }
            }
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub(crate) fn clear(&mut self) {
        if self.count() > 0 {
            self.hdr.reset();
            self.min = u64::MAX;
            self.max = 0;
            self.sum = 0;
        }
    }

    pub(crate) fn count(&self) -> u64 {
        self.hdr.len()
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    pub(crate) fn mean(&self) -> f64 {
        let total = self.count();
        if total == 0 { 0.0 } else { self.sum as f64 / total as f64 }
    }

    /// The nearest-rank percentile `q` in `0.0..=1.0`, as the highest value its bucket stands for,
    /// clamped to the recorded minimum and maximum; 0 for an empty histogram.
    pub(crate) fn percentile(&self, q: f64) -> u64 {
        if self.count() == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        // The HDR histogram answers the lowest value of the bucket for q = 0; the report's convention
        // is the highest, as for every other quantile.
        let value = self.hdr.highest_equivalent(self.hdr.value_at_quantile(q));
        value.clamp(self.min, self.max)
    }
}

/// Microseconds as fractional milliseconds, for reports.
pub(crate) fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The counters of one operation.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpStats {
    pub(crate) latency: Histogram,
    /// Status code -> count; status 0 stands for a transport error (no HTTP response).
    pub(crate) statuses: Vec<(u16, u64)>,
    /// Error code of 4xx/5xx bodies (or a transport error kind) -> count.
    pub(crate) errors: HashMap<String, u64>,
    pub(crate) success: u64,
    pub(crate) intended: u64,
    pub(crate) throttled: u64,
    pub(crate) failures: u64,
}

impl OpStats {
    pub(crate) fn count(&self) -> u64 {
        self.latency.count()
    }

    #[cfg(test)]
    pub(crate) fn status_count(&self, status: u16) -> u64 {
        self.statuses.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n)
    }

    fn add_status(&mut self, status: u16, n: u64) {
        match self.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, count)) => *count += n,
            None => {
                self.statuses.push((status, n));
                self.statuses.sort_unstable();
            }
        }
    }

    fn add_error(&mut self, code: &str, n: u64) {
        match self.errors.get_mut(code) {
            Some(count) => *count += n,
            None => {
                self.errors.insert(code.to_owned(), n);
            }
        }
    }

    /// Records one request; `code` is the error code of a non-2xx body or a transport error kind.
    pub(crate) fn record(&mut self, micros: u64, status: Option<u16>, code: Option<&str>, class: Class) {
        self.latency.record(micros);
        self.add_status(status.unwrap_or(0), 1);
        if let Some(code) = code {
            self.add_error(code, 1);
        }
        match class {
            Class::Success => self.success += 1,
            Class::Intended => self.intended += 1,
            Class::Throttled => self.throttled += 1,
            Class::Failure => self.failures += 1,
        }
    }

    pub(crate) fn merge(&mut self, other: &OpStats) {
        self.latency.merge(&other.latency);
        for &(status, n) in &other.statuses {
            self.add_status(status, n);
        }
        for (code, &n) in &other.errors {
            self.add_error(code, n);
        }
        self.success += other.success;
        self.intended += other.intended;
        self.throttled += other.throttled;
        self.failures += other.failures;
    }

    /// The `n` most frequent error codes, most frequent first (ties by name).
    pub(crate) fn top_errors(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self.errors.iter().map(|(c, n)| (c.clone(), *n)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// The counters of every operation.
#[derive(Debug, Clone)]
pub(crate) struct LoadStats {
    pub(crate) ops: [OpStats; 6],
}

impl Default for LoadStats {
    fn default() -> Self {
        Self { ops: std::array::from_fn(|_| OpStats::default()) }
    }
}

impl LoadStats {
    pub(crate) fn op(&self, op: Op) -> &OpStats {
        &self.ops[op.index()]
    }

    pub(crate) fn op_mut(&mut self, op: Op) -> &mut OpStats {
        &mut self.ops[op.index()]
    }

    pub(crate) fn merge(&mut self, other: &LoadStats) {
        for (a, b) in self.ops.iter_mut().zip(other.ops.iter()) {
            a.merge(b);
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.ops.iter().map(OpStats::count).sum()
    }

    /// Merged latency of the operations selected by `pick`.
    pub(crate) fn latency_of(&self, pick: impl Fn(Op) -> bool) -> Histogram {
        let mut h = Histogram::new();
        for op in Op::ALL {
            if pick(op) {
                h.merge(&self.op(op).latency);
            }
        }
        h
    }

    pub(crate) fn count_status(&self, pick: impl Fn(u16) -> bool) -> u64 {
        self.ops.iter().flat_map(|o| o.statuses.iter()).filter(|(s, _)| pick(*s)).map(|(_, n)| n).sum()
    }
}

/// What happened during one second of the load.
#[derive(Debug, Clone, Default)]
pub(crate) struct Second {
    pub(crate) requests: u64,
    pub(crate) failures: u64,
    pub(crate) all: Histogram,
    pub(crate) writes: Histogram,
}

impl Second {
    pub(crate) fn record(&mut self, micros: u64, write: bool, failed: bool) {
        self.requests += 1;
        self.failures += u64::from(failed);
        self.all.record(micros);
        if write {
            self.writes.record(micros);
        }
    }

    pub(crate) fn merge(&mut self, other: &Second) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.all.merge(&other.all);
        self.writes.merge(&other.writes);
    }

    pub(crate) fn clear(&mut self) {
        self.requests = 0;
        self.failures = 0;
        self.all.clear();
        self.writes.clear();
    }
}

/// Seconds since the start of the load, each by completion time of its requests.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timeline {
    pub(crate) seconds: Vec<Second>,
}

impl Timeline {
    pub(crate) fn merge_second(&mut self, index: usize, second: &Second) {
        if second.requests == 0 {
            return;
        }
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::default);
        }
        if let Some(slot) = self.seconds.get_mut(index) {
            slot.merge(second);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest-rank percentile of sorted samples: the reference the histogram approximates.
    fn exact(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=200 {
            h.record(v);
        }
        assert_eq!(h.percentile(0.5), 100);
        assert_eq!(h.percentile(0.99), 198);
        assert_eq!(h.percentile(1.0), 200);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.max(), 200);
        assert!((h.mean() - 100.5).abs() < 1e-9);
    }

    #[test]
    fn percentiles_are_within_bucket_precision() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut samples: Vec<u64> = (0..20_000).map(|_| 200 + rng.u64(0..2_000_000)).collect();
        let mut h = Histogram::new();
        for &s in &samples {
            h.record(s);
        }
        samples.sort_unstable();
        for q in [0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let want = exact(&samples, q) as f64;
            let got = h.percentile(q) as f64;
            assert!(got >= want && got <= want * 1.008, "q={q}: histogram {got}, exact {want}");
        }
        assert_eq!(h.percentile(1.0), *samples.last().unwrap());
    }

    #[test]
    fn empty_and_clamped() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(0.5), 0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 1);
        assert_eq!(h.percentile(0.5), u64::MAX, "clamped into the recorded range");
        assert_eq!(h.max(), u64::MAX, "the maximum is exact, not a bucket's");
    }

    #[test]
    fn max_and_mean_are_exact_above_the_exact_range() {
        let mut h = Histogram::new();
        for v in [1_000_003, 2_000_001, 3_000_002] {
            h.record(v);
        }
        assert_eq!(h.max(), 3_000_002);
        assert!((h.mean() - 2_000_002.0).abs() < 1e-9);
        assert_eq!(h.percentile(1.0), 3_000_002, "the top percentile never exceeds the maximum");
        let p50 = h.percentile(0.5);
        assert!((2_000_001..=2_000_001 + 2_000_001 / 128).contains(&p50), "p50 {p50}");
    }

    #[test]
    fn merge_equals_recording_everything() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in 0..1000 {
            if v % 3 == 0 {
                a.record(v * 37)
            } else {
                b.record(v * 37)
            }
            all.record(v * 37);
        }
        a.merge(&b);
        let summary = |h: &Histogram| {
            let qs = [0.0, 0.25, 0.5, 0.9, 0.99, 1.0].map(|q| h.percentile(q));
            (h.count(), h.max(), h.mean().to_bits(), qs)
        };
        assert_eq!(summary(&a), summary(&all));
        assert_eq!(a.count(), 1000);
        a.clear();
        assert_eq!(summary(&a), summary(&Histogram::new()));
        a.record(5);
        assert_eq!((a.count(), a.percentile(0.0), a.max()), (1, 5, 5), "nothing of the old values is left");
    }

    #[test]
    fn classification() {
        assert_eq!(classify(Op::Deposit, Some(201), None), Class::Success);
        assert_eq!(classify(Op::Transfer, Some(202), None), Class::Success);
        assert_eq!(classify(Op::Balance, Some(200), None), Class::Success);
        assert_eq!(classify(Op::Withdraw, Some(400), Some("INSUFFICIENT_FUNDS")), Class::Intended);
        assert_eq!(classify(Op::Deposit, Some(400), Some("INSUFFICIENT_FUNDS")), Class::Failure);
        assert_eq!(classify(Op::Withdraw, Some(400), Some("VALIDATION_FAILED")), Class::Failure);
        assert_eq!(classify(Op::Withdraw, Some(409), Some("CONCURRENCY_CONFLICT")), Class::Failure);
        assert_eq!(classify(Op::Balance, Some(404), Some("ACCOUNT_NOT_FOUND")), Class::Failure);
        assert_eq!(classify(Op::Create, Some(200), None), Class::Failure);
        assert_eq!(classify(Op::Deposit, None, Some("TRANSPORT_CONNECT")), Class::Failure);
        assert_eq!(classify(Op::Deposit, Some(429), Some("TOO_MANY_REQUESTS")), Class::Throttled);
        assert_eq!(classify(Op::Balance, Some(429), Some("NON_JSON_BODY")), Class::Throttled);
    }

    #[test]
    fn op_stats_count_statuses_and_codes() {
        let mut s = OpStats::default();
        s.record(10, Some(201), None, Class::Success);
        s.record(20, Some(400), Some("INSUFFICIENT_FUNDS"), Class::Intended);
        s.record(30, Some(400), Some("INSUFFICIENT_FUNDS"), Class::Intended);
        s.record(40, Some(500), Some("INTERNAL"), Class::Failure);
        s.record(50, None, Some("TRANSPORT_CONNECT"), Class::Failure);
        s.record(60, Some(429), Some("TOO_MANY_REQUESTS"), Class::Throttled);
        let mut merged = OpStats::default();
        merged.merge(&s);
        merged.merge(&s);
        assert_eq!(merged.count(), 12);
        assert_eq!(merged.status_count(400), 4);
        assert_eq!(merged.status_count(0), 2);
        assert_eq!(merged.statuses.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![0, 201, 400, 429, 500]);
        assert_eq!(
            merged.top_errors(2),
            vec![("INSUFFICIENT_FUNDS".to_owned(), 4), ("INTERNAL".to_owned(), 2)]
        );
        assert_eq!((merged.success, merged.intended, merged.throttled, merged.failures), (2, 4, 2, 4));
    }

    #[test]
    fn op_properties() {
        assert!(Op::ALL.iter().enumerate().all(|(i, op)| op.index() == i));
        assert!(Op::Transfer.is_write() && Op::Create.is_write() && !Op::History.is_write());
    }

    #[test]
    fn timeline_grows_on_demand() {
        let mut t = Timeline::default();
        let mut s = Second::default();
        s.record(1000, true, false);
        s.record(3000, false, true);
        t.merge_second(3, &s);
        t.merge_second(3, &s);
        assert_eq!(t.seconds.len(), 4);
        assert_eq!(t.seconds[3].requests, 4);
        assert_eq!(t.seconds[3].failures, 2);
        assert_eq!(t.seconds[3].writes.count(), 2);
        assert_eq!(t.seconds[0].requests, 0);
    }
}
