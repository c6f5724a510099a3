//! The alerting contract (deploy/prometheus): the rules file is valid, and
//! its unit tests pass under promtool. The live side (a real Prometheus
//! scraping `connbal trace --metrics` over well-behaved and misbehaving
//! clients) is in host_live.rs; that the rules read only series connbal
//! writes is a unit test of the OpenMetrics encoder.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_rules_are_valid_and_their_unit_tests_pass() {
    if !tools_available(&["promtool"]) {
        return;
    }
    let (ok, text) = promtool(&["check", "rules", "connbal.rules.yml"]);
    assert!(ok, "{text}");
    assert!(text.contains("SUCCESS: 9 rules found"), "{text}");
    let (ok, text) = promtool(&["test", "rules", "connbal.rules.test.yml"]);
    assert!(ok && text.contains("SUCCESS"), "{text}");
}
