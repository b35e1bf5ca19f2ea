//! identity's metrics: people by status and by who suspended them, administrators, recent
//! sign-ins, and deleted accounts waiting for their erasure beside the retention they wait for.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::start;
use hopsbridge_testkit::{metric_value, scrape_metrics};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_counted_by_status_suspender_and_admin_rights_and_erasures_beside_their_retention() {
    let identity = start().await;
    let people = |status: &str| format!(r#"hopsbridge_identity_people{{status="{status}",service="identity"}}"#);
    let suspended = |by: &str| format!(r#"hopsbridge_identity_suspended{{by="{by}",service="identity"}}"#);
    let admins = r#"hopsbridge_identity_administrators{service="identity"}"#;
    let recent = r#"hopsbridge_identity_signed_in_last_day{service="identity"}"#;
    let pending = r#"hopsbridge_identity_erasures_pending{service="identity"}"#;
    let oldest = r#"hopsbridge_identity_erasure_oldest_pending_seconds{service="identity"}"#;
    let retention = r#"hopsbridge_identity_erasure_retention_seconds{service="identity"}"#;

    let text = scrape_metrics(&identity.base).await;
    for status in ["active", "suspended", "deleted"] {
        assert!(
            metric_value(&text, &people(status)).abs() < f64::EPSILON,
            "{status}: every state is served, 0 when empty"
        );
    }
    assert!(metric_value(&text, admins).abs() < f64::EPSILON);
    assert!((metric_value(&text, retention) - 30.0 * 86_400.0).abs() < f64::EPSILON, "deletion.retention_days = 30");

    let admin = identity.sign_in("auth0|admin", "admin@example.com").await;
    identity.sql(&format!("UPDATE users SET is_admin = true WHERE id = '{}'", admin.user_id.unwrap())).await;
    let ada = identity.sign_in("auth0|ada", "ada@example.com").await;
    let grace = identity.sign_in("auth0|grace", "grace@example.com").await;
    let _lin = identity.sign_in("auth0|lin", "lin@example.com").await;
    let (status, _) = identity
        .call(
            Method::POST,
            &format!("/api/admin/users/{}/suspend", ada.user_id.unwrap()),
            Some(&admin),
            Some(json!({"reason": "unpaid"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = identity.call(Method::DELETE, "/api/me", Some(&grace), None).await;
    assert_eq!(status, 200);
    // Someone who signed in long ago counts as a person but not as a recent sign-in.
    identity.sql("UPDATE users SET last_login_at = now() - interval '3 days' WHERE email = 'lin@example.com'").await;
    // The deletion happened two hours ago.
    identity.sql("UPDATE users SET deleted_at = now() - interval '2 hours' WHERE email = 'grace@example.com'").await;

    let text = scrape_metrics(&identity.base).await;
    assert!((metric_value(&text, &people("active")) - 2.0).abs() < f64::EPSILON, "admin and lin: {text}");
    assert!((metric_value(&text, &people("suspended")) - 1.0).abs() < f64::EPSILON);
    assert!((metric_value(&text, &people("deleted")) - 1.0).abs() < f64::EPSILON);
    assert!((metric_value(&text, &suspended("admin")) - 1.0).abs() < f64::EPSILON);
    assert!(metric_value(&text, &suspended("billing")).abs() < f64::EPSILON);
    assert!(metric_value(&text, &suspended("owner")).abs() < f64::EPSILON);
    assert!((metric_value(&text, admins) - 1.0).abs() < f64::EPSILON);
    assert!((metric_value(&text, recent) - 1.0).abs() < f64::EPSILON, "only the admin signed in within a day: {text}");
    assert!((metric_value(&text, pending) - 1.0).abs() < f64::EPSILON);
    let age = metric_value(&text, oldest);
    assert!((7_200.0..7_300.0).contains(&age), "deleted two hours ago: {age}");

    // Erased: nothing waits any more.
    identity.sql("UPDATE users SET erased_at = now() WHERE email = 'grace@example.com'").await;
    let text = scrape_metrics(&identity.base).await;
    assert!(metric_value(&text, pending).abs() < f64::EPSILON);
    assert!(metric_value(&text, oldest).abs() < f64::EPSILON);
    assert!((metric_value(&text, &people("deleted")) - 1.0).abs() < f64::EPSILON, "an erased account stays deleted");
}
