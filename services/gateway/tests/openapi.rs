//! The committed OpenAPI document is the one the code describes, and the gateway serves it.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

fn generated() -> String {
    let doc = hopsbridge_gateway::api_doc::document(vec![
        <hopsbridge_identity::routes::ApiDoc as utoipa::OpenApi>::openapi(),
        <hopsbridge_billing::routes::ApiDoc as utoipa::OpenApi>::openapi(),
        <hopsbridge_provisioning::routes::ApiDoc as utoipa::OpenApi>::openapi(),
        <hopsbridge_metering::routes::ApiDoc as utoipa::OpenApi>::openapi(),
        <hopsbridge_team::routes::ApiDoc as utoipa::OpenApi>::openapi(),
        hopsbridge_platform::mail::api_doc(),
        hopsbridge_platform::events::dead_letters_api_doc(),
        hopsbridge_platform::integrity::api_doc(),
    ]);
    format!("{}\n", doc.to_pretty_json().unwrap())
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let wanted = generated();
    if std::env::var_os("HOPSBRIDGE_UPDATE_OPENAPI").is_some() {
        std::fs::write(FILE, &wanted).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(FILE).unwrap();
    if committed != wanted {
        panic!(
            "services/gateway/openapi.json is out of date; run \
             HOPSBRIDGE_UPDATE_OPENAPI=1 cargo test -p hopsbridge-gateway --test openapi and commit it"
        );
    }
    let doc: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    for path in ["/api/me", "/api/admin/users", "/api/admin/users/{id}/suspend", "/api/auth/login"] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    let paths = doc["paths"].as_object().unwrap();
    // Public routes are the API and the signed webhooks; internal routes never appear.
    assert!(
        paths.keys().all(|p| p.starts_with("/api/") || p.starts_with("/webhooks/")),
        "only public routes are documented: {:?}",
        paths.keys()
    );
    assert!(paths.keys().all(|p| !p.contains("/internal")), "no internal route is documented");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_it_without_authentication() {
    let p = common::Platform::start(common::Options::default()).await;
    let served = reqwest::get(format!("{}/api/openapi.json", p.gateway)).await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.text().await.unwrap(), std::fs::read_to_string(FILE).unwrap());
}

/// The operations of the committed document: (method, path, operation).
fn operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            all.push((method.clone(), path.clone(), operation.clone()));
        }
    }
    all
}

#[test]
fn every_operation_of_the_committed_document_is_consistent() {
    use hopsbridge_gateway::api_doc::is_public;
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let mut public = Vec::new();
    for (method, path, op) in operations(&doc) {
        let at = format!("{} {path}", method.to_uppercase());
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let templated: Vec<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        let in_path: Vec<&str> =
            params.iter().filter(|p| p["in"] == "path").map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(in_path, templated, "{at}: the path parameters are exactly the path's, in order");
        for p in &params {
            let name = p["name"].as_str().unwrap();
            assert!(["path", "query"].contains(&p["in"].as_str().unwrap()), "{at}: {name} is in the path or the query");
            if p["in"] == "path" {
                assert_eq!(p["required"], true, "{at}: path parameter {name} is required");
            }
        }
        let security = op["security"].as_array().unwrap_or_else(|| panic!("{at} declares its security"));
        if is_public(&method, &path) {
            assert!(security.is_empty(), "{at} is public and needs no credentials");
            public.push(at.clone());
        } else {
            assert!(!security.is_empty(), "{at} names its credentials");
            for requirement in security {
                for scheme in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(scheme), "{at}: {scheme} is a declared scheme");
                }
            }
        }
        let responses = op["responses"].as_object().unwrap();
        let says = |status: &str, code: &str| {
            responses.get(status).and_then(|r| r["description"].as_str()).is_some_and(|d| d.contains(code))
        };
        assert!(says("400", "nul_character"), "{at}: 400 nul_character");
        assert!(says("429", "rate_limited"), "{at}: 429 rate_limited");
        if !is_public(&method, &path) {
            assert!(says("401", "unauthenticated") && says("401", "invalid_token"), "{at}: 401");
            assert!(says("403", "account_deleted"), "{at}: 403 account_deleted");
            // A suspended person still reaches the billing page's routes, where a suspension is
            // resolved (a card, credits); everywhere else the gateway refuses them.
            let billing_page = ["/api/billing", "/api/credits"]
                .iter()
                .any(|p| path.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')));
            assert_eq!(says("403", "account_suspended"), !billing_page, "{at}: 403 account_suspended");
        }
        if op.get("requestBody").is_some() {
            assert!(says("413", "payload_too_large"), "{at}: 413");
            assert!(says("400", "invalid_body"), "{at}: 400 invalid_body");
        }
        if !in_path.is_empty() {
            assert!(says("400", "invalid_path"), "{at}: 400 invalid_path");
        }
        if params.iter().any(|p| p["in"] == "query") && !path.starts_with("/api/auth/") {
            assert!(says("400", "invalid_query"), "{at}: 400 invalid_query");
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ErrorBody", "{at} {status} answers the error body");
            }
        }
    }
    public.sort();
    assert_eq!(
        public,
        [
            "GET /api/auth/callback",
            "GET /api/auth/login",
            "GET /api/auth/logout",
            "GET /api/invitations/{token}",
            "GET /api/pricing",
            "POST /webhooks/stripe"
        ],
        "the public operations are the preview, the price list, the sign-in routes and the signed webhooks"
    );
    let stripe = &doc["paths"]["/webhooks/stripe"]["post"];
    assert!(stripe["description"].as_str().unwrap_or_default().contains("Stripe-Signature"), "{stripe}");
}

