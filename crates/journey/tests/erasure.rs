//! Account deletion to erasure end to end (decisions 0058, 0068), every service as its own
//! process: an owner with a card, a cluster and a lab of running pods deletes their account.
//! At the deletion their Hopsworks account is deactivated (and is in no project but those it
//! created, which Hopsworks keeps it the owner of), and metering stops attributing: the lab's
//! pods, still running, are measured and billed to nobody. Once the sandbox's clock has moved
//! past the retention period, no text column of any table in any service's schema holds their
//! address any more, no dead letter's body holds it (another message's dead letters stay), and
//! the Stripe customer has no email or name. The scan reads every text, JSON and array column
//! that exists, so a copy added later to any table fails it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_journey::{Options, Platform, binaries, wait_for};
use std::time::Duration;

/// How long an effect may take on a loaded two-core machine.
const PATIENCE: Duration = Duration::from_secs(90);
const DAY: i64 = 86_400;
const SCHEMAS: [&str; 5] = ["identity", "team", "billing", "provisioning", "metering"];
/// The Hopsworks username the sandbox gives erin@example.com, who is the first "eri".
const LAB_OWNER: &str = "eri10000";

#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct At {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Every `schema.table.column` of a text-like type that holds `needle` (case-insensitive).
async fn copies(platform: &Platform, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for schema in SCHEMAS {
        let mut conn = platform.db.connect(schema).await;
        let columns: Vec<Column> = diesel::sql_query(
            "SELECT c.table_name::text AS table_name, c.column_name::text AS column_name
               FROM information_schema.columns c
               JOIN information_schema.tables t USING (table_schema, table_name)
              WHERE c.table_schema = $1 AND t.table_type = 'BASE TABLE'
                AND (c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')
                     OR (c.data_type = 'ARRAY' AND c.udt_name IN ('_text', '_varchar')))",
        )
        .bind::<Text, _>(schema)
        .load(&mut conn)
        .await
        .unwrap();
        assert!(!columns.is_empty(), "{schema} has text columns");
        for c in columns {
            let sql = format!(
                "SELECT count(*) AS n FROM \"{}\" WHERE strpos(lower(\"{}\"::text), $1) > 0",
                c.table_name, c.column_name
            );
            let n: Count = diesel::sql_query(sql).bind::<Text, _>(needle).get_result(&mut conn).await.unwrap();
            if n.n > 0 {
                found.push(format!("{schema}.{}.{} ({} rows)", c.table_name, c.column_name, n.n));
            }
        }
    }
    found
}

/// Per schema, how many dead letters' bodies hold `needle` (case-insensitive).
async fn dead_letters_holding(platform: &Platform, needle: &str) -> Vec<(&'static str, i64)> {
    let mut found = Vec::new();
    for schema in SCHEMAS {
        let mut conn = platform.db.connect(schema).await;
        let n: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM dead_letters WHERE strpos(lower(encode(body, 'escape')), lower($1)) > 0",
        )
        .bind::<Text, _>(needle)
        .get_result(&mut conn)
        .await
        .unwrap();
        found.push((schema, n.n));
    }
    found
}

/// Publishes `body`, which is no event, on the subject of identity's UserCreated: each of its
/// consumers (team, billing, provisioning) gives up on it at once and keeps it as a dead letter.
async fn publish_unreadable(platform: &Platform, body: String) {
    let subject = platform.bus.subjects().subject("identity.user_created.v1");
    let js = platform.bus.jetstream().await;
    js.publish(subject, body.into_bytes().into()).await.unwrap().await.unwrap();
}

#[derive(QueryableByName)]
struct Sample {
    #[diesel(sql_type = Text)]
    attribution: String,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    user_id: Option<uuid::Uuid>,
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    owner_user_id: Option<uuid::Uuid>,
}

/// metering's samples of `namespace` from windows starting at or after `from`.
async fn samples_since(platform: &Platform, namespace: &str, from: chrono::DateTime<chrono::Utc>) -> Vec<Sample> {
    let mut conn = platform.db.connect("metering").await;
    diesel::sql_query(
        "SELECT attribution, user_id, owner_user_id FROM samples WHERE namespace = $1 AND window_start >= $2",
    )
    .bind::<Text, _>(namespace)
    .bind::<Timestamptz, _>(from)
    .load(&mut conn)
    .await
    .unwrap()
}

