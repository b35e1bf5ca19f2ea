use super::*;
use crate::secret::Secret;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

fn signer(byte: u8) -> CallerSigner {
    CallerSigner::from_seed(&[byte; 32])
}

fn gateway() -> CallerSigner {
    signer(1)
}

fn service_signer(service: Service) -> CallerSigner {
    match service {
        Service::Gateway => gateway(),
        Service::Identity => signer(2),
        Service::Team => signer(3),
        Service::Provisioning => signer(4),
        Service::Metering => signer(5),
        Service::Billing => signer(6),
    }
}

/// What a service configured with the gateway's public key and every service's holds.
fn verifier() -> CallerVerifier {
    Service::WITH_DATA
        .into_iter()
        .fold(CallerVerifier::new(gateway().public_key()), |v, s| v.trusting(s, service_signer(s).public_key()))
}

fn empty() -> String {
    body_sha256(b"")
}

fn ada() -> Caller {
    Caller {
        subject: "auth0|ada".into(),
        issuer: Some("https://tenant.example/".into()),
        user_id: Some(UserId::from_uuid(uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001))),
        roles: vec![Role::User, Role::Owner],
        email: Email::parse("ada@example.com").ok(),
    }
}

fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(HeaderName::from_static(k), HeaderValue::from_str(v).unwrap());
    }
    h
}

