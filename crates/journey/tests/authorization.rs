//! The authorisation matrix: every public route × {anonymous, another user, the owner, a team
//! member, an admin}, through the gateway, against every service running as its own process.
//! New routes join the table as they are added. The member is made through the team API (an
//! invitation accepted), and a refused call to a team route must leave team's state as it was.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use hopsbridge_journey::{Options, Person, Platform, binaries, wait_for};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// How long an effect may take on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(120);
const ROLE: &str = "Data scientist";

/// (method, path, body, expected status for Anonymous, AnotherUser, Owner, Member, Admin)
type Row = (&'static str, String, Option<Value>, [u16; 5]);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Who {
    Anonymous,
    AnotherUser,
    Owner,
    Member,
    Admin,
}

const EVERYONE: [Who; 5] = [Who::Anonymous, Who::AnotherUser, Who::Owner, Who::Member, Who::Admin];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_kind_of_caller_as_it_should() {
    // metering's windows are short enough that the last one to end is always within its
    // deadline, so the admin's collect-now has a window to measure whenever the test runs.
    let platform = Platform::start(binaries!(), &Options { metering_window_secs: 30, ..Options::default() }).await;
    let mut people: HashMap<Who, Person> = HashMap::new();
    for (who, handle) in
        [(Who::AnotherUser, "another"), (Who::Owner, "owner"), (Who::Member, "member"), (Who::Admin, "admin")]
    {
        let person = platform.sign_up(handle).await;
        platform.wait_billing_account(&person, PATIENCE).await;
        if who == Who::Owner {
            // The owner has a card and a cluster.
            platform.add_card(&person).await;
            platform.wait_assigned(&person, PATIENCE).await;
        }
        people.insert(who, person);
    }
    let tokens: HashMap<Who, String> = people.iter().map(|(who, p)| (*who, p.token.clone())).collect();
    let ids: HashMap<Who, String> = people.iter().map(|(who, p)| (*who, p.user_id.to_string())).collect();
    // "target", whom no one else is, is the object of admin actions.
    let target = platform.sign_up("target").await.user_id.to_string();
    let mut conn = platform.db.connect("identity").await;
    diesel::sql_query(format!("UPDATE users SET is_admin = true WHERE id = '{}'", ids[&Who::Admin]))
        .execute(&mut conn)
        .await
        .unwrap();

    // The team, through the team API: another user's invitation to the member (still pending
    // when the member has joined), the owner's to the member, accepted, and to "mate", a second
    // member for the owner to remove; a pending invitation of the owner's to resend and cancel.
    let foreign = platform.invite(&people[&Who::AnotherUser], "member@example.com", ROLE).await;
    let invitation = platform.invite(&people[&Who::Owner], "member@example.com", ROLE).await;
    platform.join(&people[&Who::Member], &invitation.token).await;
    let mate = platform.sign_up("mate").await;
    let invitation = platform.invite(&people[&Who::Owner], "mate@example.com", ROLE).await;
    platform.join(&mate, &invitation.token).await;
    let pending = platform.invite(&people[&Who::Owner], "pending@example.com", ROLE).await.id;
    // The member's places follow: identity names the owner their account owner, billing
    // refuses them, provisioning puts them on the owner's cluster.
    wait_owner(&platform, &people[&Who::Member], &ids[&Who::Owner]).await;
    wait_for("billing refuses the member", PATIENCE, || async {
        (platform.call("GET", "/api/billing", &tokens[&Who::Member], None).await.0 == 403).then_some(())
    })
    .await;
    platform.wait_assigned(&people[&Who::Member], PATIENCE).await;
    // A mail team has sent, for the admin's retry of it.
    let sent_mail = wait_for("a sent team mail", PATIENCE, || async {
        let (_, page) = platform.call("GET", "/api/admin/mail/team?status=sent", &platform.admin_token, None).await;
        page["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let member = ids[&Who::Member].clone();
    let mate = mate.user_id;
    let (_, preview) = platform.call_as("GET", &format!("/api/invitations/{}", foreign.token), None, None).await;
    let terms = json!({"accept_terms": true, "terms_version": preview["terms_version"]});
    let (foreign, unknown) = (foreign.token, "A".repeat(43));
    let nowhere = uuid::Uuid::now_v7();
    let owner = ids[&Who::Owner].clone();
    let today = chrono::Utc::now().date_naive();
    let (cluster, other_cluster) = (platform.cluster_ids[0], platform.cluster_ids[1]);
    let new_cluster = |name: &str| {
        let c = &platform.world.clusters[0];
        json!({
            "name": name, "api_url": c.hopsworks.origin(), "api_key": "key", "kubeconfig": c.kubernetes.kubeconfig(),
            "ca_bundle": c.hopsworks.ca_pem(), "oauth_client_id": "client", "capacity": 1, "region": "eu", "status": "inactive",
        })
    };

    let mut table: Vec<Row> = vec![
        ("GET", "/api/auth/caller".into(), None, [401, 200, 200, 200, 200]),
        // identity
        ("GET", "/api/me".into(), None, [401, 200, 200, 200, 200]),
        ("PATCH", "/api/me".into(), Some(json!({"name": "Renamed"})), [401, 200, 200, 200, 200]),
        ("GET", "/api/admin/users".into(), None, [401, 403, 403, 403, 200]),
        ("GET", format!("/api/admin/users/{owner}"), None, [401, 403, 403, 403, 200]),
        (
            "POST",
            format!("/api/admin/users/{target}/suspend"),
            Some(json!({"reason": "test"})),
            [401, 403, 403, 403, 200],
        ),
        ("POST", format!("/api/admin/users/{target}/reactivate"), None, [401, 403, 403, 403, 200]),
        ("PUT", format!("/api/admin/users/{target}/admin"), None, [401, 403, 403, 403, 200]),
        ("DELETE", format!("/api/admin/users/{target}/admin"), None, [401, 403, 403, 403, 200]),
        // billing: owners only (every person who is not a member owns an account, admins too)
        ("GET", "/api/billing".into(), None, [401, 200, 200, 403, 200]),
        ("POST", "/api/billing/payment-method".into(), None, [401, 200, 200, 403, 200]),
        ("POST", "/api/billing/portal".into(), None, [401, 200, 200, 403, 200]),
        // provisioning: a person sees only their own cluster; the registry is for admins
        ("GET", "/api/cluster".into(), None, [401, 404, 200, 200, 404]),
        ("GET", "/api/admin/clusters".into(), None, [401, 403, 403, 403, 200]),
        ("POST", "/api/admin/clusters".into(), Some(new_cluster("matrix")), [401, 403, 403, 403, 201]),
        ("GET", format!("/api/admin/clusters/{cluster}"), None, [401, 403, 403, 403, 200]),
        ("PATCH", format!("/api/admin/clusters/{cluster}"), Some(json!({"capacity": 60})), [401, 403, 403, 403, 200]),
        ("GET", "/api/admin/assignments".into(), None, [401, 403, 403, 403, 200]),
        ("GET", format!("/api/admin/assignments/{owner}"), None, [401, 403, 403, 403, 200]),
        ("GET", format!("/api/admin/assignments/{member}/projects"), None, [401, 403, 403, 403, 200]),
        (
            "PUT",
            format!("/api/admin/assignments/{owner}"),
            Some(json!({"cluster_id": other_cluster})),
            [401, 403, 403, 403, 200],
        ),
        ("DELETE", format!("/api/admin/assignments/{owner}"), None, [401, 403, 403, 403, 200]),
        // metering: a person sees their own usage (an owner their team's too); the rest is for admins
        ("GET", "/api/usage".into(), None, [401, 200, 200, 200, 200]),
        ("GET", format!("/api/usage?from={today}&to={today}"), None, [401, 200, 200, 200, 200]),
        ("GET", format!("/api/admin/usage?owner_user_id={owner}"), None, [401, 403, 403, 403, 200]),
        ("GET", format!("/api/admin/usage/samples?user_id={owner}&day={today}"), None, [401, 403, 403, 403, 200]),
        ("GET", format!("/api/admin/metering/runs?cluster_id={cluster}"), None, [401, 403, 403, 403, 200]),
        ("GET", "/api/admin/metering/gaps".into(), None, [401, 403, 403, 403, 200]),
        ("POST", format!("/api/admin/metering/clusters/{cluster}/collect"), None, [401, 403, 403, 403, 202]),
        // team: owners manage their team, and a member is refused every owner route; the
        // preview is public; accepting is for the invited address alone
        ("GET", "/api/team".into(), None, [401, 200, 200, 403, 200]),
        ("GET", "/api/team/invitations".into(), None, [401, 200, 200, 403, 200]),
        (
            "POST",
            "/api/team/invitations".into(),
            Some(json!({"email": "newcomer@example.com", "project_role": ROLE})),
            [401, 201, 201, 403, 201],
        ),
        ("POST", format!("/api/team/invitations/{pending}/resend"), None, [401, 404, 200, 403, 404]),
        ("DELETE", format!("/api/team/invitations/{pending}"), None, [401, 404, 200, 403, 404]),
        ("GET", "/api/team/membership".into(), None, [401, 404, 404, 200, 404]),
        ("GET", format!("/api/invitations/{foreign}"), None, [200, 200, 200, 200, 200]),
        ("GET", format!("/api/invitations/{unknown}"), None, [404, 404, 404, 404, 404]),
        ("POST", format!("/api/invitations/{foreign}/accept"), Some(terms.clone()), [401, 403, 403, 409, 403]),
        ("POST", format!("/api/invitations/{unknown}/accept"), Some(terms), [401, 404, 404, 404, 404]),
        ("DELETE", format!("/api/team/members/{mate}"), None, [401, 404, 200, 403, 404]),
        // each service's mail, for admins
        ("POST", format!("/api/admin/mail/team/{sent_mail}/retry"), None, [401, 403, 403, 403, 409]),
    ];
    for service in ["identity", "team", "billing", "provisioning", "metering"] {
        table.push(("GET", format!("/api/admin/mail/{service}"), None, [401, 403, 403, 403, 200]));
        table.push(("POST", format!("/api/admin/mail/{service}/{nowhere}/retry"), None, [401, 403, 403, 403, 404]));
    }
    let matrix = Matrix { platform: &platform, tokens, sent_mail };
    let mut mismatches = matrix.check(&table).await;

    // The member leaves, and joins again through a new invitation.
    mismatches.extend(matrix.check(&[("POST", "/api/team/leave".into(), None, [401, 404, 404, 200, 404])]).await);
    wait_owner(&platform, &people[&Who::Member], &member).await;
    let again = platform.invite(&people[&Who::Owner], "member@example.com", ROLE).await;
    platform.join(&people[&Who::Member], &again.token).await;
    wait_owner(&platform, &people[&Who::Member], &ids[&Who::Owner]).await;

    // Deleting an account: a member cannot, an owner with members cannot; run last.
    mismatches.extend(matrix.check(&[("DELETE", "/api/me".into(), None, [401, 200, 409, 409, 200])]).await);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));

    // What the refusals left: the member invited no one, and the newcomer has the three
    // invitations (and mails) of those allowed to invite.
    let count = |sql: String| async {
        let mut conn = platform.db.connect("team").await;
        diesel::sql_query(sql).get_result::<N>(&mut conn).await.unwrap().n
    };
    let invited_by_member = count(format!("SELECT count(*) AS n FROM invitations WHERE owner_user_id = '{member}'"));
    assert_eq!(invited_by_member.await, 0, "the member invited no one");
    let newcomer = count("SELECT count(*) AS n FROM invitations WHERE email = 'newcomer@example.com'".to_owned());
    assert_eq!(newcomer.await, 3, "another user, the owner and the admin invited the newcomer");
    let mails = |to: &str| platform.world.mail.messages_to(to).len();
    wait_for("the newcomer's and the resent mails", PATIENCE, || async {
        (mails("newcomer@example.com") >= 3 && mails("pending@example.com") >= 2).then_some(())
    })
    .await;
    assert_eq!(mails("newcomer@example.com"), 3, "one mail per invitation");
    assert_eq!(mails("pending@example.com"), 2, "the first mail and the owner's resend alone");
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = Text)]
    v: String,
}

