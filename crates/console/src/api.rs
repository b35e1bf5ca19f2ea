//! The parts of the API's answers the pages show, as the OpenAPI document describes them
//! (fields the pages do not use are ignored, so the API can grow without breaking a page).

use serde::Deserialize;

/// `GET /api/me`.
#[derive(Clone, Debug, Deserialize)]
pub struct Me {
    /// Their user id (compared with usage lines, never shown in a URL).
    pub id: String,
    /// Email.
    pub email: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
}

/// `GET /api/cluster`.
#[derive(Clone, Debug, Deserialize)]
pub struct MyCluster {
    /// `complete`, `provisioning`, `waiting_for_capacity`, …
    pub status: String,
    /// The cluster, once chosen.
    #[serde(default)]
    pub cluster: Option<ClusterSummary>,
    /// Why it is not complete yet.
    #[serde(default)]
    pub reason: Option<String>,
    /// The person's Hopsworks username, when the API gives it.
    #[serde(default)]
    pub hopsworks_username: Option<String>,
    /// The person's Hopsworks projects, when the API gives them.
    #[serde(default)]
    pub projects: Option<Vec<Project>>,
}

/// A cluster as its user sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct ClusterSummary {
    /// Its name.
    pub name: String,
    /// Its region.
    #[serde(default)]
    pub region: String,
    /// The Hopsworks URL to open.
    pub endpoint: String,
}

/// A Hopsworks project.
#[derive(Clone, Debug, Deserialize)]
pub struct Project {
    /// Its name.
    pub name: String,
}

/// `GET /api/billing`.
#[derive(Clone, Debug, Deserialize)]
pub struct Billing {
    /// `free`, `postpaid` or `prepaid`.
    pub billing_mode: String,
    /// Newest first.
    #[serde(default)]
    pub invoices: Vec<InvoiceSummary>,
    /// The card, once added.
    #[serde(default)]
    pub payment_method: Option<Card>,
    /// Stripe's subscription status.
    #[serde(default)]
    pub subscription_status: Option<String>,
}

/// An invoice.
#[derive(Clone, Debug, Deserialize)]
pub struct InvoiceSummary {
    /// `open`, `paid`, …
    pub status: String,
    /// Minor units.
    pub amount_due: i64,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// Unix seconds.
    pub created: i64,
    /// Stripe's page.
    #[serde(default)]
    pub hosted_invoice_url: Option<String>,
    /// Its number.
    #[serde(default)]
    pub number: Option<String>,
}

/// A card.
#[derive(Clone, Debug, Deserialize)]
pub struct Card {
    /// `visa`, …
    #[serde(default)]
    pub brand: Option<String>,
    /// Expiry month.
    #[serde(default)]
    pub exp_month: Option<i32>,
    /// Expiry year.
    #[serde(default)]
    pub exp_year: Option<i32>,
    /// Last four digits.
    #[serde(default)]
    pub last4: Option<String>,
}

/// `GET /api/billing/usage`.
#[derive(Clone, Debug, Deserialize)]
pub struct OwnerUsage {
    /// Per day, resource, project, member and mode.
    #[serde(default)]
    pub lines: Vec<UsageLine>,
    /// The range asked for.
    pub range: Totals,
    /// This UTC month so far.
    pub month_to_date: Totals,
    /// The spending cap, minor units a month.
    #[serde(default)]
    pub monthly_cap_minor: Option<i64>,
    /// The upcoming invoice.
    pub upcoming_invoice: UpcomingInvoice,
}

/// One day's usage of one resource in one project by one person, in one mode.
#[derive(Clone, Debug, Deserialize)]
pub struct UsageLine {
    /// The UTC day.
    pub day: chrono::NaiveDate,
    /// `cpu`, `memory`, `gpu`, `storage_offline`, `storage_online`.
    pub resource: String,
    /// Whose pods.
    pub user_id: String,
    /// Hopsworks' project id.
    #[serde(default)]
    pub project_id: Option<i64>,
    /// Billed units, exact decimal.
    pub quantity: String,
    /// Cost in minor units, unrounded.
    pub cost: String,
}

/// Costs added up.
#[derive(Clone, Debug, Deserialize)]
pub struct Totals {
    /// First day.
    pub from: chrono::NaiveDate,
    /// Last day.
    pub to: chrono::NaiveDate,
    /// Minor units, unrounded.
    pub cost: String,
    /// Rounded half up.
    pub cost_minor: i64,
    /// Paid with credits, unrounded.
    pub credits_paid: String,
    /// Unpaid, unrounded.
    pub unpaid: String,
}

