//! The console in a real browser: Debian's headless Chromium, driven over the WebDriver protocol
//! (plain HTTP and JSON to `chromedriver`, so a few calls below are the whole client), at a
//! phone's width, against every service as a process and the sandbox. A new person signs in,
//! adds a card through the billing page and the sandbox's Checkout page, sees their cluster
//! ready, then their usage charted; each page is written as a PNG under
//! `$CARGO_TARGET_TMPDIR/console-screenshots/`. `scripts/test.sh` installs `chromium` and
//! `chromium-driver` when they are missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use base64::Engine as _;
use hopsbridge_journey::{Options, Platform, binaries, wait_for};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// The WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One Chromium session through a `chromedriver` of its own.
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: std::process::Child,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Self {
        let port = hopsbridge_testkit::free_port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test.sh installs it)");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver", Duration::from_secs(20), || async {
            let r = http.get(format!("{base}/status")).send().await.ok()?;
            let status: Value = r.json().await.ok()?;
            status["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=412,915"]
        }}}});
        let created: Value =
            http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session =
            created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}")).to_owned();
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Self { http, session: format!("{base}/session/{session}"), driver, shots }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(answer["value"]["error"].is_null(), "WebDriver {path}: {answer}");
        answer["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None).await.as_str().unwrap().to_owned()
    }

    async fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None).await.as_str().unwrap().to_owned()
    }

    async fn click(&self, css: &str) {
        let found =
            self.command(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        let id = found[ELEMENT].as_str().unwrap_or_else(|| panic!("{css}: {found}")).to_owned();
        self.command(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).unwrap();
    }
}

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
    let browser = Browser::start().await;
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
    browser.click(r#"form[action="/billing/card"] button"#).await;
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
    assert_eq!(usage.matches("<svg").count(), 3, "a chart per resource");
    assert!(!usage.contains(r#"id="month-cost">0.00"#), "the month's cost is shown");
    browser.screenshot("07-usage").await;
    browser.goto(&format!("{gateway}/team")).await;
    browser.screenshot("08-team").await;
    browser.goto(&format!("{gateway}/settings")).await;
    browser.screenshot("09-settings").await;
    for name in ["01-landing", "04-billing-after-checkout", "05-cluster", "07-usage", "09-settings"] {
        assert!(browser.shots.join(format!("{name}.png")).metadata().unwrap().len() > 1000, "{name}");
    }
}
