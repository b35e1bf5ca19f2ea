//! A cluster's Hopsworks API: find, create, update and deactivate OAuth users, list the
//! cluster's projects with their creators, add users to projects, and, as the admin key's own
//! user ([`Hopsworks::me`]), list a project's members and remove one.
//!
//! TLS trusts the cluster's CA bundle and nothing else. Every call is tried again with the
//! shared backoff policy (exponential, with jitter) on 5xx, 429, timeouts and connection
//! errors; user creation is made safe to repeat by looking the email up (case-insensitively,
//! through the list's filter) before creating and after a lost answer.

use crate::clusters::{ClusterAccess, ClusterResolver, forbidden_address};
use crate::config::HopsworksConfig;
use crate::users::Person;
use hopsbridge_platform::Secret;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

mod quotas;
pub use quotas::ProjectStorage;

/// The path every admin route is served under.
pub const BASE_PATH: &str = "/hopsworks-api/api";

/// Hopsworks account status of an activated account.
pub const STATUS_ACTIVATED: i64 = 2;
/// Hopsworks account status of a deactivated account.
pub const STATUS_DEACTIVATED: i64 = 3;
/// Hopsworks account status of a blocked account (what its admin UI's "block" sets).
pub const STATUS_BLOCKED: i64 = 4;

/// A call that did not succeed. The message names the step and the answer, never the key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CallError(pub String);

/// A Hopsworks user as the list answers it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HopsworksUser {
    /// Numeric id.
    pub id: i64,
    /// Username (pods carry it as their `owner` label).
    pub username: String,
    /// Email as stored.
    pub email: String,
    /// 2 activated, 3 deactivated, 4 blocked, …
    #[serde(default)]
    pub status: i64,
    /// Limit on projects ever created.
    #[serde(default)]
    pub max_num_projects: Option<i64>,
    /// Projects the user ever created (what `maxNumProjects` counts), when Hopsworks says.
    #[serde(default)]
    pub num_created_projects: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct UserList {
    #[serde(default)]
    items: Vec<HopsworksUser>,
    #[serde(default)]
    count: u64,
}

/// A project as the admin list answers it with `expand=creator`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HopsworksProject {
    /// Numeric id (pods carry it as their `project-id` label).
    pub id: i64,
    /// Name as created (`my_project`).
    pub name: String,
    /// The Kubernetes namespace the project's pods run in (`my-project`).
    pub namespace: String,
    /// Who created it; absent when Hopsworks does not expand it.
    #[serde(default)]
    pub creator: Option<ProjectCreator>,
}

/// A project's creator, expanded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProjectCreator {
    /// Hopsworks username; absent when the creator is not expanded.
    #[serde(default)]
    pub username: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ProjectList {
    #[serde(default)]
    items: Vec<HopsworksProject>,
    #[serde(default)]
    count: u64,
}

/// Projects asked for per page of the admin list.
pub const PROJECT_PAGE: u64 = 500;

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(rename = "errorCode")]
    error_code: Option<i64>,
    #[serde(rename = "errorMsg")]
    error_msg: Option<String>,
    #[serde(rename = "usrMsg")]
    usr_msg: Option<String>,
}

/// `errorCode` of "user exists".
const USER_EXISTS: i64 = 160_003;
/// `errorCode` of "the project wasn't found".
const PROJECT_NOT_FOUND: i64 = 150_004;
/// `errorCode` of "the user is not a member of the project".
const TEAM_MEMBER_NOT_FOUND: i64 = 150_023;
/// `errorCode` of "the caller has no role in the project".
const NO_ROLE_FOUND: i64 = 160_000;

/// A member of a project, as the members route answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Hopsworks username.
    pub username: String,
    /// Email as stored.
    pub email: String,
    /// `Data owner`, `Data scientist`, …
    pub role: String,
}

#[derive(Debug, Deserialize)]
struct MemberEntry {
    #[serde(rename = "teamRole")]
    team_role: String,
    user: MemberUser,
}

