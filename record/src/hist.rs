//! The one histogram codec of the record: HDR V2 *deflate* serialization,
//! base64 (standard alphabet), values in microseconds. loadgen encodes with
//! it; compare and render decode and merge with it.

use std::io::Cursor;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// Why a histogram could not be encoded, read back or merged.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    #[error("histogram is empty (the record has no histogram for this run)")]
    Missing,
    #[error("histogram is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("histogram is not an HDR V2 serialization: {0:?}")]
    Decode(hdrhistogram::serialization::DeserializeError),
    #[error("histograms could not be merged: {0:?}")]
    Merge(hdrhistogram::errors::AdditionError),
    #[error("histogram could not be serialized: {0:?}")]
    Encode(hdrhistogram::serialization::V2DeflateSerializeError),
}

/// Encode a histogram the way records store it (V2 deflate, base64).
pub fn encode(hist: &Histogram<u64>) -> Result<String, HistogramError> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new().serialize(hist, &mut buf).map_err(HistogramError::Encode)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// Decode a stored histogram. Accepts plain V2 as well as V2 deflate, since
/// the HDR deserializer recognises both by their cookie.
pub fn decode(b64: &str) -> Result<Histogram<u64>, HistogramError> {
    let trimmed = b64.trim();
    if trimmed.is_empty() {
        return Err(HistogramError::Missing);
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(trimmed)?;
    Deserializer::new().deserialize(&mut Cursor::new(bytes)).map_err(HistogramError::Decode)
}

/// Merge several stored histograms into one (e.g. all repetitions of a cell),
/// so quantiles are taken over every recorded request, not averaged.
pub fn merge<'a>(encoded: impl IntoIterator<Item = &'a str>) -> Result<Histogram<u64>, HistogramError> {
    let mut merged: Option<Histogram<u64>> = None;
    for e in encoded {
        let h = decode(e)?;
        match merged.as_mut() {
            None => {
                let mut first = h;
                // Repetitions may have been recorded with different highest
                // trackable values; let the target grow instead of failing.
                first.auto(true);
                merged = Some(first);
            }
            Some(m) => m.add(&h).map_err(HistogramError::Merge)?,
        }
    }
    merged.ok_or(HistogramError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> Histogram<u64> {
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap()
    }

    #[test]
    fn round_trip_and_merge() {
        let (mut a, mut b) = (histogram(), histogram());
        for v in 1..=1000u64 {
            a.record(v).unwrap();
            b.record(v * 10).unwrap();
        }
        let (ea, eb) = (encode(&a).unwrap(), encode(&b).unwrap());
        let back = decode(&ea).unwrap();
        assert_eq!(back, a);
        let m = merge([ea.as_str(), eb.as_str()]).unwrap();
        assert_eq!(m.len(), 2000);
        assert!(m.max() >= 9990);
    }

    #[test]
    fn rejects_garbage_and_absence() {
        assert!(matches!(decode(""), Err(HistogramError::Missing)));
        assert!(matches!(merge([]), Err(HistogramError::Missing)));
        assert!(matches!(decode("not base64!"), Err(HistogramError::Base64(_))));
        // Valid base64, not a histogram.
        assert!(matches!(decode("aGVsbG8="), Err(HistogramError::Decode(_))));
    }

    #[test]
    fn extreme_values_survive() {
        let mut h = histogram();
        for v in [1u64, 7, 5_000, 5_001, 60_000_000] {
            h.record_n(v, 3).unwrap();
        }
        assert_eq!(decode(&encode(&h).unwrap()).unwrap(), h);
    }
}