/// The upcoming invoice.
#[derive(Clone, Debug, Deserialize)]
pub struct UpcomingInvoice {
    /// First day.
    pub period_start: chrono::NaiveDate,
    /// Last day.
    pub period_end: chrono::NaiveDate,
    /// Per resource and price.
    #[serde(default)]
    pub lines: Vec<InvoiceLine>,
    /// Minor units.
    pub total_minor: i64,
}

/// A line of the upcoming invoice.
#[derive(Clone, Debug, Deserialize)]
pub struct InvoiceLine {
    /// The resource.
    pub resource: String,
    /// Its unit amount, minor units.
    pub unit_amount_decimal: String,
    /// Billed units.
    pub quantity: String,
    /// Rounded amount, minor units.
    pub amount_minor: i64,
}

/// `GET /api/usage`: one person's usage in one namespace on one day.
#[derive(Clone, Debug, Deserialize)]
pub struct DailyUsage {
    /// The UTC day.
    pub day: chrono::NaiveDate,
    /// The project's namespace.
    pub namespace: String,
    /// Core-hours.
    pub cpu_core_hours: String,
    /// GiB-hours.
    pub memory_gib_hours: String,
    /// GPU-hours.
    pub gpu_hours: String,
    /// The project's storage that day, GB-months (offline and online).
    #[serde(default = "zero")]
    pub storage_gb_months: String,
}

fn zero() -> String {
    "0".to_owned()
}

fn usage_source() -> String {
    "usage".to_owned()
}

/// `GET /api/billing/usage/samples`.
#[derive(Clone, Debug, Deserialize)]
pub struct Samples {
    /// The day.
    pub day: chrono::NaiveDate,
    /// The next page's `after`.
    #[serde(default)]
    pub next: Option<String>,
    /// The entries.
    #[serde(default)]
    pub samples: Vec<Sample>,
}

/// One ledger entry.
#[derive(Clone, Debug, Deserialize)]
pub struct Sample {
    /// Whose pods.
    pub user_id: String,
    /// The namespace.
    pub namespace: String,
    /// The project.
    #[serde(default)]
    pub project_id: Option<i64>,
    /// Window start.
    pub window_start: String,
    /// Window end.
    pub window_end: String,
    /// The mode.
    pub billing_mode: String,
    /// Core-hours.
    pub cpu_core_hours: String,
    /// GiB-hours.
    pub memory_gib_hours: String,
    /// GPU-hours.
    pub gpu_hours: String,
    /// `usage` (pods: CPU, memory, GPUs) or `storage` (a project's storage).
    #[serde(default = "usage_source")]
    pub source: String,
    /// Offline storage, GB-months.
    #[serde(default = "zero")]
    pub storage_offline_gb_months: String,
    /// Online storage, GB-months.
    #[serde(default = "zero")]
    pub storage_online_gb_months: String,
    /// Cost, unrounded minor units.
    pub cost: String,
}

/// `GET /api/credits`.
#[derive(Clone, Debug, Deserialize)]
pub struct Credits {
    /// Minor units left.
    pub balance: String,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// Newest first.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// A grant of credit.
#[derive(Clone, Debug, Deserialize)]
pub struct Grant {
    /// `purchased` or `promotional`.
    pub category: String,
    /// Granted, minor units.
    pub amount: String,
    /// Left, minor units.
    pub remaining: String,
    /// When.
    pub created_at: String,
    /// Until when.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// `GET /api/pricing`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pricing {
    /// The prices in force.
    #[serde(default)]
    pub current: Vec<PublicPrice>,
}

/// A price in force.
#[derive(Clone, Debug, Deserialize)]
pub struct PublicPrice {
    /// What it prices.
    pub resource: String,
    /// Lowercase ISO 4217.
    pub currency: String,
    /// Minor units per billed unit.
    pub unit_amount_decimal: String,
    /// From when (RFC 3339).
    #[serde(default)]
    pub effective_from: Option<String>,
}

/// `GET /api/admin/prices`: every version of every resource's price.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PriceList {
    /// By resource, then start.
    #[serde(default)]
    pub prices: Vec<AdminPrice>,
}

/// One version of a resource's price, as admins see it.
#[derive(Clone, Debug, Deserialize)]
pub struct AdminPrice {
    /// What it prices: `cpu`, `memory`, `gpu`, `storage_offline`, `storage_online`.
    pub resource: String,
    /// Lowercase ISO 4217.
    #[serde(default)]
    pub currency: String,
    /// Minor units per billed unit, exact (a decimal string; a JSON number is read as one).
    #[serde(deserialize_with = "decimal_text")]
    pub unit_amount_decimal: String,
    /// Windows starting at or after this instant use it (RFC 3339).
    pub effective_from: String,
    /// When it was recorded.
    #[serde(default)]
    pub created_at: Option<String>,
    /// The admin who recorded it (used only to find their email); none for the version
    /// from configuration.
    #[serde(default)]
    pub created_by: Option<String>,
}

