//! Every code of provisioning's catalogue is documented in its OpenAPI documents and answered by
//! some request, with exactly the catalogue's status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

mod common;

use common::{Provisioning, admin, cluster_body, hopsworks, metering, person, start, start_with};
use diesel_async::RunQueryDsl;
use hopsbridge_platform::caller::Caller;
use hopsbridge_platform::http::ErrorCode as _;
use hopsbridge_provisioning::error::ProvisioningCode;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use utoipa::OpenApi as _;
use uuid::Uuid;

#[test]
fn every_code_is_documented_in_the_openapi_documents() {
    // The internal routes' codes (metering_only, hopsworks_unavailable) are in the internal
    // document: the public one describes only what the gateway forwards.
    let public = hopsbridge_provisioning::routes::ApiDoc::openapi().to_json().unwrap();
    let internal = hopsbridge_provisioning::routes::InternalApiDoc::openapi().to_json().unwrap();
    for code in ProvisioningCode::ALL {
        assert!(
            public.contains(code.code()) || internal.contains(code.code()),
            "{} is in neither OpenAPI document",
            code.code()
        );
    }
    for code in [ProvisioningCode::AdminOnly, ProvisioningCode::InvalidName, ProvisioningCode::NotAssigned] {
        assert!(public.contains(code.code()), "{} is answered by public routes", code.code());
    }
}

/// The codes seen so far, each checked against its status.
#[derive(Default)]
struct Seen(HashSet<ProvisioningCode>);

impl Seen {
    fn answered(&mut self, code: ProvisioningCode, (status, body): (reqwest::StatusCode, Value)) {
        let want = (code.status().as_u16(), Some(code.code()));
        assert_eq!((status.as_u16(), body["code"].as_str()), want, "{code:?}: {body}");
        self.0.insert(code);
    }
}

impl Provisioning {
    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (reqwest::StatusCode, Value) {
        self.call(method, path, Some(&admin()), body).await
    }

    async fn move_to(&self, user: Uuid, cluster: &str) -> (reqwest::StatusCode, Value) {
        self.admin(Method::PUT, &format!("/api/admin/assignments/{user}"), Some(json!({"cluster_id": cluster}))).await
    }

