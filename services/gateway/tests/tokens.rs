//! Access-token validation against the sandbox's Auth0 tenant: every bad token is refused
//! with its reason, and key rotation is absorbed with one rate-limited JWKS refetch.

#![allow(clippy::unwrap_used, reason = "tests")]

use hopsbridge_gateway::tokens::{TokenError, TokenValidator};
use hopsbridge_sandbox::auth0::{Audience, Auth0Config, Auth0Sim, BadToken, TestUser, TokenSpec, TokenType};
use std::time::Duration;

async fn tenant(refetch_interval: Duration) -> (Auth0Sim, TokenValidator) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Auth0Sim::start(Auth0Config::default()).unwrap();
    let validator = TokenValidator::discover(&sim.issuer(), &sim.audience(), refetch_interval).await.unwrap();
    (sim, validator)
}

fn ada() -> TestUser {
    TestUser::database("64f0", "Ada@Example.com", "Ada")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_yields_its_subject_and_lowercased_email() {
    let (sim, v) = tenant(Duration::from_secs(30)).await;
    let claims = v.validate(&sim.access_token(&TokenSpec::user(&ada())).unwrap()).await.unwrap();
    assert_eq!(claims.subject.as_str(), "auth0|64f0");
    assert_eq!(claims.email.unwrap().as_str(), "ada@example.com");
    assert!(claims.scope.contains(&"openid".to_owned()));

    let mut spec = TokenSpec::user(&TestUser::google("1034", "g@example.com", "G"));
    spec.typ = TokenType::AtJwt;
    spec.audience = Some(Audience::Many(vec![sim.audience(), format!("{}userinfo", sim.issuer())]));
    assert!(v.validate(&sim.access_token(&spec).unwrap()).await.is_ok(), "at+jwt with an aud array");
    assert_eq!(
        v.validate(&sim.machine_token("m2m", "").unwrap()).await,
        Err(TokenError::InvalidSubject),
        "machine tokens speak for no person"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_with_its_reason() {
    let (sim, v) = tenant(Duration::from_secs(30)).await;
    let spec = TokenSpec::user(&ada());
    for (kind, reason) in [
        (BadToken::Expired, TokenError::Expired),
        (BadToken::NotYetValid, TokenError::NotYetValid),
        (BadToken::WrongAudience, TokenError::WrongAudience),
        (BadToken::WrongIssuer, TokenError::WrongIssuer),
        (BadToken::UnknownKid, TokenError::UnknownKey),
        (BadToken::AlgNone, TokenError::UnsupportedAlgorithm),
        (BadToken::Hs256WithPublicKey, TokenError::UnsupportedAlgorithm),
        (BadToken::TamperedPayload, TokenError::InvalidSignature),
    ] {
        let token = sim.bad_token(kind, &spec).unwrap();
        assert_eq!(v.validate(&token).await, Err(reason), "{kind:?}");
    }
    assert_eq!(v.validate("not.a.jwt").await.unwrap_err(), TokenError::Malformed);
    assert_eq!(v.validate("").await.unwrap_err(), TokenError::Malformed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_allows_up_to_sixty_seconds_of_clock_skew() {
    let (sim, v) = tenant(Duration::from_secs(30)).await;
    let mut spec = TokenSpec::user(&ada());
    spec.expires_in = -30;
    assert!(v.validate(&sim.access_token(&spec).unwrap()).await.is_ok(), "30 s past exp is within the leeway");
    spec.expires_in = -90;
    assert_eq!(v.validate(&sim.access_token(&spec).unwrap()).await, Err(TokenError::Expired));
    spec.expires_in = 3600;
    spec.not_before_in = Some(30);
    assert!(v.validate(&sim.access_token(&spec).unwrap()).await.is_ok(), "nbf 30 s ahead is within the leeway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_once_and_unknown_kids_cannot_force_refetches() {
    let (sim, v) = tenant(Duration::from_millis(500)).await;
    let spec = TokenSpec::user(&ada());
    v.validate(&sim.access_token(&spec).unwrap()).await.unwrap();
    let fetches = sim.jwks_fetches();

    sim.rotate_keys().unwrap();
    let rotated = sim.access_token(&spec).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(v.validate(&rotated).await.is_ok(), "the new key is fetched on first sight");
    assert_eq!(sim.jwks_fetches(), fetches + 1);
    assert!(v.validate(&rotated).await.is_ok());
    assert_eq!(sim.jwks_fetches(), fetches + 1, "and cached");

    // A burst of tokens with unknown kids costs at most one fetch per interval.
    let forged: Vec<String> = (0..20).map(|_| sim.bad_token(BadToken::UnknownKid, &spec).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before_burst = sim.jwks_fetches();
    let started = std::time::Instant::now();
    for token in &forged {
        assert_eq!(v.validate(token).await, Err(TokenError::UnknownKey));
    }
    assert!(started.elapsed() < Duration::from_millis(500), "the burst fits in one interval");
    assert_eq!(sim.jwks_fetches(), before_burst + 1, "one refetch for the whole burst");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_replaced_under_the_same_kid_is_fetched_again_at_most_once_per_interval() {
    let (sim, v) = tenant(Duration::from_millis(500)).await;
    let spec = TokenSpec::user(&ada());
    let before = sim.access_token(&spec).unwrap();
    v.validate(&before).await.unwrap();
    let kid = sim.signing_kid();
    assert!(sim.replace_key(&kid).unwrap());
    let after = sim.access_token(&spec).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fetches = sim.jwks_fetches();
    assert!(v.validate(&after).await.is_ok(), "a token signed by the replaced key opens without a restart");
    assert_eq!(sim.jwks_fetches(), fetches + 1, "one refetch found the new key");
    assert!(v.validate(&after).await.is_ok());

    // Tokens that fail under a known kid cost at most one fetch per interval between them, and
    // stay refused.
    let tampered: Vec<String> = (0..20).map(|_| sim.bad_token(BadToken::TamperedPayload, &spec).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before_burst = sim.jwks_fetches();
    for token in &tampered {
        assert_eq!(v.validate(token).await, Err(TokenError::InvalidSignature));
    }
    assert!(sim.jwks_fetches() <= before_burst + 2, "the refetches are rate-limited, not one per token");
    assert!(sim.jwks_fetches() > before_burst, "a signature failure with a known kid refetches");
}
