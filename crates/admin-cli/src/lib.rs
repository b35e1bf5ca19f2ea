//! `hopsbridge-admin`: the admin API through the gateway, for operators and their scripts.
//!
//! It gets an access token from the Auth0 tenant by client credentials (a machine client the
//! gateway grants the admin role in `admin.machine_clients`, decision 0045), or takes one given,
//! and calls the gateway's `/api/admin/…` routes. Each command prints the gateway's JSON answer on
//! standard output. Exit status: 0 on a 2xx answer; 1 when the gateway answered an error (its
//! body is still printed, and `HTTP <status> <code>: <message>` goes to standard error); 2 for a
//! wrong command line; 3 when no token could be had, the gateway could not be reached, or an
//! integrity run was still running when `integrity run` stopped waiting (`--wait-secs`).

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "hopsbridge-admin", version, about = "Hopsbridge's admin API through the gateway")]
pub struct Cli {
    /// How to reach the gateway and authenticate.
    #[command(flatten)]
    pub connection: Connection,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The gateway and the credentials.
#[derive(Debug, Args)]
pub struct Connection {
    /// The gateway's base URL.
    #[arg(long, env = "HOPSBRIDGE_ADMIN_GATEWAY", default_value = "http://127.0.0.1:8080", global = true)]
    pub gateway: String,
    /// An access token to use as it is (instead of client credentials).
    #[arg(long, env = "HOPSBRIDGE_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The Auth0 tenant's issuer URL, with its trailing slash; the token comes from
    /// `<issuer>oauth/token`.
    #[arg(long, env = "HOPSBRIDGE_ADMIN_ISSUER", global = true)]
    pub issuer: Option<String>,
    /// The machine client's id.
    #[arg(long, env = "HOPSBRIDGE_ADMIN_CLIENT_ID", global = true)]
    pub client_id: Option<String>,
    /// The machine client's secret.
    #[arg(long, env = "HOPSBRIDGE_ADMIN_CLIENT_SECRET", hide_env_values = true, global = true)]
    pub client_secret: Option<String>,
    /// The API identifier the token is asked for (the gateway's `auth0.audience`).
    #[arg(long, env = "HOPSBRIDGE_ADMIN_AUDIENCE", default_value = "https://api.hopsbridge.example", global = true)]
    pub audience: String,
}

/// The command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hopsworks clusters (provisioning).
    #[command(subcommand)]
    Clusters(Clusters),
    /// Who is placed on which cluster (provisioning).
    #[command(subcommand)]
    Assignments(Assignments),
    /// People (identity).
    #[command(subcommand)]
    People(People),
    /// Prices (billing).
    #[command(subcommand)]
    Prices(Prices),
    /// Measurement runs and gaps (metering).
    #[command(subcommand)]
    Metering(Metering),
    /// A service's mail outbox.
    #[command(subcommand)]
    Mail(Mail),
    /// Events a service's consumers gave up on, and their replay.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// A service's integrity checks: their findings, and running them now.
    #[command(subcommand)]
    Integrity(Integrity),
}

/// `clusters …`
#[derive(Debug, Subcommand)]
pub enum Clusters {
    /// Every cluster.
    List,
    /// Registers a cluster from a JSON file (`-` reads standard input), the body of
    /// `POST /api/admin/clusters`.
    Register {
        /// The JSON file.
        #[arg(long)]
        file: PathBuf,
    },
    /// One cluster.
    Show {
        /// The cluster's id.
        id: Uuid,
    },
    /// Changes a cluster with the fields of a JSON file (`-` reads standard input), the body of
    /// `PATCH /api/admin/clusters/{id}`.
    Update {
        /// The cluster's id.
        id: Uuid,
        /// The JSON file.
        #[arg(long)]
        file: PathBuf,
    },
}

/// `assignments …`
#[derive(Debug, Subcommand)]
pub enum Assignments {
    /// Assignments, paged.
    List {
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
        /// Rows to skip.
        #[arg(long)]
        offset: Option<u32>,
    },
    /// One person's assignment.
    Show {
        /// The person's user id.
        user_id: Uuid,
    },
    /// Moves a person to another cluster.
    Move {
        /// The person's user id.
        user_id: Uuid,
        /// The target cluster's id.
        #[arg(long)]
        cluster: Uuid,
    },
    /// Takes a person off their cluster.
    Unassign {
        /// The person's user id.
        user_id: Uuid,
    },
}

