#!/usr/bin/env python3
"""Read an HdrHistogram interval log with HdrHistogram's Python reader.

    read_hdr_log.py FILE.hlog

Prints one JSON object per interval (one line each): its start offset and
length in seconds, count, min, mean, p50, p90, p99, p99.9 and max, in the
log's own unit (microseconds for the logs `bench` writes). Uses only the
`hdrh` package (PyPI `hdrhistogram`, HdrHistogram_py), not Weft's code, so
suites/tests/end_to_end.rs can hold Weft's record against an independent
reader of its log.
"""
import json
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader


def main(path):
    # The reference only gives decoded intervals a shape; each interval's
    # own header sets its range and precision.
    reader = HistogramLogReader(path, HdrHistogram(1, 60_000_000, 3))
    intervals = 0
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            break
        intervals += 1
        start_ms = h.get_start_time_stamp()
        print(json.dumps({
            "start_s": start_ms / 1000.0 - reader.get_start_time_sec(),
            "length_s": (h.get_end_time_stamp() - start_ms) / 1000.0,
            "count": h.get_total_count(),
            "min": h.get_min_value(),
            "mean": h.get_mean_value(),
            "p50": h.get_value_at_percentile(50),
            "p90": h.get_value_at_percentile(90),
            "p99": h.get_value_at_percentile(99),
            "p999": h.get_value_at_percentile(99.9),
            "max": h.get_max_value(),
        }))
    if intervals == 0:
        sys.exit(f"{path}: no interval histograms in the log")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: read_hdr_log.py FILE.hlog")
    main(sys.argv[1])
