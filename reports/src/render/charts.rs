//! Charts drawn with plotters, onto SVG strings (for the HTML page) or a
//! PNG file (for READMEs). The drawing code is generic over the backend so
//! both show the same picture.

use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{ensure_font, most_demanding, RenderError};
use crate::compare::{self, Cell, Comparison, GroupKey};

const FONT: &str = "sans-serif";

/// Deepest percentile the spectrum ever draws: 99.999 %.
const MAX_NINES: f64 = 5.0;

fn chart_err<E: std::fmt::Debug>(e: E) -> RenderError {
    RenderError::Chart(format!("{e:?}"))
}

/// A linear f64 axis whose ticks are exactly the given values. plotters'
/// own tick choice cannot express "nines" or log-scale 1-2-5 ticks, and its
/// key-point wrapper loses the label formatter support, hence this type.
struct Ticked {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Self {
        let ticks = ticks.into_iter().filter(|t| *t >= range.start - 1e-12 && *t <= range.end + 1e-12).collect();
        Ticked { range, ticks }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        if span <= 0.0 {
            return limit.0;
        }
        let frac = (value - self.range.start) / span;
        limit.0 + (frac * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only bold lines: light grid lines would need their own tick set.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// One line on a chart.
pub(super) struct Series {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// Fixed colour per variant across every chart of a report: grey for the
/// baseline, then a colour-blind-friendly palette in display order.
pub(super) struct Palette(Vec<String>);

impl Palette {
    pub fn new(cmp: &Comparison<'_>) -> Self {
        Palette(cmp.variants())
    }

    pub fn color(&self, variant: &str) -> RGBColor {
        if variant == compare::BASELINE {
            return RGBColor(120, 120, 120);
        }
        let i = self.0.iter().filter(|v| *v != compare::BASELINE).position(|v| v == variant).unwrap_or(0);
        nth_color(i)
    }
}

/// The i-th colour of the colour-blind-friendly palette (wrapping).
pub(super) fn nth_color(i: usize) -> RGBColor {
        const COLORS: [RGBColor; 9] = [
            RGBColor(0, 114, 178),
            RGBColor(230, 159, 0),
            RGBColor(0, 158, 115),
            RGBColor(213, 94, 0),
            RGBColor(204, 121, 167),
            RGBColor(86, 180, 233),
            RGBColor(140, 86, 75),
            RGBColor(188, 189, 34),
            RGBColor(23, 23, 23),
        ];
        COLORS[i % COLORS.len()]
}

/// Latency by percentile for each cell of a group, from the stored HDR
/// histograms (all repetitions merged). x is in "nines": -log10(1 - q).
pub(super) fn spectrum_series(cmp: &Comparison<'_>, group: &[&Cell], palette: &Palette) -> Result<Vec<Series>, RenderError> {
    let mut out = Vec::new();
    for c in group {
        let encoded = cmp.runs_of(c).map(|r| r.load.histogram.as_str());
        let hist = crate::hist::merge(encoded)
            .map_err(|source| RenderError::Histogram { subject: c.subject(), source })?;
        if hist.is_empty() {
            continue;
        }
        // Do not draw percentiles the sample count cannot resolve: with 1000
        // requests the 99.99th percentile is just the maximum.
        let deepest = (hist.len() as f64).log10().clamp(1.0, MAX_NINES);
        let steps = (deepest / 0.02).ceil() as usize;
        let points = (0..=steps)
            .map(|i| {
                let x = (i as f64 * 0.02).min(deepest);
                let q = 1.0 - 10f64.powf(-x);
                (x, hist.value_at_quantile(q) as f64 / 1000.0)
            })
            .collect();
        out.push(Series { label: c.variant.clone(), color: palette.color(&c.variant), points });
    }
    Ok(out)
}

/// "Nice" tick values (1, 2, 5 × 10^k steps) covering [lo, hi].
fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    // Also catches NaN bounds.
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![lo];
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let exp = raw.log10().floor() as i32;
    let mag = 10f64.powi(exp);
    let mult = [1u32, 2, 5, 10].into_iter().find(|m| f64::from(*m) * mag >= raw).unwrap_or(10);
    // Tick k is k*mult*10^exp; dividing by 10^-exp (an exact integer for
    // small steps) keeps labels like 0.6 from becoming 0.6000000000000001.
    let at = |k: i64| {
        let units = (k * i64::from(mult)) as f64;
        if exp < 0 {
            units / 10f64.powi(-exp)
        } else {
            units * mag
        }
    };
    let step = f64::from(mult) * mag;
    let first = (lo / step).ceil() as i64;
    let last = ((hi + step * 1e-9) / step).floor() as i64;
    (first..=last).map(at).collect()
}

/// Tick label without trailing zeros: 0.05, 0.5, 5, 50.
fn tick_label(v: f64) -> String {
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// A y axis that is linear, or logarithmic when values span more than a
/// decade (tails are often 100x the median; linear would flatten the median).
struct YAxis {
    log: bool,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl YAxis {
    fn for_latency(series: &[Series]) -> YAxis {
        let ys = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
        let hi = ys().fold(0.0f64, f64::max).max(0.001);
        let lo = ys().filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
        if lo.is_finite() && hi / lo > 10.0 {
            let (lo, hi) = (lo * 0.8, hi * 1.25);
            let mut ticks = Vec::new();
            let mut decade = 10f64.powf(lo.log10().floor());
            while decade <= hi {
                for m in [1.0, 2.0, 5.0] {
                    let t = m * decade;
                    if t >= lo && t <= hi {
                        ticks.push(t);
                    }
                }
                decade *= 10.0;
            }
            YAxis { log: true, lo, hi, ticks }
        } else {
            YAxis::linear(0.0, hi * 1.08)
        }
    }

    fn linear(lo: f64, hi: f64) -> YAxis {
        YAxis { log: false, lo, hi, ticks: nice_ticks(lo, hi, 6) }
    }

    fn to_coord(&self, v: f64) -> f64 {
        if self.log {
            v.max(self.lo).log10()
        } else {
            v
        }
    }

    fn label(&self, coord: f64) -> String {
        tick_label(if self.log { 10f64.powf(coord) } else { coord })
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.to_coord(self.lo)..self.to_coord(self.hi)
    }

    fn key_points(&self) -> Vec<f64> {
        self.ticks.iter().map(|t| self.to_coord(*t)).collect()
    }
}

/// `0%`, `90%`, `99%`, `99.9%` for 0, 1, 2, 3 nines.
fn nines_label(x: f64) -> String {
    let k = x.round() as i32;
    if k <= 0 {
        return "0%".to_owned();
    }
    let pct = 100.0 * (1.0 - 10f64.powi(-k));
    format!("{}%", tick_label((pct * 1000.0).round() / 1000.0))
}

/// Draw a latency spectrum into `area`.
fn draw_spectrum<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, series: &[Series]) -> Result<(), RenderError> {
    area.fill(&WHITE).map_err(chart_err)?;
    if series.is_empty() {
        return draw_message(area, title, "no latency histograms in this record");
    }
    let xmax = series.iter().flat_map(|s| s.points.last().map(|p| p.0)).fold(1.0f64, f64::max);
    let y = YAxis::for_latency(series);
    let x_keys: Vec<f64> = (0..=xmax.floor() as i32).map(f64::from).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(Ticked::new(0.0..xmax, x_keys), Ticked::new(y.range(), y.key_points()))
        .map_err(chart_err)?;
    let y_fmt = |v: &f64| y.label(*v);
    chart
        .configure_mesh()
        .x_desc("percentile (each step right adds a nine)")
        .y_desc(if y.log { "latency, ms (log scale)" } else { "latency, ms" })
        .x_label_formatter(&|x| nines_label(*x))
        .y_label_formatter(&y_fmt)
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(chart_err)?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.iter().map(|&(x, v)| (x, y.to_coord(v))), color.stroke_width(2)))
            .map_err(chart_err)?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3)));
    }
    legend(&mut chart)
}

fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> Result<(), RenderError> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.92))
        .border_style(BLACK.mix(0.35))
        .label_font((FONT, 14))
        .draw()
        .map_err(chart_err)
}

fn draw_message<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, message: &str) -> Result<(), RenderError> {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(title.to_owned(), (20, 20), (FONT, 20).into_font())).map_err(chart_err)?;
    area.draw(&Text::new(message.to_owned(), (w as i32 / 2 - 160, h as i32 / 2), (FONT, 16).into_font()))
        .map_err(chart_err)
}

/// Title for a group's spectrum chart.
pub(super) fn spectrum_title(key: &GroupKey) -> String {
    format!("{}: {}", key.scenario, key.describe())
}

/// The spectrum of one group as an SVG document string.
pub(super) fn spectrum_svg(cmp: &Comparison<'_>, key: &GroupKey, group: &[&Cell], palette: &Palette) -> Result<String, RenderError> {
    ensure_font()?;
    let series = spectrum_series(cmp, group, palette)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 460)).into_drawing_area();
        draw_spectrum(&root, &spectrum_title(key), &series)?;
        root.present().map_err(chart_err)?;
    }
    Ok(svg)
}

/// The README chart: the most demanding group's spectrum as a PNG at `path`
/// (whose extension must be `.png`: the encoder picks the format from it).
pub(super) fn spectrum_png(cmp: &Comparison<'_>, path: &Path) -> Result<(), RenderError> {
    let groups = cmp.groups();
    let palette = Palette::new(cmp);
    let (key, group) = &groups[most_demanding(&groups).ok_or(RenderError::NoLoadRuns)?];
    let series = spectrum_series(cmp, group, &palette)?;
    let backend = super::bitmap_text::BitmapText::new(BitMapBackend::new(path, (1000, 600)), super::FONT)
        .ok_or(RenderError::Font)?;
    let root = backend.into_drawing_area();
    draw_spectrum(&root, &format!("Latency by percentile — {}", spectrum_title(key)), &series)?;
    root.present().map_err(chart_err)
}

