//! Whether two sets of repetitions of one metric differ by more than their
//! noise: the verdict `bench compare` prints per cell and metric, and the one
//! a same-run gate (`bench gate --base --candidate`) is to use.
//!
//! The test is a percentile bootstrap confidence interval of the difference
//! of medians (candidate − base): each side is resampled with replacement
//! ([`Bootstrap::resamples`] times, 10,000 by default), the difference of the
//! two resampled medians is taken each time, and the central
//! [`Bootstrap::confidence`] share (95 %) of those differences is the
//! interval. When the interval lies wholly above or below zero, the candidate
//! differs, and the metric's [`Direction`] says whether that is better or
//! worse; an interval containing zero is "within noise". The random numbers
//! come from a fixed seed, so the same samples always get the same verdict.
//!
//! With fewer than [`Bootstrap::min_repetitions`] (3) values on either side
//! there is no verdict ("too few repetitions"): one or two runs carry no
//! measure of their own spread. With exactly 3 against 3 the bootstrap
//! interval excludes zero only when the two sets do not overlap at all (any
//! overlap puts at least 7/27 × 7/27 ≈ 6.7 % of the resampled differences on
//! the other side of zero), so two sets drawn from one distribution are
//! called different about 1 time in 10 (2 of the 20 equally likely orderings);
//! more repetitions lower that.
//!
//! Two builds measured round by round in one run (the same-run gate) are
//! judged by [`Bootstrap::judge_paired`] instead: the interval of the median
//! of the per-round differences, which cancels what moves a whole round.

use serde::Serialize;

/// Which way a metric improves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Latency, CPU, memory.
    LowerIsBetter,
    /// Throughput.
    HigherIsBetter,
}

/// What the test concluded about the candidate against the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Better,
    Worse,
    /// The confidence interval of the difference contains zero.
    WithinNoise,
    /// Fewer than the minimum repetitions on one side: no verdict.
    TooFewRepetitions,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::WithinNoise => "within noise",
            Verdict::TooFewRepetitions => "too few repetitions",
        }
    }
}

/// The bootstrap test and its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Bootstrap {
    /// Resamples drawn per comparison.
    pub resamples: u32,
    /// Two-sided confidence of the interval, e.g. 0.95.
    pub confidence: f64,
    /// Seed of the random numbers (the same seed for every comparison, so a
    /// verdict depends only on the samples).
    pub seed: u64,
    /// Fewest values per side that get a verdict.
    pub min_repetitions: usize,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap { resamples: 10_000, confidence: 0.95, seed: 0x5745_4654_0014, min_repetitions: 3 }
    }
}

/// One comparison's outcome, with its effect size.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub base_median: f64,
    pub candidate_median: f64,
    /// `candidate_median - base_median`.
    pub difference: f64,
    /// `difference / base_median`; `None` when the base median is 0.
    pub relative: Option<f64>,
    /// The bootstrap confidence interval of the difference; `None` without a
    /// verdict (too few repetitions).
    pub interval: Option<(f64, f64)>,
    /// Values compared on each side (non-finite values are left out).
    pub base_n: usize,
    pub candidate_n: usize,
}

impl Judgement {
    /// Medians and difference, no verdict yet (too few repetitions until
    /// [`Judgement::with_interval`]).
    fn unjudged(base_median: f64, candidate_median: f64, difference: f64, base_n: usize, candidate_n: usize) -> Judgement {
        Judgement {
            verdict: Verdict::TooFewRepetitions,
            base_median,
            candidate_median,
            difference,
            relative: (base_median != 0.0).then(|| difference / base_median),
            interval: None,
            base_n,
            candidate_n,
        }
    }

    /// The verdict of a bootstrap interval of the difference.
    fn with_interval(self, (low, high): (f64, f64), direction: Direction) -> Judgement {
        Judgement { interval: Some((low, high)), verdict: verdict(low, high, direction), ..self }
    }
}