/// `people …`
#[derive(Debug, Subcommand)]
pub enum People {
    /// People, newest first.
    List {
        /// Text to find in the email or name.
        #[arg(long)]
        q: Option<String>,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
        /// Rows to skip.
        #[arg(long)]
        offset: Option<u32>,
    },
    /// One person.
    Show {
        /// The user id.
        id: Uuid,
    },
    /// Suspends a person's account.
    Suspend {
        /// The user id.
        id: Uuid,
        /// Why (shown to admins, carried by UserSuspended).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Makes a suspended account active again.
    Reactivate {
        /// The user id.
        id: Uuid,
    },
}

/// `prices …`
#[derive(Debug, Subcommand)]
pub enum Prices {
    /// Every price version.
    List,
    /// Adds a price version.
    Add {
        /// The resource priced (as billing names it, e.g. `cpu`).
        #[arg(long)]
        resource: String,
        /// The price of one unit, an exact decimal (e.g. `0.35`).
        #[arg(long)]
        unit_amount_decimal: String,
        /// When it takes effect (RFC 3339, UTC).
        #[arg(long)]
        effective_from: String,
    },
}

/// `metering …`
#[derive(Debug, Subcommand)]
pub enum Metering {
    /// Measures a cluster now.
    Collect {
        /// The cluster's id.
        cluster_id: Uuid,
    },
    /// Windows not measured, with their reasons.
    Gaps {
        /// Only this cluster.
        #[arg(long)]
        cluster_id: Option<Uuid>,
        /// From (RFC 3339).
        #[arg(long)]
        from: Option<String>,
        /// To (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// Most rows.
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// The services with data: each has a mail outbox and dead letters.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MailService {
    /// identity.
    Identity,
    /// team.
    Team,
    /// billing.
    Billing,
    /// provisioning.
    Provisioning,
    /// metering.
    Metering,
}

impl MailService {
    const fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Team => "team",
            Self::Billing => "billing",
            Self::Provisioning => "provisioning",
            Self::Metering => "metering",
        }
    }
}

/// `mail …`
#[derive(Debug, Subcommand)]
pub enum Mail {
    /// A service's mail, newest first.
    List {
        /// The service.
        service: MailService,
        /// Only this status (e.g. `failing`).
        #[arg(long)]
        status: Option<String>,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
        /// Rows to skip.
        #[arg(long)]
        offset: Option<u32>,
    },
    /// Makes a mail due now.
    Retry {
        /// The service.
        service: MailService,
        /// The mail's id.
        id: Uuid,
    },
}

