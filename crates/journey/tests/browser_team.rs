//! A team in a real browser: Debian's headless Chromium at a phone's width (390 px), every
//! service as a process and the sandbox. An owner invites from the team page, resends and
//! cancels there; the invitee opens the link the emailed invitation carries (read out of the
//! sandbox's mail catcher as a person reads the mail), sees the preview, signs up on the Auth0
//! tenant's page, comes back and joins. The owner's team page then lists them with role and
//! status; the member sees no billing (no link, `/billing` refused with a page saying so), sees
//! the owner's project they were added to on the cluster page, works in it, and the owner
//! follows the member's usage down to the samples behind one day, whose cost equals the API's;
//! the team page's storage of the member this month equals billing's. Every page visited has labelled,
//! keyboard-reachable controls and no sideways scrolling. Screenshots go to
//! `$CARGO_TARGET_TMPDIR/console-screenshots/team-*.png`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use hopsbridge_journey::browser::chromium::Chromium;
use hopsbridge_journey::{Options, Platform, binaries, wait_for};
use hopsbridge_sandbox::auth0::Auth0Sim;
use hopsbridge_sandbox::world::lab_pods;
use hopsbridge_testkit::WEBHOOK_SECRET;
use rust_decimal::Decimal;
use serde_json::Value;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(60);
/// What the Hopsworks sandbox names olivia@ (whose lab runs pods from the start) and mateo@.
const OWNER_USERNAME: &str = "oli10000";
const MEMBER_USERNAME: &str = "mat10000";

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

/// The invitation links in the mails to `to`, in the order they were received, as a person
/// finds them in the text.
fn links_in_mail(platform: &Platform, to: &str) -> Vec<String> {
    platform
        .world
        .mail
        .messages_to(to)
        .iter()
        .filter_map(|m| {
            let at = m.text.find("/invitations/")?;
            let start = m.text[..at].rfind("http")?;
            let link: String =
                m.text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || "-_/:.".contains(*c)).collect();
            Some(link.trim_end_matches('.').to_owned())
        })
        .collect()
}

