//! The Hopsworks REST API of one cluster: the admin routes for OAuth users, projects and
//! project members, the API key's own profile and the project-membership routes
//! ([`members`]), served over HTTPS with the cluster's own CA under `/hopsworks-api/api`.
//!
//! Faithful to the contract in `external-apis.md`: query-parameter user creation answered
//! without a numeric id, numeric ids only on `/admin/users/{id}`, namespaces taken from project
//! names (`my_project` lives in `my-project`), `{errorCode, usrMsg, errorMsg}` error bodies.
//! Tests switch on faults (5xx answers, slow answers, answers held past a client's timeout) and
//! inspect the request log.
//!
//! Where the contract is silent the simulator follows observed Hopsworks 4.x behaviour:
//! - an existing email (case-insensitive) or OAuth uuid is answered 409 with `errorCode` 160003
//!   (`USER_EXISTS`); a missing `accountType` 422 with 160046 and `usrMsg` "Account type not
//!   provided"; a missing `Authorization` header 401 with 200003, a wrong key 401 with 320004;
//! - a path or query parameter that is not a number (`/admin/users/meb10000`, `limit=two`) is
//!   answered 404, as JAX-RS does;
//! - lists carry `count` (the total) and omit `items` when the page is empty;
//! - user and creator `href`s point at `/users/{id}`; `sort_by=id` is refused, as Hopsworks does;
//! - `add-to-projects` answers 200 with an empty body and leaves existing members as they are;
//! - usernames are up to three letters of the email's local part and the first free number from
//!   10000 (`meb10000`), deterministic for a given order of creation;
//! - unknown paths answer 404 and known paths with another method 405, before the API key is
//!   checked;
//! - every cluster holds its local admin, `admin@hopsworks.ai` with id 10000, and the configured
//!   admin API key is that user's key; other users' keys are made with
//!   [`HopsworksSim::create_api_key`]. A key of a user who is no administrator is refused on
//!   `/admin` routes with 403 and `errorCode` 200014, as Hopsworks' role check does.
//!
//! Each project's storage, as `GET /admin/projects?expand=quotas` answers it, is in
//! [`storage`]: set now or from a time on, on the simulated clock once given one.

use crate::server::Served;
use crate::tls::Ca;
use actix_web::http::StatusCode;
use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

mod faults;
mod members;
mod projects;
mod storage;
mod users;
use projects::{add_to_projects, create_project, list_projects};
use users::{create_user, get_user, get_user_by_uuid, list_users, update_user};

use faults::RouteFaults;
pub use faults::{Faults, Route};
pub use storage::{DEFAULT_QUOTA_BYTES, Directory, ProjectStorage};

use crate::clock::SimClock;

/// The path every route of the API is served under.
pub const BASE_PATH: &str = "/hopsworks-api/api";

/// Status of an activated account.
pub const STATUS_ACTIVATED: u8 = 2;
/// Status of a deactivated account.
pub const STATUS_DEACTIVATED: u8 = 3;
/// Status of a blocked account.
pub const STATUS_BLOCKED: u8 = 4;

/// `maxNumProjects` of a user created without one (the Hopsworks default setting).
pub const DEFAULT_MAX_NUM_PROJECTS: u32 = 10;

/// Role of a project member who owns data.
pub const ROLE_DATA_OWNER: &str = "Data owner";
/// Role of a project member who works with the data.
pub const ROLE_DATA_SCIENTIST: &str = "Data scientist";
/// Role of a project member who only reads.
pub const ROLE_OBSERVER: &str = "Observer";

const FIRST_USER_ID: u64 = 10_000;
/// The account type of local accounts; the local admin's is the only one here, and it makes
/// its holder an administrator (`HOPS_ADMIN`).
const LOCAL_ACCOUNT_TYPE: &str = "M_ACCOUNT_TYPE";
const FIRST_PROJECT_ID: u64 = 119;
const FIRST_USERNAME_NUMBER: u32 = 10_000;

