//! An admin registers a cluster in a real browser: Debian's headless Chromium at a phone's
//! width (390 px), every service as a process and the sandbox, and a Hopsworks cluster the
//! sandbox starts that nobody registered yet. The admin uploads its kubeconfig and CA bundle as
//! files (`<input type=file>`, a multipart form) with the Hopsworks address and API key; a
//! refused upload is shown next to its field with what was typed kept; the registered cluster
//! is listed with its occupancy and edited from its page, and the API then holds exactly what
//! the forms said. The admin then reads every service's integrity findings, filters them by
//! plain links and runs one service's checks from its form.
//!
//! The same admin then manages the price book: the prices in force are listed per resource; a
//! new version whose amount is no number is refused with billing's reason and recorded
//! nowhere; a valid one, two days ahead, is scheduled, said on the page, listed as scheduled in
//! its resource's versions, and billing's API holds exactly that amount and start. Last, the
//! assignments: a person who added a card and was seated on eu-1 is found by their email; a
//! move to north-9, still in maintenance, is refused on the page and changes nothing; once
//! north-9 is active again (through the API) the move is made and provisioning seats them
//! there, and unassigning them from the page releases the seat.
//!
//! Every page has labelled, keyboard-reachable controls and no sideways scrolling.
//! Screenshots go to `$CARGO_TARGET_TMPDIR/console-screenshots/admin-*.png`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use chrono::{DateTime, TimeDelta, Utc};
use hopsbridge_journey::browser::chromium::{Chromium, TAB};
use hopsbridge_journey::{Options, Platform, binaries, wait_for};
use hopsbridge_sandbox::auth0::Auth0Config;
use hopsbridge_sandbox::hopsworks::{HopsworksConfig, HopsworksSim};
use hopsbridge_sandbox::kubernetes::{KubeCluster, KubeOptions};
use hopsbridge_sandbox::workload::Workload;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(30);

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// The text of each cell of each body row of the table `css`, white space collapsed.
async fn cells(browser: &Chromium, css: &str) -> Vec<Vec<String>> {
    let script = format!(
        "return [...document.querySelectorAll('{css} tbody tr')]\
           .map(r => [...r.cells].map(c => c.textContent.replace(/\\s+/g, ' ').trim()));"
    );
    serde_json::from_value(browser.script(&script).await).unwrap()
}

/// The text of the page's error (`ctx.failed`'s `?failed=` as base.html shows it), if any.
async fn error_shown(browser: &Chromium) -> Option<String> {
    let shown = browser.script("return document.querySelector('main p.error[role=alert]')?.textContent ?? null;").await;
    shown.as_str().map(str::to_owned)
}

/// The texts of the page's notices (`?done=`'s, and a page's own `p.notice`), in order.
async fn notices(browser: &Chromium) -> Vec<String> {
    let shown = browser.script("return [...document.querySelectorAll('main p.notice')].map(n => n.textContent);").await;
    serde_json::from_value(shown).unwrap()
}

/// The seats taken on the cluster `id`, as provisioning counts them.
async fn used(platform: &Platform, id: &str) -> i64 {
    let (_, cluster) = platform.call("GET", &format!("/api/admin/clusters/{id}"), &platform.admin_token, None).await;
    cluster["used"].as_i64().unwrap_or_else(|| panic!("{cluster}"))
}

/// An instant as the prices page says it (UTC, whole minutes).
fn in_words(at: &DateTime<Utc>) -> String {
    at.format("%-d %B %Y %H:%M UTC").to_string()
}

