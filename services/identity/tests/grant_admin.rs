//! `hopsbridge-identity grant-admin --email ADDRESS`, run as a real process with identity's
//! settings: the first admin is made without SQL, and only the person with that address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use hopsbridge_contracts::Service;
use hopsbridge_testkit::{TestSettings, WEBHOOK_SECRET};
use reqwest::{Method, StatusCode};

const BINARY: &str = env!("CARGO_BIN_EXE_hopsbridge-identity");

fn grant(identity: &Identity, args: &[&str]) -> std::process::Output {
    let env = TestSettings::data_service(Service::Identity, &identity.db, &identity.bus)
        .set("webhook.secret", WEBHOOK_SECRET)
        .set("auth0.issuer", ISSUER)
        .set("team.url", identity.team.url())
        .env();
    std::process::Command::new(BINARY).arg("grant-admin").args(args).envs(env).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_admin_makes_the_person_with_the_address_an_admin_and_nobody_else() {
    let identity = start().await;
    let ada = identity.sign_in("auth0|ada", "ada@example.com").await;
    let grace = identity.sign_in("auth0|grace", "grace@example.com").await;
    let admins_only = |caller| identity.call(Method::GET, "/api/admin/users", Some(caller), None);
    assert_eq!(admins_only(&ada).await.0, StatusCode::FORBIDDEN);

    let unknown = grant(&identity, &["--email", "nobody@example.com"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    let usage = grant(&identity, &["ada@example.com"]);
    assert_eq!(usage.status.code(), Some(1), "{usage:?}");
    assert_eq!(admins_only(&ada).await.0, StatusCode::FORBIDDEN, "nothing granted yet");

    let granted = grant(&identity, &["--email", "Ada@Example.com"]);
    assert!(granted.status.success(), "{granted:?}");
    let said = String::from_utf8_lossy(&granted.stdout);
    assert!(said.contains("ada@example.com") && said.contains("is an administrator"), "{said}");
    let (status, page) = admins_only(&ada).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 2);
    assert_eq!(admins_only(&grace).await.0, StatusCode::FORBIDDEN, "only the address given");
}
