//! The histogram encoding used in records: HDR V2 *deflate* serialization,
//! base64 (standard alphabet), values in microseconds.

use std::io::Cursor;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// Why a stored histogram could not be read back.
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

    #[test]
    fn round_trip_and_merge() {
        let mut a = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut b = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            a.record(v).unwrap();
            b.record(v * 10).unwrap();
        }
        let (ea, eb) = (encode(&a).unwrap(), encode(&b).unwrap());
        let back = decode(&ea).unwrap();
        assert_eq!(back.len(), 1000);
        assert_eq!(back.value_at_quantile(0.5), a.value_at_quantile(0.5));
        let m = merge([ea.as_str(), eb.as_str()]).unwrap();
        assert_eq!(m.len(), 2000);
        assert!(m.max() >= 9990);
        assert!(matches!(decode(""), Err(HistogramError::Missing)));
        assert!(matches!(decode("!!!"), Err(HistogramError::Base64(_))));
        assert!(matches!(decode("AAAA"), Err(HistogramError::Decode(_))));
    }
}