/// `dead-letters …`
#[derive(Debug, Subcommand)]
pub enum DeadLetters {
    /// A service's dead letters, newest failure first.
    List {
        /// The service whose consumers gave up.
        service: MailService,
        /// Only this event type with its version (e.g. `UserCreatedV1`).
        #[arg(long)]
        event_type: Option<String>,
        /// `waiting` or `replayed`.
        #[arg(long)]
        status: Option<String>,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
        /// Rows to skip.
        #[arg(long)]
        offset: Option<u32>,
    },
    /// One dead letter.
    Show {
        /// The service.
        service: MailService,
        /// The dead letter's id.
        id: Uuid,
    },
    /// Hands one dead letter to its consumer again (applied at most once).
    Replay {
        /// The service.
        service: MailService,
        /// The dead letter's id.
        id: Uuid,
    },
    /// Replays every waiting dead letter of a service, oldest first.
    ReplayAll {
        /// The service.
        service: MailService,
        /// Only this event type with its version.
        #[arg(long)]
        event_type: Option<String>,
        /// At most this many (1-1000).
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// `integrity …`
#[derive(Debug, Subcommand)]
pub enum Integrity {
    /// A service's open findings, newest first, and every check's last run.
    List {
        /// The service.
        service: MailService,
        /// Resolved findings too.
        #[arg(long, conflicts_with = "status")]
        all: bool,
        /// `open` (the default), `resolved` or `all`.
        #[arg(long)]
        status: Option<String>,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
        /// Rows to skip.
        #[arg(long)]
        offset: Option<u32>,
    },
    /// Runs every check of a service now and waits for the run to end (it runs in the
    /// background; this polls it); prints each check's run with its open findings.
    Run {
        /// The service.
        service: MailService,
        /// Seconds to wait for the run to end before giving up (it goes on running).
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
}

/// One call of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The HTTP method.
    pub method: &'static str,
    /// The path under the gateway.
    pub path: String,
    /// Query parameters.
    pub query: Vec<(&'static str, String)>,
    /// The JSON body, if any.
    pub body: Option<Value>,
}

impl Call {
    fn new(method: &'static str, path: String) -> Self {
        Self { method, path, query: Vec::new(), body: None }
    }

    fn with(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(value) = value {
            self.query.push((name, value.to_string()));
        }
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

fn read_json(file: &PathBuf) -> anyhow::Result<Value> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))
}

impl Command {
    /// The call this command makes.
    ///
    /// # Errors
    /// When a file it names cannot be read or is not JSON.
    pub fn call(&self) -> anyhow::Result<Call> {
        Ok(match self {
            Self::Clusters(Clusters::List) => Call::new("GET", "/api/admin/clusters".into()),
            Self::Clusters(Clusters::Register { file }) => {
                Call::new("POST", "/api/admin/clusters".into()).body(read_json(file)?)
            }
            Self::Clusters(Clusters::Show { id }) => Call::new("GET", format!("/api/admin/clusters/{id}")),
            Self::Clusters(Clusters::Update { id, file }) => {
                Call::new("PATCH", format!("/api/admin/clusters/{id}")).body(read_json(file)?)
            }
            Self::Assignments(Assignments::List { status, limit, offset }) => {
                Call::new("GET", "/api/admin/assignments".into())
                    .with("status", status.as_ref())
                    .with("limit", *limit)
                    .with("offset", *offset)
            }
            Self::Assignments(Assignments::Show { user_id }) => {
                Call::new("GET", format!("/api/admin/assignments/{user_id}"))
            }
            Self::Assignments(Assignments::Move { user_id, cluster }) => {
                Call::new("PUT", format!("/api/admin/assignments/{user_id}")).body(json!({"cluster_id": cluster}))
            }
            Self::Assignments(Assignments::Unassign { user_id }) => {
                Call::new("DELETE", format!("/api/admin/assignments/{user_id}"))
            }
            Self::People(People::List { q, limit, offset }) => Call::new("GET", "/api/admin/users".into())
                .with("q", q.as_ref())
                .with("limit", *limit)
                .with("offset", *offset),
            Self::People(People::Show { id }) => Call::new("GET", format!("/api/admin/users/{id}")),
            Self::People(People::Suspend { id, reason }) => {
                Call::new("POST", format!("/api/admin/users/{id}/suspend")).body(json!({"reason": reason}))
            }
            Self::People(People::Reactivate { id }) => Call::new("POST", format!("/api/admin/users/{id}/reactivate")),
            Self::Prices(Prices::List) => Call::new("GET", "/api/admin/prices".into()),
            Self::Prices(Prices::Add { resource, unit_amount_decimal, effective_from }) => {
                Call::new("POST", "/api/admin/prices".into()).body(json!({
                    "resource": resource,
                    "unit_amount_decimal": unit_amount_decimal,
                    "effective_from": effective_from,
                }))
            }
            Self::Metering(Metering::Collect { cluster_id }) => {
                Call::new("POST", format!("/api/admin/metering/clusters/{cluster_id}/collect"))
            }
            Self::Metering(Metering::Gaps { cluster_id, from, to, limit }) => {
                Call::new("GET", "/api/admin/metering/gaps".into())
                    .with("cluster_id", *cluster_id)
                    .with("from", from.as_ref())
                    .with("to", to.as_ref())
                    .with("limit", *limit)
            }
            Self::Mail(Mail::List { service, status, limit, offset }) => {
                Call::new("GET", format!("/api/admin/mail/{}", service.name()))
                    .with("status", status.as_ref())
                    .with("limit", *limit)
                    .with("offset", *offset)
            }
            Self::Mail(Mail::Retry { service, id }) => {
                Call::new("POST", format!("/api/admin/mail/{}/{id}/retry", service.name()))
            }
            Self::DeadLetters(DeadLetters::List { service, event_type, status, limit, offset }) => {
                Call::new("GET", format!("/api/admin/dead-letters/{}", service.name()))
                    .with("event_type", event_type.as_ref())
                    .with("status", status.as_ref())
                    .with("limit", *limit)
                    .with("offset", *offset)
            }
            Self::DeadLetters(DeadLetters::Show { service, id }) => {
                Call::new("GET", format!("/api/admin/dead-letters/{}/{id}", service.name()))
            }
            Self::DeadLetters(DeadLetters::Replay { service, id }) => {
                Call::new("POST", format!("/api/admin/dead-letters/{}/{id}/replay", service.name()))
            }
            Self::DeadLetters(DeadLetters::ReplayAll { service, event_type, limit }) => {
                Call::new("POST", format!("/api/admin/dead-letters/{}/replay", service.name()))
                    .with("event_type", event_type.as_ref())
                    .with("limit", *limit)
            }
            Self::Integrity(Integrity::List { service, all, status, limit, offset }) => {
                let status = if *all { Some("all".to_owned()) } else { status.clone() };
                Call::new("GET", format!("/api/admin/integrity/{}", service.name()))
                    .with("status", status)
                    .with("limit", *limit)
                    .with("offset", *offset)
            }
            Self::Integrity(Integrity::Run { service, .. }) => {
                Call::new("POST", format!("/api/admin/integrity/{}/run", service.name()))
            }
        })
    }
}

/// The gateway's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its body (JSON, or the text as a JSON string when it is not JSON; null when empty).
    pub body: Value,
}

impl Answer {
    /// True for a 2xx answer.
    #[must_use]
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `HTTP <status> <code>: <message>` for an error answer.
    #[must_use]
    pub fn summary(&self) -> String {
        let code = self.body["code"].as_str().unwrap_or("error");
        let message = self.body["message"].as_str().unwrap_or_default();
        format!("HTTP {} {code}: {message}", self.status)
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?)
}

/// The access token: the one given, else one from the tenant by client credentials.
///
/// # Errors
/// When neither a token nor the issuer, client id and secret are given, or the tenant refuses.
pub async fn token(connection: &Connection) -> anyhow::Result<String> {
    if let Some(token) = connection.token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(token.clone());
    }
    let (Some(issuer), Some(id), Some(secret)) =
        (connection.issuer.as_ref(), connection.client_id.as_ref(), connection.client_secret.as_ref())
    else {
        anyhow::bail!(
            "no credentials: give --token, or --issuer, --client-id and --client-secret \
             (HOPSBRIDGE_ADMIN_TOKEN, or HOPSBRIDGE_ADMIN_ISSUER, _CLIENT_ID and _CLIENT_SECRET)"
        );
    };
    let url = format!("{}/oauth/token", issuer.trim_end_matches('/'));
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", id)
        .append_pair("client_secret", secret)
        .append_pair("audience", &connection.audience)
        .finish();
    let response = client()?
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .with_context(|| format!("the tenant at {url} cannot be reached"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "the tenant refused the client credentials: HTTP {} {}: {}",
            status.as_u16(),
            body["error"].as_str().unwrap_or("error"),
            body["error_description"].as_str().unwrap_or_default()
        );
    }
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("the tenant's answer carries no access_token"))
}

