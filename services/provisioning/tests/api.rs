//! provisioning against the real Postgres and NATS and the Hopsworks sandbox: the cluster
//! registry, assignment on PaymentMethodAdded, Hopsworks faults, capacity races, moves and
//! unassignments, key rotation, and the internal routes the metering service reads clusters by.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{
    Bytes, CLIENT_ID, KUBECONFIG, Provisioning, admin, cluster_body, hopsworks, kube_cluster, kubeconfig, launch,
    launch_with, metering, person, settings, start, start_with,
};
use diesel_async::RunQueryDsl;
use hopsbridge_contracts::Service;
use hopsbridge_contracts::events::{ClusterAssignedV1, ClusterUnassignedV1, Envelope, PaymentMethodAddedV1};
use hopsbridge_domain::{AccountStatus, ClusterId, UserId};
use hopsbridge_platform::caller::{Caller, CallerSigner, Role};
use hopsbridge_sandbox::hopsworks::{STATUS_ACTIVATED, STATUS_DEACTIVATED};
use hopsbridge_testkit::{GATEWAY_SIGNING_KEY, PROVISIONING_ENCRYPTION_KEYS, TestBus, TestDb, eventually};
use prost::Message as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The registry

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_register_list_view_and_change_clusters_and_secrets_never_leave() {
    let p = start().await;
    let sim = hopsworks("reg");
    let body = cluster_body("eu-1", &sim, 15);
    let (status, created) = p.call(Method::POST, "/api/admin/clusters", Some(&admin()), Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "eu-1");
    assert_eq!(created["capacity"], 15);
    assert_eq!(created["used"], 0);
    assert_eq!(created["has_api_key"], true);
    assert_eq!(created["api_key_key_id"], "test1");
    assert_eq!(created["api_url"], sim.origin());
    let leaked = |v: &Value| {
        let text = v.to_string();
        text.contains(sim.api_key()) || text.contains("kube-token-very-secret") || v.get("api_key").is_some()
    };
    assert!(!leaked(&created), "{created}");

    let (status, list) = p.call(Method::GET, "/api/admin/clusters", Some(&admin()), None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!leaked(&list));
    let (status, one) = p.call(Method::GET, &format!("/api/admin/clusters/{id}"), Some(&admin()), None).await;
    assert_eq!((status, one["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    assert!(!leaked(&one));

    // A new key of the cluster's admin (the change is checked against Hopsworks).
    let new_key = sim.create_api_key(&sim.admin().unwrap().username).unwrap();
    let (status, changed) = p
        .call(
            Method::PATCH,
            &format!("/api/admin/clusters/{id}"),
            Some(&admin()),
            Some(json!({"capacity": 20, "status": "maintenance", "api_key": new_key})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!((changed["capacity"].as_i64(), changed["status"].as_str()), (Some(20), Some("maintenance")));
    assert_eq!(changed["name"], "eu-1", "untouched fields stay");
    assert!(!changed.to_string().contains(&new_key));

    // Stored secrets are ciphertexts, and no event carries them.
    let mut conn = p.db.connect("provisioning").await;
    let stored: Vec<Bytes> = diesel::sql_query(
        "SELECT api_key_ciphertext AS b FROM clusters UNION ALL SELECT kubeconfig_ciphertext FROM clusters",
    )
    .load(&mut conn)
    .await
    .unwrap();
    for needle in [new_key.as_bytes(), sim.api_key().as_bytes(), b"kube-token-very-secret".as_slice(), b"apiVersion"] {
        assert!(stored.iter().all(|s| !s.b.windows(needle.len()).any(|w| w == needle)), "plaintext stored");
    }
    let events: Vec<Envelope> = [p.outbox("ClusterRegistered").await, p.outbox("ClusterUpdated").await].concat();
    assert_eq!(events.len(), 2);
    for e in &events {
        let bytes = e.encode_to_vec();
        for needle in [new_key.as_bytes(), sim.api_key().as_bytes(), b"kube-token-very-secret".as_slice()] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "secret in {}", e.event_type);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_reach_the_registry() {
    let p = start().await;
    let sim = hopsworks("auth");
    let body = cluster_body("eu-1", &sim, 1);
    let (status, err) = p.call(Method::POST, "/api/admin/clusters", None, Some(body.clone())).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")));
    let stranger = person(Uuid::now_v7());
    let (status, err) = p.call(Method::POST, "/api/admin/clusters", Some(&stranger), Some(body)).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("admin_only")));
    for path in ["/api/admin/clusters", "/api/admin/assignments"] {
        assert_eq!(p.call(Method::GET, path, Some(&stranger), None).await.0, StatusCode::FORBIDDEN);
        assert_eq!(p.call(Method::GET, path, None, None).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(p.count("SELECT count(*) AS n FROM clusters").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_registration_is_refused_with_its_code_and_changes_nothing() {
    let p = start().await;
    let sim = hopsworks("bad");
    let id = p.register("eu-1", &sim, 5).await;
    let good = cluster_body("eu-2", &sim, 5);
    let with = |field: &str, value: Value| {
        let mut b = good.clone();
        b[field] = value;
        b
    };
    let without = |field: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(field);
        b
    };
    let cases = [
        (with("kubeconfig", json!("not: [yaml")), "invalid_kubeconfig"),
        (
            with(
                "kubeconfig",
                json!(KUBECONFIG.replace("    token: kube-token-very-secret-0123\n", "    username: x\n")),
            ),
            "invalid_kubeconfig",
        ),
        (
            with(
                "kubeconfig",
                json!(KUBECONFIG.replace("server: https://127.0.0.1:6443", "certificate-authority-data: AAAA")),
            ),
            "invalid_kubeconfig",
        ),
        (
            with("ca_bundle", json!("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n")),
            "invalid_ca_bundle",
        ),
        (with("ca_bundle", json!("hello")), "invalid_ca_bundle"),
        (with("api_url", json!("http://hopsworks.example.com")), "invalid_api_url"),
        (with("api_url", json!("not a url")), "invalid_api_url"),
        (with("capacity", json!(-1)), "invalid_capacity"),
        (with("capacity", json!(2.5)), "invalid_capacity"),
        (with("capacity", json!("ten")), "invalid_capacity"),
        (with("status", json!("broken")), "invalid_status"),
        (with("region", json!("")), "invalid_region"),
        (with("name", json!("  ")), "invalid_name"),
        // What the document refuses too (a control character in the name, an empty status, a
        // null field): the service refuses them with the field's code.
        (with("name", json!("EU\u{7}2")), "invalid_name"),
        (with("status", json!("")), "invalid_status"),
        (with("name", Value::Null), "invalid_name"),
        (with("capacity", Value::Null), "invalid_capacity"),
        (with("api_key", json!("")), "invalid_api_key"),
        (with("oauth_client_id", json!(7)), "invalid_oauth_client_id"),
        (without("kubeconfig"), "invalid_kubeconfig"),
        (with("surprise", json!(1)), "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, err) = p.call(Method::POST, "/api/admin/clusters", Some(&admin()), Some(body.clone())).await;
        assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{body} → {err}");
        assert!(!err.to_string().contains("kube-token-very-secret"), "{err}");
    }
    let (status, err) =
        p.call(Method::POST, "/api/admin/clusters", Some(&admin()), Some(with("name", json!("EU-1")))).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("cluster_name_taken")));
    // Changes are checked the same way, and a refused one changes nothing.
    for (body, code) in [
        (json!({"capacity": -3}), "invalid_capacity"),
        (json!({"status": "gone"}), "invalid_status"),
        (json!({"status": ""}), "invalid_status"),
        (json!({"name": null}), "invalid_name"),
        (json!({"region": null}), "invalid_region"),
        (json!({"name": "EU\u{1b}[31m"}), "invalid_name"),
        (json!({"kubeconfig": "users: []"}), "invalid_kubeconfig"),
        (json!({"api_url": "ftp://x"}), "invalid_api_url"),
    ] {
        let (status, err) =
            p.call(Method::PATCH, &format!("/api/admin/clusters/{id}"), Some(&admin()), Some(body)).await;
        assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{err}");
    }
    let missing = Uuid::now_v7();
    let (status, err) = p
        .call(Method::PATCH, &format!("/api/admin/clusters/{missing}"), Some(&admin()), Some(json!({"capacity": 1})))
        .await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("cluster_not_found")));
    assert_eq!(p.count("SELECT count(*) AS n FROM clusters").await, 1);
    assert_eq!(p.count("SELECT count(*) AS n FROM clusters WHERE capacity = 5 AND status = 'active'").await, 1);
    assert_eq!(p.count("SELECT count(*) AS n FROM outbox").await, 1, "only the one registration was announced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_on_loopback_link_local_unspecified_or_metadata_addresses_are_refused_and_nothing_stored() {
    let mut p = start_with(|s| s.set("clusters.allow_private_addresses", "false")).await;
    let sim = hopsworks("ssrf");
    // A private-network address is where clusters live: allowed.
    let kubeconfig_at = |server: &str| json!(KUBECONFIG.replace("https://127.0.0.1:6443", server));
    let good = |name: &str| {
        let mut b = cluster_body(name, &sim, 5);
        b["api_url"] = json!("https://10.20.30.40:8181");
        b["kubeconfig"] = kubeconfig_at("https://10.20.30.41:6443");
        b
    };
    let refused_hosts = [
        ("https://127.0.0.1:6443", "loopback"),
        ("https://127.1.2.3", "loopback"),
        ("https://[::1]:6443", "loopback"),
        ("https://[::ffff:127.0.0.1]", "loopback"),
        ("https://localhost:6443", "loopback"),
        ("https://169.254.10.20", "link-local"),
        ("https://[fe80::1]", "link-local"),
        ("https://0.0.0.0:6443", "unspecified"),
        ("https://[::]", "unspecified"),
        ("https://169.254.169.254", "metadata"),
        ("https://[fd00:ec2::254]", "metadata"),
        ("https://nothing-here.invalid", "does not resolve"),
    ];
    let mut cases = vec![(json!({"api_url": sim.origin()}), "api_url", "loopback")];
    for (host, kind) in refused_hosts {
        cases.push((json!({"api_url": host}), "api_url", kind));
        cases.push((json!({"kubeconfig": kubeconfig_at(host)}), "kubeconfig's server", kind));
    }
    for (change, field, kind) in &cases {
        let mut body = good("eu-1");
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, err) = p.call(Method::POST, "/api/admin/clusters", Some(&admin()), Some(body)).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("cluster_address_refused")),
            "{change} → {err}"
        );
        let message = err["message"].as_str().unwrap();
        assert!(message.starts_with(field) && message.contains(kind), "{change} → {message}");
        assert!(!message.contains("kube-token-very-secret"), "{message}");
    }
    assert_eq!(p.count("SELECT count(*) AS n FROM clusters").await, 0, "nothing registered");
    assert_eq!(p.count("SELECT count(*) AS n FROM outbox").await, 0, "nothing announced");

    // On allowed addresses the cluster itself is checked: nothing answers there, so it is
    // refused too, for that reason, and nothing is stored.
    let (status, err) = p.call(Method::POST, "/api/admin/clusters", Some(&admin()), Some(good("eu-1"))).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cluster_check_failed")),
        "{err}"
    );
    let kube = &err["details"]["checks"][0];
    assert_eq!((kube["name"].as_str(), kube["ok"].as_bool()), (Some("kubernetes_api"), Some(false)), "{err}");
    assert_eq!(p.count("SELECT count(*) AS n FROM clusters").await, 0, "nothing registered");

    // A cluster registered where loopback is allowed (another replica's settings, same
    // database) cannot be changed to a refused address where it is not.
    let lenient = settings(&p.db, &p.bus, PROVISIONING_ENCRYPTION_KEYS, "test1");
    let (lenient, stop) = launch_with(lenient).await;
    p.stops.push(stop);
    let (status, created) = hopsbridge_testkit::signed_call(
        &p.key,
        &lenient,
        Method::POST,
        "/api/admin/clusters",
        Some(&admin()),
        Some(cluster_body("eu-1", &sim, 5)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    for (change, _, _) in &cases {
        let (status, err) =
            p.call(Method::PATCH, &format!("/api/admin/clusters/{id}"), Some(&admin()), Some(change.clone())).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("cluster_address_refused")),
            "{change} → {err}"
        );
    }
    let (_, one) = p.call(Method::GET, &format!("/api/admin/clusters/{id}"), Some(&admin()), None).await;
    assert_eq!(one["api_url"], json!(sim.origin()));
    assert_eq!(p.count("SELECT count(*) AS n FROM outbox").await, 1, "only the registration was announced");
    let (status, stored) =
        p.call(Method::GET, &format!("/internal/clusters/{id}/kubeconfig"), Some(&metering()), None).await;
    assert_eq!((status, stored["kubeconfig"].as_str()), (StatusCode::OK, Some(kubeconfig().as_str())));
}

// ---------------------------------------------------------------------------------------------
// The internal routes of the metering service

const INTERNAL: [&str; 2] = ["kubeconfig", "projects"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metering_service_reads_a_clusters_kubeconfig_exactly_as_registered() {
    let p = start().await;
    let sim = hopsworks("kube");
    let id = p.register("eu-1", &sim, 5).await;
    let path = format!("/internal/clusters/{id}/kubeconfig");
    let (status, body) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"cluster_id": id, "name": "eu-1", "status": "active", "kubeconfig": kubeconfig()}));

    // A changed kubeconfig and status are answered as they now are, and the answer is not stored.
    let rotated = kube_cluster("rotated", Some("kube-token-rotated-4567"));
    let changed = rotated.kubeconfig();
    let (status, _) = p
        .call(
            Method::PATCH,
            &format!("/api/admin/clusters/{id}"),
            Some(&admin()),
            Some(json!({"kubeconfig": changed, "status": "maintenance"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut request = reqwest::Client::new().get(format!("{}{path}", p.base));
    let metering_key = hopsbridge_testkit::service_signer(Service::Metering);
    for (name, value) in metering_key.sign("GET", &path, &metering(), chrono::Utc::now().timestamp()) {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"cluster_id": id, "name": "eu-1", "status": "maintenance", "kubeconfig": changed}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_metering_service_reaches_the_internal_routes() {
    let p = start().await;
    let sim = hopsworks("guard");
    let id = p.register("eu-1", &sim, 5).await;
    // The registration's check of the key is the last call the cluster's Hopsworks sees.
    let registered = sim.requests().len();
    let other_key = CallerSigner::from_seed(&[42; 32]);
    // Billing's own credential: provisioning trusts it (it holds billing's public key), but the
    // internal routes are metering's only. Billing also holds metering's public key, which
    // does not let it sign as metering.
    let billing_key = hopsbridge_testkit::service_signer(Service::Billing);
    let forged = [Caller { roles: vec![Role::User, Role::Admin], ..metering() }];
    // A service's role with anything but a service's exact shape is no caller at all.
    let malformed = [
        Caller { user_id: Some(Uuid::now_v7().into()), ..metering() },
        Caller { subject: "auth0|metering".into(), ..metering() },
    ];
    for route in INTERNAL {
        let path = format!("/internal/clusters/{id}/{route}");
        let (status, err) = p.call(Method::GET, &path, None, None).await;
        assert_eq!((status, err["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")), "{path}");
        let mut request = reqwest::Client::new().get(format!("{}{path}", p.base));
        for (name, value) in other_key.sign("GET", &path, &metering(), chrono::Utc::now().timestamp()) {
            request = request.header(name, value);
        }
        assert_eq!(request.send().await.unwrap().status(), StatusCode::UNAUTHORIZED, "signed with another key");
        let send = async |key: &CallerSigner, caller: &Caller| {
            let mut request = reqwest::Client::new().get(format!("{}{path}", p.base));
            for (name, value) in key.sign("GET", &path, caller, chrono::Utc::now().timestamp()) {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap()["code"].as_str().map(str::to_owned))
        };
        let billing = Caller::service(Service::Billing);
        assert_eq!(send(&billing_key, &billing).await, (StatusCode::FORBIDDEN, Some("metering_only".to_owned())));
        assert_eq!(
            send(&billing_key, &metering()).await,
            (StatusCode::UNAUTHORIZED, Some("unauthenticated".to_owned()))
        );
        assert_eq!(send(&p.key, &metering()).await.0, StatusCode::UNAUTHORIZED, "the gateway's key is not metering's");
        for caller in &malformed {
            let (status, err) = p.call(Method::GET, &path, Some(caller), None).await;
            assert_eq!(
                (status, err["code"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
                "{caller:?}"
            );
        }
        let refused =
            [admin(), person(Uuid::now_v7()), Caller::service(Service::Billing), Caller::service(Service::Gateway)];
        for caller in refused.iter().chain(&forged) {
            let (status, err) = p.call(Method::GET, &path, Some(caller), None).await;
            assert_eq!((status, err["code"].as_str()), (StatusCode::FORBIDDEN, Some("metering_only")), "{caller:?}");
            assert!(!err.to_string().contains("kube-token-very-secret"), "{err}");
        }
        // A refused caller is refused before its cluster id is judged.
        let (status, _) = p.call(Method::GET, &format!("/internal/clusters/nope/{route}"), Some(&admin()), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, err) = p
            .call(Method::GET, &format!("/internal/clusters/{}/{route}", Uuid::now_v7()), Some(&metering()), None)
            .await;
        assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("cluster_not_found")), "{route}");
        let (status, err) =
            p.call(Method::GET, &format!("/internal/clusters/not-a-uuid/{route}"), Some(&metering()), None).await;
        assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_path")), "{route}");
        assert!(err["message"].is_string() && err.get("request_id").is_some(), "the usual error shape: {err}");
    }
    assert_eq!(sim.requests().len(), registered, "no refused call reached the cluster's Hopsworks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metering_service_lists_a_clusters_projects_with_their_namespaces_and_creators() {
    let p = start().await;
    let sim = hopsworks("projects");
    let id = p.register("eu-1", &sim, 5).await;
    let path = format!("/internal/clusters/{id}/projects");
    let (status, body) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"cluster_id": id, "projects": []}), "a cluster without projects");

    // An owner provisioned through Hopsbridge creates projects, and so does the local admin.
    let ada = Uuid::now_v7();
    p.user_created(ada, "ada@example.com", "Ada Lovelace").await;
    p.paid(ada).await;
    let seated = p.wait_status(ada, "complete").await;
    let username = seated["hopsworks_username"].as_str().unwrap().to_owned();
    let first = sim.create_project(&username, "My_Project").unwrap();
    let second = sim.create_project(&username, "churn_model").unwrap();
    let third = sim.create_project("admin", "demo").unwrap();
    let (status, body) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"cluster_id": id, "projects": [
            {"id": first.id, "name": "My_Project", "namespace": "my-project", "creator_username": username},
            {"id": second.id, "name": "churn_model", "namespace": "churn-model", "creator_username": username},
            {"id": third.id, "name": "demo", "namespace": "demo", "creator_username": "admin"},
        ]})
    );
    let lists: Vec<_> = sim.requests().into_iter().filter(|r| r.path == "/hopsworks-api/api/admin/projects").collect();
    assert_eq!(lists.len(), 2, "one call per listing");
    assert!(lists.iter().all(|r| r.method == "GET" && r.query.split('&').any(|q| q == "expand=creator")), "{lists:?}");

    // The client pages through the list and keeps every project once.
    let access = hopsbridge_provisioning::clusters::ClusterAccess {
        id: id.parse().unwrap(),
        api_url: sim.origin(),
        api_key: sim.api_key().to_owned().into(),
        ca_bundle: sim.ca_pem().to_owned(),
        oauth_client_id: CLIENT_ID.into(),
    };
    let cfg = hopsbridge_provisioning::config::HopsworksConfig {
        request_timeout_ms: 1000,
        connect_timeout_ms: 1000,
        max_attempts: 1,
        initial_backoff_ms: 10,
        max_backoff_ms: 50,
        max_num_projects_paying: 5,
    };
    let hw = hopsbridge_provisioning::hopsworks::Hopsworks::new(&access, &cfg, true).unwrap();
    for page in [1, 2, 3, 500] {
        let before = sim.requests().len();
        let listed = hw.projects(page).await.unwrap();
        let ids: Vec<i64> = listed.iter().map(|p| p.id).collect();
        let want: Vec<i64> = [first.id, second.id, third.id].iter().map(|i| i64::try_from(*i).unwrap()).collect();
        assert_eq!(ids, want, "page size {page}");
        assert_eq!(sim.requests().len() - before, usize::try_from(3_u64.div_ceil(page)).unwrap(), "page size {page}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hopsworks_client_connects_to_no_refused_address_written_or_resolved_unless_allowed() {
    hopsbridge_testkit::init();
    let sim = hopsworks("guarded");
    let cfg = hopsbridge_provisioning::config::HopsworksConfig {
        request_timeout_ms: 1000,
        connect_timeout_ms: 1000,
        max_attempts: 1,
        initial_backoff_ms: 10,
        max_backoff_ms: 50,
        max_num_projects_paying: 5,
    };
    let at = |api_url: String| hopsbridge_provisioning::clusters::ClusterAccess {
        id: ClusterId::new(),
        api_url,
        api_key: sim.api_key().to_owned().into(),
        ca_bundle: sim.ca_pem().to_owned(),
        oauth_client_id: CLIENT_ID.into(),
    };
    let written = at(sim.origin());
    let err = hopsbridge_provisioning::hopsworks::Hopsworks::new(&written, &cfg, false).unwrap_err();
    assert!(err.0.contains("loopback"), "{}", err.0);
    // A name registered while it resolved elsewhere, now resolving to loopback: the resolver
    // leaves it no address, so the call fails before any connection.
    let port = sim.origin().rsplit(':').next().unwrap().to_owned();
    let named = at(format!("https://localhost:{port}"));
    let guarded = hopsbridge_provisioning::hopsworks::Hopsworks::new(&named, &cfg, false).unwrap();
    assert!(guarded.projects(10).await.is_err());
    assert!(sim.requests().is_empty(), "no request reached the cluster: {:?}", sim.requests());
    // Allowed (development), the same client reaches it.
    let allowed = hopsbridge_provisioning::hopsworks::Hopsworks::new(&written, &cfg, true).unwrap();
    assert!(allowed.projects(10).await.is_ok());
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hopsworks_is_answered_502_with_a_stable_code_and_no_secret() {
    let p = start().await;
    let sim = hopsworks("down");
    let id = p.register("eu-1", &sim, 5).await;
    sim.create_project("admin", "demo").unwrap();
    let path = format!("/internal/clusters/{id}/projects");
    let lists = || sim.requests().iter().filter(|r| r.path.ends_with("/admin/projects")).count();

    // As many 503s as the client tries (3): 502, after the same retries as every Hopsworks call.
    sim.fail_next(3, 503);
    let (status, err) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("hopsworks_unavailable")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("503"), "{err}");
    assert_eq!(lists(), 3);
    // Fewer failures than tries: the retries hide them.
    sim.fail_next(2, 500);
    let (status, body) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!((status, body["projects"][0]["name"].as_str()), (StatusCode::OK, Some("demo")), "{body}");
    assert_eq!(lists(), 6);
    // Answers held past the request timeout on every try.
    sim.hold_next(3, Duration::from_millis(1500));
    let (status, err) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("hopsworks_unavailable")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("timed out"), "{err}");

    // A key the cluster refuses (revoked in Hopsworks after it was registered): 401 is not
    // tried again, and the message holds no key.
    let wrong_key = sim.create_api_key(&sim.admin().unwrap().username).unwrap();
    let (status, _) = p
        .call(Method::PATCH, &format!("/api/admin/clusters/{id}"), Some(&admin()), Some(json!({"api_key": wrong_key})))
        .await;
    assert_eq!(status, StatusCode::OK);
    sim.revoke_api_key(&wrong_key);
    let before = lists();
    let (status, err) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("hopsworks_unavailable")), "{err}");
    assert!(err["message"].as_str().unwrap().contains("401"), "{err}");
    assert_eq!(lists() - before, 1);
    for secret in [wrong_key.as_str(), sim.api_key(), "kube-token-very-secret"] {
        assert!(!err.to_string().contains(secret), "{err}");
    }

    // A cluster whose Hopsworks is gone altogether.
    sim.stop().await;
    let (status, err) = p.call(Method::GET, &path, Some(&metering()), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("hopsworks_unavailable")), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Assignment

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_method_gives_the_owner_a_hopsworks_account_once() {
    let p = start().await;
    let sim = hopsworks("pay");
    let cluster = p.register("eu-1", &sim, 10).await;
    // The registration's check of the key lists one user; what follows looks people up only.
    let registered = sim.requests().len();
    let ada = Uuid::now_v7();
    p.user_created(ada, "ada@example.com", "Ada Lovelace").await;
    let event = p.paid(ada).await;
    let done = p.wait_status(ada, "complete").await;
    assert_eq!(done["cluster_id"], cluster.as_str());
    let users: Vec<_> = sim.users().into_iter().filter(|u| u.email == "ada@example.com").collect();
    assert_eq!(users.len(), 1);
    let hw = &users[0];
    assert_eq!(hw.uuid.as_deref(), Some(format!("{CLIENT_ID}.auth0|{ada}").as_str()), "subject and client id");
    assert_eq!(hw.max_num_projects, 5);
    assert_eq!((hw.given_name.as_str(), hw.surname.as_str()), ("Ada", "Lovelace"));
    assert_eq!(done["hopsworks_username"], hw.username.as_str());
    assert_eq!(done["hopsworks_user_id"].as_u64(), Some(hw.id));
    let after: Vec<_> = sim.requests().into_iter().skip(registered).collect();
    assert!(after.iter().all(|r| r.method != "GET" || r.query.contains("filter_by")), "no unfiltered listing");

    // The same event again (redelivered) and a second PaymentMethodAdded change nothing.
    p.publish(&PaymentMethodAddedV1 { user_id: ada.to_string(), stripe_customer_id: "cus_x".into() }, Some(event))
        .await;
    p.paid(ada).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.users().iter().filter(|u| u.email == "ada@example.com").count(), 1);
    assert_eq!(p.count("SELECT count(*) AS n FROM assignments").await, 1);
    let assigned = p.outbox("ClusterAssigned").await;
    assert_eq!(assigned.len(), 1);
    let payload = ClusterAssignedV1::decode(assigned[0].payload.as_slice()).unwrap();
    assert_eq!(payload.user_id, ada.to_string());
    assert_eq!(payload.cluster_id, cluster);
    assert_eq!(payload.hopsworks_username, hw.username);
    assert_eq!(u64::try_from(payload.hopsworks_user_id).ok(), Some(hw.id));

    // The owner sees their cluster; a stranger is not assigned.
    let (status, mine) = p.call(Method::GET, "/api/cluster", Some(&person(ada)), None).await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["status"], "complete");
    assert_eq!(mine["cluster"]["id"], cluster.as_str());
    assert_eq!(mine["cluster"]["endpoint"], sim.origin());
    assert_eq!(mine["cluster"]["region"], "eu-north-1");
    let (status, err) = p.call(Method::GET, "/api/cluster", Some(&person(Uuid::now_v7())), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_assigned")));
    assert_eq!(p.call(Method::GET, "/api/cluster", None, None).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_method_before_the_user_is_known_waits_for_the_user() {
    let p = start().await;
    let sim = hopsworks("early");
    p.register("eu-1", &sim, 10).await;
    let ada = Uuid::now_v7();
    p.paid(ada).await;
    p.wait_status(ada, "waiting_for_user").await;
    p.user_created(ada, "early@example.com", "Early Bird").await;
    p.wait_status(ada, "complete").await;
    assert_eq!(sim.users().iter().filter(|u| u.email == "early@example.com").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hopsworks_errors_and_timeouts_leave_the_assignment_pending_until_it_completes_by_itself() {
    let p = start().await;
    let sim = hopsworks("flaky");
    p.register("eu-1", &sim, 10).await;
    let ada = Uuid::now_v7();
    p.user_created(ada, "flaky@example.com", "Ada").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // More 503s than one pass tries: the assignment is visibly pending with its reason.
    sim.fail_next(7, 503);
    p.paid(ada).await;
    let pending = p
        .wait_for(ada, "pending with the reason", |a| {
            a["status"] == "provisioning" && a["last_error"].as_str().is_some_and(|e| e.contains("503"))
        })
        .await;
    assert!(pending["next_attempt_at"].is_string() && pending["attempts"].as_i64() >= Some(1), "{pending}");
    let (_, mine) = p.call(Method::GET, "/api/cluster", Some(&person(ada)), None).await;
    assert_eq!(mine["status"], "provisioning");
    assert!(mine["reason"].as_str().unwrap().contains("503"), "{mine}");
    p.wait_status(ada, "complete").await;
    assert_eq!(sim.users().iter().filter(|u| u.email == "flaky@example.com").count(), 1);

    // Answers held past the 1 s timeout: pending with the reason, then complete.
    let bob = Uuid::now_v7();
    p.user_created(bob, "slow@example.com", "Bob").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.hold_next(3, Duration::from_millis(1500));
    p.paid(bob).await;
    p.wait_for(bob, "pending with the reason", |a| {
        a["status"] == "provisioning" && a["last_error"].as_str().is_some_and(|e| e.contains("timed out"))
    })
    .await;
    p.wait_status(bob, "complete").await;
    assert_eq!(sim.users().iter().filter(|u| u.email == "slow@example.com").count(), 1);
    assert_eq!(p.outbox("ClusterAssigned").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_whose_answer_is_lost_is_not_repeated() {
    hopsbridge_testkit::init();
    let sim = hopsworks("lost");
    let access = hopsbridge_provisioning::clusters::ClusterAccess {
        id: ClusterId::new(),
        api_url: sim.origin(),
        api_key: sim.api_key().to_owned().into(),
        ca_bundle: sim.ca_pem().to_owned(),
        oauth_client_id: CLIENT_ID.into(),
    };
    let cfg = hopsbridge_provisioning::config::HopsworksConfig {
        request_timeout_ms: 500,
        connect_timeout_ms: 500,
        max_attempts: 3,
        initial_backoff_ms: 10,
        max_backoff_ms: 50,
        max_num_projects_paying: 5,
    };
    let hw = hopsbridge_provisioning::hopsworks::Hopsworks::new(&access, &cfg, true).unwrap();
    let ada = hopsbridge_provisioning::users::Person {
        user_id: UserId::new(),
        auth_subject: "auth0|lost".into(),
        email: "lost@example.com".into(),
        name: "Ada Lost".into(),
        status: AccountStatus::Active,
    };
    // The creation is made, but its answer never arrives in time; the retry is told the user
    // exists, and the account is then found, not made twice.
    sim.hold_next(1, Duration::from_millis(1000));
    hw.create(&ada, 5).await.unwrap();
    let account = hw.ensure_account(&ada, 5).await.unwrap();
    let (username, id) = (account.username, account.id);
    let made: Vec<_> = sim.users().into_iter().filter(|u| u.email == "lost@example.com").collect();
    assert_eq!(made.len(), 1);
    assert_eq!((made[0].username.clone(), made[0].id), (username, u64::try_from(id).unwrap()));
    let posts = sim.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 2, "one creation, tried again once");

    // A client trusts the cluster's CA only: another cluster's certificate is refused.
    let other = hopsworks("other");
    let wrong = hopsbridge_provisioning::clusters::ClusterAccess { ca_bundle: other.ca_pem().to_owned(), ..access };
    let hw = hopsbridge_provisioning::hopsworks::Hopsworks::new(&wrong, &cfg, true).unwrap();
    let err = hw.find_by_email("lost@example.com").await.unwrap_err();
    assert!(!err.0.contains(sim.api_key()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_hopsworks_user_with_the_same_email_in_another_case_is_reused() {
    let p = start().await;
    let sim = hopsworks("reuse");
    p.register("eu-1", &sim, 10).await;
    // Made by hand on the cluster earlier, with another case, the default project limit, and
    // deactivated since.
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(sim.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let created = client
        .post(format!(
            "{}/admin/users?accountType=REMOTE_ACCOUNT_TYPE&type=OAUTH2&email=Grace.Hopper@Example.COM&givenName=G&surname=H&subject=auth0%7Cold&clientId={CLIENT_ID}",
            sim.url()
        ))
        .header("Authorization", format!("ApiKey {}", sim.api_key()))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let existing = sim.users().into_iter().find(|u| u.email == "Grace.Hopper@Example.COM").unwrap();
    let put = client
        .put(format!("{}/admin/users/{}", sim.url(), existing.id))
        .header("Authorization", format!("ApiKey {}", sim.api_key()))
        .json(&json!({"status": STATUS_DEACTIVATED}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    let grace = Uuid::now_v7();
    p.user_created(grace, "grace.hopper@example.com", "Grace Hopper").await;
    p.paid(grace).await;
    let done = p.wait_status(grace, "complete").await;
    let matching: Vec<_> =
        sim.users().into_iter().filter(|u| u.email.eq_ignore_ascii_case("grace.hopper@example.com")).collect();
    assert_eq!(matching.len(), 1, "reused, not duplicated");
    assert_eq!(done["hopsworks_user_id"].as_u64(), Some(existing.id));
    assert_eq!(matching[0].max_num_projects, 5, "limit set from the plan");
    assert_eq!(matching[0].status, STATUS_ACTIVATED, "reactivated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_owners_racing_for_thirty_seats_never_overfill_and_the_rest_wait_in_order() {
    let p = start().await;
    let (a, b) = (hopsworks("race-a"), hopsworks("race-b"));
    let ca = p.register("eu-a", &a, 15).await;
    let cb = p.register("eu-b", &b, 15).await;
    let users: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    for (i, u) in users.iter().enumerate() {
        p.insert_person(*u, &format!("racer{i}@example.com"), "active").await;
    }
    // Forty transactions at once, each on its own connection, as forty replicas would.
    let db = hopsbridge_platform::db::Database::new(&p.db.config(), "provisioning").unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(users.len()));
    let racers: Vec<_> = users
        .iter()
        .map(|u| {
            let (db, u, barrier) = (db.clone(), *u, barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                db.transaction(|c| {
                    Box::pin(async move {
                        Ok::<_, hopsbridge_platform::db::DbError>(
                            hopsbridge_provisioning::assignments::request(c, UserId::from_uuid(u), 5).await?,
                        )
                    })
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for r in racers {
        r.await.unwrap();
    }
    let seated = "SELECT count(*) AS n FROM assignments WHERE status IN ('provisioning', 'complete')";
    assert_eq!(p.count(seated).await, 30);
    assert_eq!(p.count("SELECT count(*) AS n FROM assignments WHERE status = 'waiting_for_capacity'").await, 10);
    for c in [&ca, &cb] {
        let per = format!("{seated} AND cluster_id = '{c}'");
        assert_eq!(p.count(&per).await, 15, "cluster {c} filled exactly");
    }
    let done = "SELECT count(*) AS n FROM assignments WHERE status = 'complete'";
    let all_made = eventually(Duration::from_secs(60), || async { p.count(done).await == 30 }).await;
    assert!(all_made, "the 30 seated get accounts");
    assert_eq!(a.users().len() + b.users().len(), 30 + 2, "30 accounts plus each cluster's admin");
    let (status, page) =
        p.call(Method::GET, "/api/admin/assignments?status=waiting_for_capacity&limit=5", Some(&admin()), None).await;
    assert_eq!(status, 200);
    assert_eq!((page["total"].as_i64(), page["items"].as_array().unwrap().len()), (Some(10), 5));
    let (status, err) = p.call(Method::GET, "/api/admin/assignments?status=bogus", Some(&admin()), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_status")));

    // More room: the waiting ones are seated by the background task.
    let (status, _) = p
        .call(Method::PATCH, &format!("/api/admin/clusters/{ca}"), Some(&admin()), Some(json!({"capacity": 25})))
        .await;
    assert_eq!(status, 200);
    let all_done = eventually(Duration::from_secs(60), || async { p.count(done).await == 40 }).await;
    assert!(all_done, "everyone assigned after the capacity grew");
    assert_eq!(p.count(&format!("{seated} AND cluster_id = '{ca}'")).await, 25);
    assert_eq!(p.outbox("ClusterAssigned").await.len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_requests_is_placed_as_if_one_after_another() {
    use hopsbridge_provisioning::assignments::Requested::{
        AlreadyAssigned, Seated, UserDeleted, WaitingForCapacity, WaitingForUser,
    };
    use hopsbridge_provisioning::assignments::{request, request_all};
    let p = start().await;
    let sim = hopsworks("batch");
    let cluster = p.register("eu-1", &sim, 3).await;
    let [seated, k1, k2, k3, k4, unknown, deleted] = std::array::from_fn(|_| Uuid::now_v7());
    for (i, u) in [seated, k1, k2, k3, k4].iter().enumerate() {
        p.insert_person(*u, &format!("batch{i}@example.com"), "active").await;
    }
    p.insert_person(deleted, "gone@example.com", "deleted").await;
    let db = hopsbridge_platform::db::Database::new(&p.db.config(), "provisioning").unwrap();
    let place = |requests: Vec<Uuid>, alone: bool| {
        db.transaction(move |c| {
            let requests = requests.clone();
            Box::pin(async move {
                if alone {
                    let user = UserId::from_uuid(requests[0]);
                    return Ok::<_, hopsbridge_platform::db::DbError>(vec![request(c, user, 5).await?]);
                }
                let asks: Vec<(UserId, i32)> = requests.iter().map(|u| (UserId::from_uuid(*u), 5)).collect();
                Ok(request_all(c, &asks).await?)
            })
        })
    };
    assert_eq!(place(vec![seated], true).await.unwrap(), vec![Seated]);

    // Two seats left. The same owner twice, an unknown and a deleted person, and one seated
    // already, all in one batch.
    let batch = vec![k1, k2, unknown, k1, deleted, k3, k4, unknown, seated];
    let outcomes = place(batch, false).await.unwrap();
    assert_eq!(
        outcomes,
        vec![
            Seated,
            Seated,
            WaitingForUser,
            AlreadyAssigned,
            UserDeleted,
            WaitingForCapacity,
            WaitingForCapacity,
            WaitingForUser,
            AlreadyAssigned
        ]
    );
    let status_of = |u: Uuid| format!("SELECT count(*) AS n FROM assignments WHERE user_id = '{u}' AND status");
    for u in [seated, k1, k2] {
        assert_eq!(
            p.count(&format!("{} IN ('provisioning', 'complete') AND cluster_id = '{cluster}'", status_of(u))).await,
            1
        );
    }
    for u in [k3, k4] {
        assert_eq!(p.count(&format!("{} = 'waiting_for_capacity'", status_of(u))).await, 1);
    }
    assert_eq!(p.count(&format!("{} = 'waiting_for_user'", status_of(unknown))).await, 1);
    assert_eq!(p.count(&format!("SELECT count(*) AS n FROM assignments WHERE user_id = '{deleted}'")).await, 0);
    assert_eq!(p.count("SELECT count(*) AS n FROM assignments").await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_events_and_the_work_without_overfilling_or_duplicating() {
    let mut p = start().await;
    let (_, second) = launch(&p.db, &p.bus, PROVISIONING_ENCRYPTION_KEYS, "test1").await;
    p.stops.push(second);
    let sim = hopsworks("replicas");
    p.register("eu-1", &sim, 12).await;
    let users: Vec<Uuid> = (0..16).map(|_| Uuid::now_v7()).collect();
    for (i, u) in users.iter().enumerate() {
        p.user_created(*u, &format!("replica{i}@example.com"), "Rep Lica").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for u in &users {
        p.paid(*u).await;
    }
    let done = "SELECT count(*) AS n FROM assignments WHERE status = 'complete'";
    assert!(eventually(Duration::from_secs(60), || async { p.count(done).await == 12 }).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(p.count(done).await, 12, "never more than the capacity");
    assert_eq!(p.count("SELECT count(*) AS n FROM assignments WHERE status = 'waiting_for_capacity'").await, 4);
    assert_eq!(sim.users().len(), 12 + 1, "one account per seated user, plus the admin");
    assert_eq!(p.outbox("ClusterAssigned").await.len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_users_are_seated_in_the_order_they_started_waiting() {
    let p = start().await;
    let sim = hopsworks("order");
    let cluster = p.register("eu-1", &sim, 1).await;
    let users: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    for (i, u) in users.iter().enumerate() {
        p.user_created(*u, &format!("queue{i}@example.com"), "Queue").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.paid(users[0]).await;
    p.wait_status(users[0], "complete").await;
    for u in &users[1..] {
        p.paid(*u).await;
        p.wait_status(*u, "waiting_for_capacity").await;
    }
    // One more seat: the first to wait gets it, the others keep waiting.
    p.call(Method::PATCH, &format!("/api/admin/clusters/{cluster}"), Some(&admin()), Some(json!({"capacity": 2})))
        .await;
    p.wait_status(users[1], "complete").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for u in &users[2..] {
        assert_eq!(p.assignment(*u).await["status"], "waiting_for_capacity");
    }
    // A newly registered cluster takes the next one.
    let other = hopsworks("order-2");
    let second = p.register("eu-2", &other, 1).await;
    p.wait_status(users[2], "complete").await;
    assert_eq!(p.assignment(users[2]).await["cluster_id"], second.as_str());
    assert_eq!(p.assignment(users[3]).await["status"], "waiting_for_capacity");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_move_and_unassign_users_and_the_old_accounts_are_deactivated() {
    let p = start().await;
    let (a, b, c) = (hopsworks("mv-a"), hopsworks("mv-b"), hopsworks("mv-c"));
    let ca = p.register("eu-a", &a, 5).await;
    let cb = p.register("eu-b", &b, 1).await;
    let cc = p.register("eu-c", &c, 5).await;
    // Only eu-a takes new users at first.
    for id in [&cb, &cc] {
        p.call(
            Method::PATCH,
            &format!("/api/admin/clusters/{id}"),
            Some(&admin()),
            Some(json!({"status": "inactive"})),
        )
        .await;
    }
    let ada = Uuid::now_v7();
    p.user_created(ada, "mover@example.com", "Ada Mover").await;
    p.paid(ada).await;
    let first = p.wait_status(ada, "complete").await;
    assert_eq!(first["cluster_id"], ca.as_str());
    let old_id = first["hopsworks_user_id"].as_u64().unwrap();

    let path = format!("/api/admin/assignments/{ada}");
    let (status, err) = p.call(Method::PUT, &path, Some(&admin()), Some(json!({"cluster_id": cc}))).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("cluster_not_active")));
    p.call(Method::PATCH, &format!("/api/admin/clusters/{cb}"), Some(&admin()), Some(json!({"status": "active"})))
        .await;
    // Fill eu-b's only seat with someone else, then try to move onto it.
    let bob = Uuid::now_v7();
    p.user_created(bob, "bob@example.com", "Bob").await;
    p.call(Method::PATCH, &format!("/api/admin/clusters/{ca}"), Some(&admin()), Some(json!({"status": "full"}))).await;
    p.paid(bob).await;
    let bob_done = p.wait_status(bob, "complete").await;
    assert_eq!(bob_done["cluster_id"], cb.as_str());
    let (status, err) = p.call(Method::PUT, &path, Some(&admin()), Some(json!({"cluster_id": cb}))).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("cluster_full")));
    assert_eq!(p.assignment(ada).await["cluster_id"], ca.as_str(), "a refused move changes nothing");

    p.call(Method::PATCH, &format!("/api/admin/clusters/{cc}"), Some(&admin()), Some(json!({"status": "active"})))
        .await;
    let (status, moved) = p.call(Method::PUT, &path, Some(&admin()), Some(json!({"cluster_id": cc}))).await;
    assert_eq!(status, 200, "{moved}");
    let done = p.wait_status(ada, "complete").await;
    assert_eq!(done["cluster_id"], cc.as_str());
    let old = a.users().into_iter().find(|u| u.id == old_id).unwrap();
    assert_eq!(old.status, STATUS_DEACTIVATED, "the old account is deactivated");
    let new = c.users().into_iter().find(|u| u.email == "mover@example.com").unwrap();
    assert_eq!((new.status, new.max_num_projects), (STATUS_ACTIVATED, 5));
    // ClusterUnassigned (moved) comes before the new ClusterAssigned.
    let unassigned = p.outbox("ClusterUnassigned").await;
    assert_eq!(unassigned.len(), 1);
    let u = ClusterUnassignedV1::decode(unassigned[0].payload.as_slice()).unwrap();
    assert_eq!((u.cluster_id.as_str(), u.reason.as_str()), (ca.as_str(), "moved"));
    let assigned = p.outbox("ClusterAssigned").await;
    let last = assigned.last().unwrap();
    assert_eq!(ClusterAssignedV1::decode(last.payload.as_slice()).unwrap().cluster_id, cc);
    assert!(unassigned[0].occurred_at_unix_micros <= last.occurred_at_unix_micros);
    assert!(
        p.count(&format!(
            "SELECT count(*) AS n FROM outbox u, outbox a WHERE u.event_type = 'ClusterUnassigned'
               AND a.event_type = 'ClusterAssigned' AND a.id = '{}' AND u.created_at < a.created_at",
            Uuid::parse_str(&last.event_id).unwrap()
        ))
        .await
            == 1
    );

    // Unassign: the seat is free at once, the account is deactivated, the user sees nothing.
    let (status, body) = p.call(Method::DELETE, &path, Some(&admin()), None).await;
    assert_eq!(status, 200, "{body}");
    p.wait_status(ada, "unassigned").await;
    let gone = c.users().into_iter().find(|u| u.email == "mover@example.com").unwrap();
    assert_eq!(gone.status, STATUS_DEACTIVATED);
    let unassigned = p.outbox("ClusterUnassigned").await;
    assert_eq!(unassigned.len(), 2);
    let u = ClusterUnassignedV1::decode(unassigned[1].payload.as_slice()).unwrap();
    assert_eq!((u.cluster_id.as_str(), u.reason.as_str()), (cc.as_str(), "unassigned"));
    let (status, err) = p.call(Method::GET, "/api/cluster", Some(&person(ada)), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_assigned")));
    let (status, err) = p.call(Method::DELETE, &path, Some(&admin()), None).await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_assigned")));
    let stranger = person(Uuid::now_v7());
    assert_eq!(p.call(Method::DELETE, &path, Some(&stranger), None).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_gives_up_their_seat_to_the_one_waiting() {
    use hopsbridge_contracts::events::UserDeletedV1;
    let p = start().await;
    let sim = hopsworks("del");
    let cluster = p.register("eu-1", &sim, 1).await;
    let (ada, bob) = (Uuid::now_v7(), Uuid::now_v7());
    p.user_created(ada, "deleted@example.com", "Ada").await;
    p.user_created(bob, "next@example.com", "Bob").await;
    p.paid(ada).await;
    p.wait_status(ada, "complete").await;
    p.paid(bob).await;
    p.wait_status(bob, "waiting_for_capacity").await;
    let (_, mine) = p.call(Method::GET, "/api/cluster", Some(&person(bob)), None).await;
    assert_eq!((mine["status"].as_str(), mine["cluster"].is_null()), (Some("waiting_for_capacity"), true), "{mine}");

    p.publish(&UserDeletedV1 { user_id: ada.to_string() }, None).await;
    p.wait_status(ada, "unassigned").await;
    let done = p.wait_status(bob, "complete").await;
    assert_eq!(done["cluster_id"], cluster.as_str());
    let gone = sim.users().into_iter().find(|u| u.email == "deleted@example.com").unwrap();
    assert_eq!(gone.status, STATUS_DEACTIVATED);
    let events = p.outbox("ClusterUnassigned").await;
    assert_eq!(events.len(), 1);
    assert_eq!(ClusterUnassignedV1::decode(events[0].payload.as_slice()).unwrap().reason, "unassigned");
    // A deleted person cannot be moved, and their later payment method seats nobody.
    let (status, err) = p
        .call(
            Method::PUT,
            &format!("/api/admin/assignments/{ada}"),
            Some(&admin()),
            Some(json!({"cluster_id": cluster})),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (StatusCode::CONFLICT, Some("user_deleted")));
    p.paid(ada).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(p.assignment(ada).await["status"], "unassigned");
}

// ---------------------------------------------------------------------------------------------
// Key rotation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_keys_reencrypts_everything_so_the_old_key_can_be_removed() {
    let mut p = start().await;
    let sim = hopsworks("rot");
    let id = p.register("eu-1", &sim, 10).await;
    p.register("eu-2", &hopsworks("rot2"), 10).await;
    let before: Vec<Bytes> = {
        let mut conn = p.db.connect("provisioning").await;
        diesel::sql_query("SELECT api_key_ciphertext AS b FROM clusters ORDER BY id").load(&mut conn).await.unwrap()
    };
    let binary = env!("CARGO_BIN_EXE_hopsbridge-provisioning");
    let (status, output) = hopsbridge_testkit::ServiceProcess::run_to_exit(
        binary,
        &["rotate-keys"],
        &settings(&p.db, &p.bus, PROVISIONING_ENCRYPTION_KEYS, "test2").env(),
    );
    assert!(status.success(), "{output}");
    assert!(output.contains("cluster secrets re-encrypted"), "{output}");
    assert_eq!(
        p.count("SELECT count(*) AS n FROM clusters WHERE api_key_key_id = 'test2' AND kubeconfig_key_id = 'test2'")
            .await,
        2
    );
    let after: Vec<Bytes> = {
        let mut conn = p.db.connect("provisioning").await;
        diesel::sql_query("SELECT api_key_ciphertext AS b FROM clusters ORDER BY id").load(&mut conn).await.unwrap()
    };
    assert!(before.iter().zip(&after).all(|(x, y)| x.b != y.b));
    assert!(!output.contains(sim.api_key()), "no secret in the output");

    // With only the new key configured, the secrets still open: the kubeconfig directly, and
    // the API key by provisioning an account on the cluster.
    let only_new = PROVISIONING_ENCRYPTION_KEYS.split(',').find(|k| k.starts_with("test2:")).unwrap();
    let vault =
        hopsbridge_provisioning::crypto::Vault::from_config(&hopsbridge_provisioning::config::EncryptionConfig {
            active_key: "test2".into(),
            keys: only_new.to_owned().into(),
        })
        .unwrap();
    let mut conn = p.db.connect("provisioning").await;
    let row = hopsbridge_provisioning::clusters::row(&mut conn, id.parse().unwrap()).await.unwrap();
    assert_eq!(vault.open_text(row.id, "kubeconfig", &row.kubeconfig()).unwrap(), kubeconfig());
    for s in &p.stops {
        s.cancel();
    }
    let (base, stop) = launch(&p.db, &p.bus, only_new, "test2").await;
    p.base = base;
    p.stops = vec![stop];
    p.call(Method::PATCH, &format!("/api/admin/clusters/{id}"), Some(&admin()), Some(json!({"capacity": 50}))).await;
    let ada = Uuid::now_v7();
    p.user_created(ada, "rotated@example.com", "Ada").await;
    p.paid(ada).await;
    let done = p.wait_status(ada, "complete").await;
    assert!(done["hopsworks_username"].is_string());
    // A second run has nothing left to do.
    let (status, output) = hopsbridge_testkit::ServiceProcess::run_to_exit(
        binary,
        &["rotate-keys"],
        &settings(&p.db, &p.bus, only_new, "test2").env(),
    );
    assert!(status.success(), "{output}");
    assert!(output.contains("\"rotated\":0"), "{output}");
}

// ---------------------------------------------------------------------------------------------
// The real process

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_provisions_an_owner_and_no_log_line_holds_a_secret() {
    let db = TestDb::new().await;
    let bus = TestBus::new().await;
    let mut vars =
        settings(&db, &bus, PROVISIONING_ENCRYPTION_KEYS, "test1").set("database.migrate_on_start", "true").env();
    vars.push(("RUST_LOG".into(), "info,hopsbridge_provisioning=debug,hopsbridge_platform=debug".into()));
    let binary = env!("CARGO_BIN_EXE_hopsbridge-provisioning");
    let mut process = hopsbridge_testkit::ServiceProcess::start(binary, &vars);
    let key = CallerSigner::new(&GATEWAY_SIGNING_KEY.to_owned().into()).unwrap();
    let p = Provisioning { base: process.url(), db, bus, key, stops: Vec::new() };
    let sim = hopsworks("proc");
    let id = p.register("eu-1", &sim, 3).await;
    // The metering service is handed the kubeconfig; no log line carries it.
    let (status, body) =
        p.call(Method::GET, &format!("/internal/clusters/{id}/kubeconfig"), Some(&metering()), None).await;
    assert_eq!((status, body["kubeconfig"].as_str()), (StatusCode::OK, Some(kubeconfig().as_str())));
    // A first account while the key is right: the worker keeps this cluster's client ...
    let grace = Uuid::now_v7();
    p.user_created(grace, "grace-proc@example.com", "Grace").await;
    p.paid(grace).await;
    p.wait_status(grace, "complete").await;
    // ... until the cluster changes: the next account is made with the patched key.
    let new_key = sim.create_api_key(&sim.admin().unwrap().username).unwrap();
    let (status, _) = p
        .call(Method::PATCH, &format!("/api/admin/clusters/{id}"), Some(&admin()), Some(json!({"api_key": new_key})))
        .await;
    assert_eq!(status, 200);
    // The patched key is revoked in Hopsworks: the failure is reported without the key.
    sim.revoke_api_key(&new_key);
    let ada = Uuid::now_v7();
    p.user_created(ada, "proc@example.com", "Ada").await;
    p.paid(ada).await;
    p.wait_for(ada, "failed with 401", |a| a["last_error"].as_str().is_some_and(|e| e.contains("401"))).await;
    let (status, _) = p
        .call(
            Method::PATCH,
            &format!("/api/admin/clusters/{id}"),
            Some(&admin()),
            Some(json!({"api_key": sim.api_key()})),
        )
        .await;
    assert_eq!(status, 200);
    p.wait_status(ada, "complete").await;
    let status = process.terminate(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    let output = process.output();
    assert!(output.contains("Hopsworks account ready"), "{output}");
    assert!(output.contains("kubeconfig handed out"), "{output}");
    for secret in [sim.api_key(), new_key.as_str(), "kube-token-very-secret", "dGVzdC1rZXkt"] {
        assert!(!output.contains(secret), "a log line holds a secret ({secret})");
    }
}

// ---------------------------------------------------------------------------------------------
// Local development: the sandbox plays the operator

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_registers_its_clusters_and_a_later_sandbox_updates_them() {
    use hopsbridge_sandbox::world::{World, WorldConfig};
    let p = start().await;
    let config = WorldConfig { clusters: 2, ..WorldConfig::default() };
    let first = World::start(&config).unwrap();
    first.register_clusters_with(&p.base, &p.key, Duration::from_secs(10)).await.unwrap();
    let listed = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_owned(), c["api_url"].as_str().unwrap().to_owned()))
            .collect()
    };
    let (status, clusters) = p.call(Method::GET, "/api/admin/clusters", Some(&admin()), None).await;
    assert_eq!(status, StatusCode::OK);
    let want: Vec<_> = first.clusters.iter().map(|c| (c.name.clone(), c.hopsworks.origin())).collect();
    assert_eq!(listed(&clusters), want);
    assert_eq!(p.outbox("ClusterRegistered").await.len(), 2);

    // dev.sh run again: a new sandbox with the same cluster names and new addresses and keys.
    let second = World::start(&config).unwrap();
    second.register_clusters_with(&p.base, &p.key, Duration::from_secs(10)).await.unwrap();
    let (_, clusters) = p.call(Method::GET, "/api/admin/clusters", Some(&admin()), None).await;
    let want: Vec<_> = second.clusters.iter().map(|c| (c.name.clone(), c.hopsworks.origin())).collect();
    assert_eq!(listed(&clusters), want, "updated in place, not added");
    // The new API key works: an owner is given an account on the new sandbox's cluster.
    let ada = Uuid::now_v7();
    p.user_created(ada, "ada-local@example.com", "Ada").await;
    p.paid(ada).await;
    p.wait_status(ada, "complete").await;
    assert_eq!(
        second.clusters.iter().map(|c| c.hopsworks.users().len()).sum::<usize>(),
        2 + 1,
        "each cluster's local admin, and ada"
    );

    // Nothing answering: it gives up after its patience.
    let err =
        second.register_clusters_with("http://127.0.0.1:9", &p.key, Duration::from_millis(300)).await.unwrap_err();
    assert!(err.to_string().contains("did not answer"), "{err}");
}
