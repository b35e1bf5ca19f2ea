//! provisioning's metrics: the assignment queue by state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use std::time::Duration;

async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paying_person_without_a_cluster_with_room_shows_in_the_assignment_queue() {
    let p = common::start().await;
    let waiting =
        r#"hopsbridge_provisioning_assignments_pending{status="waiting_for_capacity",service="provisioning"}"#;
    let text = scrape(&p.base).await;
    assert!(text.contains(&format!("{waiting} 0")), "every unsettled state has its series from the start: {text}");
    assert!(
        text.contains(r#"hopsbridge_provisioning_assignments_pending{status="provisioning",service="provisioning"} 0"#),
        "{text}"
    );

    // No cluster is registered: a person who pays waits for capacity.
    let user = uuid::Uuid::now_v7();
    p.user_created(user, "wait@example.com", "Wait").await;
    p.paid(user).await;
    let counted = hopsbridge_testkit::eventually(Duration::from_secs(20), || async {
        scrape(&p.base).await.contains(&format!("{waiting} 1"))
    })
    .await;
    let text = scrape(&p.base).await;
    assert!(counted, "{text}");
    assert!(
        text.contains(r#"hopsbridge_provisioning_assignments_oldest_pending_seconds{status="waiting_for_capacity",service="provisioning"}"#),
        "{text}"
    );
}
