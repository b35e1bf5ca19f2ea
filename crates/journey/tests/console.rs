//! The console in a browser's place, with every service as its own process: a person signs in
//! through the gateway's login, adds a card with the billing page's form (Stripe Checkout in
//! the sandbox), sees their cluster, and, once their lab's pods have been measured, sees on the
//! usage page the cost and the upcoming invoice the API gives them, and on a day's page the cost
//! of that day's samples; their project's storage is measured, charted and priced as the API
//! gives it, and a storage day links to its storage samples; the samples route narrows a day to
//! one person of the team and refuses anyone else; they invite someone with the team page's
//! form, and an invited person joins through the invitation page. An admin registers a cluster
//! with the clusters page's form and reads every service's integrity findings (open, resolved
//! and all) and checks' last runs, running billing's checks from the page.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use hopsbridge_console::format;
use hopsbridge_contracts::Service;
use hopsbridge_journey::browser::{Browser, Page};
use hopsbridge_journey::{Options, Person, Platform, binaries, wait_for};
use hopsbridge_sandbox::auth0::TestUser;
use hopsbridge_sandbox::hopsworks::{Directory, ProjectStorage};
use hopsbridge_sandbox::world::World;
use rust_decimal::Decimal;
use serde_json::Value;
use std::time::Duration;

