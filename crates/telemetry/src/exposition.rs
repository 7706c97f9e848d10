//! Prometheus text exposition format 0.0.4 of the SDK's collected metrics: owns the mapping
//! from OpenTelemetry metric data to metric families, following the OpenTelemetry
//! "Prometheus and OpenMetrics compatibility" rules:
//!
//! - names: characters outside `[a-zA-Z0-9_:]` become `_`; the unit becomes a suffix
//!   (`s` -> `_seconds`, `By` -> `_bytes`, `1` -> `_ratio`, `{message}` annotations are
//!   dropped); monotonic sums end in `_total`;
//! - monotonic sums are `counter`, non-monotonic sums and gauges are `gauge`, explicit-bucket
//!   histograms are `histogram` (`_bucket{le=..}` cumulative, `_sum`, `_count`);
//! - attribute keys are sanitized the same way; resource attributes go on one `target_info`
//!   sample rather than on every series.
//!
//! Exponential histograms have no 0.0.4 representation and are left out (none of this
//! crate's instruments produce them). Two instruments of different kinds that map to the
//! same name keep only the first, as Prometheus forbids duplicate families.

use std::collections::HashMap;
use std::fmt::Write as _;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};

/// One family under construction.
struct Family {
    name: String,
    kind: &'static str,
    help: String,
    body: String,
}

/// Renders everything in `rm` as Prometheus text 0.0.4.
pub(crate) fn render(rm: &ResourceMetrics) -> String {
    let mut families: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();

    for scope in rm.scope_metrics() {
        for metric in scope.metrics() {
            let Some((kind, name)) = family_of(metric) else {
                continue;
            };
            let i = match index.get(&name) {
                Some(&i) if families[i].kind == kind => i,
                Some(_) => continue,
                None => {
                    families.push(Family {
                        name: name.clone(),
                        kind,
                        help: metric.description().to_owned(),
                        body: String::new(),
                    });
                    index.insert(name.clone(), families.len() - 1);
                    families.len() - 1
                }
            };
            let family = &mut families[i];
            // Scopes come in no particular order: keep the first non-empty description.
            if family.help.is_empty() {
                family.help = metric.description().to_owned();
            }
            match metric.data() {
                AggregatedMetrics::F64(d) => samples(&family.name, d, &mut family.body),
                AggregatedMetrics::U64(d) => samples(&family.name, d, &mut family.body),
                AggregatedMetrics::I64(d) => samples(&family.name, d, &mut family.body),
            }
        }
    }

    let mut out = String::with_capacity(4096);
    let resource: Vec<KeyValue> = rm
        .resource()
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    if !resource.is_empty() {
        out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info");
        labels(resource.iter(), None, &mut out);
        out.push_str(" 1\n");
    }
    for f in families {
        if f.body.is_empty() {
            continue;
        }
        if !f.help.is_empty() {
            let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(&f.help));
        }
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        out.push_str(&f.body);
    }
    out
}

/// The family type and name of a metric, or `None` when it has no 0.0.4 form.
fn family_of(metric: &Metric) -> Option<(&'static str, String)> {
    fn kind_of<T>(d: &MetricData<T>) -> Option<&'static str> {
        match d {
            MetricData::Sum(s) if s.is_monotonic() => Some("counter"),
            MetricData::Sum(_) | MetricData::Gauge(_) => Some("gauge"),
            MetricData::Histogram(_) => Some("histogram"),
            MetricData::ExponentialHistogram(_) => None,
        }
    }
    let kind = match metric.data() {
        AggregatedMetrics::F64(d) => kind_of(d),
        AggregatedMetrics::U64(d) => kind_of(d),
        AggregatedMetrics::I64(d) => kind_of(d),
    }?;
    let mut name = sanitize(metric.name());
    if let Some(suffix) = unit_suffix(metric.unit()) {
        if !name.ends_with(&format!("_{suffix}")) {
            name.push('_');
            name.push_str(&suffix);
        }
    }
    if kind == "counter" && !name.ends_with("_total") {
        name.push_str("_total");
    }
    Some((kind, name))
}

/// A value as Prometheus writes it.
trait PromValue: Copy {
    fn write(self, out: &mut String);
}

