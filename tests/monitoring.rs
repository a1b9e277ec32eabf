//! The alerting rules and the Grafana dashboard of examples/monitoring/, checked with Prometheus'
//! own tool: `promtool check rules` on the rules, `promtool test rules` on their unit tests (when
//! each alert must fire, and when not yet), and every dashboard query checked as PromQL by
//! promtool too. That every metric they name is one the services expose is checked where the
//! services run (tests/metrics_promtool.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/monitoring")
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alerting_rules_load_and_their_unit_tests_pass() {
    if !have("promtool") {
        return;
    }
    let text = promtool(&["check", "rules", "alerts.yaml"], &monitoring());
    assert!(text.contains("SUCCESS: 10 rules found"), "{text}");
    let text = promtool(&["test", "rules", "alerts.test.yaml"], &monitoring());
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn every_dashboard_query_is_promql_that_promtool_accepts() {
    if !have("promtool") {
        return;
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring().join("dashboard.json")).unwrap(),
    )
    .expect("dashboard.json is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = std::collections::BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "duplicate id: {panel}"
        );
        assert!(
            panel["title"].is_string() && panel["gridPos"]["w"].is_u64(),
            "{panel}"
        );
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("an expr").to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    // Each query as a recording rule, so that promtool parses it as PromQL.
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, expr)| {
            format!(
                "      - record: palisade:dashboard:{i}\n        expr: {}\n",
                serde_json::Value::from(expr.as_str())
            )
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("dashboard-rules.yaml"),
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    let text = promtool(&["check", "rules", "dashboard-rules.yaml"], tmp.path());
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{text}"
    );
}
