//! What the stack benchmarks share: their size from the environment and
//! how they print latencies.

use std::time::Duration;

/// The number in environment variable `k`, else `d`.
pub fn env_num(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// p50, p99 and max of `v` in milliseconds, and how many (sorts `v`).
pub fn summary(v: &mut [Duration]) -> String {
    if v.is_empty() {
        return "no samples".into();
    }
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    format!(
        "p50 {:8.1} ms  p99 {:8.1} ms  max {:8.1} ms  (n={})",
        at(0.5),
        at(0.99),
        at(1.0),
        v.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_picks_nearest_ranks() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(
            summary(&mut v),
            "p50     51.0 ms  p99     99.0 ms  max    100.0 ms  (n=100)"
        );
        assert_eq!(summary(&mut []), "no samples");
    }
}
