//! A strict parser of the Prometheus text exposition format (and the
//! OpenMetrics text prometheus-client writes): every line is a comment, a
//! `# HELP` / `# TYPE` / `# UNIT` line, `# EOF` (last), or one sample
//! `name{label="value",...} value [timestamp]`; label values honour the
//! `\\`, `\"` and `\n` escapes. Anything else is an error naming its line,
//! so a truncated or foreign answer is never read as zeros.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// Every sample of one scrape, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `# TYPE` lines: family name -> type.
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Samples named exactly `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}: {text:?}")]
pub struct ParseError {
    pub line: usize,
    pub what: String,
    pub text: String,
}

const TYPES: [&str; 9] = ["counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", "stateset", "gaugehistogram"];

pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    let mut eof = false;
    for (i, raw) in text.lines().enumerate() {
        let fail = |what: &str| ParseError { line: i + 1, what: what.to_owned(), text: raw.to_owned() };
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if eof {
            return Err(fail("text after # EOF"));
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            match words.as_slice() {
                ["EOF"] => eof = true,
                ["TYPE", name, kind] => {
                    if !is_metric_name(name) || !TYPES.contains(kind) {
                        return Err(fail("bad # TYPE line"));
                    }
                    out.types.insert((*name).to_owned(), (*kind).to_owned());
                }
                ["TYPE", ..] => return Err(fail("bad # TYPE line")),
                ["HELP" | "UNIT", name, ..] if !is_metric_name(name) => return Err(fail("bad metric name")),
                // HELP, UNIT and free comments carry nothing we read.
                _ => {}
            }
            continue;
        }
        out.samples.push(sample(line).map_err(|what| fail(&what))?);
    }
    Ok(out)
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("bad metric name".to_owned());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(inner)?;
        labels = parsed;
        rest = after;
    }
    // OpenMetrics exemplars (` # {...} v`) follow the value; we read none.
    let rest = rest.split(" # ").next().unwrap_or_default();
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("a sample needs a value")?;
    let value = number(value).ok_or_else(|| format!("value {value:?} is not a number"))?;
    if let Some(ts) = fields.next() {
        number(ts).ok_or_else(|| format!("timestamp {ts:?} is not a number"))?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp".to_owned());
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// `label="value",...}` up to the closing brace; returns the rest after it.
fn label_set(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("a label needs =\"value\"")?;
        let name = s[..eq].trim();
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let quoted = s[eq + 1..].trim_start().strip_prefix('"').ok_or("a label value must be quoted")?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".to_owned()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("bad escape in a label value (only \\\\, \\\" and \\n)".to_owned()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name:?} given twice"));
        }
        s = quoted[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("labels must be separated by commas".to_owned());
        }
    }
}

/// A sample value or bucket bound: a float, `+Inf`, `-Inf` or `NaN`.
pub fn number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_prometheus_client_writes() {
        let text = "# HELP weft_http_requests Requests.\n# TYPE weft_http_requests counter\n\
weft_http_requests_total{direction=\"inbound\",authority=\"web.shop:80\",route=\"default\",peer=\"spiffe://cluster.local/ns/a/sa/b\"} 12\n\
# TYPE d histogram\nd_bucket{le=\"0.005\",x=\"a\\\"b\\\\c\\nd\"} 3\nd_bucket{le=\"+Inf\",x=\"\"} 4.0 1700000000\n\
process_cpu_seconds_total 0.5 # {trace_id=\"x\"} 1.0\n# EOF\n";
        let e = parse(text).unwrap();
        assert_eq!(e.samples.len(), 4);
        assert_eq!(e.samples[0].label("peer"), "spiffe://cluster.local/ns/a/sa/b");
        assert_eq!(e.samples[0].value, 12.0);
        assert_eq!(e.samples[1].label("x"), "a\"b\\c\nd");
        assert_eq!(e.samples[2].value, 4.0);
        assert!(e.samples[2].label("le") == "+Inf" && e.samples[2].label("x").is_empty());
        assert_eq!(e.types["d"], "histogram");
        assert_eq!(e.named("process_cpu_seconds_total").next().unwrap().value, 0.5);
    }

    #[test]
    fn refuses_what_it_cannot_read_naming_the_line() {
        for (text, line, what) in [
            ("ok 1\nbad{a=\"1\" 2\n", 2, "labels must be separated"),
            ("x{a=1} 2\n", 1, "must be quoted"),
            ("x{a=\"1\",a=\"2\"} 2\n", 1, "given twice"),
            ("x 1\n# EOF\ny 2\n", 3, "after # EOF"),
            ("x one\n", 1, "not a number"),
            ("x{a=\"\\t\"} 1\n", 1, "bad escape"),
            ("x{a=\"open} 1\n", 1, "unterminated"),
            ("9x 1\n", 1, "bad metric name"),
            ("# TYPE x thing\n", 1, "bad # TYPE"),
            ("x 1 2 3\n", 1, "after the timestamp"),
            ("x\n", 1, "needs a value"),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.what.contains(what), "{text:?}: {e}");
        }
    }
}
