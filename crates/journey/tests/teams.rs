//! A team end to end through the gateway, with every service as its own process (issue 16):
//! an owner with a card, a cluster and projects invites an address; the mail reaches the
//! sandbox's inbox with a link; the invitee signs up, previews the invitation without signing
//! in and joins; they are given an account on the owner's cluster and a place in each of the
//! owner's projects; their pods in the owner's project are measured and billed to the owner;
//! the owner removes them, and they are an owner of their own again. Every effect is counted,
//! so one done twice fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::events::{TeamMemberJoinedV1, TeamMemberRemovedV1};
use hopsbridge_journey::{Options, Person, Platform, binaries, wait_for};
use hopsbridge_sandbox::hopsworks::{STATUS_ACTIVATED, STATUS_DEACTIVATED, User};
use hopsbridge_sandbox::workload::SimPod;
use hopsbridge_sandbox::world::{LAB_NOTEBOOK_CPU_NANOCORES, LAB_NOTEBOOK_MEMORY_BYTES, lab_pods};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// metering's window, seconds.
const WINDOW: u32 = 2;
/// How long an effect may take on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(120);
/// What the Hopsworks sandbox names boss@example.com's account; its lab project is
/// `bos10000_lab`, in the namespace `bos10000-lab`.
const OWNER_USERNAME: &str = "bos10000";
const LAB_NAMESPACE: &str = "bos10000-lab";
const ROLE: &str = "Data scientist";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invited_person_joins_works_in_the_owners_projects_is_billed_to_the_owner_and_is_removed() {
    let options = Options {
        clusters: 1,
        metering_window_secs: WINDOW,
        lab_owners: vec![OWNER_USERNAME.to_owned()],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let cluster = &platform.world.clusters[0];
    let hopsworks = &cluster.hopsworks;

    // The owner signs up, adds a card and is given an account; their lab project comes with
    // it, and they make a second project. The cluster's admin has a project of its own.
    let owner = platform.sign_up("boss").await;
    platform.wait_billing_account(&owner, PATIENCE).await;
    platform.add_card(&owner).await;
    let owner_id = owner.user_id.to_string();
    let owners_cluster = platform.wait_assigned(&owner, PATIENCE).await["cluster"]["id"].clone();
    hopsworks.create_project(OWNER_USERNAME, "boss_models").unwrap();
    let admin = hopsworks.admin().unwrap();
    hopsworks.create_project(&admin.username, "ops_tools").unwrap();
    let owner_account = account_of(&hopsworks.users(), "boss@example.com");
    let owners_projects: BTreeMap<u64, String> =
        hopsworks.projects().into_iter().filter(|p| p.owner_id == owner_account.id).map(|p| (p.id, p.name)).collect();
    assert_eq!(owners_projects.values().collect::<Vec<_>>(), ["bos10000_lab", "boss_models"]);
    let lab_project = *owners_projects.iter().find(|(_, name)| *name == "bos10000_lab").unwrap().0;

    // The owner invites an address (written as a person types it); the mail reaches the inbox
    // with the link the owner was shown.
    let invitation = platform.invite(&owner, " Mia@Example.com ", ROLE).await;
    let mails = wait_for("the invitation mail", PATIENCE, || async {
        Some(platform.world.mail.messages_to("mia@example.com")).filter(|m| !m.is_empty())
    })
    .await;
    assert!(mails[0].text.contains(&invitation.link), "{}", mails[0].text);
    assert!(mails[0].html.contains(&invitation.link), "{}", mails[0].html);
    let start = mails[0].text.find("/invitations/").unwrap() + "/invitations/".len();
    let token: String =
        mails[0].text[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || "-_".contains(*c)).collect();
    assert_eq!(token, invitation.token, "the mail's link is the owner's");

    // The invitee signs up as a new person, previews the invitation without signing in, and
    // joins with the terms version the preview names.
    let mia = platform.sign_up("mia").await;
    platform.wait_billing_account(&mia, PATIENCE).await;
    let (status, preview) = platform.call_as("GET", &format!("/api/invitations/{token}"), None, None).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        (preview["email"].as_str(), preview["project_role"].as_str(), preview["invited_by"]["email"].as_str()),
        (Some("mia@example.com"), Some(ROLE), Some("boss@example.com")),
        "{preview}"
    );
    assert!(preview["terms_version"].as_str().is_some_and(|v| !v.is_empty()), "{preview}");
    let membership = platform.join(&mia, &token).await;
    assert_eq!(membership["owner_user_id"], owner_id.as_str(), "{membership}");
    assert_eq!(membership["terms_version"], preview["terms_version"], "{membership}");
    let (status, mine) = platform.call("GET", "/api/team/membership", &mia.token, None).await;
    assert_eq!((status, mine["owner_user_id"].as_str()), (200, Some(owner_id.as_str())), "{mine}");

    // identity: the member's account is the owner's; billing: their own subscription is
    // cancelled and its routes refuse them.
    wait_for("identity makes the owner the member's account owner", PATIENCE, || async {
        let (_, me) = platform.call("GET", "/api/me", &mia.token, None).await;
        (me["account_owner_id"] == owner_id.as_str()).then_some(())
    })
    .await;
    wait_for("billing cancels the member's subscription", PATIENCE, || async {
        (live_subscriptions(&platform, &mia) == 0).then_some(())
    })
    .await;
    let (status, refused) = platform.call("GET", "/api/billing", &mia.token, None).await;
    assert_eq!((status, refused["code"].as_str()), (403, Some("owner_only")), "{refused}");

    // provisioning: one account on the owner's cluster with no project quota of its own, and
    // one place in each of the owner's projects with the invited role, none in another's.
    let placed = platform.wait_assigned(&mia, PATIENCE).await;
    assert_eq!(placed["cluster"]["id"], owners_cluster, "the member is on the owner's cluster: {placed}");
    let mia_account = account_of(&hopsworks.users(), "mia@example.com");
    assert_eq!((mia_account.max_num_projects, mia_account.status), (0, STATUS_ACTIVATED));
    let places = wait_for("the member in each of the owner's projects", PATIENCE, || async {
        let places = places_of(hopsworks, &mia_account.username);
        (places.len() >= owners_projects.len()).then_some(places)
    })
    .await;
    let expected: Vec<(u64, String)> = owners_projects.keys().map(|id| (*id, ROLE.to_owned())).collect();
    assert_eq!(places, expected, "one membership per project of the owner's, with the role, none elsewhere");
    let path = format!("/api/admin/assignments/{}/projects", mia.user_id);
    let view = wait_for("provisioning records each place as added", PATIENCE, || async {
        let (status, view) = platform.call("GET", &path, &platform.admin_token, None).await;
        assert_eq!(status, 200, "{view}");
        let rows = view["projects"].as_array()?;
        rows.iter().all(|r| r["state"] == "added").then_some(view.clone())
    })
    .await;
    assert_eq!(view["team"]["state"], "member", "{view}");
    let rows = view["projects"].as_array().unwrap();
    assert_eq!(rows.len(), owners_projects.len(), "one row per project of the owner's: {view}");
    assert!(rows.iter().all(|r| r["hopsworks_username"] == mia_account.username.as_str()), "{view}");

    // The member runs a notebook in the owner's lab; metering measures it and bills it to the
    // owner.
    let now = platform.world.clock.now();
    cluster.kubernetes.run_pods(vec![notebook(&mia_account.username, lab_project, now - 60)]).unwrap();
    let rows = wait_for("the member's usage in the owner's GET /api/usage", PATIENCE, || async {
        let (status, rows) = platform.call("GET", "/api/usage", &owner.token, None).await;
        assert_eq!(status, 200, "{rows}");
        let theirs: Vec<Value> =
            rows.as_array().unwrap().iter().filter(|r| r["user_id"] == mia.user_id.to_string()).cloned().collect();
        Some(theirs).filter(|t| !t.is_empty())
    })
    .await;
    for row in &rows {
        assert_eq!(
            (row["owner_user_id"].as_str(), row["namespace"].as_str()),
            (Some(owner_id.as_str()), Some(LAB_NAMESPACE)),
            "{row}"
        );
    }
    let samples = platform.samples_today(&mia).await;
    let secs = i64::from(WINDOW);
    let cpu = i64::try_from(LAB_NOTEBOOK_CPU_NANOCORES).unwrap() * secs;
    let memory = i64::try_from(LAB_NOTEBOOK_MEMORY_BYTES).unwrap() * secs;
    // A window is billed to whose the member was at its start: one begun before the join
    // (the pods seen at its measurement) to themselves, every later one to the owner.
    let joined_at = time(&membership["joined_at"]);
    let mia_id = mia.user_id.to_string();
    let mut billed_to_owner = 0;
    for s in &samples {
        let got = |k: &str| s[k].as_i64().unwrap();
        assert_eq!((got("cpu_nanocore_seconds"), got("memory_byte_seconds"), got("pods")), (cpu, memory, 1), "{s}");
        let whose = if time(&s["window_start"]) >= joined_at { &owner_id } else { &mia_id };
        assert_eq!(
            (s["owner_user_id"].as_str(), s["namespace"].as_str()),
            (Some(whose.as_str()), Some(LAB_NAMESPACE)),
            "{s}"
        );
        assert_eq!(s["hopsworks_username"], mia_account.username.as_str(), "{s}");
        billed_to_owner += usize::from(*whose == owner_id);
    }
    assert!(billed_to_owner > 0, "{samples:?}");

    // The owner's team view: the member, their account and their usage this month.
    let member = wait_for("the member's usage in the owner's team view", PATIENCE, || async {
        let (status, team) = platform.call("GET", "/api/team", &owner.token, None).await;
        assert_eq!(status, 200, "{team}");
        let member = team["members"].get(0).cloned()?;
        let hours: f64 = member["usage_this_month"]["cpu_core_hours"].as_str()?.parse().ok()?;
        (hours > 0.0).then_some(member)
    })
    .await;
    assert_eq!(member["user_id"], mia.user_id.to_string(), "{member}");
    assert_eq!(member["project_role"], ROLE, "{member}");
    assert_eq!(
        (member["hopsworks_account"]["state"].as_str(), member["hopsworks_account"]["hopsworks_username"].as_str()),
        (Some("assigned"), Some(mia_account.username.as_str())),
        "{member}"
    );
    assert_eq!(member["hopsworks_account"]["cluster_id"], owners_cluster, "{member}");

    // The owner removes the member.
    let (status, ended) =
        platform.call("DELETE", &format!("/api/team/members/{}", mia.user_id), &owner.token, None).await;
    assert_eq!(status, 200, "{ended}");
    let removed_at = time(&ended["removed_at"]);

    // Hopsworks: out of each of the owner's projects (and the admin key's user, added for the
    // removal, out again), the account deactivated.
    let only_the_owner: Vec<(u64, String)> =
        owners_projects.keys().map(|id| (*id, OWNER_USERNAME.to_owned())).collect();
    wait_for("the owner's projects with their owner alone again", PATIENCE, || async {
        let members: Vec<(u64, String)> = hopsworks
            .memberships()
            .into_iter()
            .filter(|m| owners_projects.contains_key(&m.project_id))
            .map(|m| (m.project_id, m.username))
            .collect();
        (members == only_the_owner).then_some(())
    })
    .await;
    assert_eq!(places_of(hopsworks, &mia_account.username), [], "the member is in no project");
    wait_for("the member's account deactivated", PATIENCE, || async {
        (account_of(&hopsworks.users(), "mia@example.com").status == STATUS_DEACTIVATED).then_some(())
    })
    .await;

    // They are an owner again: identity names them their own account owner, billing opens a
    // subscription and answers them, and they have no cluster until they add a card.
    wait_for("identity makes the former member their own owner", PATIENCE, || async {
        let (_, me) = platform.call("GET", "/api/me", &mia.token, None).await;
        (me["account_owner_id"] == mia.user_id.to_string()).then_some(())
    })
    .await;
    wait_for("billing opens the former member a subscription", PATIENCE, || async {
        (live_subscriptions(&platform, &mia) == 1).then_some(())
    })
    .await;
    let (status, billing) = platform.call("GET", "/api/billing", &mia.token, None).await;
    assert_eq!(status, 200, "{billing}");
    wait_for("the former member has no cluster", PATIENCE, || async {
        (platform.call("GET", "/api/cluster", &mia.token, None).await.0 == 404).then_some(())
    })
    .await;
    let (status, team) = platform.call("GET", "/api/team", &owner.token, None).await;
    assert_eq!((status, team["members"].clone()), (200, json!([])), "{team}");

    // Their pods, still running in the owner's lab, are no longer a member's work: every window
    // from the removal on is billed to the project's owner as a pod of someone not on the
    // project (`not_member`, decision 0040), never as the member's.
    let counts = wait_for("windows measured after the removal", PATIENCE, || async {
        let counts = after_removal(&platform, &mia_account.username, removed_at, &owner).await;
        (counts.measured >= 2).then_some(counts)
    })
    .await;
    assert_eq!(counts.as_member, 0, "no window from the removal on is a member's: {counts:?}");
    assert_eq!(counts.not_member, counts.measured, "every such window is the owner's as not_member: {counts:?}");

    // Once each: one join and one removal announced, one invitation mail, one subscription
    // cancelled and one opened again, one Hopsworks account.
    assert_eq!(platform.published::<TeamMemberJoinedV1>().await, 1, "TeamMemberJoinedV1 on the stream");
    assert_eq!(platform.published::<TeamMemberRemovedV1>().await, 1, "TeamMemberRemovedV1 on the stream");
    assert_eq!(platform.world.mail.messages_to("mia@example.com").len(), 1, "one invitation mail");
    let (live, cancelled) = subscriptions(&platform, &mia);
    assert_eq!(
        (live, cancelled),
        (1, 1),
        "the member's subscriptions: one cancelled on joining, one opened on leaving"
    );
    assert_eq!(subscriptions(&platform, &owner), (1, 0), "the owner's subscription is untouched");
    let accounts = hopsworks.users().into_iter().filter(|u| u.email.eq_ignore_ascii_case("mia@example.com")).count();
    assert_eq!(accounts, 1, "one Hopsworks account for the member");
}

