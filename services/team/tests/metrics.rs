//! team's metrics: open invitations (waiting or expired unanswered), memberships in force and
//! the teams they make, each counted from team's own tables.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::start;
use hopsbridge_testkit::{metric_value, scrape_metrics};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_invitations_members_and_teams_are_counted() {
    let team = start().await;
    let open = |state: &str| format!(r#"hopsbridge_team_invitations_open{{state="{state}",service="team"}}"#);
    let members = r#"hopsbridge_team_members{service="team"}"#;
    let teams = r#"hopsbridge_team_teams{service="team"}"#;
    let text = scrape_metrics(&team.base).await;
    for series in [open("waiting"), open("expired"), members.to_owned(), teams.to_owned()] {
        assert!(metric_value(&text, &series).abs() < f64::EPSILON, "{series} is served, 0 when empty");
    }

    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let lin = team.person("Lin", "lin@example.com").await;
    let bob = team.person("Bob", "bob@example.com").await;
    let carol = team.person("Carol", "carol@example.com").await;
    team.join(&ada, &grace, "Data owner").await;
    team.join(&ada, &lin, "Data scientist").await;
    team.join(&bob, &carol, "Data scientist").await;
    team.invite(&ada, "dan@example.com", "Data scientist").await;
    team.invite(&bob, "eve@example.com", "Data scientist").await;
    team.sql("UPDATE invitations SET expires_at = now() - interval '1 hour' WHERE email = 'eve@example.com'").await;
    // Carol leaves Bob's team: his team is gone, his invitation stays open.
    let (status, body) = team.call(Method::POST, "/api/team/leave", Some(&carol), None).await;
    assert_eq!(status, 200, "{body}");

    let text = scrape_metrics(&team.base).await;
    assert!((metric_value(&text, &open("waiting")) - 1.0).abs() < f64::EPSILON, "Dan's: {text}");
    assert!((metric_value(&text, &open("expired")) - 1.0).abs() < f64::EPSILON, "Eve's");
    assert!((metric_value(&text, members) - 2.0).abs() < f64::EPSILON, "Grace and Lin");
    assert!((metric_value(&text, teams) - 1.0).abs() < f64::EPSILON, "Ada's");
}