/// The CSRF token a page's forms carry.
fn csrf(body: &str) -> String {
    let at = body.find(r#"name="csrf" value=""#).expect("a form with the CSRF token") + r#"name="csrf" value=""#.len();
    body[at..].split('"').next().unwrap().to_owned()
}

/// The text of the element with `id`.
fn by_id<'a>(body: &'a str, id: &str) -> &'a str {
    let start = body.find(&format!(r#"id="{id}">"#)).unwrap_or_else(|| panic!("no #{id} in {body}")) + id.len() + 6;
    body[start..].split('<').next().unwrap()
}

/// The rows of the body of the table with `id`; none when there is no such table.
fn body_rows(body: &str, id: &str) -> usize {
    body.split(&format!(r#"id="{id}""#))
        .nth(1)
        .map_or(0, |t| t.split("<tbody>").nth(1).unwrap().split("</tbody>").next().unwrap().matches("<tr>").count())
}

/// The console's `page` and the API's answer to `api` that it shows, read until the API answered
/// the same before and after the page, in one page (a day still running gains windows).
async fn page_and_api(platform: &Platform, browser: &Browser, person: &Person, page: &str, api: &str) -> (Value, Page) {
    wait_for(&format!("{page} and {api} agreeing"), Duration::from_secs(60), || async {
        let before = platform.call("GET", api, &person.token, None).await.1;
        let shown = browser.fork().get(page).await;
        let after = platform.call("GET", api, &person.token, None).await.1;
        (before == after && after["next"].is_null()).then_some((after, shown))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_uses_the_console_from_card_to_cost_and_team() {
    let options = Options {
        clusters: 1,
        metering_window_secs: 2,
        // What the Hopsworks sandbox names console@example.com's account.
        lab_owners: vec!["con10000".to_owned()],
        // Storage snapshots every 10 s rather than hourly, so the lab's storage is billed soon.
        settings: vec![(Service::Metering, "storage.window_secs", "10".to_owned())],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let person = platform.sign_up("console").await;
    platform.wait_billing_account(&person, Duration::from_secs(30)).await;

    let mut browser = Browser::new(&platform.gateway);
    let landing = browser.get("/").await;
    assert!(landing.body.contains("/api/auth/login?returnTo=/"), "{}", landing.body);
    assert_eq!(browser.sign_in(&platform, &person, "/billing").await, "/billing");

    // Billing: no card yet; the form goes to Stripe Checkout, completed in the sandbox.
    let billing = browser.get("/billing").await;
    assert_eq!(billing.status, 200, "{}", billing.body);
    assert!(billing.body.contains("No card yet"));
    let token = csrf(&billing.body);
    let refused = browser.post("/billing/card", &[("csrf", "forged")]).await;
    assert_eq!(refused.status, 403);
    let checkout = browser.post("/billing/card", &[("csrf", &token)]).await;
    assert_eq!(checkout.status, 303, "{}", checkout.body);
    let checkout_url = checkout.location.unwrap();
    let session_id = checkout_url.rsplit('/').next().unwrap();
    platform.world.stripe.complete_checkout_session(session_id).unwrap();
    let cluster_api = platform.wait_assigned(&person, Duration::from_secs(30)).await;

    // Cluster: the API's cluster, its address and the person's Hopsworks username.
    let cluster = browser.get("/cluster").await;
    assert_eq!(cluster.status, 200);
    assert!(cluster.body.contains(cluster_api["cluster"]["name"].as_str().unwrap()), "{}", cluster.body);
    assert!(cluster.body.contains(&format!(r#"href="{}""#, cluster_api["cluster"]["endpoint"].as_str().unwrap())));
    if let Some(username) = cluster_api["hopsworks_username"].as_str() {
        assert!(cluster.body.contains(username));
    }
    let billing = browser.get("/billing").await;
    assert!(billing.body.contains("ending in 4242"), "{}", billing.body);
    // The lab project holds 5 GiB (exact in Hopsworks' float GiB), measured every 10 s.
    let hopsworks = &platform.world.clusters[0].hopsworks;
    let lab = hopsworks.projects().into_iter().find(|p| p.name == "con10000_lab").expect("the person's lab project");
    let held = ProjectStorage { project: Directory::holding(5 << 30), hive: None, featurestore: None };
    hopsworks.set_storage(lab.id, held).unwrap();

    // Usage and cost equal the API's, once the lab's pods have been measured and priced.
    let (_, pricing) = platform.call_as("GET", "/api/pricing", None, None).await;
    let currency = pricing["current"][0]["currency"].as_str().unwrap_or("usd").to_owned();
    async fn usage(platform: &Platform, person: &Person) -> Value {
        platform.call("GET", "/api/billing/usage", &person.token, None).await.1
    }
    fn is_storage(line: &Value) -> bool {
        line["resource"].as_str().is_some_and(|r| r.starts_with("storage_"))
    }
    fn exact(value: &Value) -> Decimal {
        value.as_str().unwrap().parse().unwrap()
    }
    wait_for("priced usage and storage", Duration::from_secs(90), || async {
        let usage = usage(&platform, &person).await;
        let stored = usage["lines"].as_array()?.iter().any(|l| is_storage(l) && exact(&l["cost"]) > Decimal::ZERO);
        usage["month_to_date"]["cost_minor"].as_i64().filter(|c| *c > 0 && stored)
    })
    .await;
    let (api, page) = wait_for("the page and the API agreeing while usage grows", Duration::from_secs(60), || async {
        let before = usage(&platform, &person).await;
        let page = browser.fork().get("/usage").await;
        let after = usage(&platform, &person).await;
        (before == after).then_some((after, page))
    })
    .await;
    assert_eq!(page.status, 200);
    let month_cost = format::minor(api["month_to_date"]["cost_minor"].as_i64().unwrap(), &currency);
    assert_eq!(by_id(&page.body, "month-cost"), month_cost);
    let invoice = format::minor(api["upcoming_invoice"]["total_minor"].as_i64().unwrap(), &currency);
    assert_eq!(by_id(&page.body, "invoice-total"), invoice);
    assert_eq!(page.body.matches("<svg").count(), 4, "a chart per resource, storage included");
    // The storage chart: the API's storage lines added up, quantity and cost.
    let storage: Vec<&Value> = api["lines"].as_array().unwrap().iter().filter(|l| is_storage(l)).collect();
    let gb_months: Decimal = storage.iter().map(|l| exact(&l["quantity"])).sum();
    let cost: Decimal = storage.iter().map(|l| exact(&l["cost"])).sum();
    let caption = format!(
        "Storage (GB-months): {} GB-months, costing {}",
        format::quantity(&gb_months.to_string(), 9),
        format::minor_decimal(&cost.to_string(), &currency)
    );
    assert!(gb_months > Decimal::ZERO && page.body.contains(&caption), "{caption} in {}", page.body);

    // A day's page: the cost of its samples, as the API lists them.
    let day = api["lines"][0]["day"].as_str().unwrap().to_owned();
    assert!(page.body.contains(&format!(r#"href="/usage/{day}""#)));
    let samples = format!("/api/billing/usage/samples?day={day}&limit=1000");
    let (samples_api, day_page) = page_and_api(&platform, &browser, &person, &format!("/usage/{day}"), &samples).await;
    let total: Decimal = samples_api["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cost"].as_str().unwrap().parse::<Decimal>().unwrap())
        .sum();
    assert_eq!(by_id(&day_page.body, "day-cost"), format::minor_decimal(&total.to_string(), &currency));
    assert!(!samples_api["samples"].as_array().unwrap().is_empty());

    // A storage day links to its storage samples, which the API gives the owner too.
    let storage_day = storage[0]["day"].as_str().unwrap().to_owned();
    assert!(page.body.contains(&format!(r#"href="/usage/{storage_day}?source=storage""#)), "{}", page.body);
    let samples = format!("/api/billing/usage/samples?day={storage_day}&source=storage&limit=1000");
    let here = format!("/usage/{storage_day}?source=storage");
    let (stored, storage_page) = page_and_api(&platform, &browser, &person, &here, &samples).await;
    let stored = stored["samples"].as_array().unwrap();
    assert!(!stored.is_empty() && stored.iter().all(|s| s["source"] == "storage"), "{stored:?}");
    // 5 GiB for 10 s; a snapshot taken before the lab held anything holds nothing.
    let held: Vec<i64> = stored.iter().map(|s| s["storage_offline_byte_seconds"].as_i64().unwrap()).collect();
    assert!(held.contains(&(10 * (5_i64 << 30))) && held.iter().all(|b| [0, 10 * (5 << 30)].contains(b)), "{held:?}");
    let total: Decimal = stored.iter().map(|s| exact(&s["cost"])).sum();
    assert_eq!(by_id(&storage_page.body, "day-cost"), format::minor_decimal(&total.to_string(), &currency));
    assert_eq!(storage_page.body.matches("<tbody>").count(), 1);
    assert_eq!(
        storage_page.body.split("<tbody>").nth(1).unwrap().split("</tbody>").next().unwrap().matches("<tr>").count(),
        stored.len(),
        "a row per storage sample"
    );

    // Team: the owner invites with the form; an invited person joins through the invitation page.
    let team = browser.get("/team").await;
    let token = csrf(&team.body);
    let invited = browser
        .post("/team/invite", &[("csrf", &token), ("email", "pending@example.com"), ("project_role", "Data scientist")])
        .await;
    assert_eq!(invited.location.as_deref(), Some("/team?done=invited"), "{}", invited.body);
    let team = browser.get("/team?done=invited").await;
    assert!(
        team.body.contains("The invitation was sent.") && team.body.contains("pending@example.com"),
        "{}",
        team.body
    );

    let member = platform.sign_up("joiner").await;
    let invitation = platform.invite(&person, "joiner@example.com", "Data owner").await;
    let mut other = Browser::new(&platform.gateway);
    let preview = other.get(&format!("/invitations/{}", invitation.token)).await;
    assert_eq!(preview.status, 200, "{}", preview.body);
    assert!(preview.body.contains("Data owner") && preview.body.contains("returnTo=%2Finvitations%2F"));
    let back = other.sign_in(&platform, &member, "/team").await;
    assert_eq!(back, "/team");
    let page = other.get(&format!("/invitations/{}", invitation.token)).await;
    let terms =
        page.body.split(r#"name="terms_version" value=""#).nth(1).unwrap().split('"').next().unwrap().to_owned();
    let joined = other
        .post(
            &format!("/invitations/{}", invitation.token),
            &[("csrf", &csrf(&page.body)), ("terms_version", &terms), ("accept_terms", "yes")],
        )
        .await;
    assert_eq!(joined.location.as_deref(), Some("/cluster?done=joined"), "{}", joined.body);
    let team = browser.get("/team").await;
    assert!(team.body.contains("joiner@example.com"), "the owner sees the new member: {}", team.body);

    // The samples route narrows a day to one person of the owner's team: the owner, or a
    // member (who has none yet); anyone else is nobody's, and a member asks for none.
    let samples_of = |user: uuid::Uuid, token: &str| {
        let path = format!("/api/billing/usage/samples?day={day}&user_id={user}");
        let token = token.to_owned();
        let platform = &platform;
        async move { platform.call("GET", &path, &token, None).await }
    };
    let (status, own) = samples_of(person.user_id, &person.token).await;
    assert_eq!(status, 200, "{own}");
    let own = own["samples"].as_array().unwrap();
    assert!(!own.is_empty() && own.iter().all(|s| s["user_id"] == person.user_id.to_string()));
    // Once billing has heard of the join (an event), the member is the owner's to look at.
    let theirs = wait_for("billing to know the new member", Duration::from_secs(30), || async {
        let (status, theirs) = samples_of(member.user_id, &person.token).await;
        (status == 200).then_some(theirs)
    })
    .await;
    assert_eq!(theirs["samples"].as_array().map(Vec::len), Some(0), "{theirs}");
    let (status, stranger) = samples_of(uuid::Uuid::now_v7(), &person.token).await;
    assert_eq!((status, stranger["code"].as_str()), (404, Some("person_not_found")), "{stranger}");
    let (status, refused) = samples_of(person.user_id, &member.token).await;
    assert_eq!((status, refused["code"].as_str()), (403, Some("owner_only")), "{refused}");
    let path = format!("/api/billing/usage/samples?day={day}&source=disk");
    assert_eq!(platform.call("GET", &path, &person.token, None).await.0, 400);
    // The member sees their membership and no billing.
    assert_eq!(other.get("/billing").await.status, 403);
    assert!(other.get("/team").await.body.contains("Person console"));

    // An admin registers a cluster with the clusters page's form (inactive: nobody is placed
    // there); a person who is not an admin cannot.
    let admin = TestUser::database("journey-admin", "admin@hopsbridge.example", "Journey Admin");
    let admin = Person { auth0: admin, token: platform.admin_token.clone(), user_id: uuid::Uuid::nil() };
    let mut operator = Browser::new(&platform.gateway);
    assert_eq!(operator.sign_in(&platform, &admin, "/admin/clusters").await, "/admin/clusters");
    let page = operator.get("/admin/clusters").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let registration = World::registration(&platform.world.clusters[0], 3, "eu-west");
    let field = |k: &str| registration[k].as_str().unwrap().to_owned();
    let form = [
        ("csrf", csrf(&page.body)),
        ("name", "eu-spare".to_owned()),
        ("region", "eu-west".to_owned()),
        ("api_url", field("api_url")),
        ("api_key", field("api_key")),
        ("oauth_client_id", field("oauth_client_id")),
        ("capacity", "3".to_owned()),
        ("status", "inactive".to_owned()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The kubeconfig and the CA bundle are uploaded as files.
    let (kubeconfig, ca_bundle) = (field("kubeconfig"), field("ca_bundle"));
    let files = [("kubeconfig", "eu-spare.yaml", kubeconfig.as_str()), ("ca_bundle", "ca.pem", ca_bundle.as_str())];
    let mut as_owner = form.clone();
    as_owner[0].1 = &token;
    assert_eq!(browser.post_multipart("/admin/clusters", &as_owner, &files).await.status, 403, "an owner is no admin");
    let registered = operator.post_multipart("/admin/clusters", &form, &files).await;
    assert_eq!(registered.location.as_deref(), Some("/admin/clusters?done=registered"), "{}", registered.body);
    let (_, clusters) = platform.call("GET", "/api/admin/clusters", &platform.admin_token, None).await;
    let spare = clusters.as_array().unwrap().iter().find(|c| c["name"] == "eu-spare").expect("the registered cluster");
    assert_eq!((spare["capacity"].as_i64(), spare["status"].as_str()), (Some(3), Some("inactive")), "{spare}");
    let page = operator.get("/admin/clusters?done=registered").await;
    assert!(page.body.contains("The cluster was registered.") && page.body.contains("eu-spare"), "{}", page.body);
    assert!(!page.body.contains(&field("api_key")), "the API key is never shown");

    // The integrity page: every data service's open findings, as many as each API lists, and
    // a form that runs one service's checks now.
    let page = operator.get("/admin/integrity").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("could not be read"), "every service answers: {}", page.body);
    let checks_of = |service: &'static str| {
        let platform = &platform;
        async move {
            let path = format!("/api/admin/integrity/{service}");
            let (status, answer) = platform.call("GET", &path, &platform.admin_token, None).await;
            assert_eq!(status, 200, "{answer}");
            answer
        }
    };
    for service in ["identity", "team", "provisioning", "metering", "billing"] {
        assert!(page.body.contains(&format!(r#"name="service" value="{service}""#)), "{service}");
        let open = checks_of(service).await["total"].as_i64().unwrap();
        let shown = body_rows(&page.body, &format!("integrity-{service}-findings"));
        // A finding may open or resolve between the page and the API: at most one apart.
        assert!(shown.abs_diff(usize::try_from(open).unwrap()) <= 1, "{service}: {shown} shown, {open} open");
        // Every check of the service has its last run's row.
        let checks = checks_of(service).await["checks"].as_array().unwrap().len();
        assert_eq!(body_rows(&page.body, &format!("integrity-{service}-runs")), checks, "{service}'s checks");
    }
    // Resolved and all findings are as many as the API counts (read again until no run changed
    // them in between).
    for status in ["resolved", "all"] {
        let path = format!("/api/admin/integrity/billing?status={status}");
        let (total, page) = wait_for(&format!("the {status} findings agreeing"), Duration::from_secs(60), || async {
            let total = |answer: (u16, Value)| answer.1["total"].as_i64();
            let before = total(platform.call("GET", &path, &platform.admin_token, None).await)?;
            let page = operator.fork().get(&format!("/admin/integrity?status={status}&service=billing")).await;
            let after = total(platform.call("GET", &path, &platform.admin_token, None).await)?;
            (before == after).then_some((after, page))
        })
        .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let counted = if status == "all" { format!("{total} in all") } else { format!("{total} resolved") };
        assert!(
            page.body.contains(&format!("<caption>{counted},")) || (total == 0 && page.body.contains("billing-none")),
            "{status}: {total} in {}",
            page.body
        );
    }
    let before = checks_of("billing").await["checks"].clone();
    let run = operator.post("/admin/integrity/run", &[("csrf", &csrf(&page.body)), ("service", "billing")]).await;
    assert_eq!(
        run.location.as_deref(),
        Some("/admin/integrity?started=billing&done=running#integrity-billing"),
        "{}",
        run.body
    );
    let running = operator.get("/admin/integrity?started=billing&done=running").await;
    assert!(running.body.contains(r#"id="integrity-billing-started""#), "{}", running.body);
    // The run was accepted; its checks' last runs change once it has started (or ended).
    let after = wait_for("billing's checks to run again", Duration::from_secs(120), || async {
        let after = checks_of("billing").await["checks"].clone();
        (after != before).then_some(after)
    })
    .await;
    assert!(!after.as_array().unwrap().is_empty(), "{after}");
    let refused = browser.post("/admin/integrity/run", &[("csrf", &token), ("service", "billing")]).await;
    assert_eq!(refused.status, 403, "an owner is no admin");
}