impl PromValue for u64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl PromValue for i64 {
    fn write(self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl PromValue for f64 {
    fn write(self, out: &mut String) {
        write_f64(self, out);
    }
}

fn write_f64(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

fn samples<T: PromValue>(name: &str, data: &MetricData<T>, out: &mut String) {
    match data {
        MetricData::Gauge(g) => {
            for p in g.data_points() {
                sample(name, "", p.attributes(), None, p.value(), out);
            }
        }
        MetricData::Sum(s) => {
            for p in s.data_points() {
                sample(name, "", p.attributes(), None, p.value(), out);
            }
        }
        MetricData::Histogram(h) => {
            for p in h.data_points() {
                let attrs: Vec<&KeyValue> = p.attributes().collect();
                let mut cumulative = 0u64;
                for (bound, count) in p.bounds().zip(p.bucket_counts()) {
                    cumulative += count;
                    let mut le = String::new();
                    write_f64(bound, &mut le);
                    sample(
                        name,
                        "_bucket",
                        attrs.iter().copied(),
                        Some(&le),
                        cumulative,
                        out,
                    );
                }
                sample(
                    name,
                    "_bucket",
                    attrs.iter().copied(),
                    Some("+Inf"),
                    p.count(),
                    out,
                );
                sample(name, "_sum", attrs.iter().copied(), None, p.sum(), out);
                sample(name, "_count", attrs.iter().copied(), None, p.count(), out);
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn sample<'a, V: PromValue>(
    name: &str,
    suffix: &str,
    attrs: impl Iterator<Item = &'a KeyValue>,
    le: Option<&str>,
    value: V,
    out: &mut String,
) {
    out.push_str(name);
    out.push_str(suffix);
    labels(attrs, le, out);
    out.push(' ');
    value.write(out);
    out.push('\n');
}

/// `{k="v",...}` with sanitized, sorted keys; values of keys that collide after
/// sanitizing are joined with `;` (as the compatibility specification says).
fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, le: Option<&str>, out: &mut String) {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for kv in attrs {
        let key = sanitize(kv.key.as_str());
        let value = kv.value.to_string();
        match pairs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.push(';');
                v.push_str(&value);
            }
            None => pairs.push((key, value)),
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    if pairs.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(le.map(|le| ("le", le)));
    for (k, v) in all {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, other characters become `_`.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for (i, c) in s.chars().enumerate() {
        if i == 0 && c.is_ascii_digit() {
            out.push('_');
        }
        out.push(if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        });
    }
    out
}

/// The Prometheus unit suffix of a UCUM unit, `None` for no unit or an annotation.
pub(crate) fn unit_suffix(unit: &str) -> Option<String> {
    fn base(u: &str) -> Option<&'static str> {
        Some(match u {
            "d" => "days",
            "h" => "hours",
            "min" => "minutes",
            "s" => "seconds",
            "ms" => "milliseconds",
            "us" => "microseconds",
            "ns" => "nanoseconds",
            "By" => "bytes",
            "KiBy" => "kibibytes",
            "MiBy" => "mebibytes",
            "GiBy" => "gibibytes",
            "KBy" => "kilobytes",
            "MBy" => "megabytes",
            "GBy" => "gigabytes",
            "1" => "ratio",
            "%" => "percent",
            "Hz" => "hertz",
            _ => return None,
        })
    }
    fn per(u: &str) -> Option<&'static str> {
        Some(match u {
            "s" => "second",
            "min" => "minute",
            "h" => "hour",
            "d" => "day",
            _ => return None,
        })
    }
    let unit = unit.trim();
    if unit.is_empty() {
        return None;
    }
    if let Some(b) = base(unit) {
        return Some(b.to_owned());
    }
    let (num, den) = unit.split_once('/')?;
    let den = per(den)?;
    if num.starts_with('{') || num == "1" {
        return Some(format!("per_{den}"));
    }
    Some(format!("{}_per_{den}", base(num)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_units_follow_the_compatibility_rules() {
        assert_eq!(
            sanitize("db.client.operation.duration"),
            "db_client_operation_duration"
        );
        assert_eq!(sanitize("9lives-x"), "_9lives_x");
        assert_eq!(unit_suffix("s").as_deref(), Some("seconds"));
        assert_eq!(unit_suffix("By").as_deref(), Some("bytes"));
        assert_eq!(unit_suffix("{message}"), None);
        assert_eq!(unit_suffix("{order}/s").as_deref(), Some("per_second"));
        assert_eq!(unit_suffix("By/s").as_deref(), Some("bytes_per_second"));
        assert_eq!(unit_suffix("furlong"), None);
        assert_eq!(unit_suffix(""), None);
    }

    #[test]
    fn label_values_are_escaped_and_keys_merged() {
        let attrs = [
            KeyValue::new("a.b", "x\"y"),
            KeyValue::new("a_b", "z\\\n"),
            KeyValue::new("0k", "v"),
        ];
        let mut out = String::new();
        labels(attrs.iter(), Some("0.5"), &mut out);
        assert_eq!(out, r#"{_0k="v",a_b="x\"y;z\\\n",le="0.5"}"#);
    }

    #[test]
    fn floats_use_prometheus_spellings() {
        let mut out = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.25, 3.0] {
            write_f64(v, &mut out);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf -Inf 0.25 3 ");
    }
}
