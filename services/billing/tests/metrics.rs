//! billing's metrics: the Stripe reporting backlog, the 429s Stripe answered, the items Stripe lacks. (A test binary
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_subscription_lacking_the_item_of_a_price_in_force_is_shown() {
    let billing = start().await;
    let missing = "hopsbridge_billing_subscription_items_missing{service=\"billing\"}";
    let (_, account) = billing.new_owner().await;
    let text = scrape(&billing.base).await;
    assert!(text.contains(&format!("\n{missing} 0\n")), "a new subscription has every item: {text}");
    // Stripe down, so no catalogue sync can add it back meanwhile; one item forgotten.
    billing.sim.set_outage(Some(503));
    let mut conn = billing.db.connect("billing").await;
    let forgotten = diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "DELETE FROM subscription_items WHERE ctid = \
             (SELECT i.ctid FROM subscription_items i JOIN prices p ON p.id = i.price_id \
              WHERE i.subscription_id = $1 AND p.effective_from <= now() AND NOT EXISTS \
                (SELECT 1 FROM prices q WHERE q.resource = p.resource \
                 AND q.effective_from > p.effective_from AND q.effective_from <= now()) \
              LIMIT 1)",
        )
        .bind::<diesel::sql_types::Text, _>(account.stripe_subscription_id.clone().unwrap()),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(forgotten, 1);
    let text = scrape(&billing.base).await;
    assert!(text.contains(&format!("\n{missing} 1\n")), "{text}");
    billing.sim.set_outage(None);
}
