//! The dashboard and the alert rules in deploy/ name only metrics the services serve: every
//! service runs as its own process with its metrics port, metering measures a window of the
//! sandbox's cluster, and the names scraped from every `/metrics` must cover every
//! `hopsbridge_…` name in deploy/prometheus/alerts.yaml and deploy/grafana/hopsbridge.json.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use hopsbridge_contracts::Service;
use hopsbridge_journey::{Options, Platform, binaries};
use hopsbridge_testkit::free_port;
use std::collections::BTreeSet;
use std::time::Duration;

const SERVICES: [Service; 6] =
    [Service::Gateway, Service::Identity, Service::Team, Service::Provisioning, Service::Metering, Service::Billing];

/// Every `hopsbridge_…` name in `text`.
fn names_in_file(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("hopsbridge_") {
        let tail = &rest[at..];
        let end =
            tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn deployed_names() -> BTreeSet<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let mut names = BTreeSet::new();
    for file in ["prometheus/alerts.yaml", "grafana/hopsbridge.json"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let found = names_in_file(&text);
        assert!(found.len() > 5, "{file} names metrics");
        names.extend(found);
    }
    names
}

/// A name a rule may use for a family: the family itself, or a histogram's series.
fn served(name: &str, families: &BTreeSet<String>) -> bool {
    families.contains(name)
        || ["_bucket", "_count", "_sum"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(|base| families.contains(base)))
}

/// GitHub's anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_has_a_summary_and_a_runbook_section_in_the_operators_guide() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let alerts = std::fs::read_to_string(format!("{root}/deploy/prometheus/alerts.yaml")).unwrap();
    let guide = std::fs::read_to_string(format!("{root}/docs/operations.md")).unwrap();
    let anchors: BTreeSet<String> =
        guide.lines().filter_map(|l| l.strip_prefix('#')).map(|h| anchor(h.trim_start_matches('#'))).collect();
    let count = alerts.matches("- alert: ").count();
    assert!(count > 10, "{count} alerts");
    assert_eq!(alerts.matches("summary: ").count(), count, "every alert has a summary");
    let runbooks: Vec<&str> = alerts.lines().filter_map(|l| l.trim().strip_prefix("runbook: ")).collect();
    assert_eq!(runbooks.len(), count, "every alert has a runbook");
    for runbook in runbooks {
        let section = runbook.strip_prefix("docs/operations.md#").expect("a section of docs/operations.md");
        assert!(anchors.contains(section), "{section}: no such section in docs/operations.md");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_name_is_served() {
    let wanted = deployed_names();
    let ports: Vec<(Service, u16)> = SERVICES.iter().map(|s| (*s, free_port())).collect();
    let options = Options {
        clusters: 1,
        metering_window_secs: 2,
        settings: ports.iter().map(|(s, p)| (*s, "http.metrics_port", p.to_string())).collect(),
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    // One request through the gateway, so its HTTP families exist too.
    let (status, _) = platform.call_as("GET", "/api/me", None, None).await;
    assert_eq!(status, 401);

    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let missing = loop {
        let mut families = BTreeSet::new();
        for (service, port) in &ports {
            let Ok(answer) = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await else { continue };
            let text = answer.text().await.unwrap();
            assert!(text.contains(&format!("service=\"{}\"", service.name())), "{service}'s series carry its name");
            families.extend(hopsbridge_platform::metrics::names_in(&text));
        }
        let missing: Vec<String> = wanted.iter().filter(|n| !served(n, &families)).cloned().collect();
        // Metering's per-cluster families appear once it has measured a window.
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(missing, Vec::<String>::new(), "named in deploy/ but served by no service");
    // The public listener serves none of it.
    let (_, body) = platform.call_as("GET", "/metrics", None, None).await;
    assert!(!body.to_string().contains("hopsbridge_http"), "{body}");
}