fn replace(signed: &[(&'static str, String)], header: &str, value: &str) -> Vec<(&'static str, String)> {
    let mut changed = signed.to_vec();
    for (name, v) in &mut changed {
        if *name == header {
            *v = value.to_owned();
        }
    }
    changed
}

#[test]
fn a_signed_caller_round_trips() {
    let signed = headers(&gateway().sign("GET", "/api/me?x=1", &ada(), 1_000));
    assert_eq!(verifier().verify("GET", "/api/me?x=1", &signed, &empty(), 1_030), Ok(ada()));
}

#[test]
fn signatures_bind_the_method_the_path_the_query_the_caller_and_the_key() {
    let v = verifier();
    let signed = gateway().sign("GET", "/api/me?page=1", &ada(), 1_000);
    let verify =
        |method: &str, path: &str, h: &[(&'static str, String)]| v.verify(method, path, &headers(h), &empty(), 1_000);
    assert_eq!(verify("DELETE", "/api/me?page=1", &signed), Err(CallerError::BadSignature));
    assert_eq!(verify("GET", "/api/admin/users?page=1", &signed), Err(CallerError::BadSignature));
    assert_eq!(verify("GET", "/api/me?page=2", &signed), Err(CallerError::BadSignature));
    assert_eq!(verify("GET", "/api/me", &signed), Err(CallerError::BadSignature));
    let escalated = replace(&signed, ROLES, "user,owner,admin");
    assert_eq!(verify("GET", "/api/me?page=1", &escalated), Err(CallerError::BadSignature));
    let moved = replace(&signed, TIMESTAMP, "1010");
    assert_eq!(verify("GET", "/api/me?page=1", &moved), Err(CallerError::BadSignature));
    // Any key but the gateway's, including a service's own, does not vouch for a person.
    for other in [signer(9), service_signer(Service::Billing)] {
        let forged = other.sign("GET", "/api/me?page=1", &ada(), 1_000);
        assert_eq!(verify("GET", "/api/me?page=1", &forged), Err(CallerError::BadSignature));
    }
}

#[test]
fn the_body_is_signed_so_a_replay_with_another_body_fails() {
    let v = verifier();
    let body = br#"{"name":"ada"}"#;
    let signed = gateway().sign_with_body("POST", "/api/teams", body, &ada(), 1_000);
    assert!(signed.contains(&(CONTENT_SHA256, body_sha256(body))), "{signed:?}");
    let h = headers(&signed);
    assert_eq!(v.verify("POST", "/api/teams", &h, &body_sha256(body), 1_000), Ok(ada()));
    // The same headers over another body: the HTTP layer's digest is not the signed one.
    let other = body_sha256(br#"{"name":"eve"}"#);
    assert_eq!(v.verify("POST", "/api/teams", &h, &other, 1_000), Err(CallerError::BodyMismatch));
    assert_eq!(v.verify("POST", "/api/teams", &h, &empty(), 1_000), Err(CallerError::BodyMismatch));
    // Nor does changing the digest header to the new body's help: it is signed.
    let rewritten = replace(&signed, CONTENT_SHA256, &other);
    assert_eq!(v.verify("POST", "/api/teams", &headers(&rewritten), &other, 1_000), Err(CallerError::BadSignature));
    let mut dropped = signed.clone();
    dropped.retain(|(n, _)| *n != CONTENT_SHA256);
    assert_eq!(v.verify("POST", "/api/teams", &headers(&dropped), &empty(), 1_000), Err(CallerError::Malformed));
}

#[test]
fn the_issuer_is_signed_so_the_same_subject_of_another_tenant_is_another_caller() {
    let v = verifier();
    let signed = gateway().sign("GET", "/api/me", &ada(), 1_000);
    assert!(signed.contains(&(ISSUER, "https://tenant.example/".to_owned())), "{signed:?}");
    for forged in ["https://other-tenant.example/", ""] {
        let moved = replace(&signed, ISSUER, forged);
        assert_ne!(v.verify("GET", "/api/me", &headers(&moved), &empty(), 1_000), Ok(ada()), "{forged:?}");
    }
    let mut dropped = signed.clone();
    dropped.retain(|(name, _)| *name != ISSUER);
    assert_eq!(v.verify("GET", "/api/me", &headers(&dropped), &empty(), 1_000), Err(CallerError::BadSignature));
    let other = Caller { issuer: Some("https://other-tenant.example/".into()), ..ada() };
    let verified =
        v.verify("GET", "/api/me", &headers(&gateway().sign("GET", "/api/me", &other, 1_000)), &empty(), 1_000);
    assert_eq!(verified.map(|c| c.issuer), Ok(Some("https://other-tenant.example/".to_owned())));
}

#[test]
fn a_service_signs_as_itself_with_its_own_key_and_as_nothing_else() {
    let v = verifier();
    let metering = Caller::service(Service::Metering);
    assert_eq!(metering.subject, "service:metering");
    assert_eq!(
        (metering.issuer.as_ref(), metering.user_id, metering.roles.as_slice(), metering.email.as_ref()),
        (None, None, [Role::Service].as_slice(), None)
    );
    let path = "/internal/clusters/0193a000-0000-7000-8000-000000000001/kubeconfig";
    let signed = service_signer(Service::Metering).sign("GET", path, &metering, 1_000);
    let roles = signed.iter().find(|(n, _)| *n == ROLES).map(|(_, v)| v.as_str());
    assert_eq!(roles, Some("service"));
    assert!(
        signed.iter().all(|(n, _)| *n != USER_ID && *n != EMAIL && *n != ISSUER),
        "a service has no issuer, user id or email"
    );
    let verified = v.verify("GET", path, &headers(&signed), &empty(), 1_010).unwrap();
    assert_eq!(verified, metering);
    assert!(verified.is_service(Service::Metering));
    assert!(!verified.is_service(Service::Billing));

    // Billing holds every public key, metering's included, but only its own private key:
    // signing as metering with it fails, and so does renaming metering's signed headers.
    let as_metering = service_signer(Service::Billing).sign("GET", path, &metering, 1_000);
    assert_eq!(v.verify("GET", path, &headers(&as_metering), &empty(), 1_000), Err(CallerError::BadSignature));
    let renamed = replace(&signed, SUBJECT, "service:billing");
    assert_eq!(v.verify("GET", path, &headers(&renamed), &empty(), 1_000), Err(CallerError::BadSignature));
    // The gateway's key vouches for people, not for metering.
    let by_gateway = gateway().sign("GET", path, &metering, 1_000);
    assert_eq!(v.verify("GET", path, &headers(&by_gateway), &empty(), 1_000), Err(CallerError::BadSignature));
    // A service's own key signs no person, administrator or extra role.
    for shape in [
        Caller { roles: vec![Role::Service, Role::Admin], ..metering.clone() },
        Caller { email: Email::parse("metering@example.com").ok(), ..metering.clone() },
        Caller { issuer: Some("https://tenant.example/".into()), ..metering.clone() },
        Caller { subject: "service:stripe".into(), ..metering.clone() },
    ] {
        let signed = service_signer(Service::Metering).sign("GET", path, &shape, 1_000);
        assert_eq!(v.verify("GET", path, &headers(&signed), &empty(), 1_000), Err(CallerError::Malformed), "{shape:?}");
    }
    assert_eq!(
        v.verify("GET", "/internal/clusters/x/projects", &headers(&signed), &empty(), 1_000),
        Err(CallerError::BadSignature)
    );
    // A service this one does not trust is refused, whatever it signs with.
    let only_gateway = CallerVerifier::new(gateway().public_key());
    assert_eq!(only_gateway.verify("GET", path, &headers(&signed), &empty(), 1_000), Err(CallerError::UnknownService));
}

#[test]
fn the_gateway_signs_as_the_gateway_service_with_its_own_key() {
    let v = verifier();
    let caller = Caller::service(Service::Gateway);
    let signed = gateway().sign("POST", "/internal/callers/resolve", &caller, 1_000);
    assert_eq!(v.verify("POST", "/internal/callers/resolve", &headers(&signed), &empty(), 1_000), Ok(caller.clone()));
    let forged = service_signer(Service::Identity).sign("POST", "/internal/callers/resolve", &caller, 1_000);
    assert_eq!(
        v.verify("POST", "/internal/callers/resolve", &headers(&forged), &empty(), 1_000),
        Err(CallerError::BadSignature)
    );
}

#[test]
fn only_the_exact_service_shape_counts_as_a_service() {
    let metering = Caller::service(Service::Metering);
    assert!(metering.is_service(Service::Metering));
    let variants = [
        Caller { roles: vec![Role::Service, Role::Admin], ..metering.clone() },
        Caller { roles: vec![Role::Admin], ..metering.clone() },
        Caller { roles: vec![], ..metering.clone() },
        Caller { user_id: Some(UserId::from_uuid(uuid::Uuid::from_u128(1))), ..metering.clone() },
        Caller { email: Email::parse("metering@example.com").ok(), ..metering.clone() },
        Caller { subject: "metering".into(), ..metering.clone() },
        Caller { subject: "service:metering|x".into(), ..metering.clone() },
        Caller { subject: "auth0|service:metering".into(), ..metering.clone() },
        Caller { issuer: Some("https://tenant.example/".into()), ..metering.clone() },
        Caller { roles: vec![Role::User, Role::Owner, Role::Admin], ..ada() },
    ];
    for caller in variants {
        assert!(!caller.is_service(Service::Metering), "{caller:?}");
    }
}

#[test]
fn only_the_exact_machine_admin_shape_counts_as_a_machine_admin() {
    let machine = Caller::machine_admin("https://tenant.example/", "ops-bot");
    assert!(machine.is_machine_admin());
    assert_eq!(machine.subject, "client:ops-bot");
    let signed = headers(&gateway().sign("GET", "/api/admin/users", &machine, 1_000));
    assert!(verifier().verify("GET", "/api/admin/users", &signed, &empty(), 1_000).unwrap().is_machine_admin());
    for not in [
        Caller { user_id: ada().user_id, ..machine.clone() },
        Caller { email: ada().email, ..machine.clone() },
        Caller { issuer: None, ..machine.clone() },
        Caller { roles: vec![Role::Admin, Role::User], ..machine.clone() },
        Caller { roles: vec![Role::User], ..machine.clone() },
        Caller { subject: "client:".into(), ..machine.clone() },
        Caller { subject: "auth0|ops-bot".into(), ..machine.clone() },
        ada(),
    ] {
        assert!(!not.is_machine_admin(), "{not:?}");
    }
}

#[test]
fn unsigned_stale_and_malformed_headers_are_refused() {
    let v = verifier();
    assert_eq!(v.verify("GET", "/", &HeaderMap::new(), &empty(), 0), Err(CallerError::Unsigned));
    let signed = gateway().sign("GET", "/", &ada(), 1_000);
    assert_eq!(v.verify("GET", "/", &headers(&signed), &empty(), 1_061), Err(CallerError::Stale));
    assert_eq!(v.verify("GET", "/", &headers(&signed), &empty(), 939), Err(CallerError::Stale));
    let mut bad = signed.clone();
    bad.retain(|(n, _)| *n != SUBJECT);
    assert_eq!(v.verify("GET", "/", &headers(&bad), &empty(), 1_000), Err(CallerError::Malformed));
    let truncated = replace(&signed, SIGNATURE, "v3=abcd");
    assert_eq!(v.verify("GET", "/", &headers(&truncated), &empty(), 1_000), Err(CallerError::Malformed));
}

#[test]
fn keys_parse_from_hex_or_base64_and_errors_never_echo_them() {
    let seed_hex = "11".repeat(32);
    let from_hex = CallerSigner::new(&Secret::new(seed_hex.clone())).unwrap();
    assert_eq!(from_hex.public_key(), signer(0x11).public_key());
    let seed_b64 = "ERERERERERERERERERERERERERERERERERERERERERE=";
    assert_eq!(CallerSigner::new(&Secret::new(seed_b64.to_owned())).unwrap().public_key(), from_hex.public_key());
    let public = from_hex.public_key().to_string();
    assert_eq!(PublicKey::parse(&public), Ok(from_hex.public_key()));
    assert!(!format!("{from_hex:?}").contains(&seed_hex) && !format!("{from_hex:?}").contains("ERERE"));
    for bad in ["", "short", "test-gateway-signing-key-0123456789abcdef", &"ab".repeat(33)] {
        let err = CallerSigner::new(&Secret::new(bad.to_owned())).unwrap_err();
        assert!(bad.is_empty() || !err.contains(bad), "{err}");
        assert!(PublicKey::parse(bad).is_err());
    }
}