/// Sends `call` to the gateway with `token`.
///
/// # Errors
/// When the gateway cannot be reached or its URL is not one.
pub async fn send(gateway: &str, token: &str, call: &Call) -> anyhow::Result<Answer> {
    let mut url = url::Url::parse(&format!("{}{}", gateway.trim_end_matches('/'), call.path))
        .with_context(|| format!("{gateway} is not a URL"))?;
    if !call.query.is_empty() {
        url.query_pairs_mut().extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())));
    }
    let method = reqwest::Method::from_bytes(call.method.as_bytes())?;
    let mut request = client()?.request(method, url).bearer_auth(token);
    if let Some(body) = &call.body {
        request = request.json(body);
    }
    let response = request.send().await.with_context(|| format!("the gateway at {gateway} cannot be reached"))?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    Ok(Answer { status, body })
}

/// Runs the command: the token, then the call.
///
/// # Errors
/// When the command's input cannot be read, no token can be had or the gateway cannot be
/// reached.
pub async fn run(cli: &Cli) -> anyhow::Result<Answer> {
    let call = cli.command.call()?;
    let token = token(&cli.connection).await?;
    let answer = send(&cli.connection.gateway, &token, &call).await?;
    match &cli.command {
        Command::Integrity(Integrity::Run { service, wait_secs }) if answer.status == 202 => {
            let ceiling = Duration::from_secs(*wait_secs);
            wait_for_run(&cli.connection.gateway, &token, service.name(), &answer.body, ceiling, POLL).await
        }
        _ => Ok(answer),
    }
}

/// How often `integrity run` asks whether the run has ended.
const POLL: Duration = Duration::from_secs(1);