async fn accessible(browser: &Chromium, page: &str) {
    let problems = browser.accessibility_problems().await;
    assert!(problems.is_empty(), "{page}: {problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_registers_a_cluster_by_uploading_its_kubeconfig_and_edits_it_in_chromium() {
    let platform = Platform::start(binaries!(), &Options { clusters: 1, ..Options::default() }).await;
    let gateway = platform.gateway.clone();

    // A cluster of the sandbox's that is not registered yet: Hopsworks and its Kubernetes.
    let api_key = format!("hw-admin-key-north-{}", uuid::Uuid::new_v4().simple());
    let hopsworks =
        HopsworksSim::start(HopsworksConfig::new("north-9", &api_key, &Auth0Config::default().client_id)).unwrap();
    let kubernetes = KubeCluster::start(
        "north-9",
        Arc::new(Workload::new(Vec::new(), Vec::new())),
        Arc::clone(&platform.world.clock),
        KubeOptions::default(),
    )
    .unwrap();
    let files = std::env::temp_dir().join(format!("hopsbridge-admin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&files).unwrap();
    let kubeconfig = files.join("north-9.kubeconfig.yaml");
    std::fs::write(&kubeconfig, kubernetes.kubeconfig()).unwrap();
    let ca = files.join("north-9-ca.pem");
    std::fs::write(&ca, hopsworks.ca_pem()).unwrap();
    let not_yaml = files.join("photo.yaml");
    std::fs::write(&not_yaml, "{{ this is: [not a kubeconfig").unwrap();

    // An admin, made by the one who bootstrapped the platform.
    let admin = platform.sign_up("opal").await;
    let (status, granted) =
        platform.call("PUT", &format!("/api/admin/users/{}/admin", admin.user_id), &platform.admin_token, None).await;
    assert!((200..300).contains(&status), "{granted}");

    let browser = Chromium::start(&shots(), 390, 844).await;
    platform.world.auth0.sign_in_as(&admin.auth0);
    browser.goto(&format!("{gateway}/admin/clusters")).await;
    assert_eq!(browser.url().await, format!("{gateway}/admin/clusters"));
    let listed = browser.text().await;
    assert!(listed.contains("eu-1") && listed.contains("0 of 50 seats (0 %)"), "{listed}");
    accessible(&browser, "the clusters page").await;
    // The form is reached by the keyboard: Tab from the name field walks into the next fields.
    browser.click("#c-name").await;
    browser.press(TAB).await;
    let focused = browser.script("return document.activeElement.id;").await;
    assert_eq!(focused.as_str(), Some("c-region"));
    browser.screenshot("admin-01-clusters").await;

    let fill = |kubeconfig: PathBuf| {
        let browser = &browser;
        let hopsworks = &hopsworks;
        let api_key = &api_key;
        let ca = &ca;
        async move {
            browser.clear("#c-name").await;
            browser.type_into("#c-name", "north-9").await;
            browser.clear("#c-region").await;
            browser.type_into("#c-region", "eu-north").await;
            browser.clear("#c-api_url").await;
            browser.type_into("#c-api_url", &hopsworks.origin()).await;
            browser.type_into("#c-api_key", api_key).await;
            browser.clear("#c-oauth_client_id").await;
            browser.type_into("#c-oauth_client_id", hopsworks.oauth_client_id()).await;
            browser.clear("#c-capacity").await;
            browser.type_into("#c-capacity", "5").await;
            browser.type_into("#c-kubeconfig", kubeconfig.to_str().unwrap()).await;
            browser.type_into("#c-ca_bundle", ca.to_str().unwrap()).await;
        }
    };

    // A file that is no kubeconfig: refused, said next to its field, the typed fields kept.
    fill(not_yaml.clone()).await;
    browser.follow(r#"form[action="/admin/clusters"] button[type="submit"]"#).await;
    let refused = browser.text().await;
    let error = browser.script("return [...document.querySelectorAll('.field-error, .error')].map(e => e.id + ': ' + e.textContent).join(' | ');").await;
    assert!(
        browser.count("#c-kubeconfig-error").await == 1 || refused.contains("Provisioning checked the cluster"),
        "the kubeconfig's error is shown: {error} {refused}"
    );
    let kept = browser
        .script("return document.getElementById('c-name').value + ' ' + document.getElementById('c-api_key').value;")
        .await;
    assert_eq!(kept.as_str(), Some("north-9 "), "the name kept, the key not");
    let (_, clusters) = platform.call("GET", "/api/admin/clusters", &platform.admin_token, None).await;
    assert_eq!(clusters.as_array().unwrap().len(), 1, "nothing registered");
    accessible(&browser, "the refused registration").await;
    browser.script("document.querySelector('.field-error, .checks')?.scrollIntoView(); return null;").await;
    browser.screenshot("admin-02-refused-upload").await;

    // The right files: registered and listed with its occupancy.
    fill(kubeconfig.clone()).await;
    browser.follow(r#"form[action="/admin/clusters"] button[type="submit"]"#).await;
    browser.wait_url(&format!("{gateway}/admin/clusters?done=registered"), PATIENCE).await;
    let listed = browser.text().await;
    assert!(listed.contains("The cluster was registered.") && listed.contains("0 of 5 seats (0 %)"), "{listed}");
    browser.screenshot("admin-03-registered").await;
    let (_, clusters) = platform.call("GET", "/api/admin/clusters", &platform.admin_token, None).await;
    let north: Value = clusters.as_array().unwrap().iter().find(|c| c["name"] == "north-9").unwrap().clone();
    assert_eq!(
        (north["api_url"].as_str(), north["region"].as_str(), north["capacity"].as_i64(), north["status"].as_str()),
        (Some(hopsworks.origin().as_str()), Some("eu-north"), Some(5), Some("active"))
    );
    assert_eq!(north["ca_bundle"].as_str(), Some(hopsworks.ca_pem()), "the uploaded CA bundle, as the file held it");

    // Edited from its page: more seats, in maintenance; the secrets left as they were.
    browser.follow(r#"a[href="/admin/cluster?name=north-9"]"#).await;
    assert!(browser.text().await.contains("Cluster north-9"));
    accessible(&browser, "the cluster's page").await;
    browser.clear("#c-capacity").await;
    browser.type_into("#c-capacity", "8").await;
    browser.click(r#"#c-status option[value="maintenance"]"#).await;
    browser.screenshot("admin-04-edit").await;
    browser.follow(r#"form[action="/admin/cluster"] button[type="submit"]"#).await;
    browser.wait_url(&format!("{gateway}/admin/cluster?name=north-9&done=updated"), PATIENCE).await;
    assert!(browser.text().await.contains("The cluster was saved."));
    let (_, after) = platform
        .call("GET", &format!("/api/admin/clusters/{}", north["id"].as_str().unwrap()), &platform.admin_token, None)
        .await;
    assert_eq!((after["capacity"].as_i64(), after["status"].as_str()), (Some(8), Some("maintenance")), "{after}");
    assert_eq!(after["api_key_key_id"], north["api_key_key_id"]);
    browser.goto(&format!("{gateway}/admin/clusters")).await;
    assert!(browser.text().await.contains("0 of 8 seats (0 %)"));
    browser.screenshot("admin-05-clusters-after-edit").await;

    // The integrity findings: every service's, filtered open, resolved or all by plain links,
    // each check's last run; a service's checks run from its form, and the page says so.
    browser.goto(&format!("{gateway}/admin/integrity")).await;
    let text = browser.text().await;
    assert!(text.contains("Integrity findings") && !text.contains("could not be read"), "{text}");
    assert_eq!(browser.count(r#"form[action="/admin/integrity/run"]"#).await, 5, "a run form per service");
    let (_, provisioning) =
        platform.call("GET", "/api/admin/integrity/provisioning", &platform.admin_token, None).await;
    let checks = provisioning["checks"].as_array().unwrap().len();
    assert!(checks > 0, "{provisioning}");
    assert_eq!(browser.count("#integrity-provisioning-runs tbody tr").await, checks, "each check's last run");
    accessible(&browser, "the integrity page").await;
    browser.screenshot("admin-06-integrity").await;
    browser.follow(r#"nav.filters a[href="/admin/integrity?status=all"]"#).await;
    assert_eq!(browser.url().await, format!("{gateway}/admin/integrity?status=all"));
    let current =
        browser.script(r#"return document.querySelector('nav.filters a[aria-current="page"]').textContent;"#).await;
    assert_eq!(current.as_str(), Some("All"));
    accessible(&browser, "every finding").await;
    browser.follow(r#"#integrity-provisioning-section form[action="/admin/integrity/run"] button"#).await;
    let (url, text) = (browser.url().await, browser.text().await);
    assert_eq!(
        url,
        format!("{gateway}/admin/integrity?status=all&started=provisioning&done=running#integrity-provisioning"),
        "{text}"
    );
    assert!(text.contains("The checks were started and are running"), "{text}");
    assert_eq!(browser.count("#integrity-provisioning-started").await, 1, "said in provisioning's section");
    assert_eq!(browser.count(r#"[id$="-started"]"#).await, 1, "and only there");
    accessible(&browser, "the integrity page after a run was asked for").await;
    browser.screenshot("admin-07-integrity-running").await;

    // The price book: each resource's version in force, from billing's configuration.
    let (_, seeded) = platform.call("GET", "/api/admin/prices", &platform.admin_token, None).await;
    let seeded = seeded["prices"].as_array().unwrap().clone();
    let resources = [
        ("cpu", "CPU", "core-hour"),
        ("memory", "Memory", "GiB-hour"),
        ("gpu", "GPU", "GPU-hour"),
        ("storage_offline", "Offline storage", "GB-month"),
        ("storage_online", "Online storage", "GB-month"),
    ];
    assert_eq!(
        seeded.iter().map(|p| p["resource"].as_str().unwrap()).collect::<Vec<_>>(),
        resources.map(|(r, _, _)| r),
        "one version of each resource: {seeded:#?}"
    );
    let price_now = |p: &Value, unit: &str| {
        let (amount, currency) = (p["unit_amount_decimal"].as_str().unwrap(), p["currency"].as_str().unwrap());
        let major = hopsbridge_console::format::unit_price(amount, currency);
        format!("{amount} minor units of {currency} per {unit} ({major})")
    };
    let now_table: Vec<Vec<String>> = resources
        .iter()
        .zip(&seeded)
        .map(|((resource, name, unit), p)| {
            vec![
                format!("{name} ({resource})"),
                price_now(p, unit),
                "1 January 1970 00:00 UTC".to_owned(),
                "none scheduled".to_owned(),
            ]
        })
        .collect();
    browser.goto(&format!("{gateway}/admin/prices")).await;
    assert_eq!(browser.url().await, format!("{gateway}/admin/prices"));
    assert_eq!(cells(&browser, "#prices-now").await, now_table);
    assert_eq!(browser.count("#price-clock").await, 0, "judged by billing's own list");
    accessible(&browser, "the prices page").await;
    browser.screenshot("admin-08-prices").await;

    // A new version two days ahead (billing wants prices.min_lead_secs, 600 s by default, which
    // the journey keeps), in whole minutes as the datetime-local field takes it. Set by script:
    // what typing into a datetime-local field does depends on the browser's locale.
    let now = DateTime::from_timestamp(platform.world.clock.now(), 0).expect("the sandbox's time");
    let from = DateTime::from_timestamp((now + TimeDelta::days(2)).timestamp() / 60 * 60, 0).unwrap();
    let schedule = |amount: &'static str| {
        let browser = &browser;
        async move {
            let first = browser.script("return document.querySelector('#p-resource option').value;").await;
            browser.click(&format!(r#"#p-resource option[value="{}"]"#, first.as_str().unwrap())).await;
            browser.clear("#p-amount").await;
            browser.type_into("#p-amount", amount).await;
            let set =
                format!("document.getElementById('p-from').value = '{}'; return null;", from.format("%Y-%m-%dT%H:%M"));
            browser.script(&set).await;
            browser.follow(r#"form[action="/admin/prices"] button[type="submit"]"#).await;
            first.as_str().unwrap().to_owned()
        }
    };

    // An amount that is no number: billing's reason on the page, and no new version.
    let resource = schedule("abc").await;
    assert_eq!(resource, "cpu", "the form's first resource");
    assert_eq!(browser.url().await, format!("{gateway}/admin/prices?failed=invalid_price"));
    assert_eq!(
        error_shown(&browser).await.as_deref(),
        Some(
            "Please enter the unit amount as a decimal number of minor units (for example 3.5), with at most 12 decimal places."
        )
    );
    assert_eq!(notices(&browser).await, Vec::<String>::new(), "nothing said scheduled");
    let (_, unchanged) = platform.call("GET", "/api/admin/prices", &platform.admin_token, None).await;
    assert_eq!(unchanged["prices"].as_array().unwrap(), &seeded, "no version recorded");
    accessible(&browser, "the refused price").await;
    browser.screenshot("admin-09-price-refused").await;

    // A valid one: scheduled, said, and held by billing exactly as typed.
    schedule("7.25").await;
    let url = browser.url().await;
    let asked =
        serde_urlencoded::to_string([("from", from.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))]).unwrap();
    assert_eq!(url, format!("{gateway}/admin/prices?done=scheduled&resource=cpu&{asked}"));
    assert_eq!(error_shown(&browser).await, None);
    // Said once, in the page's own words (the generic "scheduled" notice is left out).
    assert_eq!(browser.count("#price-scheduled").await, 1);
    assert_eq!(
        notices(&browser).await,
        [format!(
            "Scheduled: CPU (cpu) at 7.25 minor units of usd per core-hour (0.0725 USD), from {}.",
            in_words(&from)
        )]
    );
    let (_, book) = platform.call("GET", "/api/admin/prices", &platform.admin_token, None).await;
    let book = book["prices"].as_array().unwrap();
    let added: Vec<&Value> = book.iter().filter(|p| !seeded.contains(p)).collect();
    assert_eq!(added.len(), 1, "one new version: {book:#?}");
    let added = added[0];
    assert_eq!(
        (added["resource"].as_str(), added["unit_amount_decimal"].as_str(), added["currency"].as_str()),
        (Some("cpu"), Some("7.25"), Some("usd")),
        "{added}"
    );
    let starts: DateTime<Utc> = added["effective_from"].as_str().unwrap().parse().unwrap();
    assert_eq!(starts, from, "{added}");
    assert_eq!(added["created_by"].as_str(), Some(admin.user_id.to_string().as_str()));
    let recorded: DateTime<Utc> = added["created_at"].as_str().unwrap().parse().unwrap();
    let recorded = if recorded.timestamp() % 60 == 0 && recorded.timestamp_subsec_nanos() == 0 {
        in_words(&recorded)
    } else {
        recorded.format("%-d %B %Y %H:%M:%S UTC").to_string()
    };
    // Listed first (latest start first) among the CPU's versions, as scheduled; and as the
    // CPU's next change in the table of prices in force.
    let cpu_versions = cells(&browser, "#prices-cpu").await;
    assert_eq!(cpu_versions.len(), 2, "{cpu_versions:?}");
    assert_eq!(
        cpu_versions[0].iter().map(String::as_str).collect::<Vec<_>>(),
        [
            in_words(&from).as_str(),
            "Scheduled",
            "7.25",
            "usd",
            "0.0725 USD",
            recorded.as_str(),
            admin.auth0.email.as_str()
        ]
    );
    assert_eq!(&cpu_versions[1][..2], ["1 January 1970 00:00 UTC", "In force"]);
    let mut now_after = now_table.clone();
    now_after[0][3] = format!("7.25 minor units (0.0725 USD) from {}", in_words(&from));
    assert_eq!(cells(&browser, "#prices-now").await, now_after);
    accessible(&browser, "the scheduled price").await;
    browser.screenshot("admin-10-price-scheduled").await;

    // Assignments: a person with a card, seated on eu-1 by provisioning.
    let person = platform.sign_up("quill").await;
    platform.add_card(&person).await;
    let assignment_path = format!("/api/admin/assignments/{}", person.user_id);
    let assignment = || async {
        let (status, a) = platform.call("GET", &assignment_path, &platform.admin_token, None).await;
        (status == 200).then_some(a)
    };
    let eu_1 = platform.cluster_ids[0].to_string();
    let seated = wait_for("quill seated on eu-1", Duration::from_secs(60), || async {
        assignment().await.filter(|a| a["status"] == "complete" && a["cluster_id"] == eu_1.as_str())
    })
    .await;
    let username = seated["hopsworks_username"].as_str().unwrap().to_owned();
    let email = person.auth0.email.clone();
    let found_url =
        format!("{gateway}/admin/assignments?{}", serde_urlencoded::to_string([("email", &email)]).unwrap());
    browser.goto(&format!("{gateway}/admin/assignments")).await;
    browser.type_into("#a-email", &email).await;
    browser.follow(r#"form[role="search"] button[type="submit"]"#).await;
    assert_eq!(browser.url().await, found_url);
    let row = cells(&browser, "#assignments").await;
    assert_eq!(row.len(), 1, "{row:?}");
    assert_eq!(&row[0][..5], [email.as_str(), "eu-1", "Complete", username.as_str(), "none"]);
    let options = browser
        .script("return [...document.querySelectorAll('#move-1 option')].map(o => o.value + ': ' + o.textContent);")
        .await;
    assert_eq!(
        options,
        json!([
            ": Choose a cluster",
            "eu-1: eu-1 (active, 1 of 50 seats taken)",
            "north-9: north-9 (maintenance, 0 of 8 seats taken)"
        ])
    );
    accessible(&browser, "a person's assignment").await;
    browser.screenshot("admin-11-assignment").await;

    // north-9 is in maintenance: provisioning refuses to seat anyone there (cluster_not_active),
    // the page says so and nothing changed.
    let move_to_north = || async {
        browser.click(r#"#move-1 option[value="north-9"]"#).await;
        browser.follow(r#"form[action="/admin/assignments/move"] button[type="submit"]"#).await;
    };
    move_to_north().await;
    assert_eq!(browser.url().await, format!("{found_url}&failed=cluster_not_active"));
    assert_eq!(error_shown(&browser).await.as_deref(), Some("That cluster is not active: it takes nobody now."));
    let after_refusal = assignment().await.unwrap();
    assert_eq!(
        (&after_refusal["cluster_id"], &after_refusal["status"], &after_refusal["previous_cluster_id"]),
        (&json!(eu_1), &json!("complete"), &Value::Null),
        "{after_refusal}"
    );
    assert_eq!(after_refusal["hopsworks_username"].as_str(), Some(username.as_str()));
    assert_eq!(&cells(&browser, "#assignments").await[0][..3], [email.as_str(), "eu-1", "Complete"]);
    accessible(&browser, "the refused move").await;
    browser.screenshot("admin-12-move-refused").await;

    // north-9 active again, through the API: the move is made, and provisioning seats them there.
    let north_id = north["id"].as_str().unwrap();
    let (status, activated) = platform
        .call(
            "PATCH",
            &format!("/api/admin/clusters/{north_id}"),
            &platform.admin_token,
            Some(json!({"status": "active"})),
        )
        .await;
    assert_eq!((status, activated["status"].as_str()), (200, Some("active")), "{activated}");
    browser.goto(&found_url).await;
    move_to_north().await;
    assert_eq!(browser.url().await, format!("{found_url}&done=moved"));
    assert_eq!(error_shown(&browser).await, None);
    assert_eq!(
        notices(&browser).await,
        [
            "The person was placed on the cluster you chose: their Hopsworks account there is made in the background, and any previous one deactivated."
        ]
    );
    let moved = wait_for("quill seated on north-9", Duration::from_secs(60), || async {
        assignment()
            .await
            .filter(|a| a["status"] == "complete" && a["cluster_id"] == north_id && a["previous_cluster_id"].is_null())
    })
    .await;
    let north_username = moved["hopsworks_username"].as_str().unwrap().to_owned();
    assert_eq!((used(&platform, &eu_1).await, used(&platform, north_id).await), (0, 1), "the seat moved");
    browser.goto(&found_url).await;
    assert_eq!(
        &cells(&browser, "#assignments").await[0][..5],
        [email.as_str(), "north-9", "Complete", north_username.as_str(), "none"]
    );
    accessible(&browser, "the moved assignment").await;
    browser.screenshot("admin-13-moved").await;

    // Unassigned from the page once the box is ticked: the seat is released.
    browser.click("#unassign-1").await;
    browser.follow(r#"form[action="/admin/assignments/unassign"] button[type="submit"]"#).await;
    assert_eq!(browser.url().await, format!("{found_url}&done=unassigned"));
    assert_eq!(error_shown(&browser).await, None);
    assert_eq!(
        notices(&browser).await,
        [
            "The person was unassigned: their seat is released, and any Hopsworks account of theirs is deactivated in the background."
        ]
    );
    wait_for("quill's seat released", Duration::from_secs(60), || async {
        assignment().await.filter(|a| a["status"] == "unassigned" && a["cluster_id"].is_null())
    })
    .await;
    assert_eq!(used(&platform, north_id).await, 0, "north-9's seat is free");
    browser.goto(&found_url).await;
    assert_eq!(&cells(&browser, "#assignments").await[0][..4], [email.as_str(), "none", "Unassigned", "not made yet"]);
    assert_eq!(browser.count("#unassign-1").await, 0, "nothing left to unassign");
    accessible(&browser, "the unassigned person").await;
    browser.screenshot("admin-14-unassigned").await;
    let _ = std::fs::remove_dir_all(&files);
}