    async fn as_caller(&self, caller: &Caller, path: &str) -> (reqwest::StatusCode, Value) {
        self.call(Method::GET, path, Some(caller), None).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_code_is_answered_by_a_request_with_its_status() {
    use ProvisioningCode::*;
    let mut seen = Seen::default();
    let p = start().await;
    let sim = hopsworks("codes");
    let cluster = p.register("eu-1", &sim, 1).await;
    let clusters = "/api/admin/clusters";

    // The callers.
    seen.answered(AdminOnly, p.as_caller(&person(Uuid::now_v7()), clusters).await);
    let kubeconfig = format!("/internal/clusters/{cluster}/kubeconfig");
    seen.answered(MeteringOnly, p.as_caller(&admin(), &kubeconfig).await);

    // Registrations: one bad field each, then a taken name.
    let with = |field: &str, value: Value| {
        let mut body = cluster_body("eu-2", &sim, 5);
        body[field] = value;
        body
    };
    for (code, field, value) in [
        (InvalidName, "name", json!("")),
        (InvalidApiUrl, "api_url", json!("http://hopsworks.example.com")),
        (InvalidApiKey, "api_key", json!("")),
        (InvalidKubeconfig, "kubeconfig", json!("not: [yaml")),
        (InvalidCaBundle, "ca_bundle", json!("hello")),
        (InvalidOauthClientId, "oauth_client_id", json!(7)),
        (InvalidCapacity, "capacity", json!(-1)),
        (InvalidRegion, "region", json!("")),
        (InvalidStatus, "status", json!("broken")),
        (InvalidRondb, "rondb_endpoint", json!("rondb.example.com")),
    ] {
        seen.answered(code, p.admin(Method::POST, clusters, Some(with(field, value))).await);
    }
    // Where clusters may not be on loopback addresses, the sandbox's (on 127.0.0.1) is refused.
    let strict = start_with(|s| s.set("clusters.allow_private_addresses", "false")).await;
    seen.answered(
        ClusterAddressRefused,
        strict.admin(Method::POST, clusters, Some(cluster_body("eu-3", &sim, 5))).await,
    );
    // A cluster whose Hopsworks refuses the key fails its checks.
    seen.answered(
        ClusterCheckFailed,
        p.admin(Method::POST, clusters, Some(with("api_key", json!("not-the-key")))).await,
    );
    seen.answered(InvalidStatus, p.admin(Method::GET, "/api/admin/assignments?status=bogus", None).await);
    seen.answered(ClusterNameTaken, p.admin(Method::POST, clusters, Some(with("name", json!("EU-1")))).await);
    seen.answered(ClusterNotFound, p.admin(Method::GET, &format!("{clusters}/{}", Uuid::now_v7()), None).await);

    // Moves: onto a cluster that takes nobody, onto a full one, of people provisioning does not
    // know or who are deleted, and of one still being unassigned.
    let inactive = p.register("eu-inactive", &hopsworks("codes-inactive"), 5).await;
    let inactive_body = json!({"status": "inactive"});
    p.admin(Method::PATCH, &format!("{clusters}/{inactive}"), Some(inactive_body)).await;
    let full = p.register("eu-full", &hopsworks("codes-full"), 0).await;
    let (ada, gone, busy) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    p.insert_person(ada, "ada-codes@example.com", "active").await;
    p.insert_person(gone, "gone-codes@example.com", "deleted").await;
    p.insert_person(busy, "busy-codes@example.com", "active").await;
    {
        // Unassigning with no attempt due, so the background task leaves it as it is.
        let mut conn = p.db.connect("provisioning").await;
        diesel::sql_query(
            "INSERT INTO assignments (user_id, cluster_id, status, max_num_projects) VALUES ($1, $2, 'unassigning', 5)",
        )
        .bind::<diesel::sql_types::Uuid, _>(busy)
        .bind::<diesel::sql_types::Uuid, _>(cluster.parse::<Uuid>().unwrap())
        .execute(&mut conn)
        .await
        .unwrap();
    }
    seen.answered(ClusterNotActive, p.move_to(ada, &inactive).await);
    seen.answered(ClusterFull, p.move_to(ada, &full).await);
    seen.answered(UserNotFound, p.move_to(Uuid::now_v7(), &cluster).await);
    seen.answered(UserDeleted, p.move_to(gone, &cluster).await);
    seen.answered(AssignmentBusy, p.move_to(busy, &cluster).await);

    // Assignments that are not there.
    let nobody = Uuid::now_v7();
    seen.answered(AssignmentNotFound, p.admin(Method::GET, &format!("/api/admin/assignments/{nobody}"), None).await);
    seen.answered(NotAssigned, p.as_caller(&person(nobody), "/api/cluster").await);

    // A cluster whose Hopsworks fails every try of the call.
    sim.fail_next(3, 503);
    let projects = format!("/internal/clusters/{cluster}/projects");
    seen.answered(HopsworksUnavailable, p.as_caller(&metering(), &projects).await);

    // A cluster whose projects another replica is syncing.
    {
        let mut conn = p.db.connect("provisioning").await;
        diesel::sql_query("INSERT INTO project_syncs (cluster_id, lease_until) VALUES ($1, now() + interval '1 hour')")
            .bind::<diesel::sql_types::Uuid, _>(cluster.parse::<Uuid>().unwrap())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    seen.answered(SyncInProgress, p.admin(Method::POST, &format!("{clusters}/{cluster}/projects/sync"), None).await);

    let all: HashSet<ProvisioningCode> = ProvisioningCode::ALL.iter().copied().collect();
    assert_eq!(seen.0, all, "every code of the catalogue is exercised here");
}