/// A decimal the API writes as a string, read as its text also when it came as a number.
fn decimal_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("not a decimal: {other}"))),
    }
}

/// A URL to send the browser to (Checkout, the portal).
#[derive(Clone, Debug, Deserialize)]
pub struct Redirect {
    /// Where.
    pub url: String,
}

/// `GET /api/team`.
#[derive(Clone, Debug, Deserialize)]
pub struct Team {
    /// The members.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// A member as the owner sees them.
#[derive(Clone, Debug, Deserialize)]
pub struct Member {
    /// Their user id (used only to call the API, never shown in a URL).
    pub user_id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Email.
    #[serde(default)]
    pub email: Option<String>,
    /// Role in the owner's projects.
    pub project_role: String,
    /// Their account's status.
    pub account_status: String,
    /// Their usage this month.
    pub usage_this_month: Hours,
    /// Their Hopsworks account.
    pub hopsworks_account: HopsworksAccount,
}

/// A month's usage.
#[derive(Clone, Debug, Deserialize)]
pub struct Hours {
    /// Core-hours.
    pub cpu_core_hours: String,
    /// GiB-hours.
    pub memory_gib_hours: String,
    /// GPU-hours.
    pub gpu_hours: String,
}

/// A member's Hopsworks account.
#[derive(Clone, Debug, Deserialize)]
pub struct HopsworksAccount {
    /// `assigned`, `unassigned`, `none`.
    pub state: String,
    /// Their username.
    #[serde(default)]
    pub hopsworks_username: Option<String>,
}

/// An invitation as its owner sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct Invitation {
    /// Its id (used only to call the API).
    pub id: String,
    /// The invited address.
    pub email: String,
    /// The role offered.
    pub project_role: String,
    /// `pending`, `accepted`, `cancelled`, `replaced`.
    pub status: String,
    /// Mails sent.
    pub sends: i32,
    /// When the link stops working.
    pub expires_at: String,
}

/// `GET /api/team/membership`.
#[derive(Clone, Debug, Deserialize)]
pub struct MyMembership {
    /// The owner's name.
    pub owner_name: String,
    /// The owner's address.
    #[serde(default)]
    pub owner_email: Option<String>,
    /// The member's role.
    pub project_role: String,
    /// Since when.
    pub joined_at: String,
}

/// `GET /api/invitations/{token}`.
#[derive(Clone, Debug, Deserialize)]
pub struct Preview {
    /// Who invited.
    pub invited_by: Inviter,
    /// The invited address.
    pub email: String,
    /// The role offered.
    pub project_role: String,
    /// When the link stops working.
    pub expires_at: String,
    /// The terms to accept.
    pub terms_version: String,
}

/// The inviting owner.
#[derive(Clone, Debug, Deserialize)]
pub struct Inviter {
    /// Their name.
    pub name: String,
    /// Their address.
    #[serde(default)]
    pub email: Option<String>,
}

/// `GET /api/admin/users`.
#[derive(Clone, Debug, Deserialize)]
pub struct UserPage {
    /// The people found.
    #[serde(default)]
    pub items: Vec<AdminUser>,
    /// How many match.
    #[serde(default)]
    pub total: i64,
}

/// A person as an admin sees them.
#[derive(Clone, Debug, Deserialize)]
pub struct AdminUser {
    /// Their id (used only to call the API).
    pub id: String,
    /// Email.
    pub email: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// `active`, `suspended`, `deleted`.
    pub status: String,
    /// Admin.
    #[serde(default)]
    pub is_admin: bool,
}

/// `GET /api/admin/assignments`: a page of assignments, oldest first.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AssignmentPage {
    /// The assignments.
    #[serde(default)]
    pub items: Vec<Assignment>,
    /// How many match.
    #[serde(default)]
    pub total: i64,
}