/// Polls the integrity run `started` (as `POST …/run` answered it) of `service` every `poll`
/// until it is no longer `running`, for at most `ceiling`; answers the last `GET …/runs/{id}`.
///
/// # Errors
/// When the gateway cannot be reached, or the run is still running after `ceiling`.
pub async fn wait_for_run(
    gateway: &str,
    token: &str,
    service: &str,
    started: &Value,
    ceiling: Duration,
    poll: Duration,
) -> anyhow::Result<Answer> {
    let id = started["id"].as_str().ok_or_else(|| anyhow::anyhow!("the gateway answered a run without an id"))?;
    let poll_call = Call::new("GET", format!("/api/admin/integrity/{service}/runs/{id}"));
    let deadline = tokio::time::Instant::now() + ceiling;
    loop {
        let answer = send(gateway, token, &poll_call).await?;
        if !answer.is_success() || answer.body["status"] != "running" {
            return Ok(answer);
        }
        if tokio::time::Instant::now() + poll > deadline {
            anyhow::bail!(
                "integrity run {id} of {service} still running after {} s; it goes on: \
                 GET /api/admin/integrity/{service}/runs/{id} says when it ends",
                ceiling.as_secs()
            );
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(args: &[&str]) -> Call {
        let mut argv = vec!["hopsbridge-admin"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().command.call().unwrap()
    }

    #[test]
    fn each_command_names_its_route() {
        let id = "0193a000-0000-7000-8000-000000000001";
        let other = "0193a000-0000-7000-8000-000000000002";
        assert_eq!(call(&["clusters", "list"]), Call::new("GET", "/api/admin/clusters".into()));
        assert_eq!(call(&["clusters", "show", id]).path, format!("/api/admin/clusters/{id}"));
        let moved = call(&["assignments", "move", id, "--cluster", other]);
        assert_eq!((moved.method, moved.path.as_str()), ("PUT", format!("/api/admin/assignments/{id}").as_str()));
        assert_eq!(moved.body, Some(json!({"cluster_id": other})));
        assert_eq!(call(&["assignments", "unassign", id]).method, "DELETE");
        let listed = call(&["assignments", "list", "--status", "active", "--limit", "5"]);
        assert_eq!(listed.query, vec![("status", "active".to_owned()), ("limit", "5".to_owned())]);
        assert_eq!(call(&["people", "reactivate", id]).path, format!("/api/admin/users/{id}/reactivate"));
        assert_eq!(call(&["people", "list", "--q", "ada"]).query, vec![("q", "ada".to_owned())]);
        let price = call(&[
            "prices",
            "add",
            "--resource",
            "cpu",
            "--unit-amount-decimal",
            "0.35",
            "--effective-from",
            "2027-01-01T00:00:00Z",
        ]);
        assert_eq!(price.body.unwrap()["unit_amount_decimal"], "0.35", "sent as text: exact");
        assert_eq!(call(&["metering", "collect", id]).path, format!("/api/admin/metering/clusters/{id}/collect"));
        assert_eq!(call(&["metering", "gaps", "--cluster-id", id]).query, vec![("cluster_id", id.to_owned())]);
        assert_eq!(call(&["mail", "retry", "billing", id]).path, format!("/api/admin/mail/billing/{id}/retry"));
        let all = call(&["dead-letters", "replay-all", "team", "--event-type", "UserCreatedV1"]);
        assert_eq!((all.method, all.path.as_str()), ("POST", "/api/admin/dead-letters/team/replay"));
        assert_eq!(all.query, vec![("event_type", "UserCreatedV1".to_owned())]);
        let findings = call(&["integrity", "list", "provisioning", "--all", "--limit", "5"]);
        assert_eq!((findings.method, findings.path.as_str()), ("GET", "/api/admin/integrity/provisioning"));
        assert_eq!(findings.query, vec![("status", "all".to_owned()), ("limit", "5".to_owned())]);
        assert!(call(&["integrity", "list", "billing"]).query.is_empty(), "open findings by default");
        let run = call(&["integrity", "run", "metering"]);
        assert_eq!((run.method, run.path.as_str()), ("POST", "/api/admin/integrity/metering/run"));
    }

    #[test]
    fn ids_must_be_uuids_so_no_path_can_be_smuggled() {
        for args in [["clusters", "show", "../../internal"], ["people", "show", "x%2F..%2F"]] {
            let mut argv = vec!["hopsbridge-admin"];
            argv.extend_from_slice(&args);
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
        }
    }
}
