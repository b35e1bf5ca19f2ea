//! The Auth0 tenant, checked by validation code independent of the simulator: signatures are
//! verified with the `rsa` crate from the JWKS, claims with jsonwebtoken as a resource server
//! would, and the code flow is driven over HTTP as a browser and a backend would.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hopsbridge_sandbox::auth0::{
    Audience, Auth0Config, Auth0Sim, BadToken, CLAIM_NAMESPACE, TestUser, TokenSpec, TokenType, WEBHOOK_SECRET_HEADER,
};
use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use rsa::signature::Verifier as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

fn start() -> Auth0Sim {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Auth0Sim::start(Auth0Config::default()).unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn jwks(sim: &Auth0Sim) -> Value {
    client().get(sim.jwks_uri()).send().await.unwrap().json().await.unwrap()
}

fn decode_part(token: &str, i: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

/// Verifies an RS256 signature with the key the JWKS lists under the token's kid, using the
/// `rsa` crate directly.
fn verify_rs256(token: &str, jwks: &Value) -> bool {
    let header = decode_part(token, 0);
    let Some(key) = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]) else { return false };
    let n = rsa::BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(key["n"].as_str().unwrap()).unwrap());
    let e = rsa::BigUint::from_bytes_be(&URL_SAFE_NO_PAD.decode(key["e"].as_str().unwrap()).unwrap());
    let public = rsa::RsaPublicKey::new(n, e).unwrap();
    let verifying = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public);
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let Ok(signature) =
        rsa::pkcs1v15::Signature::try_from(URL_SAFE_NO_PAD.decode(signature).unwrap_or_default().as_slice())
    else {
        return false;
    };
    header["alg"] == "RS256" && verifying.verify(signed.as_bytes(), &signature).is_ok()
}