impl Bootstrap {
    /// The test in words, for reports: `bootstrap 95% CI of the difference of
    /// medians (10000 resamples, seed 0x..., >= 3 repetitions per side)`.
    pub fn describe(&self) -> String {
        format!(
            "bootstrap {}% confidence interval of the difference of medians ({} resamples, seed {:#x}; \
             within noise when it contains 0; no verdict under {} repetitions per side)",
            trim(self.confidence * 100.0),
            self.resamples,
            self.seed,
            self.min_repetitions
        )
    }

    /// Compare `candidate` with `base` for a metric that improves in `direction`.
    pub fn judge(&self, base: &[f64], candidate: &[f64], direction: Direction) -> Judgement {
        let base: Vec<f64> = base.iter().copied().filter(|v| v.is_finite()).collect();
        let candidate: Vec<f64> = candidate.iter().copied().filter(|v| v.is_finite()).collect();
        let base_median = median(&mut base.clone());
        let candidate_median = median(&mut candidate.clone());
        let j = Judgement::unjudged(base_median, candidate_median, candidate_median - base_median, base.len(), candidate.len());
        let min = self.min_repetitions.max(1);
        if base.len() < min || candidate.len() < min || self.resamples == 0 {
            return j;
        }
        j.with_interval(self.interval(&base, &candidate), direction)
    }

    /// The paired test, for two builds measured in the same rounds (the
    /// same-run gate): `pairs` holds each round's `(base, candidate)`. The
    /// interval is the bootstrap interval of the **median of the per-round
    /// differences** (candidate − base), each round resampled as a whole.
    /// Whatever moves a whole round (the machine warming up, a neighbour's
    /// burst, page cache) moves both of its values and cancels in the
    /// difference, where the unpaired test counts it as noise on both sides;
    /// rounds alternate which build goes first, so going first or second
    /// cancels across rounds. `difference` is that median of differences;
    /// `base_median` and `candidate_median` are each side's own median;
    /// `base_n` = `candidate_n` = the pairs with both values finite.
    pub fn judge_paired(&self, pairs: &[(f64, f64)], direction: Direction) -> Judgement {
        let pairs: Vec<(f64, f64)> = pairs.iter().copied().filter(|(b, c)| b.is_finite() && c.is_finite()).collect();
        let base_median = median(&mut pairs.iter().map(|p| p.0).collect::<Vec<_>>());
        let candidate_median = median(&mut pairs.iter().map(|p| p.1).collect::<Vec<_>>());
        let diffs: Vec<f64> = pairs.iter().map(|(b, c)| c - b).collect();
        let j = Judgement::unjudged(base_median, candidate_median, median(&mut diffs.clone()), pairs.len(), pairs.len());
        if pairs.len() < self.min_repetitions.max(1) || self.resamples == 0 {
            return j;
        }
        let mut rng = SplitMix64(self.seed);
        let mut sample = vec![0.0; diffs.len()];
        let medians = (0..self.resamples)
            .map(|_| {
                for slot in sample.iter_mut() {
                    *slot = diffs[rng.below(diffs.len())];
                }
                median(&mut sample)
            })
            .collect();
        j.with_interval(self.central(medians), direction)
    }

    /// [`Self::judge_paired`]'s test in words.
    pub fn describe_paired(&self) -> String {
        format!(
            "bootstrap {}% confidence interval of the median of the per-round differences (candidate − base, \
             the two builds of a round paired; {} resamples, seed {:#x}; within noise when it contains 0; \
             no verdict under {} rounds)",
            trim(self.confidence * 100.0),
            self.resamples,
            self.seed,
            self.min_repetitions
        )
    }

    fn interval(&self, base: &[f64], candidate: &[f64]) -> (f64, f64) {
        let mut rng = SplitMix64(self.seed);
        let mut diffs = Vec::with_capacity(self.resamples as usize);
        let (mut a, mut b) = (vec![0.0; base.len()], vec![0.0; candidate.len()]);
        for _ in 0..self.resamples {
            for slot in a.iter_mut() {
                *slot = base[rng.below(base.len())];
            }
            for slot in b.iter_mut() {
                *slot = candidate[rng.below(candidate.len())];
            }
            diffs.push(median(&mut b) - median(&mut a));
        }
        self.central(diffs)
    }

