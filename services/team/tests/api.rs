//! team's API end to end, in process, against the real Postgres and NATS and the sandbox's mail
//! catcher: invitations mailed, previewed, accepted, resent, cancelled and replaced; members
//! removed and leaving; what is refused changes nothing; every event goes out once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{TERMS, start, terms};
use hopsbridge_contracts::events::{
    ClusterAssignedV1, ClusterUnassignedV1, TeamMemberJoinedV1, TeamMemberRemovedV1, UsageRecordedV1, UserDeletedV1,
    UserReactivatedV1, UserSuspendedV1,
};
use hopsbridge_platform::caller::Caller;
use hopsbridge_testkit::{TcpProxy, eventually};
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

fn id(caller: &Caller) -> String {
    caller.user_id.unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_is_mailed_previewed_accepted_and_announced_once() {
    let team = start().await;
    let ada = team.person("Ada Lovelace", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;

    let body = json!({"email": "  Grace@Example.COM ", "project_role": "Data scientist"});
    let (status, answer) = team.call(Method::POST, "/api/team/invitations", Some(&ada), Some(body)).await;
    assert_eq!(status, 201, "{answer}");
    let sent = common::sent(&answer);
    assert_eq!(sent.token.len(), 43, "{}", sent.link);
    assert_eq!(answer["invitation"]["email"], "grace@example.com", "the address is normalised");
    assert_eq!(answer["invitation"]["status"], "pending");
    assert_eq!(answer["invitation"]["sends"], 1);
    assert_eq!(
        team.count(&format!(
            "SELECT count(*) AS n FROM invitations WHERE token_hash = sha256('{}'::bytea)",
            sent.token
        ))
        .await,
        1,
        "only the token's SHA-256 is stored"
    );

    let mails = team.mails_to("grace@example.com", 1).await;
    let mail = &mails[0];
    assert_eq!(mail.subject, "Ada Lovelace invited you to their team on Hopsbridge");
    assert!(mail.text.contains(&sent.link), "{}", mail.text);
    assert!(mail.html.contains(&format!("href=\"{}\"", sent.link)), "{}", mail.html);
    assert!(mail.text.contains("as Data scientist"), "{}", mail.text);

    let (status, preview) = team.preview(&sent.token).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["invited_by"]["name"], "Ada Lovelace");
    assert_eq!(preview["invited_by"]["email"], "ada@example.com");
    assert_eq!(preview["email"], "grace@example.com");
    assert_eq!(preview["project_role"], "Data scientist");
    assert_eq!(preview["terms_version"], TERMS);
    assert_eq!(preview["expires_at"], answer["invitation"]["expires_at"]);

    // Grace signs in with her address in another case: it matches.
    let mut grace_upper = grace.clone();
    grace_upper.email = Some(hopsbridge_domain::Email::parse("GRACE@example.com").unwrap());
    let (status, membership) = team.accept(&grace_upper, &sent.token).await;
    assert_eq!(status, 200, "{membership}");
    assert_eq!(membership["owner_user_id"], id(&ada));
    assert_eq!(membership["member_user_id"], id(&grace));
    assert_eq!(membership["project_role"], "Data scientist");
    assert_eq!(membership["terms_version"], TERMS);

    team.published_exactly::<TeamMemberJoinedV1>(1).await;
    let joined = team.payloads::<TeamMemberJoinedV1>().await;
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0].owner_user_id, id(&ada));
    assert_eq!(joined[0].member_user_id, id(&grace));
    assert_eq!(joined[0].project_role, "Data scientist");
    assert_eq!(joined[0].membership_id, membership["id"].as_str().unwrap());
    let joined_at = chrono::DateTime::parse_from_rfc3339(membership["joined_at"].as_str().unwrap()).unwrap();
    assert_eq!(joined[0].joined_at_unix_micros, joined_at.timestamp_micros());

    // The link is used: it shows nothing now, and a second tab is told Grace is in a team.
    assert_eq!(team.preview(&sent.token).await.0, 404);
    let (status, again) = team.accept(&grace, &sent.token).await;
    assert_eq!((status.as_u16(), again["code"].as_str()), (409, Some("already_in_team")), "{again}");

    let (status, mine) = team.call(Method::GET, "/api/team/membership", Some(&grace), None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["owner_user_id"], id(&ada));
    assert_eq!(mine["owner_name"], "Ada Lovelace");
    assert_eq!(mine["project_role"], "Data scientist");
    assert_eq!(mine["joined_at"], membership["joined_at"]);

    // Provisioning gives Grace an account on Ada's cluster; metering records her usage.
    let cluster = uuid::Uuid::now_v7().to_string();
    let assigned = ClusterAssignedV1 {
        user_id: id(&grace),
        cluster_id: cluster.clone(),
        hopsworks_username: "grace001".into(),
        hopsworks_user_id: 7,
    };
    team.bus.publish(&assigned, None).await;
    // Two windows of this month (the first 15 minutes of a month would push one out).
    let now = chrono::Utc::now();
    let month_start = hopsbridge_team::usage::month_of(now).and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp();
    let now = now.timestamp().max(month_start + 1800);
    for window in 0..2_i64 {
        let usage = UsageRecordedV1 {
            sample_id: uuid::Uuid::now_v7().to_string(),
            cluster_id: cluster.clone(),
            user_id: id(&grace),
            owner_user_id: id(&ada),
            window_start_unix_seconds: now - 900 * (window + 1),
            window_end_unix_seconds: now - 900 * window,
            // 250 millicores, 1 GiB and one GPU for 900 s.
            cpu_nanocore_seconds: 250_000_000 * 900,
            memory_byte_seconds: (1 << 30) * 900,
            gpu_seconds: 900,
            ..Default::default()
        };
        team.bus.publish(&usage, None).await;
    }
    let seen = eventually(Duration::from_secs(20), || async {
        team.count("SELECT count(*) AS n FROM usage_monthly WHERE samples = 2").await == 1
            && team.count("SELECT count(*) AS n FROM accounts WHERE assigned").await == 1
    })
    .await;
    assert!(seen, "the account and both samples were consumed");

    let (status, view) = team.call(Method::GET, "/api/team", Some(&ada), None).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["owner_user_id"], id(&ada));
    let members = view["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{view}");
    let m = &members[0];
    assert_eq!(m["user_id"], id(&grace));
    assert_eq!(m["email"], "grace@example.com");
    assert_eq!(m["name"], "Grace");
    assert_eq!(m["project_role"], "Data scientist");
    assert_eq!(m["joined_at"], membership["joined_at"]);
    assert_eq!(m["account_status"], "active");
    assert_eq!(m["hopsworks_account"]["state"], "assigned");
    assert_eq!(m["hopsworks_account"]["cluster_id"], cluster);
    assert_eq!(m["hopsworks_account"]["hopsworks_username"], "grace001");
    let usage = &m["usage_this_month"];
    assert_eq!(
        (usage["cpu_core_hours"].as_str(), usage["memory_gib_hours"].as_str(), usage["gpu_hours"].as_str()),
        (Some("0.125"), Some("0.5"), Some("0.5")),
        "{usage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tabs_accepting_at_once_make_one_member_and_one_event() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let sent = team.invite(&ada, "grace@example.com", "Data owner").await;

    let tabs: Vec<_> = (0..6).map(|_| team.accept(&grace, &sent.token)).collect();
    let answers = futures::future::join_all(tabs).await;
    let joined = answers.iter().filter(|(s, _)| s.as_u16() == 200).count();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| s.as_u16() != 200).collect();
    assert_eq!(joined, 1, "{answers:?}");
    for (status, body) in refused {
        assert_eq!((status.as_u16(), body["code"].as_str()), (409, Some("already_in_team")), "{body}");
    }
    assert_eq!(team.count("SELECT count(*) AS n FROM memberships").await, 1);
    assert_eq!(team.count("SELECT count(*) AS n FROM outbox WHERE event_type = 'TeamMemberJoined'").await, 1);
    team.published_exactly::<TeamMemberJoinedV1>(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_stopped_between_the_claim_and_the_publish_makes_one_member_and_one_event() {
    let nats = hopsbridge_testkit::nats_url();
    let link = TcpProxy::start(nats.trim_start_matches("nats://")).await;
    let mut team = common::start_on(&format!("nats://{}", link.addr())).await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let sent = team.invite(&ada, "grace@example.com", "Data owner").await;

    // NATS is out of team's reach: the claim commits, its event waits in the outbox, and team
    // stops before it can publish.
    link.cut();
    let (status, membership) = team.accept(&grace, &sent.token).await;
    assert_eq!(status, 200, "{membership}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(team.published::<TeamMemberJoinedV1>().await, 0);
    team.restart(&nats).await;

    team.published_exactly::<TeamMemberJoinedV1>(1).await;
    let joined = team.payloads::<TeamMemberJoinedV1>().await;
    assert_eq!(joined[0].membership_id, membership["id"].as_str().unwrap());
    assert_eq!(team.count("SELECT count(*) AS n FROM memberships").await, 1);
    let (status, again) = team.accept(&grace, &sent.token).await;
    assert_eq!((status.as_u16(), again["code"].as_str()), (409, Some("already_in_team")));
    team.published_exactly::<TeamMemberJoinedV1>(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_used_unknown_and_foreign_tokens_and_a_mismatched_email_are_refused_and_change_nothing() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let eve = team.person("Eve", "eve@example.com").await;
    let alan = team.person("Alan", "alan@example.com").await;

    let expired = team.invite(&ada, "grace@example.com", "Data owner").await;
    team.sql(&format!("UPDATE invitations SET expires_at = now() - interval '1 second' WHERE id = '{}'", expired.id))
        .await;
    let used = team.invite(&ada, "alan@example.com", "Data owner").await;
    assert_eq!(team.accept(&alan, &used.token).await.0, 200);
    let foreign = team.invite(&eve, "grace@example.com", "Data scientist").await;
    team.published_exactly::<TeamMemberJoinedV1>(1).await;
    let before = team.snapshot().await;

    let unknown = "A".repeat(43);
    let refusals = [
        ("expired preview", team.preview(&expired.token).await, 410, "invitation_expired"),
        ("expired accept", team.accept(&grace, &expired.token).await, 410, "invitation_expired"),
        ("used preview", team.preview(&used.token).await, 404, "invitation_not_found"),
        ("used accept", team.accept(&grace, &used.token).await, 404, "invitation_not_found"),
        ("unknown preview", team.preview(&unknown).await, 404, "invitation_not_found"),
        ("unknown accept", team.accept(&grace, &unknown).await, 404, "invitation_not_found"),
        ("garbage preview", team.preview("not-a-token").await, 404, "invitation_not_found"),
        // Eve's invitation is Grace's: nobody else may take it, the inviting owner included.
        ("foreign token", team.accept(&ada, &foreign.token).await, 403, "email_mismatch"),
        ("the owner's own invitation", team.accept(&eve, &foreign.token).await, 403, "email_mismatch"),
        (
            "terms refused",
            team.call(
                Method::POST,
                &format!("/api/invitations/{}/accept", foreign.token),
                Some(&grace),
                Some(json!({"accept_terms": false, "terms_version": TERMS})),
            )
            .await,
            400,
            "terms_not_accepted",
        ),
        (
            "old terms",
            team.call(
                Method::POST,
                &format!("/api/invitations/{}/accept", foreign.token),
                Some(&grace),
                Some(json!({"accept_terms": true, "terms_version": "2020-01-01"})),
            )
            .await,
            400,
            "terms_not_accepted",
        ),
        (
            "no terms",
            team.call(
                Method::POST,
                &format!("/api/invitations/{}/accept", foreign.token),
                Some(&grace),
                Some(json!({})),
            )
            .await,
            400,
            "invalid_body",
        ),
        (
            "not signed in",
            team.call(Method::POST, &format!("/api/invitations/{}/accept", foreign.token), None, Some(terms())).await,
            401,
            "unauthenticated",
        ),
    ];
    for (what, (status, body), want, code) in refusals {
        assert_eq!((status.as_u16(), body["code"].as_str()), (want, Some(code)), "{what}: {body}");
    }
    assert_eq!(team.snapshot().await, before, "nothing changed");
    team.published_exactly::<TeamMemberJoinedV1>(1).await;

    // The right person with the current terms still can.
    assert_eq!(team.accept(&grace, &foreign.token).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_refused_every_owner_route_and_nothing_changes() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let alan = team.person("Alan", "alan@example.com").await;
    team.join(&ada, &grace, "Data scientist").await;
    team.join(&ada, &alan, "Data scientist").await;
    let pending = team.invite(&ada, "lin@example.com", "Data owner").await;
    for address in ["grace@example.com", "alan@example.com", "lin@example.com"] {
        team.mails_to(address, 1).await;
    }
    let before = team.snapshot().await;

    // The gateway's role header says owner (a stale cache, say): team decides from its own
    // memberships.
    let attempts = [
        (
            Method::POST,
            "/api/team/invitations".to_owned(),
            Some(json!({"email": "eve@example.com", "project_role": "Data owner"})),
        ),
        (Method::GET, "/api/team/invitations".to_owned(), None),
        (Method::POST, format!("/api/team/invitations/{}/resend", pending.id), None),
        (Method::DELETE, format!("/api/team/invitations/{}", pending.id), None),
        (Method::GET, "/api/team".to_owned(), None),
        (Method::DELETE, format!("/api/team/members/{}", id(&alan)), None),
    ];
    for (method, path, body) in attempts {
        let (status, answer) = team.call(method.clone(), &path, Some(&grace), body).await;
        assert_eq!((status.as_u16(), answer["code"].as_str()), (403, Some("owner_only")), "{method} {path}: {answer}");
    }
    assert_eq!(team.snapshot().await, before, "nothing changed");
    assert_eq!(team.preview(&pending.token).await.0, 200, "Ada's invitation still works");
    assert_eq!(team.mail.messages().len(), 3, "no mail went out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_makes_a_new_link_and_a_cancel_ends_it() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let first = team.invite(&ada, "grace@example.com", "Data owner").await;
    team.mails_to("grace@example.com", 1).await;
    // An expired invitation can be resent: it gets a new expiry.
    team.sql(&format!("UPDATE invitations SET expires_at = now() - interval '1 hour' WHERE id = '{}'", first.id)).await;

    let path = format!("/api/team/invitations/{}/resend", first.id);
    let (status, answer) = team.call(Method::POST, &path, Some(&ada), None).await;
    assert_eq!(status, 200, "{answer}");
    let second = common::sent(&answer);
    assert_eq!(second.id, first.id);
    assert_ne!(second.token, first.token);
    assert_eq!(answer["invitation"]["sends"], 2);
    assert_eq!(team.preview(&first.token).await.0, 404, "the old link stops working");
    assert_eq!(team.preview(&second.token).await.0, 200);
    let mails = team.mails_to("grace@example.com", 2).await;
    assert!(mails[1].text.contains(&second.link), "{}", mails[1].text);
    assert_eq!(team.count("SELECT count(*) AS n FROM mail_outbox WHERE dedup_key LIKE 'team.invitation:%:2'").await, 1);

    let (status, list) = team.call(Method::GET, "/api/team/invitations", Some(&ada), None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert!(list.to_string().find(&second.token).is_none(), "the token is never listed");

    let (status, cancelled) =
        team.call(Method::DELETE, &format!("/api/team/invitations/{}", first.id), Some(&ada), None).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(team.preview(&second.token).await.0, 404);
    let (status, body) = team.accept(&grace, &second.token).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (404, Some("invitation_not_found")));
    let again = team.call(Method::POST, &path, Some(&ada), None).await;
    assert_eq!((again.0.as_u16(), again.1["code"].as_str()), (404, Some("invitation_not_found")));
    let (_, list) = team.call(Method::GET, "/api/team/invitations", Some(&ada), None).await;
    assert_eq!(list, json!([]));
    // Another owner cannot resend or cancel Ada's invitations.
    let other = team.invite(&ada, "lin@example.com", "Data owner").await;
    let eve = team.person("Eve", "eve@example.com").await;
    let stranger = team.call(Method::DELETE, &format!("/api/team/invitations/{}", other.id), Some(&eve), None).await;
    assert_eq!((stranger.0.as_u16(), stranger.1["code"].as_str()), (404, Some("invitation_not_found")));
    assert_eq!(team.preview(&other.token).await.0, 200);
    assert_eq!(team.mail.messages_to("grace@example.com").len(), 2, "a cancel sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_invitation_to_the_same_address_replaces_the_pending_one() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let first = team.invite(&ada, "grace@example.com", "Data owner").await;
    let second = team.invite(&ada, "GRACE@example.com", "Data scientist").await;
    assert_ne!(first.id, second.id);
    assert_eq!(team.preview(&first.token).await.0, 404, "the replaced link stops working");
    assert_eq!(team.text(&format!("SELECT status AS v FROM invitations WHERE id = '{}'", first.id)).await, "replaced");
    // An expired one is replaced too.
    team.sql(&format!("UPDATE invitations SET expires_at = now() - interval '1 hour' WHERE id = '{}'", second.id))
        .await;
    let third = team.invite(&ada, "grace@example.com", "Data scientist").await;
    assert_eq!(team.text(&format!("SELECT status AS v FROM invitations WHERE id = '{}'", second.id)).await, "replaced");
    let (_, list) = team.call(Method::GET, "/api/team/invitations", Some(&ada), None).await;
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [third.id.as_str()]);
    assert_eq!(team.count("SELECT count(*) AS n FROM invitations WHERE status = 'pending'").await, 1);
    // Another owner's invitation to the same address is theirs, and stays.
    let eve = team.person("Eve", "eve@example.com").await;
    let eves = team.invite(&eve, "grace@example.com", "Data owner").await;
    assert_eq!(team.preview(&third.token).await.0, 200);
    assert_eq!(team.preview(&eves.token).await.0, 200);
    assert_eq!(team.mails_to("grace@example.com", 4).await.len(), 4, "each invitation has its mail");
    assert_eq!(team.accept(&grace, &third.token).await.0, 200);
    let (status, body) = team.accept(&grace, &eves.token).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (409, Some("already_in_team")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inviting_oneself_a_member_or_a_member_of_another_team_is_refused_and_changes_nothing() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let eve = team.person("Eve", "eve@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let alan = team.person("Alan", "alan@example.com").await;
    team.join(&ada, &grace, "Data owner").await;
    team.join(&eve, &alan, "Data owner").await;
    let before = team.snapshot().await;
    for (email, code) in [
        ("Ada@Example.com", "cannot_invite_self"),
        ("grace@example.com", "already_member"),
        ("alan@example.com", "member_of_another_team"),
        ("not-an-address", "invalid_email"),
    ] {
        let body = json!({"email": email, "project_role": "Data owner"});
        let (status, answer) = team.call(Method::POST, "/api/team/invitations", Some(&ada), Some(body)).await;
        assert_eq!(answer["code"], code, "{email}: {status} {answer}");
    }
    let body = json!({"email": "lin@example.com", "project_role": "Observer"});
    let (_, answer) = team.call(Method::POST, "/api/team/invitations", Some(&ada), Some(body)).await;
    assert_eq!(answer["code"], "invalid_project_role");
    assert_eq!(team.snapshot().await, before, "nothing changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_and_leaving_end_the_membership_with_one_event_each() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let first = team.join(&ada, &grace, "Data owner").await;

    let path = format!("/api/team/members/{}", id(&grace));
    let (status, removed) = team.call(Method::DELETE, &path, Some(&ada), None).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["removal_reason"], "removed");
    let again = team.call(Method::DELETE, &path, Some(&ada), None).await;
    assert_eq!((again.0.as_u16(), again.1["code"].as_str()), (404, Some("member_not_found")));
    let (status, body) = team.call(Method::GET, "/api/team/membership", Some(&grace), None).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (404, Some("not_a_member")));
    // Grace is an owner again: she may invite.
    team.invite(&grace, "lin@example.com", "Data owner").await;

    // She joins again (a new membership) and leaves.
    let second = team.join(&ada, &grace, "Data scientist").await;
    assert_ne!(first["id"], second["id"]);
    let (status, left) = team.call(Method::POST, "/api/team/leave", Some(&grace), None).await;
    assert_eq!(status, 200, "{left}");
    assert_eq!(left["removal_reason"], "left");
    let again = team.call(Method::POST, "/api/team/leave", Some(&grace), None).await;
    assert_eq!((again.0.as_u16(), again.1["code"].as_str()), (404, Some("not_a_member")));

    team.published_exactly::<TeamMemberRemovedV1>(2).await;
    let events = team.payloads::<TeamMemberRemovedV1>().await;
    let seen: Vec<(&str, &str, &str)> =
        events.iter().map(|e| (e.membership_id.as_str(), e.reason.as_str(), e.member_user_id.as_str())).collect();
    assert_eq!(
        seen,
        [
            (first["id"].as_str().unwrap(), "removed", id(&grace).as_str()),
            (second["id"].as_str().unwrap(), "left", id(&grace).as_str())
        ]
    );
    let removed_at = chrono::DateTime::parse_from_rfc3339(removed["removed_at"].as_str().unwrap()).unwrap();
    assert_eq!(events[0].removed_at_unix_micros, removed_at.timestamp_micros());
    assert_eq!(events[0].owner_user_id, id(&ada));
    team.published_exactly::<TeamMemberJoinedV1>(2).await;
    let (_, view) = team.call(Method::GET, "/api/team", Some(&ada), None).await;
    assert_eq!(view["members"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_team_cancels_ones_own_invitations_and_an_owner_with_members_cannot_join() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let alan = team.person("Alan", "alan@example.com").await;
    let to_grace = team.invite(&ada, "grace@example.com", "Data owner").await;
    let to_ada = team.invite(&grace, "ada@example.com", "Data owner").await;
    team.join(&grace, &alan, "Data owner").await;
    let (status, body) = team.accept(&grace, &to_grace.token).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (409, Some("owner_has_members")), "{body}");
    // Grace removes Alan, then joins Ada: her own pending invitation goes.
    let path = format!("/api/team/members/{}", id(&alan));
    assert_eq!(team.call(Method::DELETE, &path, Some(&grace), None).await.0, 200);
    assert_eq!(team.accept(&grace, &to_grace.token).await.0, 200);
    assert_eq!(team.preview(&to_ada.token).await.0, 404);
    let (status, body) = team.accept(&ada, &to_ada.token).await;
    assert_eq!((status.as_u16(), body["code"].as_str()), (404, Some("invitation_not_found")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_leaves_its_team_once() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    let membership = team.join(&ada, &grace, "Data owner").await;
    let deleted = UserDeletedV1 { user_id: id(&grace) };
    let event = team.bus.publish(&deleted, None).await;
    // The same event again, and another delivery of the deletion.
    team.bus.publish(&deleted, Some(event)).await;
    team.bus.publish(&deleted, None).await;
    team.published_exactly::<TeamMemberRemovedV1>(1).await;
    let removed = team.payloads::<TeamMemberRemovedV1>().await;
    assert_eq!(removed[0].reason, "account_deleted");
    assert_eq!(removed[0].membership_id, membership["id"].as_str().unwrap());
    assert_eq!(team.text(&format!("SELECT status AS v FROM people WHERE id = '{}'", id(&grace))).await, "deleted");
    let (_, view) = team.call(Method::GET, "/api/team", Some(&ada), None).await;
    assert_eq!(view["members"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_accounts_keep_the_latest_whatever_the_order_of_their_events() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    team.join(&ada, &grace, "Data owner").await;
    let t = chrono::Utc::now().timestamp_micros();
    // Suspended at t+2 arrives before reactivated at t+1: she stays suspended.
    team.publish_at(&UserSuspendedV1 { user_id: id(&grace), reason: "abuse".into() }, t + 2).await;
    team.publish_at(&UserReactivatedV1 { user_id: id(&grace) }, t + 1).await;
    let (a, b) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    // Moved from cluster a to b; the unassignment from a arrives last, the assignment to a late.
    team.publish_at(
        &ClusterAssignedV1 {
            user_id: id(&grace),
            cluster_id: b.clone(),
            hopsworks_username: "grace_b".into(),
            hopsworks_user_id: 2,
        },
        t + 20,
    )
    .await;
    team.publish_at(
        &ClusterUnassignedV1 { user_id: id(&grace), cluster_id: a.clone(), reason: "moved".into() },
        t + 10,
    )
    .await;
    team.publish_at(
        &ClusterAssignedV1 {
            user_id: id(&grace),
            cluster_id: a.clone(),
            hopsworks_username: "grace_a".into(),
            hopsworks_user_id: 1,
        },
        t + 5,
    )
    .await;
    let settled =
        eventually(Duration::from_secs(20), || async { team.count("SELECT count(*) AS n FROM inbox").await >= 5 })
            .await;
    assert!(settled);
    let (_, view) = team.call(Method::GET, "/api/team", Some(&ada), None).await;
    let m = &view["members"][0];
    assert_eq!(m["account_status"], "suspended", "{view}");
    assert_eq!(m["hopsworks_account"]["state"], "assigned", "{view}");
    assert_eq!(m["hopsworks_account"]["cluster_id"], b, "{view}");
    assert_eq!(m["hopsworks_account"]["hopsworks_username"], "grace_b", "{view}");
    assert_eq!(team.count("SELECT count(*) AS n FROM accounts WHERE assigned").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_smtp_down_at_invite_time_the_mail_goes_once_it_is_back() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    team.mail.set_smtp_down(true);
    let sent = team.invite(&ada, "grace@example.com", "Data owner").await;
    let tried = eventually(Duration::from_secs(20), || async {
        team.count("SELECT count(*) AS n FROM mail_outbox WHERE attempts >= 1 AND sent_at IS NULL").await == 1
    })
    .await;
    assert!(tried, "the send failed and waits for its retry");
    assert!(team.mail.messages().is_empty());
    assert_eq!(team.preview(&sent.token).await.0, 200, "the invitation stands while its mail waits");
    team.mail.set_smtp_down(false);
    let mails = team.mails_to("grace@example.com", 1).await;
    assert!(mails[0].text.contains(&sent.link));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(team.mail.messages().len(), 1, "sent once");
    assert_eq!(team.count("SELECT count(*) AS n FROM mail_outbox WHERE sent_at IS NOT NULL").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_alone_may_count_an_owners_members() {
    let team = start().await;
    let ada = team.person("Ada", "ada@example.com").await;
    let grace = team.person("Grace", "grace@example.com").await;
    team.join(&ada, &grace, "Data owner").await;
    let path = format!("/internal/owners/{}/members", id(&ada));
    let (status, body) =
        team.call(Method::GET, &path, Some(&Caller::service(hopsbridge_contracts::Service::Identity)), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1);
    assert_eq!(body["member_ids"], json!([id(&grace)]));
    let path_grace = format!("/internal/owners/{}/members", id(&grace));
    let identity = Caller::service(hopsbridge_contracts::Service::Identity);
    assert_eq!(team.call(Method::GET, &path_grace, Some(&identity), None).await.1["count"], 0);
    for caller in [Caller::service(hopsbridge_contracts::Service::Metering), ada.clone()] {
        let (status, body) = team.call(Method::GET, &path, Some(&caller), None).await;
        assert_eq!((status.as_u16(), body["code"].as_str()), (403, Some("identity_only")), "{caller:?}");
    }
    assert_eq!(team.call(Method::GET, &path, None, None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_an_invitation_or_a_query_is_refused_as_bad_input_and_nothing_is_written() {
    let team = start().await;
    let ada = team.person("ada", "ada@example.com").await;
    for body in [
        json!({"email": "grace\u{0}@example.com", "project_role": "Data scientist"}),
        json!({"email": "grace@example.com", "project_role": "Data\u{0} scientist"}),
    ] {
        let (status, answer) = team.call(Method::POST, "/api/team/invitations", Some(&ada), Some(body)).await;
        assert_eq!((status.as_u16(), answer["code"].as_str()), (400, Some("nul_character")), "{answer}");
    }
    let (status, answer) = team.call(Method::GET, "/api/team/invitations?x=%00", Some(&ada), None).await;
    assert_eq!((status.as_u16(), answer["code"].as_str()), (400, Some("nul_character")), "{answer}");
    assert_eq!(team.count("SELECT count(*) AS n FROM invitations").await, 0, "no invitation was made");
    assert_eq!(team.count("SELECT count(*) AS n FROM mail_outbox").await, 0, "no mail was queued");
    assert_eq!(team.count("SELECT count(*) AS n FROM outbox").await, 0, "nothing was announced");
}
