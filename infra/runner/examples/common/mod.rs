//! What the benchmark examples share: settings from the environment and a latency summary line.

use std::str::FromStr;
use std::time::Duration;

/// `name` from the environment, parsed, or `default` when it is absent or does not parse.
pub(crate) fn env_or<T: FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Prints one line: count, p50, p90, p99 and max of `samples`, in milliseconds.
pub(crate) fn report(name: &str, mut samples: Vec<Duration>) {
    let Some(&max) = samples.iter().max() else {
        println!("{name:<28} no samples");
        return;
    };
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    println!(
        "{name:<28} n={:<7} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  max={:>8.2} ms",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(max),
    );
}