/// The time `sql` (one row, column `at`, the user id as `$1`) reads in `schema`.
async fn time_of(
    platform: &Platform,
    schema: &str,
    sql: &str,
    user: uuid::Uuid,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let mut conn = platform.db.connect(schema).await;
    let at: At = diesel::sql_query(sql).bind::<diesel::sql_types::Uuid, _>(user).get_result(&mut conn).await.unwrap();
    at.at
}

/// Whether `schema`'s inbox records an event of `event_type` as handled.
async fn handled(platform: &Platform, schema: &str, event_type: &str) -> bool {
    let mut conn = platform.db.connect(schema).await;
    let n: Count = diesel::sql_query("SELECT count(*) AS n FROM inbox WHERE event_type = $1")
        .bind::<Text, _>(event_type)
        .get_result(&mut conn)
        .await
        .unwrap();
    n.n > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_accounts_address_is_gone_from_every_database_after_the_retention() {
    let options = Options {
        clusters: 1,
        // erin's Hopsworks account (the sandbox names it eri10000) gets a lab project whose
        // pods run from the start, measured every two seconds.
        lab_owners: vec![LAB_OWNER.to_owned()],
        metering_window_secs: 2,
        settings: vec![
            (Service::Identity, "deletion.erase_interval_secs", "1".to_owned()),
            // Metering looks back a minute, not a month, after the clock's jump.
            (Service::Metering, "schedule.lookback_secs", "60".to_owned()),
        ],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let erin = platform.sign_up("erin").await;
    let email = erin.auth0.email.clone();
    platform.add_card(&erin).await;
    platform.wait_assigned(&erin, PATIENCE).await;
    platform.wait_billing_account(&erin, PATIENCE).await;
    let hopsworks = &platform.world.clusters[0].hopsworks;
    let account = hopsworks.users().into_iter().find(|u| u.email == email).expect("erin's Hopsworks account");
    assert_eq!((account.username.as_str(), account.status), (LAB_OWNER, 2), "{account:?}");
    let lab = format!("{LAB_OWNER}-lab");
    // Before the deletion the lab's pods are billed to erin.
    let long_ago = chrono::Utc::now() - chrono::TimeDelta::days(1);
    wait_for("the lab's pods billed to erin", PATIENCE, || async {
        samples_since(&platform, &lab, long_ago)
            .await
            .iter()
            .any(|s| s.attribution == "attributed" && s.user_id == Some(erin.user_id))
            .then_some(())
    })
    .await;
    // Dead letters: a message carrying erin's address, and one carrying nobody's, each given up
    // on by team, billing and provisioning.
    let unrelated = "unreadable-without-personal-data";
    publish_unreadable(&platform, format!("not an event, about {email}")).await;
    publish_unreadable(&platform, unrelated.to_owned()).await;
    for needle in [email.as_str(), unrelated] {
        wait_for(&format!("dead letters holding {needle}"), PATIENCE, || async {
            let held = dead_letters_holding(&platform, needle).await;
            let per: Vec<i64> = ["team", "billing", "provisioning"]
                .iter()
                .map(|s| held.iter().find(|(schema, _)| schema == s).map_or(0, |(_, n)| *n))
                .collect();
            (per == [1, 1, 1]).then_some(())
        })
        .await;
    }
    // Before the deletion the scan finds the address (so it can find it at all).
    let before = copies(&platform, &email).await;
    for table in ["identity.users.email", "billing.accounts.email", "provisioning.users.email"] {
        assert!(before.iter().any(|c| c.starts_with(table)), "{table} holds the address: {before:?}");
    }

    let (status, deleted) = platform.call("DELETE", "/api/me", &erin.token, None).await;
    assert_eq!(status, 200, "{deleted}");
    for schema in ["team", "billing", "provisioning"] {
        wait_for(&format!("{schema} handles UserDeleted"), PATIENCE, || async {
            handled(&platform, schema, "UserDeleted").await.then_some(())
        })
        .await;
    }
    // Hopsworks: the account is deactivated (status 3) and is in no project it did not create;
    // its lab stays, with erin as its owner (Hopsworks refuses to remove a project's owner).
    wait_for("erin's Hopsworks account deactivated", PATIENCE, || async {
        hopsworks.users().into_iter().find(|u| u.email == email).filter(|u| u.status == 3).map(|_| ())
    })
    .await;
    let projects = hopsworks.projects();
    let places: Vec<_> = hopsworks.memberships().into_iter().filter(|m| m.username == LAB_OWNER).collect();
    assert!(!places.is_empty(), "erin's own lab keeps its owner");
    for place in &places {
        let project = projects.iter().find(|p| p.id == place.project_id).unwrap();
        assert_eq!(project.owner_id, account.id, "erin is left only in projects she created: {place:?}");
    }
    // Metering hears of the unassignment and bills the lab's pods, still running, to nobody.
    let unassigned_at = wait_for("metering records the unassignment", PATIENCE, || {
        time_of(&platform, "metering", "SELECT unassigned_at AS at FROM accounts WHERE user_id = $1", erin.user_id)
    })
    .await;
    let after = wait_for("the lab measured after the unassignment", PATIENCE, || async {
        let samples = samples_since(&platform, &lab, unassigned_at).await;
        (samples.len() >= 2).then_some(samples)
    })
    .await;
    for s in &after {
        assert_eq!(
            (s.attribution.as_str(), s.user_id, s.owner_user_id),
            ("unknown_project", None, None),
            "a deleted person's pods are billed to nobody"
        );
    }
    let billed_after = {
        let mut conn = platform.db.connect("metering").await;
        let n: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM samples
              WHERE (user_id = $1 OR owner_user_id = $1) AND window_start >= $2",
        )
        .bind::<diesel::sql_types::Uuid, _>(erin.user_id)
        .bind::<Timestamptz, _>(unassigned_at)
        .get_result(&mut conn)
        .await
        .unwrap();
        n.n
    };
    assert_eq!(billed_after, 0, "nothing measured after the unassignment is attributed to erin");

    let customer = {
        let mut conn = platform.db.connect("billing").await;
        #[derive(QueryableByName)]
        struct Customer {
            #[diesel(sql_type = Nullable<Text>)]
            id: Option<String>,
        }
        let c: Customer = diesel::sql_query("SELECT stripe_customer_id AS id FROM accounts WHERE user_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(erin.user_id)
            .get_result(&mut conn)
            .await
            .unwrap();
        c.id.expect("a Stripe customer")
    };

    // A day later nothing is erased yet.
    let clock = &platform.world.clock;
    clock.set(clock.now() + DAY);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let erased_at = || time_of(&platform, "identity", "SELECT erased_at AS at FROM users WHERE id = $1", erin.user_id);
    assert_eq!(erased_at().await, None, "kept during the retention");

    // Past the retention: identity erases and every service follows.
    clock.set(clock.now() + 30 * DAY);
    wait_for("identity erases the account", PATIENCE, || async { erased_at().await.map(|_| ()) }).await;
    for schema in ["team", "billing", "provisioning"] {
        wait_for(&format!("{schema} handles UserErased"), PATIENCE, || async {
            handled(&platform, schema, "UserErased").await.then_some(())
        })
        .await;
    }
    let left = copies(&platform, &email).await;
    assert!(left.is_empty(), "the address is still in {left:?}");
    // The dead letters carrying the address are gone; the others stay.
    let carrying = dead_letters_holding(&platform, &email).await;
    assert!(carrying.iter().all(|(_, n)| *n == 0), "dead letters still hold the address: {carrying:?}");
    let others: i64 = dead_letters_holding(&platform, unrelated).await.iter().map(|(_, n)| n).sum();
    assert_eq!(others, 3, "the dead letters of another message stay");
    let at_stripe = platform.world.stripe.customers().into_iter().find(|c| c["id"] == customer.as_str()).unwrap();
    assert!(at_stripe["email"].is_null() && at_stripe["name"].is_null(), "{at_stripe}");
}
