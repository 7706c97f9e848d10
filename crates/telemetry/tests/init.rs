//! `telemetry::init` installs the process-wide subscriber once (its own test binary, since a
//! global subscriber cannot be uninstalled). The environment of the test run is used as is,
//! so only properties that hold for any valid environment are checked.

#[test]
fn init_installs_once_and_refuses_a_second_subscriber() {
    let guard = telemetry::init("telemetry-test").expect("the test environment is valid");
    tracing::info!("telemetry initialised");
    assert!(guard.metrics().render().unwrap().contains("target_info{"));
    assert!(tracing::dispatcher::has_been_set());
    match telemetry::init("telemetry-test") {
        Err(telemetry::TelemetryError::SubscriberAlreadySet(_)) => {}
        other => panic!("second init: {other:?}"),
    }
}
