//! A log-linear latency histogram in nanoseconds (HDR-like: 32 sub-buckets per power of two,
//! so any recorded value is known within [`RESOLUTION`]), plus the exact maximum. No
//! allocation while recording.

/// The relative resolution of a quantile: two values closer than this may share a bucket, so
/// a comparison of quantiles means nothing inside it.
pub const RESOLUTION: f64 = 1.0 / 32.0;

/// Values below this are counted exactly.
const LINEAR: u64 = 64;
/// Sub-buckets per power of two above `LINEAR`.
const SUB: u64 = 32;
/// Powers of two covered above `LINEAR` (up to 2^(6+40) ns, far beyond any run).
const OCTAVES: u64 = 40;

pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    /// The largest value recorded, exactly (the buckets only know it within `RESOLUTION`).
    max: u64,
}

impl Hist {
    pub fn new() -> Hist {
        Hist { counts: vec![0; (LINEAR + OCTAVES * SUB) as usize], total: 0, max: 0 }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let msb = 63 - u64::from(v.leading_zeros()); // >= 6
        let shift = msb - 5; // keep the top 6 bits: v >> shift is in [32, 64)
        let idx = LINEAR + (shift - 1) * SUB + ((v >> shift) - SUB);
        idx.min(LINEAR + OCTAVES * SUB - 1) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < LINEAR {
            return i;
        }
        let shift = (i - LINEAR) / SUB + 1;
        let top = (i - LINEAR) % SUB + SUB;
        (top << shift) + (1 << shift) / 2
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[Hist::index(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    /// The largest value recorded, exactly, in nanoseconds; 0 for an empty histogram.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), in nanoseconds; 0 for an empty histogram. Never
    /// above [`Hist::max`] (the middle of the top bucket may be).
    pub fn quantile(&self, q: f64) -> u64 {
        self.bucket_quantile(q).min(self.max)
    }

    fn bucket_quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Hist::value(i);
            }
        }
        Hist::value(self.counts.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_within_three_percent() {
        for v in [0u64, 1, 63, 64, 65, 100, 1000, 12_345, 1_000_000, 987_654_321] {
            let got = Hist::value(Hist::index(v));
            let err = (got as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 0.03, "{v} -> {got}");
        }
    }

    #[test]
    fn max_is_exact_and_bounds_the_quantiles() {
        let (mut a, mut b) = (Hist::new(), Hist::new());
        assert_eq!((a.max(), a.quantile(1.0)), (0, 0));
        for v in [10u64, 5_000, 1_234_567] {
            a.record(v);
        }
        b.record(7_654_321);
        assert_eq!(a.max(), 1_234_567);
        assert!(a.quantile(1.0) <= a.max() && a.quantile(0.999) <= a.max());
        a.merge(&b);
        assert_eq!(a.max(), 7_654_321);
        assert_eq!(a.quantile(0.5), Hist::value(Hist::index(5_000)));
    }
}