/// Where a person's cluster assignment is, as an admin sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct Assignment {
    /// The person (used only to call the API and find their email, never shown in a URL).
    pub user_id: String,
    /// The cluster holding (or releasing) their seat.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// `waiting_for_user`, `waiting_for_capacity`, `waiting_for_owner`, `provisioning`,
    /// `complete`, `unassigning`, `unassigned`.
    pub status: String,
    /// Their Hopsworks username, once the account exists.
    #[serde(default)]
    pub hopsworks_username: Option<String>,
    /// For a move: the cluster whose account is still to be deactivated.
    #[serde(default)]
    pub previous_cluster_id: Option<String>,
    /// Background attempts so far.
    #[serde(default)]
    pub attempts: i64,
    /// Why the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the next attempt is due.
    #[serde(default)]
    pub next_attempt_at: Option<String>,
    /// When the person asked (or last asked again) for a cluster.
    #[serde(default)]
    pub waiting_since: Option<String>,
    /// Last change.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A registered cluster as an admin sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct AdminCluster {
    /// Its id (used only to call the API, never shown in a URL).
    #[serde(default)]
    pub id: String,
    /// Name.
    pub name: String,
    /// Hopsworks' OAuth client id.
    #[serde(default)]
    pub oauth_client_id: String,
    /// Region.
    #[serde(default)]
    pub region: String,
    /// Hopsworks URL.
    #[serde(default)]
    pub api_url: String,
    /// `active`, …
    #[serde(default)]
    pub status: String,
    /// Seats.
    #[serde(default)]
    pub capacity: i64,
    /// Seats taken.
    #[serde(default)]
    pub used: i64,
}

/// `GET /api/billing/plan`.
#[derive(Clone, Debug, Deserialize)]
pub struct PlanView {
    /// `free`, `payg` or `prepaid`; none until chosen.
    #[serde(default)]
    pub plan: Option<String>,
    /// The plan's limits.
    pub limits: PlanLimits,
    /// Active projects now.
    #[serde(default)]
    pub active_projects: i64,
    /// The terms in force.
    pub terms_version: String,
    /// What restricts the account now.
    #[serde(default)]
    pub restrictions: Vec<Restriction>,
    /// Whether billing has suspended the account.
    #[serde(default)]
    pub suspended: bool,
}

/// A plan's limits.
#[derive(Clone, Debug, Deserialize)]
pub struct PlanLimits {
    /// Active Hopsworks projects allowed.
    pub max_active_projects: i64,
}

/// A restriction on the account.
#[derive(Clone, Debug, Deserialize)]
pub struct Restriction {
    /// `over_project_limit`, `payment_failed`, `credits_exhausted` or `spending_cap`.
    pub reason: String,
    /// When the account is suspended if it still holds.
    pub deadline: String,
}

/// `GET /api/cluster/projects`: the person's Hopsworks projects on their cluster.
#[derive(Clone, Debug, Deserialize)]
pub struct MyProjects {
    /// The projects, by name.
    #[serde(default)]
    pub projects: Vec<MyProject>,
    /// When the cluster's projects were last read from Hopsworks.
    #[serde(default)]
    pub synced_at: Option<String>,
}

/// One of the person's projects.
#[derive(Clone, Debug, Deserialize)]
pub struct MyProject {
    /// Its name in Hopsworks.
    pub name: String,
    /// `creator` (theirs) or `member` (their owner's, which they were added to).
    pub relation: String,
    /// Their role in it, when they are a member.
    #[serde(default)]
    pub project_role: Option<String>,
    /// Hopsworks has not added them yet.
    #[serde(default)]
    pub pending: bool,
}

/// `GET /api/admin/integrity/{service}`: a page of a service's findings and its checks.
#[derive(Clone, Debug, Deserialize)]
pub struct IntegrityPage {
    /// The findings asked for, newest first.
    #[serde(default)]
    pub items: Vec<IntegrityFinding>,
    /// How many match.
    #[serde(default)]
    pub total: i64,
    /// Every check of the service with its last run.
    #[serde(default)]
    pub checks: Vec<CheckStatus>,
}

/// What an integrity check found.
#[derive(Clone, Debug, Deserialize)]
pub struct IntegrityFinding {
    /// The check that found it.
    pub check: String,
    /// What it is about.
    pub subject: String,
    /// What is wrong and what to do.
    pub detail: String,
    /// When a run first found it.
    pub first_seen: String,
    /// When a run last found it.
    pub last_seen: String,
    /// When a run no longer found it; none while it is open.
    #[serde(default)]
    pub resolved_at: Option<String>,
}

/// An integrity check and its last run.
#[derive(Clone, Debug, Deserialize)]
pub struct CheckStatus {
    /// Its name.
    pub check: String,
    /// When its last run started.
    #[serde(default)]
    pub last_started_at: Option<String>,
    /// When its last run that ended (worked or failed) ended.
    #[serde(default)]
    pub last_finished_at: Option<String>,
    /// Findings its last run that worked found.
    #[serde(default)]
    pub last_found: Option<i64>,
    /// Whether its last finished run worked.
    #[serde(default)]
    pub last_ok: Option<bool>,
    /// Why it failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// A run holds its lease now.
    #[serde(default)]
    pub running: bool,
    /// Its open findings.
    #[serde(default)]
    pub open: i64,
}