#[derive(Debug, QueryableByName)]
struct AfterRemoval {
    #[diesel(sql_type = BigInt)]
    measured: i64,
    #[diesel(sql_type = BigInt)]
    as_member: i64,
    #[diesel(sql_type = BigInt)]
    not_member: i64,
}

/// metering's samples of `username`'s pods in windows from `removed_at` on: how many, how many
/// are attributed to them as a member, and how many are billed to `owner` as `not_member`.
async fn after_removal(
    platform: &Platform,
    username: &str,
    removed_at: chrono::DateTime<chrono::Utc>,
    owner: &Person,
) -> AfterRemoval {
    let mut conn = platform.db.connect("metering").await;
    diesel::sql_query(
        "SELECT count(*) AS measured,
                count(*) FILTER (WHERE attribution = 'attributed') AS as_member,
                count(*) FILTER (WHERE attribution = 'not_member' AND owner_user_id = $3) AS not_member
         FROM samples WHERE hopsworks_username = $1 AND window_start >= $2",
    )
    .bind::<Text, _>(username)
    .bind::<Timestamptz, _>(removed_at)
    .bind::<diesel::sql_types::Uuid, _>(owner.user_id)
    .get_result(&mut conn)
    .await
    .unwrap()
}

fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value.as_str().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("not a time: {value}"))
}

