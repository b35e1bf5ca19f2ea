//! What identity asks the team service over its internal API: how many members an owner's team
//! has, before the owner's account is deleted (decision 0035). Requests are signed with the key
//! shared by the services, as the identity service.

use crate::config::TeamApiConfig;
use hopsbridge_contracts::Service;
use hopsbridge_domain::OwnerId;
use hopsbridge_platform::caller::{Caller, CallerSigner};
use serde::Deserialize;
use std::time::Duration;

/// The team service did not answer, or not with a count; the message carries no secret.
#[derive(Debug, thiserror::Error)]
#[error("team service: {0}")]
pub struct TeamUnavailable(String);

/// A client of the team service's internal API.
#[derive(Clone, Debug)]
pub struct Team {
    http: reqwest::Client,
    base: String,
    key: CallerSigner,
}

/// `GET /internal/owners/{id}/members`: the owner's current members, counted.
#[derive(Deserialize)]
struct Members {
    count: u64,
}

impl Team {
    /// A client of the API at `cfg.url`, signing with `key`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(cfg: &TeamApiConfig, key: CallerSigner) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_millis(cfg.timeout_ms)).build()?;
        Ok(Self { http, base: cfg.url.trim_end_matches('/').to_owned(), key })
    }

    /// How many current members `owner`'s team has.
    ///
    /// # Errors
    /// [`TeamUnavailable`] when the team service cannot be reached, answers anything but 200,
    /// or answers without a count.
    pub async fn member_count(&self, owner: OwnerId) -> Result<u64, TeamUnavailable> {
        let path = format!("/internal/owners/{owner}/members");
        let headers = self.key.sign("GET", &path, &Caller::service(Service::Identity), chrono::Utc::now().timestamp());
        let mut request = self.http.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response =
            request.send().await.map_err(|e| TeamUnavailable(format!("unreachable: {}", e.without_url())))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(TeamUnavailable(format!("answered {status}")));
        }
        let members: Members =
            response.json().await.map_err(|e| TeamUnavailable(format!("unreadable answer: {}", e.without_url())))?;
        Ok(members.count)
    }
}