    /// The central [`Self::confidence`] share of resampled statistics.
    fn central(&self, mut diffs: Vec<f64>) -> (f64, f64) {
        diffs.sort_by(f64::total_cmp);
        let tail = (1.0 - self.confidence.clamp(0.0, 1.0)) / 2.0;
        let n = diffs.len();
        let lo = ((tail * n as f64).floor() as usize).min(n - 1);
        let hi = (((1.0 - tail) * n as f64).ceil() as usize).clamp(1, n) - 1;
        (diffs[lo], diffs[hi])
    }
}

/// Worse or better when the interval lies wholly on one side of 0.
fn verdict(low: f64, high: f64, direction: Direction) -> Verdict {
    if low > 0.0 || high < 0.0 {
        match (low > 0.0, direction) {
            (true, Direction::LowerIsBetter) | (false, Direction::HigherIsBetter) => Verdict::Worse,
            _ => Verdict::Better,
        }
    } else {
        Verdict::WithinNoise
    }
}

/// Median; the mean of the middle two for an even count; 0 for none.
fn median(values: &mut [f64]) -> f64 {
    crate::compare::median(values)
}

fn trim(v: f64) -> String {
    crate::compare::trim_float((v * 1000.0).round() / 1000.0)
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and fixed here so a
/// seed means the same numbers in every build (a crate's generator may change
/// between versions).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for
    /// the handful of repetitions compared here).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOWER: Direction = Direction::LowerIsBetter;

    #[test]
    fn clearly_separated_samples_are_slower_or_faster() {
        let t = Bootstrap::default();
        let base = [100.0, 103.0, 98.0, 101.0, 99.0];
        let slow = [150.0, 148.0, 155.0, 151.0, 149.0];
        let j = t.judge(&base, &slow, LOWER);
        assert_eq!(j.verdict, Verdict::Worse, "{j:?}");
        assert_eq!((j.base_median, j.candidate_median, j.difference), (100.0, 150.0, 50.0));
        assert_eq!(j.relative, Some(0.5));
        let (lo, hi) = j.interval.unwrap();
        assert!(lo > 0.0 && hi >= lo && hi <= 57.0, "{lo}..{hi}");
        // The other way round, and for a higher-is-better metric.
        assert_eq!(t.judge(&slow, &base, LOWER).verdict, Verdict::Better);
        assert_eq!(t.judge(&base, &slow, Direction::HigherIsBetter).verdict, Verdict::Better);
        assert_eq!(t.judge(&slow, &base, Direction::HigherIsBetter).verdict, Verdict::Worse);
        // Three against three, not overlapping: the smallest sets with a verdict.
        assert_eq!(t.judge(&[10.0, 11.0, 12.0], &[13.0, 14.0, 15.0], LOWER).verdict, Verdict::Worse);
    }

    #[test]
    fn overlapping_noise_is_within_noise() {
        let t = Bootstrap::default();
        let base = [100.0, 120.0, 95.0, 130.0, 105.0];
        let candidate = [110.0, 98.0, 125.0, 102.0, 135.0];
        let j = t.judge(&base, &candidate, LOWER);
        assert_eq!(j.verdict, Verdict::WithinNoise, "{j:?}");
        let (lo, hi) = j.interval.unwrap();
        assert!(lo < 0.0 && hi > 0.0, "{lo}..{hi}");
        // 3 v 3 with one value of each side beyond the other's smallest/largest.
        assert_eq!(t.judge(&[10.0, 12.0, 14.0], &[13.0, 15.0, 16.0], LOWER).verdict, Verdict::WithinNoise);
    }

    #[test]
    fn identical_samples_are_within_noise() {
        let t = Bootstrap::default();
        let s = [250.0, 240.0, 265.0];
        let j = t.judge(&s, &s, LOWER);
        assert_eq!(j.verdict, Verdict::WithinNoise, "{j:?}");
        assert_eq!(j.difference, 0.0);
        // Constant and equal: an interval of exactly [0, 0].
        let c = t.judge(&[7.0; 4], &[7.0; 4], LOWER);
        assert_eq!((c.verdict, c.interval), (Verdict::WithinNoise, Some((0.0, 0.0))));
    }

    #[test]
    fn too_few_repetitions_get_no_verdict() {
        let t = Bootstrap::default();
        for (a, b) in [(&[1.0][..], &[100.0, 101.0, 102.0][..]), (&[1.0, 2.0, 3.0][..], &[9.0, 9.5][..]), (&[][..], &[][..])] {
            let j = t.judge(a, b, LOWER);
            assert_eq!(j.verdict, Verdict::TooFewRepetitions, "{a:?} {b:?}");
            assert_eq!(j.interval, None);
        }
        // Non-finite values do not count as repetitions.
        let j = t.judge(&[1.0, 2.0, f64::NAN], &[5.0, 6.0, 7.0], LOWER);
        assert_eq!((j.verdict, j.base_n), (Verdict::TooFewRepetitions, 2));
        // The median still says what was measured.
        assert_eq!(t.judge(&[4.0], &[6.0, 8.0], LOWER).difference, 3.0);
    }

    #[test]
    fn pairing_by_round_cancels_what_moves_whole_rounds() {
        let t = Bootstrap::default();
        // Each round slower than the last (the machine drifting), the
        // candidate 30 us behind the base in every round.
        let base = [300.0, 350.0, 400.0, 450.0, 500.0, 550.0];
        let pairs: Vec<(f64, f64)> = base.iter().map(|b| (*b, b + 30.0)).collect();
        let candidate: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        assert_eq!(t.judge(&base, &candidate, LOWER).verdict, Verdict::WithinNoise);
        let j = t.judge_paired(&pairs, LOWER);
        assert_eq!((j.verdict, j.difference, j.interval), (Verdict::Worse, 30.0, Some((30.0, 30.0))), "{j:?}");
        assert_eq!((j.base_median, j.candidate_median, j.base_n), (425.0, 455.0, 6));
        // The same drift with the builds swapped in half the rounds' values: within noise.
        let mixed: Vec<(f64, f64)> = base.iter().enumerate().map(|(i, b)| if i % 2 == 0 { (*b, b + 30.0) } else { (b + 30.0, *b) }).collect();
        assert_eq!(t.judge_paired(&mixed, LOWER).verdict, Verdict::WithinNoise);
        // Identical rounds: exactly [0, 0].
        let same: Vec<(f64, f64)> = base.iter().map(|b| (*b, *b)).collect();
        assert_eq!(t.judge_paired(&same, LOWER).interval, Some((0.0, 0.0)));
        // Faster in every round is better, and higher-is-better flips it.
        let fast: Vec<(f64, f64)> = pairs.iter().map(|(b, c)| (*c, *b)).collect();
        assert_eq!(t.judge_paired(&fast, LOWER).verdict, Verdict::Better);
        assert_eq!(t.judge_paired(&pairs, Direction::HigherIsBetter).verdict, Verdict::Better);
    }

    #[test]
    fn too_few_rounds_get_no_paired_verdict() {
        let t = Bootstrap::default();
        let j = t.judge_paired(&[(1.0, 9.0), (2.0, 9.0), (f64::NAN, 9.0)], LOWER);
        assert_eq!((j.verdict, j.interval, j.base_n), (Verdict::TooFewRepetitions, None, 2));
        assert_eq!(j.difference, 7.5);
        assert!(t.describe_paired().contains("median of the per-round differences"), "{}", t.describe_paired());
    }

    #[test]
    fn the_same_samples_always_get_the_same_interval() {
        let t = Bootstrap::default();
        let (a, b) = ([5.0, 9.0, 7.0, 6.0], [8.0, 6.5, 9.5, 7.5]);
        assert_eq!(t.judge(&a, &b, LOWER), t.judge(&a, &b, LOWER));
        let other = Bootstrap { seed: 1, ..t };
        // Another seed is another (equally valid) draw; both are reproducible.
        assert_eq!(other.judge(&a, &b, LOWER), other.judge(&a, &b, LOWER));
        assert!(t.describe().contains("bootstrap 95% confidence interval"), "{}", t.describe());
    }
}