/// The one Hopsworks account with `email`.
fn account_of(users: &[User], email: &str) -> User {
    let theirs: Vec<&User> = users.iter().filter(|u| u.email.eq_ignore_ascii_case(email)).collect();
    assert_eq!(theirs.len(), 1, "Hopsworks accounts of {email}: {theirs:?}");
    theirs[0].clone()
}

/// Each project `username` is a member of, with their role, by project id.
fn places_of(hopsworks: &hopsbridge_sandbox::hopsworks::HopsworksSim, username: &str) -> Vec<(u64, String)> {
    let mut places: Vec<(u64, String)> = hopsworks
        .memberships()
        .into_iter()
        .filter(|m| m.username == username)
        .map(|m| (m.project_id, m.role))
        .collect();
    places.sort();
    places
}

/// The person's Stripe subscriptions: (not cancelled, cancelled).
fn subscriptions(platform: &Platform, person: &Person) -> (usize, usize) {
    let id = person.user_id.to_string();
    let customers: Vec<Value> = platform
        .world
        .stripe
        .customers()
        .into_iter()
        .filter(|c| c["metadata"]["hopsbridge_user_id"] == id.as_str())
        .collect();
    assert_eq!(customers.len(), 1, "one Stripe customer for {}", person.auth0.email);
    let theirs: Vec<Value> =
        platform.world.stripe.subscriptions().into_iter().filter(|s| s["customer"] == customers[0]["id"]).collect();
    let cancelled = theirs.iter().filter(|s| s["status"] == "canceled").count();
    (theirs.len() - cancelled, cancelled)
}

fn live_subscriptions(platform: &Platform, person: &Person) -> usize {
    subscriptions(platform, person).0
}

/// The member's notebook in the owner's lab, labelled with the member's Hopsworks username
/// as Hopsworks labels a user's pods, running since `since` (the sandbox clock's time): the
/// notebook of a lab, moved into the owner's project.
fn notebook(username: &str, project_id: u64, since: i64) -> SimPod {
    let mut pod = lab_pods(username, since).into_iter().find(|p| p.name.starts_with("notebook")).unwrap();
    pod.namespace = LAB_NAMESPACE.to_owned();
    pod.uid = format!("uid-{LAB_NAMESPACE}-{}", pod.name);
    pod.labels.insert("project-id".to_owned(), project_id.to_string());
    pod
}
