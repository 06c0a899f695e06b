//! Soak runs: long steady load while every mesh process's RSS and open fds
//! are sampled, and the verdict whether they stayed flat.
//!
//! The flatness rule (also in `reports/SCHEMA.md`): samples taken before
//! `settle_s` are ignored; the rest are cut into consecutive windows of
//! `window_s` (a last partial window shorter than half a window is dropped);
//! each window's median is taken; a series is flat when
//! `max(medians) / min(medians) <= 1 + tolerance`. A run is flat when every
//! series of every process is flat, there are at least two windows, and the
//! load had 0 errors.

use serde::{Deserialize, Serialize};

/// One soak run (one cell of a `mode = "soak"` scenario).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Soak {
    pub scenario: String,
    pub variant: String,
    pub substrate: String,
    pub repetition: u32,
    /// Offered rate, requests/s.
    pub rate: f64,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Requests scheduled in the measured window, and how many failed.
    pub requests: u64,
    pub errors: u64,
    /// Seconds between samples.
    pub interval_s: f64,
    /// Samples before this (seconds into the measured window) are not judged.
    pub settle_s: f64,
    /// Width of the windows whose medians are compared, seconds.
    pub window_s: f64,
    /// Allowed spread: `max/min` of window medians at most `1 + tolerance`.
    pub tolerance: f64,
    /// One series per sampled process.
    pub processes: Vec<ProcessSeries>,
    /// The verdict and, when not flat, why.
    pub flat: bool,
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// RSS and open fds of one process (with its descendants) over the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessSeries {
    /// Component name, as in [`crate::Resource::component`].
    pub component: String,
    /// `proxy`, `control` or `server`.
    pub role: String,
    /// Sample times, seconds from the start of the measured window.
    pub t_s: Vec<f64>,
    /// Resident set size at each sample, bytes (`VmRSS`).
    pub rss_bytes: Vec<u64>,
    /// Open file descriptors at each sample (entries of `/proc/<pid>/fd`).
    pub fds: Vec<u64>,
    /// `max/min` of the window medians after settling; `null` with fewer
    /// than two windows.
    pub rss_spread: Option<f64>,
    pub fds_spread: Option<f64>,
}

impl ProcessSeries {
    /// Judged processes: the mesh's own (proxies and control plane), not
    /// the target server, whose memory is not the mesh's.
    pub fn judged(&self) -> bool {
        self.role == "proxy" || self.role == "control"
    }
}

/// `max/min` of the medians of consecutive `window_s` windows of the samples
/// at or after `settle_s` (see the module docs); `None` with fewer than two
/// windows or a zero median.
pub fn spread(t_s: &[f64], values: &[u64], settle_s: f64, window_s: f64) -> Option<f64> {
    if window_s <= 0.0 {
        return None;
    }
    let mut windows: Vec<Vec<u64>> = Vec::new();
    let end = t_s.last().copied().unwrap_or(0.0);
    for (t, v) in t_s.iter().zip(values) {
        if *t < settle_s {
            continue;
        }
        let i = ((t - settle_s) / window_s) as usize;
        // A last window under half full is too short to judge.
        if settle_s + i as f64 * window_s + window_s / 2.0 > end + 1e-9 && i > 0 {
            continue;
        }
        while windows.len() <= i {
            windows.push(Vec::new());
        }
        windows[i].push(*v);
    }
    let medians: Vec<u64> = windows
        .into_iter()
        .filter(|w| !w.is_empty())
        .map(|mut w| {
            w.sort_unstable();
            w[w.len() / 2]
        })
        .collect();
    if medians.len() < 2 {
        return None;
    }
    let (min, max) = (*medians.iter().min()?, *medians.iter().max()?);
    (min > 0).then(|| max as f64 / min as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_compares_window_medians_after_settling() {
        let t: Vec<f64> = (0..40).map(|i| i as f64).collect();
        // Growing fast while settling, then flat with one spike per window.
        let mut v: Vec<u64> = (0..40).map(|i| if i < 10 { 10 * i + 1 } else { 100 }).collect();
        v[15] = 500;
        v[25] = 1;
        let s = spread(&t, &v, 10.0, 10.0).unwrap();
        assert!((s - 1.0).abs() < 1e-9, "medians ignore single spikes: {s}");
        // A steady climb after settling is not flat.
        let climb: Vec<u64> = (0..40).map(|i| 100 + 5 * i).collect();
        let s = spread(&t, &climb, 10.0, 10.0).unwrap();
        assert!(s > 1.5, "{s}");
        assert_eq!(spread(&t, &v, 35.0, 10.0), None, "one window only");
        assert_eq!(spread(&t, &[0; 40], 0.0, 10.0), None);
    }
}