/// Waits until identity names `owner` as `person`'s account owner.
async fn wait_owner(platform: &Platform, person: &Person, owner: &str) {
    wait_for(&format!("identity names {owner} {}'s account owner", person.auth0.email), PATIENCE, || async {
        let (_, me) = platform.call("GET", "/api/me", &person.token, None).await;
        (me["account_owner_id"] == owner).then_some(())
    })
    .await;
}

/// Calls the routes as each kind of caller.
struct Matrix<'a> {
    platform: &'a Platform,
    tokens: HashMap<Who, String>,
    /// A team mail already sent.
    sent_mail: String,
}

impl Matrix<'_> {
    /// Each row's route as each kind of caller: answers what did not answer as expected, and
    /// each refused call to one of team's routes that changed team's state.
    async fn check(&self, table: &[Row]) -> Vec<String> {
        let client = reqwest::Client::new();
        let mut mismatches = Vec::new();
        for (method, path, body, expected) in table {
            let teams = ["/api/team", "/api/invitations", "/api/admin/mail/team"].iter().any(|p| path.starts_with(p));
            for (who, want) in EVERYONE.iter().zip(expected) {
                let mut request = client.request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", self.platform.gateway),
                );
                if let Some(token) = self.tokens.get(who) {
                    request = request.bearer_auth(token);
                }
                if let Some(body) = body {
                    request = request.json(body);
                }
                let before = if teams { Some(self.team_state().await) } else { None };
                let response = request.send().await.unwrap();
                let got = response.status().as_u16();
                if got != *want {
                    let answer = response.text().await.unwrap_or_default();
                    mismatches.push(format!("{method} {path} as {who:?}: {got}, expected {want} ({answer})"));
                }
                if let Some(before) = before {
                    let changed = self.team_state().await != before;
                    if got >= 400 && changed {
                        mismatches
                            .push(format!("{method} {path} as {who:?} was refused ({got}) but changed team's state"));
                    }
                    // What shows a refusal changed nothing shows each change made.
                    if got < 300 && *method != "GET" && !changed {
                        mismatches.push(format!("{method} {path} as {who:?} answered {got} but changed nothing"));
                    }
                }
            }
        }
        mismatches
    }

    /// What team's routes change: invitations, memberships, the mails and events written, and
    /// the sent mail's delivery record.
    async fn team_state(&self) -> String {
        let mut conn = self.platform.db.connect("team").await;
        let snapshot: Snapshot = diesel::sql_query(
            "SELECT concat_ws(' | ',
                (SELECT string_agg(concat_ws(',', id, status, sends, md5(token_hash), expires_at, closed_at), ';' ORDER BY id)
                 FROM invitations),
                (SELECT string_agg(concat_ws(',', id, removed_at), ';' ORDER BY id) FROM memberships),
                (SELECT count(*) FROM mail_outbox),
                (SELECT concat_ws(',', attempts, next_attempt_at, sent_at) FROM mail_outbox WHERE id = $1::uuid),
                (SELECT count(*) FROM outbox)) AS v",
        )
        .bind::<Text, _>(&self.sent_mail)
        .get_result(&mut conn)
        .await
        .unwrap();
        snapshot.v
    }
}
