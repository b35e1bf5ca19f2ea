//! A person is the issuer and the subject of their token together. A gateway trusts one
//! tenant and refuses every other's tokens; and when a gateway is pointed at another tenant
//! (a second trusted issuer), that tenant's `auth0|ada` is another person, who never opens the
//! first one's account (and so never her billing, which services key by the user id the
//! gateway signs).

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{Options, Platform};
use hopsbridge_contracts::Service;
use hopsbridge_sandbox::auth0::{Auth0Config, Auth0Sim, TestUser, TokenSpec};
use hopsbridge_testkit::{TestSettings, WEBHOOK_SECRET};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A second gateway in front of the same identity, trusting `tenant`.
async fn gateway_for(tenant: &Auth0Sim, identity: &str, stop: &CancellationToken) -> String {
    let port = hopsbridge_testkit::free_port();
    let mut settings = TestSettings::new(Service::Gateway)
        .set("http.port", port.to_string())
        .set("auth0.issuer", tenant.issuer())
        .set("limits.caller_cache_secs", "0");
    for name in ["identity", "team", "provisioning", "metering", "billing"] {
        settings = settings.set(&format!("upstreams.{name}"), identity);
    }
    let gateway = hopsbridge_gateway::build(settings.load(&hopsbridge_gateway::DEFAULTS)).await.unwrap();
    tokio::spawn(gateway.run_until_stopped(stop.clone()));
    format!("http://127.0.0.1:{port}")
}

async fn caller(gateway: &str, token: &str) -> (u16, Value) {
    let response =
        reqwest::Client::new().get(format!("{gateway}/api/auth/caller")).bearer_auth(token).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_subject_from_another_issuer_never_opens_the_first_persons_account() {
    let p = Platform::start(Options::default()).await;
    let ada = TestUser::database("ada", "ada@example.com", "Ada");
    let (status, first) = caller(&p.gateway, &p.token(&ada)).await;
    assert_eq!((status, first["issuer"].as_str()), (200, Some(p.tenant.issuer().as_str())), "{first}");

    // Another tenant signs a token for the same subject.
    let other = Auth0Sim::start(Auth0Config::default()).unwrap();
    let theirs =
        |email: &str| other.access_token(&TokenSpec::user(&TestUser::database("ada", email, "Not Ada"))).unwrap();
    // The gateway trusts one issuer: the other tenant's token is refused outright.
    let (status, body) = caller(&p.gateway, &theirs("ada@example.com")).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("invalid_token")), "{body}");

    // A gateway that trusts the other tenant (the same identity behind it) takes its token, as
    // another person: with ada's address it is refused, with its own it is someone new.
    let stop = CancellationToken::new();
    let second = gateway_for(&other, &p.identity, &stop).await;
    let (status, body) = caller(&second, &theirs("ada@example.com")).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("email_in_use")), "{body}");
    let (status, stranger) = caller(&second, &theirs("not-ada@example.com")).await;
    assert_eq!(status, 200, "{stranger}");
    assert_eq!(stranger["subject"], first["subject"]);
    assert_eq!(stranger["issuer"].as_str(), Some(other.issuer().as_str()));
    assert_ne!(stranger["user_id"], first["user_id"], "another tenant's auth0|ada is not ada");
    assert_ne!(stranger["account_owner_id"], first["account_owner_id"], "nor billed to ada's account");
    let me = reqwest::Client::new()
        .get(format!("{second}/api/me"))
        .bearer_auth(theirs("not-ada@example.com"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!((me["email"].as_str(), me["id"].clone()), (Some("not-ada@example.com"), stranger["user_id"].clone()));
    // ada, through her own tenant, is still ada.
    assert_eq!(caller(&p.gateway, &p.token(&ada)).await.1["user_id"], first["user_id"]);

    // The Auth0 Action's webhook through each gateway makes people of that gateway's tenant.
    let client = reqwest::Client::new();
    let grace = TestUser::database("grace", "grace@example.com", "Grace");
    let action =
        Auth0Sim::post_registration_action(&format!("{second}/webhooks/auth0/post-registration"), WEBHOOK_SECRET);
    assert_eq!(action.fire(&client, &grace).await.unwrap(), 200);
    let (status, body) = caller(&p.gateway, &p.token(&grace)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("email_in_use")),
        "the first tenant's grace is not the webhook's: {body}"
    );
    let graces = other.access_token(&TokenSpec::user(&grace)).unwrap();
    let (status, body) = caller(&second, &graces).await;
    assert_eq!(status, 200, "{body}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_sent_to_identity_without_the_gateway_is_refused_when_identity_knows_no_tenant() {
    let p = Platform::start(Options::default()).await;
    let grace = TestUser::database("grace", "grace@example.com", "Grace");
    let direct =
        Auth0Sim::post_registration_action(&format!("{}/webhooks/auth0/post-registration", p.identity), WEBHOOK_SECRET);
    assert_eq!(direct.fire(&reqwest::Client::new(), &grace).await.unwrap(), 401, "no tenant is known for it");
    let through =
        Auth0Sim::post_registration_action(&format!("{}/webhooks/auth0/post-registration", p.gateway), WEBHOOK_SECRET);
    assert_eq!(through.fire(&reqwest::Client::new(), &grace).await.unwrap(), 200, "the gateway vouches for its tenant");
}