mod code {
    pub const GENERIC: u32 = 120_000;
    pub const NOT_FOUND: u32 = 120_001;
    pub const ILLEGAL_ARGUMENT: u32 = 120_004;
    pub const UNSUPPORTED_MEDIA_TYPE: u32 = 120_005;
    pub const USER_NOT_FOUND: u32 = 160_002;
    pub const USER_EXISTS: u32 = 160_003;
    pub const INVALID_STATUS: u32 = 160_023;
    pub const ACCOUNT_TYPE_NOT_PROVIDED: u32 = 160_046;
    pub const PROJECT_NOT_FOUND: u32 = 150_004;
    pub const PROJECT_EXISTS: u32 = 150_001;
    pub const PROJECT_NAME_INVALID: u32 = 150_003;
    pub const NUM_PROJECTS_LIMIT: u32 = 150_027;
    pub const ROLE_NOT_FOUND: u32 = 150_046;
    pub const MEMBER_REMOVAL_NOT_ALLOWED: u32 = 150_012;
    pub const PROJECT_OWNER_NOT_ALLOWED: u32 = 150_013;
    pub const TEAM_MEMBER_NOT_FOUND: u32 = 150_023;
    pub const PROJECT_ROLE_FORBIDDEN: u32 = 150_068;
    pub const NO_ROLE_FOUND: u32 = 160_000;
    pub const AUTH_HEADER_MISSING: u32 = 200_003;
    pub const REST_ACCESS_CONTROL: u32 = 200_014;
    pub const API_KEY_INVALID: u32 = 320_004;
    pub const OAUTH_CLIENT_NOT_FOUND: u32 = 330_005;
}

/// How a simulated cluster is set up.
#[derive(Clone)]
pub struct HopsworksConfig {
    /// Cluster name, also the name of its CA.
    pub cluster: String,
    /// The admin user's API key, expected as `Authorization: ApiKey <key>`.
    pub api_key: String,
    /// The OAuth client id registered on the cluster; user creation must name it.
    pub oauth_client_id: String,
    /// Faults active from the start.
    pub faults: Faults,
    /// Projects a person creates as soon as their account exists, as (username, project name):
    /// the demo population's habit, so their pods on the cluster's Kubernetes belong to a
    /// project of theirs once provisioning has made the account.
    pub projects_on_signup: Vec<(String, String)>,
}

impl std::fmt::Debug for HopsworksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HopsworksConfig")
            .field("cluster", &self.cluster)
            .field("oauth_client_id", &self.oauth_client_id)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl HopsworksConfig {
    /// A cluster without faults.
    #[must_use]
    pub fn new(cluster: &str, api_key: &str, oauth_client_id: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            api_key: api_key.to_owned(),
            oauth_client_id: oauth_client_id.to_owned(),
            faults: Faults::default(),
            projects_on_signup: Vec::new(),
        }
    }
}

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Numeric id, used by `/admin/users/{id}`.
    pub id: u64,
    /// Generated username; pods carry it as their `owner` label.
    pub username: String,
    /// Email as given at creation.
    pub email: String,
    /// First name.
    pub given_name: String,
    /// Last name.
    pub surname: String,
    /// `REMOTE_ACCOUNT_TYPE` for OAuth users, `M_ACCOUNT_TYPE` for the local admin.
    pub account_type: String,
    /// Hopsworks account status, 0 to 7: 2 activated, 3 deactivated, 4 blocked.
    pub status: u8,
    /// Limit on projects ever created.
    pub max_num_projects: u32,
    /// Projects ever created by the user.
    pub num_created_projects: u32,
    /// `<clientId>.<subject>` of OAuth users.
    pub uuid: Option<String>,
    /// When the account was activated.
    pub activated: DateTime<Utc>,
}

/// A project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// Numeric id.
    pub id: u64,
    /// Name as created (`my_project`).
    pub name: String,
    /// Kubernetes namespace (`my-project`).
    pub namespace: String,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Id of the creating user.
    pub owner_id: u64,
}

