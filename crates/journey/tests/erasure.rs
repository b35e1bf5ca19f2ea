//! Account deletion to erasure end to end (decision 0058), every service as its own process: an
//! owner with a card and a cluster deletes their account; once the sandbox's clock has moved past
//! the retention period, no text column of any table in any service's schema holds their
//! address any more, and the Stripe customer has no email or name. The scan reads every text,
//! JSON and array column that exists, so a copy added later to any table fails it.

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
        settings: vec![
            (Service::Identity, "deletion.erase_interval_secs", "1".to_owned()),
            // Metering looks back an hour, not a month, after the clock's jump.
            (Service::Metering, "schedule.lookback_secs", "3600".to_owned()),
        ],
        ..Options::default()
    };
    let platform = Platform::start(binaries!(), &options).await;
    let erin = platform.sign_up("erin").await;
    let email = erin.auth0.email.clone();
    platform.add_card(&erin).await;
    platform.wait_assigned(&erin, PATIENCE).await;
    platform.wait_billing_account(&erin, PATIENCE).await;
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
    let erased_at = || async {
        let mut conn = platform.db.connect("identity").await;
        let at: At = diesel::sql_query("SELECT erased_at AS at FROM users WHERE id = $1")
            .bind::<diesel::sql_types::Uuid, _>(erin.user_id)
            .get_result(&mut conn)
            .await
            .unwrap();
        at.at
    };
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
    let at_stripe = platform.world.stripe.customers().into_iter().find(|c| c["id"] == customer.as_str()).unwrap();
    assert!(at_stripe["email"].is_null() && at_stripe["name"].is_null(), "{at_stripe}");
}
