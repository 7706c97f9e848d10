//! The PromQL of the Grafana dashboard (`k8s/environment/grafana-dashboard.json`): its queries
//! and the metric and label names they reference, for the tests that check those names against
//! what the code renders (crates/telemetry/tests/dashboard.rs against the instruments,
//! crates/sandbox/tests/metrics.rs against running nodes' `/metrics`).

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;

/// Labels Prometheus itself adds at scrape time (see k8s/environment/prometheus.yaml and
/// docker/prometheus.yml), plus the histogram bucket label.
pub const SCRAPE_LABELS: &[&str] = &["instance", "job", "service", "pod", "le"];

/// Every query (`expr`) of the dashboard, with its panel's title.
pub fn dashboard_queries(workspace: &Path) -> Vec<(String, String)> {
    let path = workspace.join("k8s/environment/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    for panel in json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((
                panel["title"].as_str().unwrap_or("").to_owned(),
                target["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    out
}

/// Metric names and label names referenced by one PromQL expression.
pub fn references(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        // aggregation operators, which may be followed by `by (...)` rather than `(`
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let (mut metrics, mut labels) = (BTreeSet::new(), BTreeSet::new());
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    let mut grouping = false; // inside `by (...)` / `without (...)`
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // Label matchers: name op "value", ...
            i += 1;
            while i < chars.len() && chars[i] != '}' {
                if ident_start(chars[i]) {
                    let s = i;
                    while i < chars.len() && ident_char(chars[i]) {
                        i += 1;
                    }
                    labels.insert(chars[s..i].iter().collect::<String>());
                } else if chars[i] == '"' {
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                } else {
                    i += 1;
                }
            }
            i += 1;
        } else if c == ')' {
            grouping = false;
            i += 1;
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if ident_start(c) {
            let s = i;
            while i < chars.len() && ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[s..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
            if grouping {
                labels.insert(word);
            } else if word == "by" || word == "without" {
                grouping = true;
            } else if KEYWORDS.contains(&word.as_str()) || next == Some('(') {
                // function, aggregation or operator keyword
            } else {
                metrics.insert(word);
            }
        } else {
            i += 1;
        }
    }
    (metrics, labels)
}