/// A user's membership of a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    /// Project id.
    pub project_id: u64,
    /// Member's username.
    pub username: String,
    /// `Data owner` or `Data scientist`.
    pub role: String,
    /// When the user was added.
    pub added: DateTime<Utc>,
}

/// One request as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// HTTP method.
    pub method: String,
    /// Path, including the base path.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Whether the request carried a non-empty body.
    pub had_body: bool,
}

/// An error the API answers with, as Hopsworks shapes it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {error_code}: {error_msg}")]
pub struct HopsworksError {
    /// HTTP status.
    pub status: u16,
    /// Hopsworks `errorCode`.
    pub error_code: u32,
    /// Hopsworks `errorMsg`.
    pub error_msg: String,
    /// Hopsworks `usrMsg`, omitted when absent.
    pub usr_msg: Option<String>,
}

impl HopsworksError {
    fn new(status: u16, error_code: u32, error_msg: &str) -> Self {
        Self { status, error_code, error_msg: error_msg.to_owned(), usr_msg: None }
    }

    fn user(mut self, usr_msg: &str) -> Self {
        self.usr_msg = Some(usr_msg.to_owned());
        self
    }

    fn response(&self) -> HttpResponse {
        let mut body = json!({ "errorCode": self.error_code, "errorMsg": self.error_msg });
        if let (Some(msg), Some(map)) = (&self.usr_msg, body.as_object_mut()) {
            map.insert("usrMsg".to_owned(), Value::String(msg.clone()));
        }
        HttpResponse::build(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)).json(body)
    }

    fn user_not_found() -> Self {
        Self::new(404, code::USER_NOT_FOUND, "User not found")
    }

    fn illegal_argument(usr_msg: &str) -> Self {
        Self::new(400, code::ILLEGAL_ARGUMENT, "A wrong argument was provided.").user(usr_msg)
    }

    /// JAX-RS answers a path or query parameter that does not convert to its type with 404.
    fn unconvertible_param() -> Self {
        Self::new(404, code::NOT_FOUND, "HTTP 404 Not Found")
    }
}

#[derive(Debug, Default)]
struct State {
    users: Vec<User>,
    projects: Vec<Project>,
    memberships: Vec<Membership>,
    /// API keys and the id of the user each belongs to.
    api_keys: Vec<(String, u64)>,
    /// Each project's storage over time, by project id.
    storage: HashMap<u64, storage::Timeline>,
}

impl State {
    fn user(&self, id: u64) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }
}

#[derive(Debug)]
struct Inner {
    config: HopsworksConfig,
    state: Mutex<State>,
    faults: Mutex<Faults>,
    route_faults: Mutex<HashMap<Route, RouteFaults>>,
    log: Mutex<Vec<LoggedRequest>>,
    /// The simulated clock storage is read on; the wall clock without one.
    clock: Mutex<Option<Arc<SimClock>>>,
}

