//! Second pass over a suite file: apply defaults and check every value,
//! collecting every problem with its location instead of stopping at the first.

use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::capacity::{RawCapacity, RawSlo};
use super::sweep::{RawSweep, RawSweepKeys};
use super::{
    line_col, Fault, FaultShape, Hardening, LoadShape, OverloadShape, Problem, PropagationShape,
    Protocol, Scenario, SoakShape, Suite, Variant,
};

// ---- first pass: raw, spanned -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSuite {
    name: Option<Spanned<String>>,
    #[serde(default)]
    description: String,
    defaults: Option<Spanned<RawSettings>>,
    #[serde(default)]
    scenario: Vec<Spanned<RawSettings>>,
}

/// Shared by `[defaults]` and `[[scenario]]`: every setting may be given in
/// either place; a scenario's value wins. `name`/`description` only make sense
/// on a scenario and are rejected in `[defaults]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    name: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    rates: Option<Spanned<Vec<Spanned<f64>>>>,
    concurrency: Option<Spanned<i64>>,
    duration: Option<Spanned<String>>,
    warmup: Option<Spanned<String>>,
    repetitions: Option<Spanned<i64>>,
    connections: Option<Spanned<i64>>,
    protocol: Option<Spanned<String>>,
    body_size: Option<Spanned<i64>>,
    server_delay: Option<Spanned<String>>,
    server_threads: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
    variants: Option<Spanned<Vec<Spanned<String>>>>,
    replicas: Option<Spanned<i64>>,
    slow_replica_delay: Option<Spanned<String>>,
    proxy_cpu: Option<Spanned<f64>>,
    proxy_args: Option<Spanned<Vec<Spanned<String>>>>,
    services: Option<Spanned<i64>>,
    endpoints: Option<Spanned<i64>>,
    changes: Option<Spanned<i64>>,
    // mode = "soak"
    sample_interval: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
    flat_window: Option<Spanned<String>>,
    tolerance: Option<Spanned<f64>>,
    // mode = "fault"
    fault: Option<Spanned<String>>,
    fault_at: Option<Spanned<String>>,
    fault_for: Option<Spanned<String>>,
    fault_every: Option<Spanned<String>>,
    // mode = "overload"
    factor: Option<Spanned<f64>>,
    capacity_duration: Option<Spanned<String>>,
    sustainable: Option<Spanned<f64>>,
    // mode = "capacity"
    slo: Option<Spanned<RawSlo>>,
    start_rate: Option<Spanned<f64>>,
    max_rate: Option<Spanned<f64>>,
    ramp_factor: Option<Spanned<f64>>,
    bisect_tolerance: Option<Spanned<f64>>,
    validation: Option<Spanned<bool>>,
    // mode = "sweep"
    sweep: Option<Spanned<RawSweep>>,
}

impl RawSettings {
    /// The capacity keys, each the scenario's own or else `d`'s.
    fn capacity<'a>(&'a self, d: &'a RawSettings) -> RawCapacity<'a> {
        RawCapacity {
            slo: pick(&self.slo, &d.slo),
            start_rate: pick(&self.start_rate, &d.start_rate),
            max_rate: pick(&self.max_rate, &d.max_rate),
            ramp_factor: pick(&self.ramp_factor, &d.ramp_factor),
            bisect_tolerance: pick(&self.bisect_tolerance, &d.bisect_tolerance),
            validation: pick(&self.validation, &d.validation),
        }
    }
}

pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) problems: Vec<Problem>,
}

/// Hard-wired fallbacks for settings neither `[defaults]` nor the scenario give.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
const DEFAULT_WARMUP: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECTIONS: usize = 8;
/// The propagation harness's scale (mesh-control's measured numbers use it).
const DEFAULT_SERVICES: i64 = 1000;
const DEFAULT_ENDPOINTS: i64 = 2000;
const DEFAULT_CHANGES: i64 = 20;
/// Each replica is a server plus, for `weft`, a sidecar: keep it sane.
const MAX_REPLICAS: i64 = 64;