/// A resource server's validation: RS256 only, exact issuer, our audience, 60 s leeway.
fn resource_server_accepts(sim: &Auth0Sim, jwks: &Value, token: &str) -> bool {
    let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let Ok(header) = jsonwebtoken::decode_header(token) else { return false };
    let Some(jwk) = header.kid.and_then(|kid| set.find(&kid).cloned()) else { return false };
    let mut validation = Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[sim.issuer()]);
    validation.set_audience(&[sim.audience()]);
    validation.leeway = 60;
    validation.validate_nbf = true;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_names_the_issuer_with_its_trailing_slash_and_the_jwks_holds_two_keys() {
    let sim = start();
    let d: Value = client()
        .get(format!("{}.well-known/openid-configuration", sim.issuer()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], sim.issuer());
    assert!(sim.issuer().ends_with('/'));
    assert_eq!(d["jwks_uri"], sim.jwks_uri());
    assert!(d["code_challenge_methods_supported"].as_array().unwrap().contains(&"S256".into()));
    let keys = jwks(&sim).await;
    let keys = keys["keys"].as_array().unwrap();
    assert!(keys.len() >= 2);
    assert!(keys.iter().all(|k| k["kty"] == "RSA" && k["alg"] == "RS256" && k["use"] == "sig"));
    assert_ne!(keys[0]["kid"], keys[1]["kid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_carry_auth0s_claims_and_verify_against_the_jwks() {
    let sim = start();
    let keys = jwks(&sim).await;
    let user = TestUser::database("64f0c0ffee", "Ada@Example.com", "Ada");
    let token = sim.access_token(&TokenSpec::user(&user)).unwrap();
    assert!(verify_rs256(&token, &keys));
    assert!(resource_server_accepts(&sim, &keys, &token));
    let (header, claims) = (decode_part(&token, 0), decode_part(&token, 1));
    assert_eq!((header["alg"].as_str(), header["typ"].as_str()), (Some("RS256"), Some("JWT")));
    assert_eq!(claims["iss"], sim.issuer());
    assert_eq!(claims["aud"], sim.audience());
    assert_eq!(claims["sub"], "auth0|64f0c0ffee");
    assert_eq!(claims[format!("{CLAIM_NAMESPACE}email")], "Ada@Example.com");
    assert!(claims.get("email").is_none(), "access tokens carry email only under the namespace");

    let mut spec = TokenSpec::user(&TestUser::google("1034", "g@example.com", "G"));
    spec.typ = TokenType::AtJwt;
    spec.audience = Some(Audience::Many(vec![sim.audience(), format!("{}userinfo", sim.issuer())]));
    spec.permissions = Some(vec!["read:usage".into()]);
    let token = sim.access_token(&spec).unwrap();
    assert!(resource_server_accepts(&sim, &keys, &token), "an aud array holding our API is accepted");
    assert_eq!(decode_part(&token, 0)["typ"], "at+jwt");
    assert_eq!(decode_part(&token, 1)["aud"].as_array().unwrap().len(), 2);
    assert_eq!(decode_part(&token, 1)["permissions"][0], "read:usage");

    let machine = sim.machine_token("m2m-client", "read:clusters").unwrap();
    let claims = decode_part(&machine, 1);
    assert_eq!(
        (claims["sub"].as_str(), claims["gty"].as_str()),
        (Some("m2m-client@clients"), Some("client-credentials"))
    );
    assert!(verify_rs256(&machine, &keys));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_refused_by_an_independent_validator() {
    let sim = start();
    let keys = jwks(&sim).await;
    let spec = TokenSpec::user(&TestUser::database("1", "a@example.com", "A"));
    for kind in [
        BadToken::Expired,
        BadToken::NotYetValid,
        BadToken::WrongAudience,
        BadToken::WrongIssuer,
        BadToken::UnknownKid,
        BadToken::AlgNone,
        BadToken::Hs256WithPublicKey,
        BadToken::TamperedPayload,
    ] {
        let token = sim.bad_token(kind, &spec).unwrap();
        assert!(!resource_server_accepts(&sim, &keys, &token), "{kind:?} was accepted");
        let signature_ok = verify_rs256(&token, &keys);
        let signature_should_hold =
            matches!(kind, BadToken::Expired | BadToken::NotYetValid | BadToken::WrongAudience | BadToken::WrongIssuer);
        assert_eq!(signature_ok, signature_should_hold, "{kind:?}");
    }
    assert_eq!(decode_part(&sim.bad_token(BadToken::AlgNone, &spec).unwrap(), 0)["alg"], "none");
    assert_eq!(decode_part(&sim.bad_token(BadToken::Hs256WithPublicKey, &spec).unwrap(), 0)["alg"], "HS256");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_publishes_a_new_signing_key_and_revocation_withdraws_the_old_one() {
    let sim = start();
    let before = jwks(&sim).await;
    let old_kid = sim.signing_kid();
    let spec = TokenSpec::user(&TestUser::database("1", "a@example.com", "A"));
    let old_token = sim.access_token(&spec).unwrap();

    let new_kid = sim.rotate_keys().unwrap();
    let new_token = sim.access_token(&spec).unwrap();
    assert_eq!(decode_part(&new_token, 0)["kid"], new_kid.as_str());
    assert!(!resource_server_accepts(&sim, &before, &new_token), "a cached JWKS does not know the new kid");
    let after = jwks(&sim).await;
    assert!(resource_server_accepts(&sim, &after, &new_token), "a refetched JWKS does");
    assert!(resource_server_accepts(&sim, &after, &old_token), "the old key stays until revoked");

    sim.revoke_key(&old_kid);
    let revoked = jwks(&sim).await;
    assert!(!resource_server_accepts(&sim, &revoked, &old_token));
    assert!(resource_server_accepts(&sim, &revoked, &new_token));
}

fn query_of(location: &str) -> HashMap<String, String> {
    serde_urlencoded::from_str(location.split_once('?').map_or("", |(_, q)| q)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_code_flow_with_pkce_signs_in_the_chosen_user_once() {
    let sim = start();
    let callback = "http://127.0.0.1:9/api/auth/callback";
    sim.allow_urls(callback, "http://127.0.0.1:9/");
    let user = TestUser::google("1034", "grace@example.com", "Grace");
    sim.sign_in_as(&user);
    let cfg = Auth0Config::default();
    let verifier = "a-verifier-of-at-least-forty-three-characters-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let authorize = format!(
        "{}authorize?{}",
        sim.issuer(),
        serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", cfg.client_id.as_str()),
            ("redirect_uri", callback),
            ("scope", "openid profile email"),
            ("audience", cfg.audience.as_str()),
            ("state", "st-123"),
            ("nonce", "n-456"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .unwrap()
    );
    let r = client().get(&authorize).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(callback));
    let q = query_of(&location);
    assert_eq!(q["state"], "st-123");
    let code = q["code"].clone();

    let exchange = |code: String, verifier: &str| {
        let form = [
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", cfg.client_id.clone()),
            ("client_secret", cfg.client_secret.clone()),
            ("code", code),
            ("code_verifier", verifier.to_owned()),
            ("redirect_uri", callback.to_owned()),
        ];
        client()
            .post(format!("{}oauth/token", sim.issuer()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap())
            .send()
    };
    let tokens: Value = exchange(code.clone(), verifier).await.unwrap().json().await.unwrap();
    let keys = jwks(&sim).await;
    let id_token = tokens["id_token"].as_str().unwrap();
    assert!(verify_rs256(id_token, &keys));
    let id = decode_part(id_token, 1);
    assert_eq!((id["aud"].as_str(), id["nonce"].as_str()), (Some(cfg.client_id.as_str()), Some("n-456")));
    assert_eq!((id["sub"].as_str(), id["email"].as_str()), (Some("google-oauth2|1034"), Some("grace@example.com")));
    let access = tokens["access_token"].as_str().unwrap();
    assert!(resource_server_accepts(&sim, &keys, access), "aud holds the API and the userinfo URL");

    let replay = exchange(code, verifier).await.unwrap();
    assert_eq!(replay.status(), 403, "a code works once");

    sim.sign_in_as(&user);
    let r = client().get(&authorize).send().await.unwrap();
    let code = query_of(r.headers()["location"].to_str().unwrap())["code"].clone();
    let wrong = exchange(code, "another-verifier-of-at-least-forty-three-characters-99").await.unwrap();
    assert_eq!(wrong.status(), 403, "the PKCE verifier must match the challenge");

    let elsewhere = authorize.replace("127.0.0.1%3A9", "evil.example");
    assert_eq!(client().get(&elsewhere).send().await.unwrap().status(), 400, "unregistered callback");

    let out =
        client().get(format!("{}v2/logout?returnTo=http%3A%2F%2F127.0.0.1%3A9%2F", sim.issuer())).send().await.unwrap();
    assert_eq!((out.status().as_u16(), out.headers()["location"].to_str().unwrap()), (302, "http://127.0.0.1:9/"));
    let out =
        client().get(format!("{}v2/logout?returnTo=https%3A%2F%2Fevil.example%2F", sim.issuer())).send().await.unwrap();
    assert_eq!(out.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_post_registration_action_posts_the_user_with_the_shared_secret() {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use std::sync::{Arc, Mutex};
    let _sim = start();
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let server = HttpServer::new(move || {
        let sink = Arc::clone(&sink);
        App::new().route(
            "/webhooks/auth0",
            web::post().to(move |req: HttpRequest, body: web::Json<Value>| {
                let sink = Arc::clone(&sink);
                async move {
                    let secret = req
                        .headers()
                        .get(WEBHOOK_SECRET_HEADER)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    sink.lock().unwrap().push((secret, body.into_inner()));
                    HttpResponse::NoContent().finish()
                }
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let url = format!("http://{}/webhooks/auth0", server.addrs()[0]);
    tokio::spawn(server.run());

    let action = Auth0Sim::post_registration_action(&url, "s3cret");
    let ada = TestUser::database("64f0", "ada@example.com", "Ada");
    assert_eq!(action.fire(&client(), &ada).await.unwrap(), 204);
    let social = TestUser::google("1", "g@example.com", "G");
    assert!(action.fire(&client(), &social).await.is_err(), "social signups never fire the Action");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "s3cret");
    assert_eq!(seen[0].1["user_id"], "auth0|64f0");
    assert_eq!(seen[0].1["email"], "ada@example.com");
    assert_eq!(seen[0].1["connection"], "Username-Password-Authentication");
}
