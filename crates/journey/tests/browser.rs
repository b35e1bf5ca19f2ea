//! The console in a real browser: Debian's headless Chromium, driven over the WebDriver protocol
//! ([`hopsbridge_journey::browser::chromium`]), at a phone's width, against every service as a process and the sandbox. A new person signs in,
//! adds a card through the billing page and the sandbox's Checkout page, sees their cluster
//! ready, then their usage charted; each page is written as a PNG under
//! `$CARGO_TARGET_TMPDIR/console-screenshots/`. `scripts/test.sh` installs `chromium` and
//! `chromium-driver` when they are missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use hopsbridge_journey::browser::chromium::Chromium;
use hopsbridge_journey::{Options, Platform, binaries, wait_for};
use std::path::PathBuf;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_person_goes_from_sign_in_to_usage_in_chromium() {
    let options = Options {
        clusters: 1,
        metering_window_secs: 2,
        // What the Hopsworks sandbox names browser@example.com's account.
        lab_owners: vec!["bro10000".to_owned()],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let person = platform.sign_up("browser").await;
    platform.wait_billing_account(&person, Duration::from_secs(30)).await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let browser = Chromium::start(&shots, 412, 915).await;
    let gateway = &platform.gateway;

    browser.goto(&format!("{gateway}/")).await;
    assert!(browser.source().await.contains("Sign in or sign up"));
    browser.screenshot("01-landing").await;

    // Signing in from the billing page comes back to it, with no card yet.
    platform.world.auth0.sign_in_as(&person.auth0);
    browser.goto(&format!("{gateway}/billing")).await;
    assert_eq!(browser.url().await, format!("{gateway}/billing"));
    assert!(browser.source().await.contains("No card yet"));
    browser.screenshot("02-billing-no-card").await;

    // The form goes to Stripe's Checkout (the sandbox's page); paying there comes back.
    browser.follow(r#"form[action="/billing/card"] button"#).await;
    assert!(browser.url().await.contains("/c/pay/"), "{}", browser.url().await);
    browser.screenshot("03-checkout").await;
    browser.click("button").await;
    wait_for("the return from Checkout", Duration::from_secs(20), || async {
        browser.url().await.starts_with(&format!("{gateway}/billing")).then_some(())
    })
    .await;
    browser.screenshot("04-billing-after-checkout").await;

    let cluster = platform.wait_assigned(&person, Duration::from_secs(30)).await;
    browser.goto(&format!("{gateway}/cluster")).await;
    assert!(browser.source().await.contains(cluster["cluster"]["endpoint"].as_str().unwrap()));
    // Their projects, as project sync read them from Hopsworks: the lab that came with the account.
    wait_for("the person's project on the cluster page", Duration::from_secs(60), || async {
        let sync = format!("/api/admin/clusters/{}/projects/sync", platform.cluster_ids[0]);
        platform.call("POST", &sync, &platform.admin_token, None).await;
        browser.goto(&format!("{gateway}/cluster")).await;
        browser.text().await.contains("bro10000_lab: yours").then_some(())
    })
    .await;
    browser.screenshot("05-cluster").await;
    browser.goto(&format!("{gateway}/billing")).await;
    assert!(browser.source().await.contains("ending in 4242"));
    browser.screenshot("06-billing-with-card").await;

    wait_for("priced usage", Duration::from_secs(90), || async {
        let (_, usage) = platform.call("GET", "/api/billing/usage", &person.token, None).await;
        usage["month_to_date"]["cost_minor"].as_i64().filter(|c| *c > 0)
    })
    .await;
    browser.goto(&format!("{gateway}/usage")).await;
    let usage = browser.source().await;
    assert_eq!(usage.matches("<svg").count(), 4, "a chart per resource, storage included");
    assert!(!usage.contains(r#"id="month-cost">0.00"#), "the month's cost is shown");
    browser.screenshot("07-usage").await;
    for page in ["/", "/cluster", "/billing", "/usage", "/team", "/settings"] {
        browser.goto(&format!("{gateway}{page}")).await;
        let problems = browser.accessibility_problems().await;
        assert!(problems.is_empty(), "{page}: {problems:#?}");
    }
    browser.goto(&format!("{gateway}/team")).await;
    browser.screenshot("08-team").await;
    browser.goto(&format!("{gateway}/settings")).await;
    browser.screenshot("09-settings").await;
    for name in ["01-landing", "04-billing-after-checkout", "05-cluster", "07-usage", "09-settings"] {
        assert!(browser.shots.join(format!("{name}.png")).metadata().unwrap().len() > 1000, "{name}");
    }
}