impl Validator<'_> {
    pub(super) fn problem(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            col,
            message: message.into(),
        });
    }

    pub(super) fn suite(&mut self, raw: RawSuite, file: &str) -> Suite {
        let name = match raw.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.problem(n.span(), "suite `name` must not be empty");
                String::new()
            }
            Some(n) => n.into_inner(),
            None => {
                self.problem(0..0, "missing top-level `name = \"...\"`");
                String::new()
            }
        };
        let defaults = match raw.defaults {
            Some(d) => {
                let d = d.into_inner();
                if let Some(n) = &d.name {
                    self.problem(
                        n.span(),
                        "`name` belongs on a [[scenario]], not in [defaults]",
                    );
                }
                if let Some(n) = &d.description {
                    self.problem(
                        n.span(),
                        "`description` belongs on a [[scenario]], not in [defaults]",
                    );
                }
                d
            }
            None => RawSettings::default(),
        };
        if raw.scenario.is_empty() {
            self.problem(0..0, "the suite has no [[scenario]] tables");
        }
        let mut scenarios: Vec<Scenario> = Vec::new();
        let mut seen: Vec<(String, Range<usize>)> = Vec::new();
        for s in raw.scenario {
            let span = s.span();
            let s = s.into_inner();
            if let Some(n) = &s.name {
                if let Some((_, first)) = seen.iter().find(|(k, _)| k == n.get_ref()) {
                    let (line, _) = line_col(self.text, first.start);
                    self.problem(
                        n.span(),
                        format!(
                            "duplicate scenario name `{}` (first used on line {line})",
                            n.get_ref()
                        ),
                    );
                }
                seen.push((n.get_ref().clone(), n.span()));
            }
            if let Some(sc) = self.scenario(&defaults, s, span) {
                scenarios.push(sc);
            }
        }
        Suite {
            name,
            description: raw.description,
            origin: file.to_string(),
            scenarios,
        }
    }

    /// Resolve one scenario against the defaults; `None` if it had problems
    /// (which are recorded, so validation carries on with the next one).
    fn scenario(
        &mut self,
        d: &RawSettings,
        s: RawSettings,
        span: Range<usize>,
    ) -> Option<Scenario> {
        let before = self.problems.len();
        let name = match &s.name {
            Some(n) if n.get_ref().trim().is_empty() => {
                self.problem(n.span(), "scenario `name` must not be empty");
                String::new()
            }
            Some(n) => n.get_ref().clone(),
            None => {
                self.problem(span.clone(), "[[scenario]] is missing `name`");
                String::new()
            }
        };
        let description = s
            .description
            .as_ref()
            .map(|d| d.get_ref().clone())
            .unwrap_or_default();

        let duration = self
            .duration(pick(&s.duration, &d.duration), "duration", false)
            .unwrap_or(DEFAULT_DURATION);
        let warmup = self
            .duration(pick(&s.warmup, &d.warmup), "warmup", true)
            .unwrap_or(DEFAULT_WARMUP);
        let timeout = self
            .duration(pick(&s.timeout, &d.timeout), "timeout", false)
            .unwrap_or(DEFAULT_TIMEOUT);
        let server_delay = self
            .duration(pick(&s.server_delay, &d.server_delay), "server_delay", true)
            .unwrap_or_default();
        let repetitions = self
            .count(pick(&s.repetitions, &d.repetitions), "repetitions", 1, 1000)
            .unwrap_or(1) as u32;
        let connections = self
            .count(
                pick(&s.connections, &d.connections),
                "connections",
                1,
                100_000,
            )
            .unwrap_or(DEFAULT_CONNECTIONS as i64) as usize;
        let server_threads = self
            .count(
                pick(&s.server_threads, &d.server_threads),
                "server_threads",
                1,
                1024,
            )
            .unwrap_or(1) as usize;
        let replicas = self
            .count(pick(&s.replicas, &d.replicas), "replicas", 1, MAX_REPLICAS)
            .unwrap_or(1) as usize;
        let slow_replica_delay = self
            .duration(
                pick(&s.slow_replica_delay, &d.slow_replica_delay),
                "slow_replica_delay",
                true,
            )
            .filter(|d| !d.is_zero());
        // Like `rates` under mode = "closed": a scenario's own setting that
        // cannot apply is an error, an inherited one is simply unused.
        if let (Some(own), 1) = (&s.slow_replica_delay, replicas) {
            if slow_replica_delay.is_some() {
                self.problem(
                    own.span(),
                    "`slow_replica_delay` needs `replicas` of 2 or more (the last replica is the slow one)",
                );
            }
        }
        // 64: more than any machine this runs on gives one process.
        let proxy_cpu = self.fraction(pick(&s.proxy_cpu, &d.proxy_cpu), "proxy_cpu", 0.1, 64.0);
        let proxy_args = self.proxy_args(pick(&s.proxy_args, &d.proxy_args));
        let body_size = match pick(&s.body_size, &d.body_size) {
            Some(b) if *b.get_ref() < 0 || *b.get_ref() > 64 * 1024 * 1024 => {
                self.problem(
                    b.span(),
                    format!(
                        "`body_size` must be between 0 and 67108864 bytes, got {}",
                        b.get_ref()
                    ),
                );
                0
            }
            Some(b) => *b.get_ref() as usize,
            None => 0,
        };
        let protocol = match pick(&s.protocol, &d.protocol) {
            None => Protocol::Http1,
            Some(p) => match Protocol::parse(p.get_ref()) {
                Some(protocol) => protocol,
                None => {
                    let other = p.get_ref();
                    self.problem(
                        p.span(),
                        format!(
                            "unknown protocol `{other}`: expected one of {}",
                            Protocol::NAMES.join(", ")
                        ),
                    );
                    Protocol::Http1
                }
            },
        };
        self.protocol_settings(&s, d, protocol, body_size, server_delay, slow_replica_delay);
        let variants = match pick(&s.variants, &d.variants) {
            None => Variant::defaults(),
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.problem(
                        list.span(),
                        format!(
                            "`variants` is empty: list at least one of {}",
                            Variant::names()
                        ),
                    );
                }
                let mut out = Vec::new();
                for v in list.get_ref() {
                    match Variant::parse(v.get_ref()) {
                        Some(var) if out.contains(&var) => {
                            self.problem(v.span(), format!("variant `{var}` is listed twice"))
                        }
                        Some(var) => out.push(var),
                        None => self.problem(
                            v.span(),
                            format!(
                                "unknown variant `{}`: expected one of {}",
                                v.get_ref(),
                                Variant::names()
                            ),
                        ),
                    }
                }
                out
            }
        };
        let load = self.load_shape(d, &s, span.clone());
        let hardening = self.hardening(d, &s, span, duration);
        if let Some(h) = &hardening {
            self.hardening_topology(&s, d, h, &variants, replicas, repetitions);
        }
        let variants = match (&hardening, pick(&s.variants, &d.variants)) {
            (Some(_), None) => vec![Variant::Weft],
            _ => variants,
        };
        let propagation = pick(&s.mode, &d.mode).is_some_and(|m| m.get_ref() == "propagation");
        if propagation {
            // No server, no variants: the harness runs its own control plane.
            for (key, own) in [
                ("variants", s.variants.as_ref().map(|v| v.span())),
                ("replicas", s.replicas.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = own {
                    self.problem(span, format!("`{key}` has no meaning for mode = \"propagation\" (it measures the control plane alone)"));
                }
            }
        } else if pick(&s.mode, &d.mode).is_some_and(|m| m.get_ref() == "sweep") {
            self.sweep_replicas(s.replicas.as_ref().map(|r| r.span()));
        } else if replicas > 1 && hardening.is_none() {
            self.static_variants_over_replicas(&s, d, &variants);
        }
        if self.problems.len() > before {
            return None;
        }
        // A propagation measurement is of Weft's control plane alone.
        let variants = match propagation {
            true => vec![Variant::Weft],
            false => variants,
        };
        let variants = match &load {
            Some(LoadShape::Sweep(sw)) => {
                let v = self.sweep_variants(sw.dimension, s.variants.as_ref(), variants);
                if self.problems.len() > before {
                    return None;
                }
                v
            }
            _ => variants,
        };
        Some(Scenario {
            name,
            description,
            load: load?,
            duration,
            warmup,
            repetitions,
            connections,
            protocol,
            body_size,
            server_delay,
            server_threads,
            replicas,
            slow_replica_delay,
            proxy_cpu,
            proxy_args,
            timeout,
            variants,
            hardening,
        })
    }

    /// What a protocol other than HTTP needs from the rest of the scenario:
    /// the echo protocols echo `body_size` bytes (so at least 1), and the
    /// TCP echo answers at once (no server delay to give it); the hardening
    /// modes judge HTTP answers (5xx, shed responses), so they take HTTP only.
    fn protocol_settings(
        &mut self,
        s: &RawSettings,
        d: &RawSettings,
        protocol: Protocol,
        body_size: usize,
        server_delay: Duration,
        slow_replica_delay: Option<Duration>,
    ) {
        let Some(at) = pick(&s.protocol, &d.protocol).map(|p| p.span()) else { return };
        let name = protocol.as_str();
        let echoes = matches!(protocol, Protocol::Tcp | Protocol::TcpChurn | Protocol::WebSocket);
        if echoes && body_size == 0 {
            let at = pick(&s.body_size, &d.body_size).map_or(at.clone(), |b| b.span());
            self.problem(at, format!("protocol `{name}` echoes `body_size` bytes per exchange: set `body_size` to at least 1"));
        }
        if protocol.is_tcp() {
            for (key, set, own) in [
                ("server_delay", !server_delay.is_zero(), pick(&s.server_delay, &d.server_delay).map(|v| v.span())),
                ("slow_replica_delay", slow_replica_delay.is_some(), pick(&s.slow_replica_delay, &d.slow_replica_delay).map(|v| v.span())),
            ] {
                if set {
                    self.problem(own.unwrap_or(at.clone()), format!("`{key}` does not apply to protocol `{name}`: the target is a TCP echo, which answers at once"));
                }
            }
        }
        let mode = pick(&s.mode, &d.mode).map(|m| m.get_ref().as_str()).unwrap_or("open");
        if !protocol.is_http() && matches!(mode, "soak" | "fault" | "overload" | "propagation" | "sweep") {
            self.problem(at, format!("protocol `{name}` with mode = \"{mode}\": that mode judges HTTP answers (or sends no load); use `http1` or `http2`"));
        }
    }

    /// The hardening settings of a `soak`, `fault` or `overload` scenario;
    /// their keys anywhere else are problems.
    fn hardening(
        &mut self,
        d: &RawSettings,
        s: &RawSettings,
        span: Range<usize>,
        duration: Duration,
    ) -> Option<Hardening> {
        let mode = pick(&s.mode, &d.mode).map(|m| m.get_ref().as_str()).unwrap_or("open");
        let keys: [(&str, &str, Option<Range<usize>>); 11] = [
            ("sample_interval", "soak", s.sample_interval.as_ref().map(|v| v.span())),
            ("settle", "soak", s.settle.as_ref().map(|v| v.span())),
            ("flat_window", "soak", s.flat_window.as_ref().map(|v| v.span())),
            ("tolerance", "soak", s.tolerance.as_ref().map(|v| v.span())),
            ("fault", "fault", s.fault.as_ref().map(|v| v.span())),
            ("fault_at", "fault", s.fault_at.as_ref().map(|v| v.span())),
            ("fault_for", "fault", s.fault_for.as_ref().map(|v| v.span())),
            ("fault_every", "fault", s.fault_every.as_ref().map(|v| v.span())),
            ("factor", "overload", s.factor.as_ref().map(|v| v.span())),
            ("capacity_duration", "overload", s.capacity_duration.as_ref().map(|v| v.span())),
            ("sustainable", "overload", s.sustainable.as_ref().map(|v| v.span())),
        ];
        for (key, belongs, own) in keys {
            if let (Some(at), true) = (own, belongs != mode) {
                self.problem(at, format!("`{key}` is for mode = \"{belongs}\" scenarios"));
            }
        }
        match mode {
            "soak" => {
                let interval = self
                    .duration(pick(&s.sample_interval, &d.sample_interval), "sample_interval", false)
                    .unwrap_or(Duration::from_secs(5));
                let settle = self
                    .duration(pick(&s.settle, &d.settle), "settle", true)
                    .unwrap_or(Duration::from_secs(120));
                let window = self
                    .duration(pick(&s.flat_window, &d.flat_window), "flat_window", false)
                    .unwrap_or(Duration::from_secs(30));
                let tolerance = self.fraction(pick(&s.tolerance, &d.tolerance), "tolerance", 0.0, 10.0).unwrap_or(0.10);
                if settle + window * 2 > duration {
                    let at = pick(&s.settle, &d.settle).map(|v| v.span()).unwrap_or(span);
                    self.problem(at, format!(
                        "`settle` + 2 x `flat_window` ({} + 2 x {}) must fit in `duration` ({}): flatness compares at least two windows after settling",
                        humantime::format_duration(settle), humantime::format_duration(window), humantime::format_duration(duration)
                    ));
                }
                Some(Hardening::Soak(SoakShape { interval, settle, window, tolerance }))
            }
            "fault" => {
                let fault = match pick(&s.fault, &d.fault) {
                    None => {
                        self.problem(span.clone(), format!("mode = \"fault\" needs `fault = \"...\"`, one of {}", fault_names()));
                        None
                    }
                    Some(f) => {
                        let parsed = Fault::parse(f.get_ref());
                        if parsed.is_none() {
                            self.problem(f.span(), format!("unknown fault `{}`: expected one of {}", f.get_ref(), fault_names()));
                        }
                        parsed
                    }
                };
                let at = self.duration(pick(&s.fault_at, &d.fault_at), "fault_at", true).unwrap_or(Duration::from_secs(5));
                let length = self.duration(pick(&s.fault_for, &d.fault_for), "fault_for", false).unwrap_or(Duration::from_secs(5));
                let every = self.duration(pick(&s.fault_every, &d.fault_every), "fault_every", false).unwrap_or(Duration::from_secs(1));
                if at + length > duration {
                    let where_ = pick(&s.fault_for, &d.fault_for).or(pick(&s.fault_at, &d.fault_at)).map(|v| v.span()).unwrap_or(span.clone());
                    self.problem(where_, format!(
                        "`fault_at` + `fault_for` ({} + {}) must fit in `duration` ({})",
                        humantime::format_duration(at), humantime::format_duration(length), humantime::format_duration(duration)
                    ));
                }
                if fault == Some(Fault::CertRotation) && every < Duration::from_secs(2) {
                    let where_ = pick(&s.fault_every, &d.fault_every).map(|v| v.span()).unwrap_or(span);
                    self.problem(where_, "`fault_every` must be at least 2s for cert-rotation (certificates live whole seconds)");
                }
                fault.map(|fault| Hardening::Fault(FaultShape { fault, at, length, every }))
            }
            "overload" => {
                let factor = self.fraction(pick(&s.factor, &d.factor), "factor", 1.0, 100.0).unwrap_or(3.0);
                let sustainable = self.fraction(pick(&s.sustainable, &d.sustainable), "sustainable", 0.01, 1.0).unwrap_or(0.5);
                let capacity_duration = self
                    .duration(pick(&s.capacity_duration, &d.capacity_duration), "capacity_duration", false)
                    .unwrap_or(Duration::from_secs(5));
                Some(Hardening::Overload(OverloadShape { factor, capacity_duration, sustainable }))
            }
            _ => None,
        }
    }

    /// What a hardening scenario may run: `weft` only; faults on one of
    /// several replicas need them; a fault breaks the scenario's servers,
    /// so one repetition.
    fn hardening_topology(
        &mut self,
        s: &RawSettings,
        d: &RawSettings,
        h: &Hardening,
        variants: &[Variant],
        replicas: usize,
        repetitions: u32,
    ) {
        if let Some(list) = pick(&s.variants, &d.variants) {
            if variants != [Variant::Weft] {
                self.problem(list.span(), "soak, fault and overload scenarios run the mesh itself: `variants` must be [\"weft\"] (or left out)");
            }
        }
        if let Hardening::Fault(f) = h {
            if f.fault.needs_replicas() && replicas < 2 {
                let at = pick(&s.replicas, &d.replicas)
                    .map(|v| v.span())
                    .or(pick(&s.fault, &d.fault).map(|v| v.span()))
                    .unwrap_or(0..0);
                self.problem(at, format!("fault `{}` acts on one of several replicas: set `replicas = 2` or more", f.fault.as_str()));
            }
            if repetitions > 1 {
                let at = pick(&s.repetitions, &d.repetitions).map(|v| v.span()).unwrap_or(0..0);
                self.problem(at, "a fault scenario runs once (`repetitions = 1`): the fault changes the scenario's servers");
            }
        }
    }

    /// `proxy_args`: mesh-proxy flags (`--name` or `--name=value`, a
    /// value as the next element) added to every Weft proxy of the
    /// scenario. The flags the substrate sets itself are refused: they
    /// would break the deployment rather than tune it.
    fn proxy_args(&mut self, v: Option<&Spanned<Vec<Spanned<String>>>>) -> Vec<String> {
        const OWN: [&str; 15] = [
            "--outbound-listen", "--inbound-listen", "--admin-listen", "--identity", "--control",
            "--control-identity", "--token-file", "--trust-anchor", "--trust-anchor-pem", "--destination",
            "--policy", "--app", "--route", "--transparent", "--threads",
        ];
        let Some(list) = v else { return Vec::new() };
        let mut out = Vec::new();
        let mut value_next = false;
        for a in list.get_ref() {
            let arg = a.get_ref();
            let flag = arg.split('=').next().unwrap_or_default();
            if arg.starts_with("--") {
                if OWN.contains(&flag) {
                    self.problem(a.span(), format!("`proxy_args`: `{flag}` is set by the substrate for each proxy; only tuning flags may be given (see `mesh-proxy --help`)"));
                }
                value_next = !arg.contains('=');
            } else if !value_next {
                self.problem(a.span(), format!("`proxy_args`: `{arg}` is neither a `--flag` nor the value after one"));
            } else {
                value_next = false;
            }
            out.push(arg.clone());
        }
        out
    }

    pub(super) fn fraction(&mut self, v: Option<&Spanned<f64>>, field: &str, min: f64, max: f64) -> Option<f64> {
        let v = v?;
        let x = *v.get_ref();
        if !(x.is_finite() && x >= min && x <= max) {
            self.problem(v.span(), format!("`{field}` must be between {min} and {max}, got {x}"));
            return None;
        }
        Some(x)
    }

    /// With several replicas, a static-route variant would reach one of them
    /// only: say so where the variant (or the `replicas` making it wrong) is.
    fn static_variants_over_replicas(
        &mut self,
        s: &RawSettings,
        d: &RawSettings,
        variants: &[Variant],
    ) {
        let allowed: Vec<&str> = Variant::ALL
            .into_iter()
            .filter(|v| v.spreads_over_replicas())
            .map(Variant::as_str)
            .collect();
        let why = |v: &str| {
            format!(
                "variant `{v}` routes statically to one address and cannot spread over `replicas`; with replicas > 1 use {}",
                allowed.join(", ")
            )
        };
        match pick(&s.variants, &d.variants) {
            Some(list) => {
                for v in list.get_ref() {
                    if Variant::parse(v.get_ref()).is_some_and(|v| !v.spreads_over_replicas()) {
                        self.problem(v.span(), why(v.get_ref()));
                    }
                }
            }
            None => {
                let bad: Vec<&str> = variants
                    .iter()
                    .filter(|v| !v.spreads_over_replicas())
                    .map(|v| v.as_str())
                    .collect();
                if let Some(r) = pick(&s.replicas, &d.replicas) {
                    self.problem(
                        r.span(),
                        format!(
                            "`replicas` > 1 with the default variants, which include {} (static routes to one address); list `variants` from {}",
                            bad.join(", "),
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn load_shape(
        &mut self,
        d: &RawSettings,
        s: &RawSettings,
        span: Range<usize>,
    ) -> Option<LoadShape> {
        let mode = pick(&s.mode, &d.mode);
        if mode.is_none_or(|m| m.get_ref() != "sweep") {
            self.stray_sweep_key(s.sweep.as_ref());
        }
        let (closed, propagation) = match mode {
            None => (false, false),
            Some(m) => match m.get_ref().as_str() {
                "open" | "soak" | "fault" => (false, false),
                "closed" | "overload" => (true, false),
                "propagation" => (false, true),
                "capacity" => {
                    for (key, own) in [("rates", s.rates.as_ref().map(|r| r.span())), ("concurrency", s.concurrency.as_ref().map(|c| c.span()))] {
                        if let Some(at) = own {
                            self.problem(at, format!("`{key}` has no meaning for mode = \"capacity\": the search picks its rates (set `start_rate` and `max_rate`)"));
                        }
                    }
                    return self.capacity_shape(&s.capacity(d), span);
                }
                "sweep" => {
                    self.stray_capacity_keys(&s.capacity(&RawSettings::default()));
                    let keys = RawSweepKeys {
                        sweep: pick(&s.sweep, &d.sweep),
                        rates: pick(&s.rates, &d.rates),
                        changes: pick(&s.changes, &d.changes),
                        own_concurrency: s.concurrency.as_ref().map(|v| v.span()),
                        own_rates: s.rates.as_ref().map(|v| v.span()),
                        own_services: s.services.as_ref().map(|v| v.span()),
                        own_endpoints: s.endpoints.as_ref().map(|v| v.span()),
                        own_changes: s.changes.as_ref().map(|v| v.span()),
                    };
                    return self.sweep_shape(&keys, span);
                }
                other => {
                    self.problem(m.span(), format!("unknown mode `{other}`: expected `open` (fixed rate), `closed` (fixed concurrency), `propagation` (control plane discovery latency), `capacity` (the highest rate within an SLO), `sweep` (a cost against a growing size), `soak`, `fault` or `overload`"));
                    return None;
                }
            },
        };
        self.stray_capacity_keys(&s.capacity(&RawSettings::default()));
        if propagation {
            return self.propagation_shape(d, s);
        }
        for (key, own) in [
            ("services", &s.services),
            ("endpoints", &s.endpoints),
            ("changes", &s.changes),
        ] {
            if let Some(v) = own {
                self.problem(
                    v.span(),
                    format!("`{key}` is for mode = \"propagation\" scenarios"),
                );
            }
        }
        // A scenario's own `rates`/`concurrency` conflict with the other mode;
        // ones inherited from [defaults] are simply not used.
        if closed {
            if let Some(r) = &s.rates {
                self.problem(r.span(), "`rates` is for open-loop scenarios; this one has mode = \"closed\" (use `concurrency`)");
            }
            match pick(&s.concurrency, &d.concurrency) {
                None => {
                    self.problem(span, "closed-loop scenario needs `concurrency = N`");
                    None
                }
                Some(c) if *c.get_ref() < 1 || *c.get_ref() > 100_000 => {
                    self.problem(
                        c.span(),
                        format!(
                            "`concurrency` must be between 1 and 100000, got {}",
                            c.get_ref()
                        ),
                    );
                    None
                }
                Some(c) => Some(LoadShape::Closed {
                    concurrency: *c.get_ref() as usize,
                }),
            }
        } else {
            if let Some(c) = &s.concurrency {
                self.problem(c.span(), "`concurrency` is for closed-loop scenarios: add mode = \"closed\" or use `rates`");
            }
            match pick(&s.rates, &d.rates) {
                None => {
                    self.problem(span, "open-loop scenario needs `rates = [...]` (requests/s), or set mode = \"closed\"");
                    None
                }
                Some(list) => {
                    if list.get_ref().is_empty() {
                        self.problem(list.span(), "`rates` is empty");
                    }
                    let mut ok = true;
                    for r in list.get_ref() {
                        let v = *r.get_ref();
                        if !(v.is_finite() && v > 0.0) {
                            self.problem(
                                r.span(),
                                format!("rate must be a positive number of requests/s, got {v}"),
                            );
                            ok = false;
                        } else if v > 10_000_000.0 {
                            self.problem(
                                r.span(),
                                format!("rate {v} is above the 10000000 requests/s limit"),
                            );
                            ok = false;
                        }
                    }
                    (ok && !list.get_ref().is_empty()).then(|| LoadShape::Open {
                        rates: list.get_ref().iter().map(|r| *r.get_ref()).collect(),
                    })
                }
            }
        }
    }

    fn propagation_shape(&mut self, d: &RawSettings, s: &RawSettings) -> Option<LoadShape> {
        for (key, own) in [
            ("rates", &s.rates.as_ref().map(|r| r.span())),
            ("concurrency", &s.concurrency.as_ref().map(|c| c.span())),
        ] {
            if let Some(span) = own {
                self.problem(span.clone(), format!("`{key}` is for load scenarios; this one has mode = \"propagation\" (it offers no load)"));
            }
        }
        let services = self.count(pick(&s.services, &d.services), "services", 1, 100_000);
        let endpoints = self.count(pick(&s.endpoints, &d.endpoints), "endpoints", 1, 1_000_000);
        let changes = self.count(pick(&s.changes, &d.changes), "changes", 1, 10_000);
        let (services, endpoints, changes) = (
            services.unwrap_or(DEFAULT_SERVICES),
            endpoints.unwrap_or(DEFAULT_ENDPOINTS),
            changes.unwrap_or(DEFAULT_CHANGES),
        );
        let mut ok = true;
        if endpoints % services != 0 {
            let at = pick(&s.endpoints, &d.endpoints).or(pick(&s.services, &d.services));
            self.problem(
                at.map(|v| v.span()).unwrap_or(0..0),
                format!("`endpoints` ({endpoints}) must be a multiple of `services` ({services}): every Service gets the same number"),
            );
            ok = false;
        }
        if changes > services {
            let at = pick(&s.changes, &d.changes).or(pick(&s.services, &d.services));
            self.problem(
                at.map(|v| v.span()).unwrap_or(0..0),
                format!("`changes` ({changes}) may not exceed `services` ({services}): each edit goes to a different Service"),
            );
            ok = false;
        }
        ok.then_some(LoadShape::Propagation(PropagationShape {
            services: services as usize,
            endpoints: endpoints as usize,
            changes: changes as usize,
        }))
    }

    pub(super) fn duration(
        &mut self,
        v: Option<&Spanned<String>>,
        field: &str,
        zero_ok: bool,
    ) -> Option<Duration> {
        let v = v?;
        match humantime::parse_duration(v.get_ref().trim()) {
            Ok(d) if d.is_zero() && !zero_ok => {
                self.problem(
                    v.span(),
                    format!("`{field}` must be longer than 0, got \"{}\"", v.get_ref()),
                );
                None
            }
            Ok(d) if d > Duration::from_secs(24 * 3600) => {
                self.problem(
                    v.span(),
                    format!("`{field}` = \"{}\" is longer than a day", v.get_ref()),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(v.span(), format!("`{field}` = \"{}\" is not a duration ({e}); write e.g. \"8s\" or \"500ms\"", v.get_ref()));
                None
            }
        }
    }

    fn count(&mut self, v: Option<&Spanned<i64>>, field: &str, min: i64, max: i64) -> Option<i64> {
        let v = v?;
        let n = *v.get_ref();
        if n < min || n > max {
            self.problem(
                v.span(),
                format!("`{field}` must be between {min} and {max}, got {n}"),
            );
            return None;
        }
        Some(n)
    }
}

fn fault_names() -> String {
    Fault::ALL.map(Fault::as_str).join(", ")
}

fn pick<'a, T>(own: &'a Option<T>, default: &'a Option<T>) -> Option<&'a T> {
    own.as_ref().or(default.as_ref())
}
