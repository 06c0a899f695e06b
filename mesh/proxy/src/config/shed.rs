//! Load shedding by queue time (`--shed-target`, `--shed-interval`): when
//! every request of an interval waited longer than the target inside the
//! proxy before it was admitted, the proxy is overloaded (see
//! `stack::shed`).
//!
//! Off by default (target 0s): at 3x overload the rule shed almost every
//! request and the proxy's goodput fell far below its capacity (measured
//! in `stack::shed`'s docs). Switched on, the values to use are CoDel's
//! (RFC 8289: 5 ms target, 100 ms interval), as
//! Facebook's wangle uses them for request queues: a standing queue of
//! 5 ms is well above what a proxy serving within its capacity ever
//! shows (its run queue empties between bursts, so the interval's minimum
//! is near zero), and 100 ms is longer than one scheduling hiccup of a
//! busy machine, so a stall alone does not shed.

use std::time::Duration;

/// How queue time inside the proxy decides shedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shedding {
    /// The queue time a request may see in steady state; zero switches
    /// shedding by queue time off (the request caps still apply).
    pub target: Duration,
    /// How long the queue time must stay above `target` (its minimum over
    /// the interval) before requests are shed, and how often that is judged.
    pub interval: Duration,
}

impl Default for Shedding {
    /// Off (see the module docs); the interval is CoDel's.
    fn default() -> Self {
        Self { target: Duration::ZERO, interval: Duration::from_millis(100) }
    }
}

impl Shedding {
    /// Whether shedding by queue time is on.
    pub fn enabled(&self) -> bool {
        !self.target.is_zero()
    }

    /// Every problem with these values, each naming its flag.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.interval.is_zero() {
            out.push("--shed-interval 0s: must be greater than zero (e.g. 100ms)".to_owned());
        }
        if self.enabled() && self.target >= self.interval {
            out.push(format!(
                "--shed-target {}: must be shorter than --shed-interval {} (a queue is judged by its minimum over the interval); 0s switches shedding by queue time off",
                humantime::format_duration(self.target),
                humantime::format_duration(self.interval)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_flags() {
        assert!(Shedding::default().problems().is_empty());
        assert!(!Shedding::default().enabled());
        assert!(Shedding { target: Duration::from_millis(5), ..Shedding::default() }.problems().is_empty());
        let bad = Shedding { target: Duration::from_secs(1), interval: Duration::ZERO }.problems();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("--shed-interval 0s"), "{bad:?}");
        assert!(bad[1].starts_with("--shed-target 1s"), "{bad:?}");
    }
}