/// Added p50 and p99 against target rate, one line per variant, for the
/// open-loop groups of one scenario, with the variants drawn (in legend
/// order). `None` when there is nothing to draw. The legend is left to the
/// caller: inside two small panels it would cover the lines.
pub(super) fn added_vs_rate_svg(
    scenario_groups: &[&(GroupKey, Vec<&Cell>)],
    palette: &Palette,
) -> Result<Option<(String, Vec<String>)>, RenderError> {
    ensure_font()?;
    let mut variants: Vec<&str> = Vec::new();
    for (_, g) in scenario_groups {
        for c in g {
            if c.added_p50_us.is_some() && c.rate.is_some() && !variants.contains(&c.variant.as_str()) {
                variants.push(&c.variant);
            }
        }
    }
    if variants.is_empty() {
        return Ok(None);
    }
    let pick = |f: fn(&Cell) -> Option<f64>| -> Vec<Series> {
        variants
            .iter()
            .map(|v| Series {
                label: v.to_string(),
                color: palette.color(v),
                points: scenario_groups
                    .iter()
                    .flat_map(|(_, g)| g.iter())
                    .filter(|c| c.variant == *v)
                    .filter_map(|c| Some((c.rate?, f(c)? / 1000.0)))
                    .collect(),
            })
            .collect()
    };
    let p50 = pick(|c| c.added_p50_us);
    let p99 = pick(|c| c.added_p99_us);
    // Each point's noise: the bootstrap interval of the difference (none
    // with too few repetitions), so a line inside the noise is seen as such.
    let bars = |f: fn(&crate::compare::AddedVerdicts) -> &crate::noise::Judgement| -> Vec<ErrorBar> {
        scenario_groups
            .iter()
            .flat_map(|(_, g)| g.iter())
            .filter_map(|c| {
                let (lo, hi) = f(c.added.as_ref()?).interval?;
                Some(ErrorBar { color: palette.color(&c.variant), x: c.rate?, low: lo / 1000.0, high: hi / 1000.0 })
            })
            .collect()
    };
    let (bars50, bars99) = (bars(|a| &a.p50), bars(|a| &a.p99));
    let title = |p: &str, b: &[ErrorBar]| {
        if b.is_empty() {
            format!("added {p} vs rate")
        } else {
            format!("added {p} vs rate (bars: 95% CI)")
        }
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let (left, right) = root.split_horizontally(480);
        let (x, y) = ("target rate, requests/s", "added latency, ms");
        draw_xy_with_bars(&left, &title("p50", &bars50), x, y, &p50, &bars50)?;
        draw_xy_with_bars(&right, &title("p99", &bars99), x, y, &p99, &bars99)?;
        root.present().map_err(chart_err)?;
    }
    Ok(Some((svg, variants.into_iter().map(str::to_owned).collect())))
}

