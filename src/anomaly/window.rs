//! A rolling window of timed samples and the statistics anomaly scoring reads from it.
//!
//! Everything here is pure: no clock, no I/O. The caller passes sample times in, so the same
//! series always gives the same numbers and the properties below can be checked exhaustively.
//!
//! Why not a statistics crate: the percentiles have to match what NumPy's `percentile` gives
//! by default (linear interpolation between closest ranks, R's type 7), and `statrs`'
//! order statistics use a different estimator. Streaming Welford updates would also have to
//! subtract the samples that leave the window, which drifts over millions of updates. A window
//! holds at most `--anomaly.max-samples` values, so an exact two-pass mean and variance plus
//! one sort per new sample is cheap and never drifts.

use std::collections::VecDeque;

use super::Severity;

/// One sample in a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// When it was taken, Unix seconds.
    pub at: f64,
    /// The value.
    pub value: f64,
    /// The severity it was scored at when it arrived, if it was an anomaly.
    pub severity: Option<Severity>,
}

/// Mean and standard deviation of a window: all the z-score needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moments {
    /// Samples the figures are computed over.
    pub samples: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation (divides by n, as NumPy's `std` does by default).
    pub stddev: f64,
}

/// Summary statistics of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Samples in the window.
    pub samples: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation.
    pub stddev: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// 95th percentile, linear interpolation between closest ranks.
    pub p95: f64,
    /// 99th percentile, linear interpolation between closest ranks.
    pub p99: f64,
}

/// A window bounded both in time (`span` seconds back from the newest sample) and in count
/// (`capacity` samples). Memory use is fixed at `capacity` points whatever the span.
#[derive(Debug, Clone)]
pub struct Window {
    points: VecDeque<Point>,
    capacity: usize,
    span: f64,
}

impl Window {
    /// An empty window of at most `capacity` samples (at least one) covering `span` seconds.
    pub fn new(capacity: usize, span: f64) -> Self {
        let capacity = capacity.max(1);
        Self {
            points: VecDeque::with_capacity(capacity),
            capacity,
            span,
        }
    }

    /// Most samples the window keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples in the window.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the window holds no sample.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The oldest sample.
    pub fn first(&self) -> Option<&Point> {
        self.points.front()
    }

    /// The newest sample.
    pub fn last(&self) -> Option<&Point> {
        self.points.back()
    }

    /// Samples still in the window that were anomalies when they arrived, indexed by
    /// [`Severity`] (`[medium, high]`).
    pub fn anomalies(&self) -> [u64; 2] {
        let mut counts = [0; 2];
        for s in self.points.iter().filter_map(|p| p.severity) {
            counts[s as usize] += 1;
        }
        counts
    }

    /// Drops samples taken `span` seconds or more before `now`.
    pub fn evict(&mut self, now: f64) {
        let cutoff = now - self.span;
        while self.points.front().is_some_and(|p| p.at <= cutoff) {
            self.points.pop_front();
        }
    }

