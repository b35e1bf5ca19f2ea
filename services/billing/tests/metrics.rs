//! billing's metrics: the Stripe reporting backlog and the 429s Stripe answered. (A test binary
//! of its own: the counters are the process's.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{caller, start};
use hopsbridge_platform::caller::Role;
use reqwest::{Method, StatusCode};

async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_429s_stripe_answers_are_counted_and_the_reporting_backlog_is_shown() {
    let billing = start().await;
    let text = scrape(&billing.base).await;
    assert!(text.contains("\nhopsbridge_billing_stripe_reports_pending{service=\"billing\"} 0\n"), "{text}");
    assert!(
        text.contains("\nhopsbridge_billing_stripe_reports_oldest_pending_seconds{service=\"billing\"} 0\n"),
        "{text}"
    );
    assert!(text.contains("\nhopsbridge_billing_stripe_reports_sent_total{service=\"billing\"} 0\n"), "{text}");

    let (user, _) = billing.new_owner().await;
    let rate_limited = "hopsbridge_billing_stripe_rate_limited_total";
    let before = scrape(&billing.base).await;
    assert!(before.contains(&format!("\n{rate_limited}{{service=\"billing\"}} 0\n")), "{before}");
    // Two 429s, both absorbed by the client's retries.
    billing.sim.fail_next(2, 429);
    let (status, body) =
        billing.call(Method::POST, "/api/billing/payment-method", Some(&caller(user, &[Role::Owner]))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = scrape(&billing.base).await;
    assert!(text.contains(&format!("\n{rate_limited}{{service=\"billing\"}} 2\n")), "{text}");
}
