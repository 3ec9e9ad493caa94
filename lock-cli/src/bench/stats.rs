//! Latency samples and their summary.

use std::time::Duration;

/// Latencies of one measured operation.
#[derive(Debug, Default, Clone)]
pub(crate) struct Samples {
    nanos: Vec<u64>,
    /// Wall time the samples took in all, for a rate.
    pub(crate) elapsed: Duration,
}

impl Samples {
    pub(crate) fn push(&mut self, latency: Duration) {
        self.nanos
            .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub(crate) fn push_nanos(&mut self, nanos: u64) {
        self.nanos.push(nanos);
    }

    pub(crate) fn len(&self) -> usize {
        self.nanos.len()
    }

    /// The `q` quantile (0..=1) in microseconds, nearest rank.
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        if self.nanos.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.nanos.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64 / 1000.0
    }

    /// Operations per second over `elapsed`.
    pub(crate) fn per_sec(&self) -> f64 {
        self.nanos.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.len(),
            "p50_us": self.quantile_us(0.5),
            "p99_us": self.quantile_us(0.99),
            "per_sec": self.per_sec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut s = Samples::default();
        for us in 1..=100 {
            s.push(Duration::from_micros(us));
        }
        s.elapsed = Duration::from_secs(2);
        assert_eq!(s.quantile_us(0.5), 50.0);
        assert_eq!(s.quantile_us(0.99), 99.0);
        assert_eq!(s.per_sec(), 50.0);
        assert!(Samples::default().quantile_us(0.5).is_nan());
    }
}