impl Inner {
    /// Now, Unix seconds, on the simulated clock when there is one.
    fn now(&self) -> i64 {
        lock(&self.clock).as_ref().map_or_else(|| Utc::now().timestamp(), |c| c.now())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running simulated Hopsworks cluster.
#[derive(Debug)]
pub struct HopsworksSim {
    inner: Arc<Inner>,
    ca: Ca,
    served: Served,
}

impl HopsworksSim {
    /// Starts the cluster on loopback over HTTPS with a new CA. The cluster holds its local
    /// admin user (`admin@hopsworks.ai`, id 10000), as every Hopsworks installation does; the
    /// configured API key is that user's.
    ///
    /// # Errors
    /// When the CA cannot be made or the port cannot be bound.
    pub fn start(config: HopsworksConfig) -> anyhow::Result<Self> {
        let ca = Ca::new(&config.cluster)?;
        let mut state = State::default();
        state.users.push(User {
            id: FIRST_USER_ID,
            username: "admin".to_owned(),
            email: "admin@hopsworks.ai".to_owned(),
            given_name: "Admin".to_owned(),
            surname: "Admin".to_owned(),
            account_type: LOCAL_ACCOUNT_TYPE.to_owned(),
            status: STATUS_ACTIVATED,
            max_num_projects: DEFAULT_MAX_NUM_PROJECTS,
            num_created_projects: 0,
            uuid: None,
            activated: Utc::now(),
        });
        state.api_keys.push((config.api_key.clone(), FIRST_USER_ID));
        let inner = Arc::new(Inner {
            faults: Mutex::new(config.faults.clone()),
            route_faults: Mutex::new(HashMap::new()),
            config,
            state: Mutex::new(state),
            log: Mutex::new(Vec::new()),
            clock: Mutex::new(None),
        });
        let data = web::Data::from(Arc::clone(&inner));
        let served =
            Served::start(move |c: &mut web::ServiceConfig| routes(c, data.clone()), Some(ca.server_config()?))?;
        Ok(Self { inner, ca, served })
    }

    /// `https://127.0.0.1:<port>/hopsworks-api/api`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("{}{BASE_PATH}", self.served.url())
    }

    /// `https://127.0.0.1:<port>`, the cluster address as configured in Hopsbridge.
    #[must_use]
    pub fn origin(&self) -> String {
        self.served.url()
    }

    /// The cluster CA in PEM.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// The admin API key: the local admin's.
    #[must_use]
    pub fn api_key(&self) -> &str {
        &self.inner.config.api_key
    }

    /// The user the admin API key belongs to: the local admin (made at start, never deleted).
    #[must_use]
    pub fn admin(&self) -> Option<User> {
        lock(&self.inner.state).user(FIRST_USER_ID).cloned()
    }

    /// Makes an API key for `username`, as a user does in their account settings.
    ///
    /// # Errors
    /// Unknown user.
    pub fn create_api_key(&self, username: &str) -> Result<String, HopsworksError> {
        let mut state = lock(&self.inner.state);
        let id = state.users.iter().find(|u| u.username == username).ok_or_else(HopsworksError::user_not_found)?.id;
        let key = format!("{username}.{}", uuid::Uuid::new_v4().simple());
        state.api_keys.push((key.clone(), id));
        Ok(key)
    }

    /// Revokes an API key, as its user does in their account settings: every call with it is
    /// refused (401) from then on.
    pub fn revoke_api_key(&self, key: &str) {
        lock(&self.inner.state).api_keys.retain(|(k, _)| k != key);
    }

    /// The OAuth client id registered on the cluster.
    #[must_use]
    pub fn oauth_client_id(&self) -> &str {
        &self.inner.config.oauth_client_id
    }

    /// All users, by id.
    #[must_use]
    pub fn users(&self) -> Vec<User> {
        lock(&self.inner.state).users.clone()
    }

    /// All projects, by id.
    #[must_use]
    pub fn projects(&self) -> Vec<Project> {
        lock(&self.inner.state).projects.clone()
    }

    /// All memberships, in the order they were made.
    #[must_use]
    pub fn memberships(&self) -> Vec<Membership> {
        lock(&self.inner.state).memberships.clone()
    }

    /// Creates a project as `owner_username` does in the Hopsworks UI: the owner becomes its
    /// `Data owner` and uses up one of their `maxNumProjects`.
    ///
    /// # Errors
    /// Unknown owner, invalid or taken name, or the owner's project limit reached.
    pub fn create_project(&self, owner_username: &str, name: &str) -> Result<Project, HopsworksError> {
        create_project(&mut lock(&self.inner.state), owner_username, name)
    }

    /// Deletes a project and its memberships; the owner's created-projects count stays.
    ///
    /// # Errors
    /// Unknown project.
    pub fn delete_project(&self, project_id: u64) -> Result<(), HopsworksError> {
        let mut state = lock(&self.inner.state);
        let before = state.projects.len();
        state.projects.retain(|p| p.id != project_id);
        if state.projects.len() == before {
            return Err(project_not_found());
        }
        state.memberships.retain(|m| m.project_id != project_id);
        state.storage.remove(&project_id);
        Ok(())
    }

    /// Requests received so far, faulted ones included.
    #[must_use]
    pub fn requests(&self) -> Vec<LoggedRequest> {
        lock(&self.inner.log).clone()
    }

    /// Answers the next `n` requests with `status` (a 5xx) without handling them.
    pub fn fail_next(&self, n: u32, status: u16) {
        let mut faults = lock(&self.inner.faults);
        faults.fail_next = n;
        faults.fail_status = status;
    }

    /// Delays every request by `delay`, or stops delaying.
    pub fn set_delay(&self, delay: Option<Duration>) {
        lock(&self.inner.faults).delay = delay;
    }

    /// Handles the next `n` requests, then holds each answer for `hold`, past a client's
    /// timeout: the change is made although the client sees no answer.
    pub fn hold_next(&self, n: u32, hold: Duration) {
        let mut faults = lock(&self.inner.faults);
        faults.hold_next = n;
        faults.hold = hold;
    }

    /// Answers the next `n` requests to `route` with `status` (a 5xx) without handling them;
    /// other routes are not affected.
    pub fn fail_next_on(&self, route: Route, n: u32, status: u16) {
        let mut faults = lock(&self.inner.route_faults);
        let faults = faults.entry(route).or_default();
        faults.fail_next = n;
        faults.fail_status = status;
    }

    /// Handles the next `n` requests to `route`, then holds each answer for `hold`, past a
    /// client's timeout; other routes are not affected.
    pub fn hold_next_on(&self, route: Route, n: u32, hold: Duration) {
        let mut faults = lock(&self.inner.route_faults);
        let faults = faults.entry(route).or_default();
        faults.hold_next = n;
        faults.hold = hold;
    }

    /// Switches every fault off, the routes' own included.
    pub fn clear_faults(&self) {
        *lock(&self.inner.faults) = Faults::default();
        lock(&self.inner.route_faults).clear();
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.served.stop().await;
    }
}

fn project_not_found() -> HopsworksError {
    HopsworksError::new(404, code::PROJECT_NOT_FOUND, "Project wasn't found.")
}

fn routes(c: &mut web::ServiceConfig, data: web::Data<Inner>) {
    let resource =
        |path: &str| web::resource(format!("{BASE_PATH}{path}")).default_service(web::to(method_not_allowed));
    c.app_data(data)
        .app_data(web::PayloadConfig::new(1 << 20))
        .service(resource("/admin/users").route(web::post().to(create_user)).route(web::get().to(list_users)))
        .service(resource("/admin/users/{id}").route(web::get().to(get_user)).route(web::put().to(update_user)))
        .service(resource("/admin/user/{uuid}").route(web::get().to(get_user_by_uuid)))
        .service(resource("/admin/projects").route(web::get().to(list_projects)))
        .service(resource("/admin/projects/add-to-projects").route(web::post().to(add_to_projects)))
        .service(resource("/users/profile").route(web::get().to(members::profile)))
        .service(resource("/project/{project}/projectMembers").route(web::get().to(members::list_members)))
        .service(resource("/project/{project}/projectMembers/{email}").route(web::delete().to(members::remove_member)))
        .default_service(web::to(not_found));
}

type Outcome = Result<HttpResponse, HopsworksError>;

/// Logs the request, applies faults (the simulator's, then the route's) and the API key check,
/// then runs `op` with the id of the key's user. A request that matches no route (`route`
/// `None`) is answered before authentication, as JAX-RS matches before Hopsworks' filter runs;
/// its `op` gets no user.
async fn serve<F>(inner: &Inner, req: &HttpRequest, body: &web::Bytes, route: Option<Route>, op: F) -> HttpResponse
where
    F: FnOnce(&Inner, Option<u64>) -> Outcome,
{
    lock(&inner.log).push(LoggedRequest {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        query: req.query_string().to_owned(),
        had_body: !body.is_empty(),
    });
    let (delay, fail, hold) = faults::consume(&mut lock(&inner.faults), &mut lock(&inner.route_faults), route);
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = fail {
        return server_error(status).response();
    }
    let authorized = match route {
        Some(route) => authorize(inner, req, route).map(Some),
        None => Ok(None),
    };
    let response = match authorized.and_then(|caller| op(inner, caller)) {
        Ok(response) => response,
        Err(e) => e.response(),
    };
    if let Some(hold) = hold {
        tokio::time::sleep(hold).await;
    }
    response
}

fn server_error(status: u16) -> HopsworksError {
    if status == 503 {
        HopsworksError::new(503, code::GENERIC, "Service unavailable.")
    } else if (500..600).contains(&status) {
        HopsworksError::new(status, code::GENERIC, "A generic error occurred.")
    } else {
        HopsworksError::new(500, code::GENERIC, "A generic error occurred.")
    }
}

/// The id of the user whose API key the request carries; `/admin` routes take administrators'
/// keys only.
fn authorize(inner: &Inner, req: &HttpRequest, route: Route) -> Result<u64, HopsworksError> {
    let Some(header) = req.headers().get(AUTHORIZATION) else {
        return Err(HopsworksError::new(401, code::AUTH_HEADER_MISSING, "Authorization header not set."));
    };
    let key = header.to_str().ok().and_then(|h| h.strip_prefix("ApiKey "));
    let state = lock(&inner.state);
    let user = key
        .and_then(|key| state.api_keys.iter().find(|(k, _)| k == key))
        .and_then(|(_, id)| state.user(*id))
        .ok_or_else(|| HopsworksError::new(401, code::API_KEY_INVALID, "Invalid API key."))?;
    if route.is_admin() && user.account_type != LOCAL_ACCOUNT_TYPE {
        return Err(HopsworksError::new(403, code::REST_ACCESS_CONTROL, "Client not authorized for this invocation."));
    }
    Ok(user.id)
}

async fn not_found(req: HttpRequest, body: web::Bytes, data: web::Data<Inner>) -> HttpResponse {
    serve(&data, &req, &body, None, |_, _| Err(HopsworksError::unconvertible_param())).await
}

async fn method_not_allowed(req: HttpRequest, body: web::Bytes, data: web::Data<Inner>) -> HttpResponse {
    serve(&data, &req, &body, None, |_, _| {
        Err(HopsworksError::new(405, code::NOT_FOUND, "HTTP 405 Method Not Allowed"))
    })
    .await
}

fn query_params(req: &HttpRequest) -> Result<Vec<(String, String)>, HopsworksError> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| HopsworksError::illegal_argument("Malformed query string"))
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn numeric_param<T: std::str::FromStr>(params: &[(String, String)], name: &str) -> Result<Option<T>, HopsworksError> {
    param(params, name).map(|v| v.parse::<T>().map_err(|_| HopsworksError::unconvertible_param())).transpose()
}