    /// Appends a sample, dropping the oldest when full. Non-finite values are ignored: one
    /// NaN would poison every statistic of the window for as long as it stays in it.
    pub fn push(&mut self, point: Point) {
        if !point.value.is_finite() || !point.at.is_finite() {
            return;
        }
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    /// Mean and standard deviation, or `None` when empty.
    pub fn moments(&self) -> Option<Moments> {
        moments(self.points.iter().map(|p| p.value))
    }

    /// Full statistics, or `None` when empty.
    pub fn stats(&self) -> Option<Stats> {
        let values: Vec<f64> = self.points.iter().map(|p| p.value).collect();
        stats(&values)
    }
}

/// Mean and population standard deviation of `values` in two passes; `None` when empty.
///
/// A series whose values are all equal gets exactly its value as mean and exactly 0 as
/// deviation, so rounding in the sum can never turn a flat line into a tiny non-zero σ that
/// would blow up a z-score.
pub fn moments<I>(values: I) -> Option<Moments>
where
    I: Iterator<Item = f64> + Clone,
{
    let mut n = 0usize;
    let mut sum = 0.0;
    let mut running = 0.0;
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    for v in values.clone() {
        n += 1;
        sum += v;
        running += (v - running) / n as f64;
        min = min.min(v);
        max = max.max(v);
    }
    if n == 0 {
        return None;
    }
    // sum / n is exact more often (integers, binary fractions); the running mean is the
    // fallback when the sum overflows.
    let mean = if sum.is_finite() {
        sum / n as f64
    } else {
        running
    };
    if min == max {
        return Some(Moments {
            samples: n,
            mean: min,
            stddev: 0.0,
        });
    }
    let mean = mean.clamp(min, max);
    let variance = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    let stddev = variance.sqrt();
    Some(Moments {
        samples: n,
        mean,
        stddev: if stddev.is_finite() { stddev } else { 0.0 },
    })
}

/// Full statistics of `values` (any order); `None` when empty.
pub fn stats(values: &[f64]) -> Option<Stats> {
    let m = moments(values.iter().copied())?;
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(Stats {
        samples: m.samples,
        mean: m.mean,
        stddev: m.stddev,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        p95: percentile(&sorted, 0.95),
        p99: percentile(&sorted, 0.99),
    })
}

/// The `q` quantile (0–1) of ascending `sorted` values by linear interpolation between the
/// closest ranks: rank `h = (n - 1) q`, result `x[⌊h⌋] + (h - ⌊h⌋)(x[⌊h⌋ + 1] - x[⌊h⌋])`.
/// This is NumPy's default (`method="linear"`) and R's type 7. Returns 0 for no values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let q = if q.is_finite() {
        q.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let h = (n - 1) as f64 * q;
    let lo = (h.floor() as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    let (a, b) = (sorted[lo], sorted[hi]);
    (a + (h - lo as f64) * (b - a)).clamp(a.min(b), a.max(b))
}

/// How many standard deviations `value` lies above (positive) or below (negative) the mean.
///
/// Always finite: a window with no spread scores 0, whatever the value, because a distance
/// from a flat line has no scale to be measured in.
pub fn zscore(value: f64, m: &Moments) -> f64 {
    if m.stddev <= 0.0 || !m.stddev.is_finite() {
        return 0.0;
    }
    let z = (value - m.mean) / m.stddev;
    if z.is_finite() { z } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    fn point(at: f64, value: f64) -> Point {
        Point {
            at,
            value,
            severity: None,
        }
    }

    // Expected values below were computed independently with Python's `statistics` module
    // (`mean`, `pstdev`, `quantiles(data, n=100, method="inclusive")`, which is the same
    // type-7 rule) and checked by hand with h = (n - 1) q.
    #[test]
    fn statistics_match_independent_figures() {
        let s = stats(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.samples, 8);
        assert_eq!(s.mean, 5.0);
        assert_eq!(s.stddev, 2.0);
        assert_eq!((s.min, s.max), (2.0, 9.0));
        // h = 7 * 0.95 = 6.65 -> 7 + 0.65 * (9 - 7) = 8.3
        assert!(close(s.p95, 8.3), "{}", s.p95);
        // h = 7 * 0.99 = 6.93 -> 7 + 0.93 * 2 = 8.86
        assert!(close(s.p99, 8.86), "{}", s.p99);

        // 1..=10: mean 5.5, pstdev sqrt(8.25); p95 h = 8.55 -> 9.55; p99 h = 8.91 -> 9.91.
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        let s = stats(&ten).unwrap();
        assert_eq!(s.mean, 5.5);
        assert!(close(s.stddev, 2.872_281_323_269_014_6), "{}", s.stddev);
        assert!(close(s.p95, 9.55), "{}", s.p95);
        assert!(close(s.p99, 9.91), "{}", s.p99);

        // Unsorted input with a spike, as CPU in cores.
        let s = stats(&[0.1, 0.5, 0.2, 0.1, 2.0]).unwrap();
        assert!(close(s.mean, 0.58), "{}", s.mean);
        assert!(close(s.stddev, 0.724_982_758_415_674_3), "{}", s.stddev);
        // sorted 0.1 0.1 0.2 0.5 2.0; h = 3.8 -> 0.5 + 0.8 * 1.5 = 1.7; h = 3.96 -> 1.94
        assert!(close(s.p95, 1.7), "{}", s.p95);
        assert!(close(s.p99, 1.94), "{}", s.p99);
    }

    #[test]
    fn percentile_edges() {
        assert_eq!(percentile(&[], 0.95), 0.0);
        assert_eq!(percentile(&[3.0], 0.95), 3.0);
        assert_eq!(percentile(&[1.0, 2.0], 0.0), 1.0);
        assert_eq!(percentile(&[1.0, 2.0], 1.0), 2.0);
        assert_eq!(percentile(&[1.0, 2.0], 0.5), 1.5);
    }

    #[test]
    fn zscore_against_window() {
        let m = moments([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0].into_iter()).unwrap();
        assert_eq!(zscore(11.0, &m), 3.0);
        assert_eq!(zscore(1.0, &m), -2.0);
        let flat = moments([0.25; 5].into_iter()).unwrap();
        assert_eq!(flat.stddev, 0.0);
        assert_eq!(zscore(100.0, &flat), 0.0);
    }

    #[test]
    fn window_is_bounded_by_count_and_age() {
        let mut w = Window::new(3, 10.0);
        for i in 0..5 {
            w.push(point(f64::from(i), f64::from(i)));
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.first().unwrap().value, 2.0);
        w.evict(12.0); // cutoff 2.0: the sample taken at 2 is exactly one span old
        assert_eq!(w.len(), 2);
        w.evict(100.0);
        assert!(w.is_empty());
        assert_eq!(w.stats(), None);
    }

    #[test]
    fn non_finite_samples_are_ignored() {
        let mut w = Window::new(10, 60.0);
        w.push(point(1.0, f64::NAN));
        w.push(point(2.0, f64::INFINITY));
        w.push(point(3.0, 1.0));
        assert_eq!(w.len(), 1);
    }

    fn value() -> impl Strategy<Value = f64> {
        -1e9f64..1e9
    }

    proptest! {
        #[test]
        fn constant_series_scores_zero(c in value(), n in 1usize..200, probe in value()) {
            let m = moments(std::iter::repeat_n(c, n)).unwrap();
            prop_assert_eq!(m.stddev, 0.0);
            prop_assert_eq!(m.mean, c);
            prop_assert_eq!(zscore(c, &m), 0.0);
            prop_assert_eq!(zscore(probe, &m), 0.0);
        }

        #[test]
        fn statistics_are_finite_and_ordered(values in prop::collection::vec(value(), 1..300), probe in value()) {
            let s = stats(&values).unwrap();
            for x in [s.mean, s.stddev, s.min, s.max, s.p95, s.p99] {
                prop_assert!(x.is_finite());
            }
            prop_assert!(s.stddev >= 0.0);
            prop_assert!(s.min <= s.mean && s.mean <= s.max);
            prop_assert!(s.min <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.max);
            let m = moments(values.iter().copied()).unwrap();
            prop_assert!(zscore(probe, &m).is_finite());
        }

        #[test]
        fn zscore_is_invariant_under_scaling_and_shift(
            values in prop::collection::vec(-1e3f64..1e3, 2..100),
            probe in -1e3f64..1e3,
            scale in 0.01f64..1e3,
            shift in -1e3f64..1e3,
        ) {
            let m = moments(values.iter().copied()).unwrap();
            prop_assume!(m.stddev > 1e-6);
            let scaled: Vec<f64> = values.iter().map(|v| v * scale + shift).collect();
            let ms = moments(scaled.iter().copied()).unwrap();
            let z = zscore(probe, &m);
            let zs = zscore(probe * scale + shift, &ms);
            prop_assert!((z - zs).abs() <= 1e-6 * (1.0 + z.abs()), "{} vs {}", z, zs);
            let s = stats(&values).unwrap();
            let ss = stats(&scaled).unwrap();
            prop_assert!((ss.p95 - (s.p95 * scale + shift)).abs() <= 1e-6 * (1.0 + ss.p95.abs()));
        }

        #[test]
        fn window_never_exceeds_capacity(
            capacity in 1usize..50,
            values in prop::collection::vec(value(), 0..500),
        ) {
            let mut w = Window::new(capacity, 1e12);
            for (i, v) in values.iter().enumerate() {
                w.push(point(i as f64, *v));
                prop_assert!(w.len() <= capacity);
            }
            prop_assert_eq!(w.len(), values.len().min(capacity));
            if let Some(last) = values.last() {
                prop_assert_eq!(w.last().unwrap().value, *last);
            }
        }
    }
}