/// A vertical interval drawn at `x`, from `low` to `high`.
pub(super) struct ErrorBar {
    pub color: RGBColor,
    pub x: f64,
    pub low: f64,
    pub high: f64,
}

/// A line-and-marker chart of (x, y) series on linear axes.
pub(super) fn draw_xy<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<(), RenderError> {
    draw_xy_with_bars(area, title, x_desc, y_desc, series, &[])
}

/// [`draw_xy`] with an interval per point (the axes take them in).
pub(super) fn draw_xy_with_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    bars: &[ErrorBar],
) -> Result<(), RenderError> {
    let xs = || series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).chain(bars.iter().flat_map(|b| [b.low, b.high]));
    if xs().next().is_none() {
        return draw_message(area, title, "nothing to plot");
    }
    let (mut x0, mut x1) = (xs().fold(f64::INFINITY, f64::min), xs().fold(f64::NEG_INFINITY, f64::max));
    if x1.partial_cmp(&x0) != Some(std::cmp::Ordering::Greater) {
        // A single rate: centre it.
        (x0, x1) = (x0 * 0.5, x0 * 1.5 + 1.0);
    } else {
        let pad = (x1 - x0) * 0.06;
        (x0, x1) = ((x0 - pad).max(0.0), x1 + pad);
    }
    let y0 = ys().fold(0.0f64, f64::min);
    let y1 = ys().fold(0.0f64, f64::max);
    let span = (y1 - y0).max(0.01);
    let yaxis = YAxis::linear(y0 - if y0 < 0.0 { span * 0.08 } else { 0.0 }, y1 + span * 0.1);
    let x_keys = nice_ticks(x0, x1, 5);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 18))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(Ticked::new(x0..x1, x_keys), Ticked::new(yaxis.range(), yaxis.key_points()))
        .map_err(chart_err)?;
    let y_fmt = |v: &f64| yaxis.label(*v);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|x| tick_label(*x))
        .y_label_formatter(&y_fmt)
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(chart_err)?;
    for b in bars {
        // Caps a few pixels wide whatever the x scale: 0.8 % of the x range.
        let cap = (x1 - x0) * 0.008;
        let style = b.color.mix(0.7).stroke_width(1);
        for path in [
            vec![(b.x, b.low), (b.x, b.high)],
            vec![(b.x - cap, b.low), (b.x + cap, b.low)],
            vec![(b.x - cap, b.high), (b.x + cap, b.high)],
        ] {
            chart.draw_series(std::iter::once(PathElement::new(path, style))).map_err(chart_err)?;
        }
    }
    for s in series {
        let color = s.color;
        chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2))).map_err(chart_err)?;
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(chart_err)?;
    }
    Ok(())
}