#[derive(Debug, Deserialize)]
struct MemberUser {
    username: String,
    email: String,
}

/// What the members route answered the admin key's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// The members (the caller is one, as a Data owner or a Data scientist).
    Listed(Vec<Member>),
    /// The caller is no member of the project.
    NotAMember,
    /// The project does not exist.
    ProjectGone,
}

/// How a change to a project's members ended, short of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// Made (or, for an addition, already so).
    Done,
    /// A removal: the user is no member of the project (removed before).
    NotMember,
    /// A removal: the caller (the admin key's user) is no member of the project.
    CallerNotMember,
    /// The project does not exist.
    ProjectGone,
}

/// A client of one cluster.
#[derive(Debug, Clone)]
pub struct Hopsworks {
    http: reqwest::Client,
    base: Url,
    api_key: Secret<String>,
    oauth_client_id: String,
    cfg: HopsworksConfig,
    /// The admin key's own user, once asked.
    me: Arc<OnceCell<HopsworksUser>>,
}

impl Hopsworks {
    /// A client that trusts only `access.ca_bundle` and, unless `allow_private_addresses`,
    /// connects to no loopback, link-local, unspecified or metadata address
    /// ([`forbidden_address`]), whether written in the URL or resolved from its name.
    ///
    /// # Errors
    /// When the CA bundle or the URL is unusable, or the URL names a refused address.
    pub fn new(
        access: &ClusterAccess,
        cfg: &HopsworksConfig,
        allow_private_addresses: bool,
    ) -> Result<Self, CallError> {
        let certs = reqwest::Certificate::from_pem_bundle(access.ca_bundle.as_bytes())
            .map_err(|_| CallError("the cluster's CA bundle cannot be read".into()))?;
        if certs.is_empty() {
            return Err(CallError("the cluster's CA bundle holds no certificate".into()));
        }
        let base = Url::parse(&format!("{}{BASE_PATH}/", access.api_url.trim_end_matches('/')))
            .map_err(|_| CallError("the cluster's API URL is not a URL".into()))?;
        let mut builder = reqwest::Client::builder();
        if !allow_private_addresses {
            // An address written in the URL is not resolved, so it is checked here.
            let host = base.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
            if let Some(kind) = host.parse().ok().and_then(forbidden_address) {
                return Err(CallError(format!("the cluster's API URL is {kind}")));
            }
            builder = builder.dns_resolver(ClusterResolver);
        }
        let http = builder
            .tls_backend_rustls()
            .tls_certs_only(certs)
            .https_only(true)
            .timeout(cfg.request_timeout())
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| CallError(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            api_key: access.api_key.clone(),
            oauth_client_id: access.oauth_client_id.clone(),
            cfg: cfg.clone(),
            me: Arc::new(OnceCell::new()),
        })
    }

    fn url(&self, path: &str) -> Result<Url, CallError> {
        self.base.join(path).map_err(|_| CallError(format!("bad path {path}")))
    }

    /// Sends one request, trying again on 5xx, 429, timeouts and connection errors. Answers the
    /// final status and body.
    async fn send(
        &self,
        what: &str,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, bytes::Bytes), CallError> {
        let mut pauses = self.cfg.backoff().delays();
        let mut attempt = 0_u32;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .header(reqwest::header::AUTHORIZATION, format!("ApiKey {}", self.api_key.expose()))
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(bytes) => Ok((status, bytes)),
                        Err(e) => Err(transport(what, &e)),
                    }
                }
                Err(e) => Err(transport(what, &e)),
            };
            let retryable = match &outcome {
                Ok((status, _)) => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
                Err(_) => true,
            };
            let pause = if retryable { pauses.next() } else { None };
            let Some(pause) = pause else {
                return match outcome {
                    Ok((status, body)) if retryable => {
                        Err(CallError(format!("{what}: {} (after {attempt} tries)", describe(status, &body))))
                    }
                    Ok(ok) => Ok(ok),
                    Err(e) => Err(CallError(format!("{} (after {attempt} tries)", e.0))),
                };
            };
            tracing::debug!(step = what, attempt, "Hopsworks call failed; trying again");
            tokio::time::sleep(pause).await;
        }
    }

    /// The user whose email is `email` (case-insensitively), found through the list's filter.
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn find_by_email(&self, email: &str) -> Result<Option<HopsworksUser>, CallError> {
        let page = 100_u64;
        let mut offset = 0_u64;
        loop {
            let mut url = self.url("admin/users")?;
            url.query_pairs_mut()
                .append_pair("filter_by", &format!("user_like:{email}"))
                .append_pair("offset", &offset.to_string())
                .append_pair("limit", &page.to_string());
            let (status, body) = self.send("look up the user", Method::GET, url, None).await?;
            if !status.is_success() {
                return Err(CallError(format!("look up the user: {}", describe(status, &body))));
            }
            let list: UserList = serde_json::from_slice(&body)
                .map_err(|e| CallError(format!("look up the user: unexpected answer: {e}")))?;
            if let Some(user) = list.items.iter().find(|u| u.email.eq_ignore_ascii_case(email)) {
                return Ok(Some(user.clone()));
            }
            offset += page;
            if list.items.is_empty() || offset >= list.count {
                return Ok(None);
            }
        }
    }

    /// Every user of the cluster (`GET /admin/users`, paged by 100).
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn users(&self) -> Result<Vec<HopsworksUser>, CallError> {
        const WHAT: &str = "list the users";
        let page = 100_u64;
        let mut users: std::collections::BTreeMap<i64, HopsworksUser> = std::collections::BTreeMap::new();
        let mut offset = 0_u64;
        loop {
            let mut url = self.url("admin/users")?;
            url.query_pairs_mut().append_pair("offset", &offset.to_string()).append_pair("limit", &page.to_string());
            let (status, body) = self.send(WHAT, Method::GET, url, None).await?;
            if !status.is_success() {
                return Err(CallError(format!("{WHAT}: {}", describe(status, &body))));
            }
            let list: UserList =
                serde_json::from_slice(&body).map_err(|e| CallError(format!("{WHAT}: unexpected answer: {e}")))?;
            let received = u64::try_from(list.items.len()).unwrap_or(u64::MAX);
            for user in list.items {
                users.entry(user.id).or_insert(user);
            }
            offset = offset.saturating_add(received);
            if received == 0 || offset >= list.count {
                return Ok(users.into_values().collect());
            }
        }
    }

    /// Asks the admin API the cheapest question the service asks it (`GET /admin/users`, one
    /// user): the number of users when it answers, else the status and what Hopsworks said.
    ///
    /// # Errors
    /// [`CallError`] when no answer came (after the client's tries).
    pub async fn probe(&self) -> Result<Result<u64, (StatusCode, String)>, CallError> {
        let mut url = self.url("admin/users")?;
        url.query_pairs_mut().append_pair("offset", "0").append_pair("limit", "1");
        let (status, body) = self.send("GET /admin/users", Method::GET, url, None).await?;
        if !status.is_success() {
            return Ok(Err((status, describe(status, &body))));
        }
        let list: UserList = serde_json::from_slice(&body)
            .map_err(|e| CallError(format!("GET /admin/users: unexpected answer: {e}")))?;
        Ok(Ok(list.count))
    }

    /// The user `id` (`GET /admin/users/{id}`); `None` when there is no such user.
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn user(&self, id: i64) -> Result<Option<HopsworksUser>, CallError> {
        const WHAT: &str = "read the user";
        let (status, body) = self.send(WHAT, Method::GET, self.url(&format!("admin/users/{id}"))?, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(CallError(format!("{WHAT}: {}", describe(status, &body))));
        }
        serde_json::from_slice(&body).map(Some).map_err(|e| CallError(format!("{WHAT}: unexpected answer: {e}")))
    }

    /// Creates the OAuth user of `person` with query parameters. A 409 "user exists" (an
    /// earlier answer was lost) counts as success: the caller looks the user up next.
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn create(&self, person: &Person, max_num_projects: i32) -> Result<(), CallError> {
        let (given, surname) = split_name(&person.name, &person.email);
        let mut url = self.url("admin/users")?;
        url.query_pairs_mut()
            .append_pair("accountType", "REMOTE_ACCOUNT_TYPE")
            .append_pair("type", "OAUTH2")
            .append_pair("email", &person.email)
            .append_pair("givenName", &given)
            .append_pair("surname", &surname)
            .append_pair("maxNumProjects", &max_num_projects.to_string())
            .append_pair("subject", &person.auth_subject)
            .append_pair("clientId", &self.oauth_client_id);
        let (status, body) = self.send("create the user", Method::POST, url, None).await?;
        if status.is_success() {
            return Ok(());
        }
        let exists = status == StatusCode::CONFLICT
            && serde_json::from_slice::<ErrorBody>(&body).is_ok_and(|e| e.error_code == Some(USER_EXISTS));
        if exists { Ok(()) } else { Err(CallError(format!("create the user: {}", describe(status, &body)))) }
    }

    /// Sets fields of user `id` (`{"maxNumProjects": n}` or `{"status": s}`).
    ///
    /// # Errors
    /// [`CallError`]; a user that does not exist is [`UpdateOutcome::Gone`].
    pub async fn update(&self, id: i64, what: &str, body: serde_json::Value) -> Result<UpdateOutcome, CallError> {
        let url = self.url(&format!("admin/users/{id}"))?;
        let (status, answer) = self.send(what, Method::PUT, url, Some(&body)).await?;
        if status.is_success() {
            Ok(UpdateOutcome::Done)
        } else if status == StatusCode::NOT_FOUND {
            Ok(UpdateOutcome::Gone)
        } else {
            Err(CallError(format!("{what}: {}", describe(status, &answer))))
        }
    }

    /// Makes sure `person` has a usable account: found by email or created, `maxNumProjects`
    /// as given, reactivated if it was deactivated. Answers the account as listed.
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn ensure_account(&self, person: &Person, max_num_projects: i32) -> Result<HopsworksUser, CallError> {
        let user = match self.find_by_email(&person.email).await? {
            Some(user) => user,
            None => {
                self.create(person, max_num_projects).await?;
                self.find_by_email(&person.email)
                    .await?
                    .ok_or_else(|| CallError("the created user is not in the user list".into()))?
            }
        };
        if user.max_num_projects != Some(i64::from(max_num_projects)) {
            self.update(user.id, "set maxNumProjects", json!({"maxNumProjects": max_num_projects})).await?;
        }
        if user.status == STATUS_DEACTIVATED {
            self.update(user.id, "reactivate the user", json!({"status": STATUS_ACTIVATED})).await?;
        }
        Ok(user)
    }

    /// The user the API key belongs to (`GET /users/profile`), asked once per client.
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn me(&self) -> Result<HopsworksUser, CallError> {
        const WHAT: &str = "read the API key's user";
        let user = self
            .me
            .get_or_try_init(|| async {
                let (status, body) = self.send(WHAT, Method::GET, self.url("users/profile")?, None).await?;
                if !status.is_success() {
                    return Err(CallError(format!("{WHAT}: {}", describe(status, &body))));
                }
                serde_json::from_slice::<HopsworksUser>(&body)
                    .map_err(|e| CallError(format!("{WHAT}: unexpected answer: {e}")))
            })
            .await?;
        Ok(user.clone())
    }

    /// Adds `username` to the projects `project_ids` with `role` (`POST
    /// /admin/projects/add-to-projects`). A member already in a project keeps their role, so a
    /// repeat changes nothing.
    ///
    /// # Errors
    /// [`CallError`]; a project that does not exist is [`MemberChange::ProjectGone`].
    pub async fn add_to_projects(
        &self,
        username: &str,
        role: &str,
        project_ids: &[i64],
    ) -> Result<MemberChange, CallError> {
        const WHAT: &str = "add the user to the projects";
        let body = json!({"username": username, "role": role, "projectIds": project_ids});
        let (status, answer) =
            self.send(WHAT, Method::POST, self.url("admin/projects/add-to-projects")?, Some(&body)).await?;
        if status.is_success() {
            Ok(MemberChange::Done)
        } else if error_code(&answer) == Some(PROJECT_NOT_FOUND) {
            Ok(MemberChange::ProjectGone)
        } else {
            Err(CallError(format!("{WHAT}: {}", describe(status, &answer))))
        }
    }

    fn members_url(&self, project_id: i64, email: Option<&str>) -> Result<Url, CallError> {
        let mut url = self.url(&format!("project/{project_id}/projectMembers"))?;
        if let Some(email) = email {
            url.path_segments_mut()
                .map_err(|()| CallError("the cluster's API URL cannot take a path".into()))?
                .push(email);
        }
        Ok(url)
    }

    /// The members of project `project_id`, as the admin key's user sees them (`GET
    /// /project/{id}/projectMembers`): Hopsworks answers only its Data owners and Data
    /// scientists.
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn project_members(&self, project_id: i64) -> Result<Members, CallError> {
        const WHAT: &str = "list the project's members";
        let (status, body) = self.send(WHAT, Method::GET, self.members_url(project_id, None)?, None).await?;
        if status.is_success() {
            let entries: Vec<MemberEntry> =
                serde_json::from_slice(&body).map_err(|e| CallError(format!("{WHAT}: unexpected answer: {e}")))?;
            let members = entries
                .into_iter()
                .map(|e| Member { username: e.user.username, email: e.user.email, role: e.team_role })
                .collect();
            return Ok(Members::Listed(members));
        }
        match error_code(&body) {
            Some(PROJECT_NOT_FOUND) => Ok(Members::ProjectGone),
            Some(NO_ROLE_FOUND) if status == StatusCode::FORBIDDEN => Ok(Members::NotAMember),
            _ => Err(CallError(format!("{WHAT}: {}", describe(status, &body)))),
        }
    }

    /// Removes the user of `email` from project `project_id` as the admin key's user (`DELETE
    /// /project/{id}/projectMembers/{email}`), which must be a Data owner of the project to
    /// remove anyone but itself.
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn remove_member(&self, project_id: i64, email: &str) -> Result<MemberChange, CallError> {
        const WHAT: &str = "remove the user from the project";
        let url = self.members_url(project_id, Some(email))?;
        let (status, body) = self.send(WHAT, Method::DELETE, url, None).await?;
        if status.is_success() {
            return Ok(MemberChange::Done);
        }
        match error_code(&body) {
            Some(PROJECT_NOT_FOUND) => Ok(MemberChange::ProjectGone),
            Some(TEAM_MEMBER_NOT_FOUND) => Ok(MemberChange::NotMember),
            Some(NO_ROLE_FOUND) if status == StatusCode::FORBIDDEN => Ok(MemberChange::CallerNotMember),
            _ => Err(CallError(format!("{WHAT}: {}", describe(status, &body)))),
        }
    }

    /// Every project of the cluster with its creator, by id. Pages through the list with
    /// `offset` and `limit = page_size` ([`PROJECT_PAGE`] outside tests), moving on by the items
    /// actually answered (so a server that ignores `limit` and answers everything at once is
    /// read once), until `count` is reached or a page is empty; a project seen twice (the list
    /// shifted between pages) is kept once.
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn projects(&self, page_size: u64) -> Result<Vec<HopsworksProject>, CallError> {
        const WHAT: &str = "list the projects";
        let mut projects: std::collections::BTreeMap<i64, HopsworksProject> = std::collections::BTreeMap::new();
        let mut offset = 0_u64;
        loop {
            let mut url = self.url("admin/projects")?;
            url.query_pairs_mut()
                .append_pair("expand", "creator")
                .append_pair("offset", &offset.to_string())
                .append_pair("limit", &page_size.max(1).to_string());
            let (status, body) = self.send(WHAT, Method::GET, url, None).await?;
            if !status.is_success() {
                return Err(CallError(format!("{WHAT}: {}", describe(status, &body))));
            }
            let page: ProjectList =
                serde_json::from_slice(&body).map_err(|e| CallError(format!("{WHAT}: unexpected answer: {e}")))?;
            let received = u64::try_from(page.items.len()).unwrap_or(u64::MAX);
            for project in page.items {
                projects.entry(project.id).or_insert(project);
            }
            offset = offset.saturating_add(received);
            if received == 0 || offset >= page.count {
                return Ok(projects.into_values().collect());
            }
        }
    }

    /// Deactivates the account `id` (or, when unknown, the account of `email`). Answers whether
    /// there was an account.
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn deactivate(&self, id: Option<i64>, email: &str) -> Result<bool, CallError> {
        let id = match id {
            Some(id) => id,
            None => match self.find_by_email(email).await? {
                Some(user) => user.id,
                None => return Ok(false),
            },
        };
        match self.update(id, "deactivate the user", json!({"status": STATUS_DEACTIVATED})).await? {
            UpdateOutcome::Done => Ok(true),
            UpdateOutcome::Gone => Ok(false),
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Changed.
    Done,
    /// No such user.
    Gone,
}

fn transport(what: &str, e: &reqwest::Error) -> CallError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "connection failed"
    };
    // reqwest's own text holds the URL (with the email in it); only the causes are kept, each
    // once (a TLS failure is a few sources down).
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !cause.contains(&text) {
            if !cause.is_empty() {
                cause.push_str(": ");
            }
            cause.push_str(&text);
        }
        source = s.source();
    }
    CallError(format!("{what}: {kind}: {cause}"))
}