/// The inputs a held-out run found refused although the document allowed them are refused by
/// the document too: a control character in a name, a status that is no status, a null name.
#[test]
fn the_document_refuses_the_inputs_the_services_refuse() {
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    let schemas = &doc["components"]["schemas"];
    for (schema, field, longest) in
        [("UpdateMe", "name", 200), ("ClusterBody", "name", 100), ("ClusterRegistration", "name", 100)]
    {
        let name = &schemas[schema]["properties"][field];
        assert_eq!(name["type"], "string", "{schema}.{field} is a string, never null");
        assert_eq!((name["minLength"].as_u64(), name["maxLength"].as_u64()), (Some(1), Some(longest)));
        let pattern = name["pattern"].as_str().unwrap();
        // Every character class of the pattern excludes the control characters (U+0000-U+001F,
        // U+007F-U+009F), so no string with one matches it.
        let classes: Vec<&str> = pattern.split('[').skip(1).map(|c| c.split(']').next().unwrap()).collect();
        assert!(!classes.is_empty() && pattern.starts_with('^') && pattern.ends_with('$'), "{pattern}");
        for class in classes {
            assert!(
                class.starts_with('^') && class.contains("\\u0000-\\u001F\\u007F-\\u009F"),
                "{schema}.{field} refuses control characters: {pattern}"
            );
        }
    }
    for schema in ["ClusterBody", "ClusterRegistration"] {
        let status = &schemas[schema]["properties"]["status"]["$ref"];
        assert_eq!(status, "#/components/schemas/ClusterStatus", "{schema}.status is one of the statuses");
        for (field, property) in schemas[schema]["properties"].as_object().unwrap() {
            let nullable = property["type"].as_array().is_some_and(|t| t.contains(&"null".into()));
            assert!(!nullable, "{schema}.{field} is not nullable: the service refuses null");
        }
    }
    let statuses = schemas["ClusterStatus"]["enum"].as_array().unwrap();
    assert!(!statuses.contains(&"".into()), "an empty status is no status");
    // A registration sends every field but RonDB's three, which are optional together.
    let optional = ["rondb_endpoint", "rondb_user", "rondb_password"];
    let required: std::collections::BTreeSet<&str> = schemas["ClusterRegistration"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let fields: std::collections::BTreeSet<&str> = schemas["ClusterRegistration"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|f| !optional.contains(f))
        .collect();
    assert_eq!(required, fields, "a registration sends every field but RonDB's");
}