fn require_json(req: &HttpRequest) -> Result<(), HopsworksError> {
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if json {
        Ok(())
    } else {
        Err(HopsworksError::new(415, code::UNSUPPORTED_MEDIA_TYPE, "HTTP 415 Unsupported Media Type"))
    }
}

fn timestamp_millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn timestamp_secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn user_json(base: &str, state: &State, user: &User) -> Value {
    let active = state.projects.iter().filter(|p| p.owner_id == user.id).count();
    let group = if user.account_type == LOCAL_ACCOUNT_TYPE {
        json!({"groupName": "HOPS_ADMIN", "groupDesc": "System administrator", "gid": 1005})
    } else {
        json!({"groupName": "HOPS_USER", "groupDesc": "Registered users in the system", "gid": 1006})
    };
    json!({
        "href": format!("{base}/users/{}", user.id),
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "firstname": user.given_name,
        "lastname": user.surname,
        "accountType": user.account_type,
        "status": user.status,
        "maxNumProjects": user.max_num_projects,
        "numCreatedProjects": user.num_created_projects,
        "numActiveProjects": active,
        "activated": timestamp_millis(user.activated),
        "twoFactor": false,
        "toursState": 0,
        "role": [group],
    })
}

fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}{BASE_PATH}", info.scheme(), info.host())
}
