//! The lossless, serializable record of a run ([`Summary`], also what `--json` writes) and its
//! human-readable table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{LoadResult, Mode};

/// Percentiles of one histogram, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// All zero for an empty histogram. Quantiles are HDR "highest equivalent" values, i.e.
    /// at most 0.1 % above the true sample.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |q: f64| h.value_at_quantile(q) as f64;
        Self {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: h.max() as f64,
            mean: h.mean(),
        }
    }
}

/// Everything a report needs about one run; histograms included, so nothing is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// "open" or "closed".
    pub mode: String,
    /// Target rate (open loop).
    pub rate: Option<f64>,
    /// Requests in flight (closed loop).
    pub concurrency: Option<u32>,
    pub connections: u32,
    /// "http1" or "http2".
    pub protocol: String,
    pub body_size: u64,
    /// Measured window, seconds.
    pub duration_s: f64,
    pub warmup_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub errors_by_class: BTreeMap<String, u64>,
    pub late_sends: u64,
    pub achieved_rps: f64,
    /// Corrected latency (from the scheduled send time).
    pub latency_us: Percentiles,
    /// From the actual send time.
    pub service_time_us: Percentiles,
    /// Latency histogram: HDR V2 deflate serialized, base64 (standard alphabet).
    pub histogram: String,
    /// Service-time histogram, same encoding.
    pub service_histogram: String,
}

/// A histogram could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum HistogramCodecError {
    #[error("histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram is not a valid HDR V2 serialization: {0:?}")]
    Deserialize(hdrhistogram::serialization::DeserializeError),
    #[error("cannot serialize histogram: {0:?}")]
    Serialize(hdrhistogram::serialization::V2DeflateSerializeError),
}

/// HDR V2 deflate + base64 (standard), the encoding of [`Summary::histogram`].
pub fn encode_histogram(h: &Histogram<u64>) -> Result<String, HistogramCodecError> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .map_err(HistogramCodecError::Serialize)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// Inverse of [`encode_histogram`] (also reads uncompressed V2).
pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, HistogramCodecError> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim())?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(HistogramCodecError::Deserialize)
}

impl LoadResult {
    pub fn summary(&self) -> Summary {
        let cfg = &self.config;
        let (mode, rate, concurrency) = match cfg.mode {
            Mode::Open { rate } => ("open", Some(rate), None),
            Mode::Closed { concurrency } => (
                "closed",
                None,
                Some(u32::try_from(concurrency).unwrap_or(u32::MAX)),
            ),
        };
        // Serializing an in-memory histogram into a Vec cannot fail in practice; an empty
        // string is what a reader would see for "no histogram" if it ever did.
        let encode = |h: &Histogram<u64>| {
            encode_histogram(h).unwrap_or_else(|e| {
                tracing::error!(error = %e, "histogram serialization failed");
                String::new()
            })
        };
        Summary {
            mode: mode.into(),
            rate,
            concurrency,
            connections: u32::try_from(cfg.connections).unwrap_or(u32::MAX),
            protocol: if cfg.http2 { "http2" } else { "http1" }.into(),
            body_size: cfg.body_size as u64,
            duration_s: self.measured.as_secs_f64(),
            warmup_s: cfg.warmup.as_secs_f64(),
            requests: self.requests,
            errors: self.errors,
            errors_by_class: self.errors_by_class.clone(),
            late_sends: self.late_sends,
            achieved_rps: self.achieved_rps,
            latency_us: Percentiles::from_histogram(&self.latency),
            service_time_us: Percentiles::from_histogram(&self.service_time),
            histogram: encode(&self.latency),
            service_histogram: encode(&self.service_time),
        }
    }
}

impl Summary {
    pub fn latency_histogram(&self) -> Result<Histogram<u64>, HistogramCodecError> {
        decode_histogram(&self.histogram)
    }

    pub fn service_time_histogram(&self) -> Result<Histogram<u64>, HistogramCodecError> {
        decode_histogram(&self.service_histogram)
    }

    /// Writes pretty JSON to `path` through a temporary file and a rename, so readers never
    /// see a half-written file.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path.file_name().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{}: not a file path", path.display()),
            )
        })?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut f, self)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// The human table: percentiles of corrected latency and service time, rate, errors.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let load = match (self.rate, self.concurrency) {
            (Some(rate), _) => format!("open loop at {rate} rps"),
            (_, Some(c)) => format!("closed loop, concurrency {c}"),
            _ => self.mode.clone(),
        };
        let _ = writeln!(
            out,
            "{load}, {}, {} connections, body {} B; {:.3} s measured after {:.3} s warm-up",
            self.protocol, self.connections, self.body_size, self.duration_s, self.warmup_s
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        for (name, p) in [
            ("latency (ms)", &self.latency_us),
            ("service time (ms)", &self.service_time_us),
        ] {
            let ms = |us: f64| format!("{:.3}", us / 1000.0);
            let _ = writeln!(
                out,
                "{name:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.p999),
                ms(p.p9999),
                ms(p.max)
            );
        }
        let _ = writeln!(out);
        match self.rate {
            Some(rate) => {
                let _ = writeln!(
                    out,
                    "rate        {:.2} rps achieved of {rate} target ({:.2} %)",
                    self.achieved_rps,
                    100.0 * self.achieved_rps / rate
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "rate        {:.2} rps achieved (maximum throughput)",
                    self.achieved_rps
                );
            }
        }
        let _ = writeln!(out, "requests    {}", self.requests);
        let _ = writeln!(
            out,
            "late sends  {} (sent > 1 ms after their scheduled time)",
            self.late_sends
        );
        let classes = if self.errors_by_class.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = self
                .errors_by_class
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            format!(" ({})", list.join(", "))
        };
        let _ = writeln!(out, "errors      {}{classes}", self.errors);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::new_histogram;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let p = Percentiles::from_histogram(&h);
        // 3 significant digits: each quantile within 0.1 % of the exact rank value
        for (got, want) in [
            (p.p50, 5_000.0),
            (p.p90, 9_000.0),
            (p.p99, 9_900.0),
            (p.p999, 9_990.0),
            (p.p9999, 9_999.0),
        ] {
            assert!((got - want).abs() <= want * 0.001 + 1.0, "{got} vs {want}");
        }
        assert!((p.max - 10_000.0).abs() <= 10.0);
        assert!((p.mean - 5_000.5).abs() < 5.0);
        assert_eq!(
            Percentiles::from_histogram(&new_histogram()),
            Percentiles::default()
        );
    }

    #[test]
    fn histogram_codec_round_trips_and_rejects_garbage() {
        let mut h = new_histogram();
        for v in [1u64, 7, 5_000, 5_001, 60_000_000] {
            h.record_n(v, 3).unwrap();
        }
        let s = encode_histogram(&h).unwrap();
        let back = decode_histogram(&s).unwrap();
        assert_eq!(back.len(), 15);
        assert_eq!(back, h);
        assert!(decode_histogram("not base64!").is_err());
        assert!(decode_histogram("aGVsbG8=").is_err());
    }
}