/// Proxy peak RSS and CPU per 1000 rps as bars per variant, for one group.
/// `None` when no variant of the group had a sampled proxy.
pub(super) fn resources_svg(key: &GroupKey, group: &[&Cell], palette: &Palette) -> Result<Option<String>, RenderError> {
    ensure_font()?;
    let with_proxy: Vec<&Cell> =
        group.iter().copied().filter(|c| c.proxy_rss_peak.is_some() || c.proxy_cpu_per_krps.is_some()).collect();
    if with_proxy.is_empty() {
        return Ok(None);
    }
    let bars = |f: &dyn Fn(&Cell) -> Option<f64>| -> Vec<(String, RGBColor, Option<f64>)> {
        with_proxy.iter().map(|c| (c.variant.clone(), palette.color(&c.variant), f(c))).collect()
    };
    let rss = bars(&|c| c.proxy_rss_peak.map(|b| b as f64 / super::MIB));
    let cpu = bars(&|c| c.proxy_cpu_per_krps);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let (left, right) = root.split_horizontally(480);
        let load = compare::load_label(key.rate, key.concurrency);
        draw_bars(&left, &format!("proxy peak RSS at {load}"), "MiB", &rss, |v| format!("{v:.1}"))?;
        draw_bars(&right, &format!("proxy CPU per 1000 rps at {load}"), "cores / 1000 rps", &cpu, |v| format!("{v:.3}"))?;
        root.present().map_err(chart_err)?;
    }
    Ok(Some(svg))
}

fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    bars: &[(String, RGBColor, Option<f64>)],
    fmt: impl Fn(f64) -> String,
) -> Result<(), RenderError> {
    let n = bars.len() as f64;
    let top = bars.iter().filter_map(|b| b.2).fold(0.0f64, f64::max).max(1e-3);
    let yaxis = YAxis::linear(0.0, top * 1.2);
    let keys: Vec<f64> = (0..bars.len()).map(|i| i as f64 + 0.5).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 17))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(Ticked::new(0.0..n, keys), Ticked::new(yaxis.range(), yaxis.key_points()))
        .map_err(chart_err)?;
    // Variant names are drawn below (staggered when they would overlap).
    let no_name = |_: &f64| String::new();
    let y_fmt = |v: &f64| yaxis.label(*v);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .x_label_formatter(&no_name)
        .y_label_formatter(&y_fmt)
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()
        .map_err(chart_err)?;
    for (i, (_, color, v)) in bars.iter().enumerate() {
        let x = i as f64;
        match v {
            Some(v) => {
                chart
                    .draw_series(std::iter::once(Rectangle::new([(x + 0.2, 0.0), (x + 0.8, *v)], color.filled())))
                    .map_err(chart_err)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        fmt(*v),
                        (x + 0.5, *v + top * 0.03),
                        TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )))
                    .map_err(chart_err)?;
            }
            None => {
                chart
                    .draw_series(std::iter::once(Text::new(
                        "not sampled".to_owned(),
                        (x + 0.5, top * 0.05),
                        TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )))
                    .map_err(chart_err)?;
            }
        }
    }
    bar_names(area, &chart, bars)
}

/// Each bar's variant name under it, in two staggered rows when the
/// longest name is wider than a bar's slot (seven variants in a half-width
/// chart), so no two names overlap.
fn bar_names<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    chart: &ChartContext<'_, DB, Cartesian2d<Ticked, Ticked>>,
    bars: &[(String, RGBColor, Option<f64>)],
) -> Result<(), RenderError> {
    let style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let base = area.get_base_pixel();
    let at = |x: f64| {
        let (px, py) = chart.backend_coord(&(x, 0.0));
        (px - base.0, py - base.1)
    };
    let slot = at(1.0).0 - at(0.0).0;
    let mut widest = 0;
    for (name, _, _) in bars {
        widest = widest.max(area.estimate_text_size(name, &style).map_err(chart_err)?.0 as i32);
    }
    let stagger = widest + 6 > slot;
    for (i, (name, _, _)) in bars.iter().enumerate() {
        let (px, py) = at(i as f64 + 0.5);
        let row = if stagger && i % 2 == 1 { 16 } else { 0 };
        area.draw(&Text::new(name.clone(), (px, py + 6 + row), style.clone()))
            .map_err(chart_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice() {
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(0.0, 0.3, 3), vec![0.0, 0.1, 0.2, 0.3]);
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(20.0), "20");
        assert_eq!(nines_label(0.0), "0%");
        assert_eq!(nines_label(2.0), "99%");
        assert_eq!(nines_label(4.0), "99.99%");
    }
}
