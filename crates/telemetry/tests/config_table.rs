//! The telemetry table of docs/architecture.md against the code: it lists exactly the
//! variables `TelemetryBuilder::from_lookup` reads, and every default it writes as a literal
//! is the default (setting the variable to it changes nothing).

use std::cell::RefCell;
use std::collections::BTreeSet;

use lesson_check::config_table::{architecture_doc, rows_for};
use telemetry::TelemetryBuilder;

fn built(set: Option<(&str, &str)>) -> String {
    let b = TelemetryBuilder::from_lookup("svc", |k| {
        set.filter(|(var, _)| *var == k).map(|(_, v)| v.to_string())
    })
    .unwrap_or_else(|e| panic!("{set:?}: {e}"));
    format!("{b:?}")
}

#[test]
fn the_table_lists_exactly_the_variables_read() {
    let asked = RefCell::new(BTreeSet::new());
    TelemetryBuilder::from_lookup("svc", |k| {
        asked.borrow_mut().insert(k.to_string());
        None
    })
    .unwrap();
    // With an endpoint set, the per-signal variables are read too.
    TelemetryBuilder::from_lookup("svc", |k| {
        asked.borrow_mut().insert(k.to_string());
        (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://127.0.0.1:4318".to_string())
    })
    .unwrap();
    let documented: BTreeSet<String> = rows_for(&architecture_doc(), "telemetry")
        .into_iter()
        .map(|r| r.variable.expect("every telemetry row names its variable"))
        .collect();
    assert_eq!(documented, asked.into_inner());
}

#[test]
fn the_documented_defaults_are_the_defaults() {
    let base = built(None);
    assert_ne!(built(Some(("OTEL_METRIC_EXPORT_INTERVAL", "59999"))), base);
    let rows = rows_for(&architecture_doc(), "telemetry");
    let literal: Vec<_> = rows.iter().filter(|r| r.default.is_some()).collect();
    assert!(
        literal.len() >= 8,
        "only {} literal defaults",
        literal.len()
    );
    for row in literal {
        let var = row.variable.as_deref().expect("named");
        let value = row.default.as_deref().expect("filtered");
        assert_eq!(
            built(Some((var, value))),
            base,
            "{var}={value} is documented as the default"
        );
    }
}