/// The page has no accessibility basics missing and does not scroll sideways.
async fn accessible(browser: &Chromium, page: &str) {
    let problems = browser.accessibility_problems().await;
    assert!(problems.is_empty(), "{page}: {problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_runs_a_team_and_follows_a_members_usage_in_chromium() {
    let options = Options {
        clusters: 1,
        metering_window_secs: 2,
        lab_owners: vec![OWNER_USERNAME.to_owned()],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let gateway = platform.gateway.clone();
    // Signing up on the tenant's page fires the post-registration Action, as Auth0 does.
    platform.world.auth0.set_post_registration_action(Auth0Sim::post_registration_action(
        &format!("{gateway}/webhooks/auth0/post-registration"),
        WEBHOOK_SECRET,
    ));
    let owner = platform.sign_up("olivia").await;
    platform.wait_billing_account(&owner, PATIENCE).await;
    platform.add_card(&owner).await;
    platform.wait_assigned(&owner, PATIENCE).await;

    // The owner signs in (the tenant's SSO session: no page) and invites from the team page.
    let browser = Chromium::start(&shots(), 390, 844).await;
    platform.world.auth0.sign_in_as(&owner.auth0);
    browser.goto(&format!("{gateway}/team")).await;
    assert_eq!(browser.url().await, format!("{gateway}/team"));
    assert!(browser.text().await.contains("No members yet"));
    accessible(&browser, "the owner's team page").await;
    browser.screenshot("team-01-owner-empty").await;
    browser.type_into("#email", "Mateo@Example.com").await;
    browser.follow(r#"form[action="/team/invite"] button[type="submit"]"#).await;
    browser.wait_url(&format!("{gateway}/team?done=invited"), PATIENCE).await;
    let text = browser.text().await;
    assert!(text.contains("The invitation was sent.") && text.contains("mateo@example.com"), "{text}");
    let first = wait_for("the invitation mail", PATIENCE, || async {
        links_in_mail(&platform, "mateo@example.com").first().cloned()
    })
    .await;
    assert!(first.starts_with(&format!("{gateway}/invitations/")), "{first}");

    // Resend: a new mail with a new link; the old one no longer works.
    browser.follow(r#"form[action="/team/resend"] button"#).await;
    browser.wait_url(&format!("{gateway}/team?done=resent"), PATIENCE).await;
    let link = wait_for("the resent mail", PATIENCE, || async {
        let links = links_in_mail(&platform, "mateo@example.com");
        (links.len() == 2).then(|| links[1].clone())
    })
    .await;
    assert_ne!(link, first, "a resent invitation carries a new link");
    browser.screenshot("team-02-owner-invited").await;

    // Cancel: a second invitation, cancelled from the page; its link then says so.
    browser.type_into("#email", "zoe@example.com").await;
    browser.follow(r#"form[action="/team/invite"] button[type="submit"]"#).await;
    let zoes =
        wait_for("zoe's mail", PATIENCE, || async { links_in_mail(&platform, "zoe@example.com").first().cloned() })
            .await;
    assert_eq!(browser.count(r#"form[action="/team/cancel"] input[value="zoe@example.com"]"#).await, 1);
    browser.follow(r#"tr:has(input[value="zoe@example.com"]) form[action="/team/cancel"] button"#).await;
    browser.wait_url(&format!("{gateway}/team?done=cancelled"), PATIENCE).await;
    assert!(!browser.text().await.contains("zoe@example.com"), "cancelled: no longer pending");
    browser.screenshot("team-03-owner-cancelled").await;

    // The invitee, in a browser of their own, opens the links from the mails.
    let invitee = Chromium::start(&shots(), 390, 844).await;
    for dead in [&zoes, &first] {
        invitee.goto(dead).await;
        assert!(invitee.text().await.contains("This invitation cannot be used"), "{dead}");
    }
    invitee.goto(&link).await;
    let preview = invitee.text().await;
    assert!(preview.contains("Join Person olivia's team") && preview.contains("mateo@example.com"), "{preview}");
    assert!(preview.contains("Data scientist") && preview.contains("Sign in or sign up to join"), "{preview}");
    accessible(&invitee, "the invitation preview").await;
    invitee.screenshot("team-04-invitation-preview").await;

    // Sign up on the tenant's page, and back to the invitation, signed in.
    invitee.follow("main a.button").await;
    assert!(invitee.url().await.starts_with(&platform.world.auth0.issuer()), "{}", invitee.url().await);
    invitee.follow(r#"a[href^="/u/signup"]"#).await;
    invitee.type_into("#name", "Mateo Ruiz").await;
    invitee.type_into("#email", "mateo@example.com").await;
    invitee.type_into("#password", "Sierra-Nevada-42").await;
    invitee.screenshot("team-05-sign-up").await;
    invitee.follow(r#"button[type="submit"]"#).await;
    let token = link.rsplit('/').next().unwrap();
    invitee.wait_url(&format!("{gateway}/invitations/{token}"), PATIENCE).await;
    assert!(invitee.text().await.contains("Signed in as mateo@example.com"));
    invitee.click("#accept").await;
    invitee.follow(r#"form button[type="submit"]"#).await;
    invitee.wait_url(&format!("{gateway}/cluster?done=joined"), PATIENCE).await;
    assert!(invitee.text().await.contains("Welcome to the team."));
    invitee.screenshot("team-06-joined").await;

    // The owner's team page lists them with role and status.
    browser.goto(&format!("{gateway}/team")).await;
    let row = browser.text().await;
    assert!(row.contains("mateo@example.com"), "{row}");
    let cells = browser
        .script("return [...document.querySelectorAll('tbody tr')].map(r => r.innerText.replace(/\\s+/g, ' '));")
        .await;
    let mateo = cells
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|r| r.contains("mateo@example.com"))
        .unwrap()
        .to_owned();
    assert!(mateo.contains("Data scientist") && mateo.contains("active"), "{mateo}");
    accessible(&browser, "the owner's team page with a member").await;
    browser.screenshot("team-07-owner-with-member").await;

    // The member sees no billing: no link, and the page refused with a page saying so.
    invitee.goto(&format!("{gateway}/")).await;
    assert_eq!(invitee.count(r#"nav a[href="/billing"]"#).await, 0, "no billing link for a member");
    invitee.goto(&format!("{gateway}/billing")).await;
    let refused = invitee.text().await;
    assert!(
        refused.contains("Not available to you") && refused.contains("This page is for account owners."),
        "{refused}"
    );
    invitee.screenshot("team-08-member-billing-refused").await;
    invitee.goto(&format!("{gateway}/team")).await;
    assert!(invitee.text().await.contains("You are a member of Person olivia's team"));
    accessible(&invitee, "the member's team page").await;

    // Their projects on the cluster page: their own lab and the owner's, once synced.
    let (status, me) =
        platform.call("GET", "/api/admin/users?q=mateo%40example.com", &platform.admin_token, None).await;
    assert_eq!(status, 200, "{me}");
    let member_id = me["items"][0]["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let sync = format!("/api/admin/clusters/{}/projects/sync", platform.cluster_ids[0]);
        platform.call("POST", &sync, &platform.admin_token, None).await;
        invitee.goto(&format!("{gateway}/cluster")).await;
        let text = invitee.text().await;
        if text.contains(&format!("{OWNER_USERNAME}_lab: your team's, as Data scientist")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the member's projects on their cluster page: {text}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(invitee.text().await.contains(MEMBER_USERNAME), "their Hopsworks username");
    accessible(&invitee, "the member's cluster page").await;
    invitee.screenshot("team-09-member-cluster").await;

    // The member runs a notebook in the owner's lab (labelled with their username, as Hopsworks
    // labels a user's pods); it is measured and priced on the owner's account, and the owner
    // follows it down to a day's samples.
    let cluster = &platform.world.clusters[0];
    let lab = cluster.hopsworks.projects().into_iter().find(|p| p.name == format!("{OWNER_USERNAME}_lab")).unwrap();
    let namespace = format!("{OWNER_USERNAME}-lab");
    let mut notebook = lab_pods(MEMBER_USERNAME, platform.world.clock.now() - 60)
        .into_iter()
        .find(|p| p.name.starts_with("notebook"))
        .unwrap();
    notebook.uid = format!("uid-{namespace}-{}", notebook.name);
    notebook.namespace = namespace;
    notebook.labels.insert("project-id".to_owned(), lab.id.to_string());
    cluster.kubernetes.run_pods(vec![notebook]).unwrap();
    let day = wait_for("the member's priced usage", Duration::from_secs(120), || async {
        let (_, usage) = platform.call("GET", "/api/billing/usage", &owner.token, None).await;
        usage["lines"].as_array()?.iter().find_map(|l| {
            (l["user_id"] == member_id.as_str() && Decimal::from_str(l["cost"].as_str()?).ok()? > Decimal::ZERO)
                .then(|| l["day"].as_str().map(str::to_owned))
                .flatten()
        })
    })
    .await;
    browser.goto(&format!("{gateway}/usage")).await;
    browser.follow(r#"a[href^="/usage?member=mateo%40example.com"]"#).await;
    // The member as the team API names them (their name, or their address until it has one).
    let (_, team) = platform.call("GET", "/api/team", &owner.token, None).await;
    let name = team["members"][0]["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("mateo@example.com").to_owned();
    assert!(browser.text().await.contains(&format!("Usage of {name}")));
    accessible(&browser, "a member's usage").await;
    browser.screenshot("team-10-member-usage").await;
    browser.follow(&format!(r#"ul.days a[href="/usage/{day}?member=mateo%40example.com"]"#)).await;
    assert!(browser.text().await.contains(&format!("Usage of {name} on")));
    // The page's entries are the API's samples of that day narrowed to the member (read again
    // until no window was measured in between: the day is still running).
    let day_page = browser.url().await;
    wait_for("the day's page to agree with the API", PATIENCE, || async {
        browser.goto(&day_page).await;
        let path = format!("/api/billing/usage/samples?day={day}&limit=1000&user_id={member_id}");
        let (_, samples) = platform.call("GET", &path, &owner.token, None).await;
        let theirs: Vec<&Value> = samples["samples"].as_array()?.iter().collect();
        assert!(theirs.iter().all(|s| s["user_id"] == member_id.as_str()), "the member's only: {samples}");
        let total: Decimal = theirs.iter().map(|s| Decimal::from_str(s["cost"].as_str().unwrap()).unwrap()).sum();
        let mut major =
            total.round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero) / Decimal::from(100);
        major.rescale(2);
        let shown = browser.script("return document.getElementById('day-cost').textContent;").await;
        let rows = browser.count("tbody tr").await;
        (!theirs.is_empty() && rows == theirs.len() && shown.as_str()?.starts_with(&format!("{major} "))).then_some(())
    })
    .await;
    accessible(&browser, "a member's day").await;
    browser.screenshot("team-11-member-day-samples").await;

    // The owner's team page shows each member's storage this month, offline and online, as
    // billing's usage lines of that member add up (the usage page's figures). A member creates no
    // projects (their Hopsworks account may create none), so this one's is none.
    let stored = |usage: &Value, resource: &str| -> String {
        let gb_months: Decimal = usage["lines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["user_id"] == member_id.as_str() && l["resource"] == resource)
            .map(|l| Decimal::from_str(l["quantity"].as_str().unwrap()).unwrap())
            .sum();
        hopsbridge_console::format::quantity(&gb_months.to_string(), 9)
    };
    let (expected, row) = wait_for("the team page to agree with billing", PATIENCE, || async {
        let figures = |usage: Value| (stored(&usage, "storage_offline"), stored(&usage, "storage_online"));
        let before = figures(platform.call("GET", "/api/billing/usage", &owner.token, None).await.1);
        browser.goto(&format!("{gateway}/team")).await;
        let row = browser
            .script("return [...document.querySelectorAll('#members tbody tr')].map(r => r.innerText.replace(/\\s+/g, ' ')).find(r => r.includes('mateo@example.com'));")
            .await;
        let after = figures(platform.call("GET", "/api/billing/usage", &owner.token, None).await.1);
        (before == after).then(|| (after, row.as_str().unwrap_or_default().to_owned()))
    })
    .await;
    assert!(row.contains(&format!(" {} {} ", expected.0, expected.1)), "{expected:?} in {row}");
    let headings = browser.script("return document.querySelector('#members thead').innerText;").await;
    let headings = headings.as_str().unwrap();
    assert!(headings.contains("Offline storage") && headings.contains("Online storage"), "{headings}");
    accessible(&browser, "the owner's team page with storage").await;
    browser.screenshot("team-12-owner-member-storage").await;
}