/// The `errorCode` of a Hopsworks error body, if it is one.
fn error_code(body: &[u8]) -> Option<i64> {
    serde_json::from_slice::<ErrorBody>(body).ok().and_then(|e| e.error_code)
}

fn describe(status: StatusCode, body: &[u8]) -> String {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|e| {
            let msg = e.usr_msg.or(e.error_msg).unwrap_or_default();
            match e.error_code {
                Some(code) => format!(" (errorCode {code}: {msg})"),
                None => format!(" ({msg})"),
            }
        })
        .unwrap_or_default();
    format!("Hopsworks answered {status}{detail}")
}

/// Hopsworks wants a given name and a surname, both non-empty: the first word of the name and
/// the rest, falling back to the email's local part.
fn split_name(name: &str, email: &str) -> (String, String) {
    let mut words = name.split_whitespace();
    let local = email.split('@').next().filter(|l| !l.is_empty()).unwrap_or("user").to_owned();
    match words.next() {
        Some(first) => {
            let rest = words.collect::<Vec<_>>().join(" ");
            let surname = if rest.is_empty() { first.to_owned() } else { rest };
            (first.to_owned(), surname)
        }
        None => (local.clone(), local),
    }
}

#[cfg(test)]
mod tests {
    use super::split_name;

    #[test]
    fn names_split_into_two_non_empty_parts() {
        assert_eq!(split_name("Ada Lovelace", "a@x"), ("Ada".into(), "Lovelace".into()));
        assert_eq!(split_name("Ada King Lovelace", "a@x"), ("Ada".into(), "King Lovelace".into()));
        assert_eq!(split_name("Ada", "a@x"), ("Ada".into(), "Ada".into()));
        assert_eq!(split_name("  ", "ada@x"), ("ada".into(), "ada".into()));
    }
}
