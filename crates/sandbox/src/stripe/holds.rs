//! Hold controls: the next request matching a method and a path prefix is applied (its effect
//! is in Stripe) and its answer held back until the test releases it, so a client can be
//! stopped at a known point: after Stripe accepted a request and before the client learnt it.
//! Other requests are served while one is held.

use super::Shared;
use super::state::{ApiError, State, random_id};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Where a hold stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldStatus {
    /// Waiting for its request: `left` more matching requests to apply before it holds one.
    Armed {
        /// Matching requests still to come before the held one (0: the next one is held).
        left: u32,
    },
    /// A request is applied and its answer held.
    Held {
        /// The held request's path.
        path: String,
        /// Its idempotency key, if it had one.
        idempotency_key: Option<String>,
    },
    /// Released: a held answer went out (or nothing was held).
    Released,
}

impl HoldStatus {
    fn name(&self) -> &'static str {
        match self {
            Self::Armed { .. } => "armed",
            Self::Held { .. } => "held",
            Self::Released => "released",
        }
    }
}

#[derive(Debug)]
pub struct Hold {
    pub id: String,
    pub method: String,
    pub path_prefix: String,
    pub status: HoldStatus,
    release: watch::Sender<bool>,
}

impl Hold {
    fn json(&self) -> Value {
        let mut out = json!({
            "id": self.id,
            "object": "sandbox.hold",
            "method": self.method,
            "path_prefix": self.path_prefix,
            "status": self.status.name(),
        });
        match &self.status {
            HoldStatus::Armed { left } => out["matches_before"] = json!(left),
            HoldStatus::Held { path, idempotency_key } => {
                out["held_path"] = json!(path);
                out["held_idempotency_key"] = json!(idempotency_key);
            }
            HoldStatus::Released => {}
        }
        out
    }
}

impl State {
    /// Arms a hold on the `nth` (1 = the next) request with `method` whose path starts with
    /// `path_prefix` that Stripe applies (answers 2xx); answers its id.
    pub fn arm_hold(&mut self, method: &str, path_prefix: &str, nth: u32) -> String {
        let id = random_id("hold_", 16);
        let (release, _) = watch::channel(false);
        self.holds.push(Hold {
            id: id.clone(),
            method: method.to_ascii_uppercase(),
            path_prefix: path_prefix.to_owned(),
            status: HoldStatus::Armed { left: nth.saturating_sub(1) },
            release,
        });
        id
    }

    /// Called with every applied request (status 2xx): the hold it falls to, if any, is marked
    /// held and answers the receiver its release is sent on.
    pub fn take_hold(
        &mut self,
        method: &str,
        path: &str,
        idempotency_key: Option<&str>,
    ) -> Option<watch::Receiver<bool>> {
        let mut taken = None;
        for hold in &mut self.holds {
            if hold.method != method || !path.starts_with(&hold.path_prefix) {
                continue;
            }
            if let HoldStatus::Armed { left } = &mut hold.status {
                if *left > 0 {
                    *left -= 1;
                } else if taken.is_none() {
                    hold.status =
                        HoldStatus::Held { path: path.to_owned(), idempotency_key: idempotency_key.map(str::to_owned) };
                    taken = Some(hold.release.subscribe());
                }
            }
        }
        taken
    }

    /// Releases hold `id`: a held answer goes out; an armed hold holds nothing any more.
    pub fn release_hold(&mut self, id: &str) -> Result<Value, ApiError> {
        let hold = self.holds.iter_mut().find(|h| h.id == id).ok_or_else(|| ApiError::no_such("hold", id, "id"))?;
        hold.status = HoldStatus::Released;
        hold.release.send_replace(true);
        Ok(hold.json())
    }

    pub fn hold_status(&self, id: &str) -> Option<HoldStatus> {
        self.holds.iter().find(|h| h.id == id).map(|h| h.status.clone())
    }
}

/// Waits until `release` says so (or its hold is gone).
pub async fn wait_released(mut release: watch::Receiver<bool>) {
    let _ = release.wait_for(|released| *released).await;
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sandbox/holds", web::post().to(arm))
        .route("/_sandbox/holds/{id}", web::get().to(show))
        .route("/_sandbox/holds/{id}/release", web::post().to(release));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArmBody {
    method: String,
    path_prefix: String,
    #[serde(default = "one")]
    nth: u32,
}

const fn one() -> u32 {
    1
}

/// The control routes take the account's secret key, as the API does: the refusal otherwise.
pub(super) fn unauthorised(req: &HttpRequest, state: &State) -> Option<HttpResponse> {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    (bearer != Some(state.secret_key.as_str())).then(|| {
        answer_error(&ApiError {
            status: 401,
            ..ApiError::invalid("A sandbox control request needs the secret key.", None)
        })
    })
}

pub(super) fn answer_error(e: &ApiError) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(e.status).unwrap_or_default()).json(e.body())
}

/// `POST /_sandbox/holds` with JSON `{method, path_prefix, nth}` (`nth` 1 by default).
async fn arm(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let mut state = shared.lock();
    if let Some(refused) = unauthorised(&req, &state) {
        return refused;
    }
    let parsed: ArmBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return answer_error(&ApiError::invalid(format!("Invalid hold: {e}"), None)),
    };
    if parsed.nth == 0 || !parsed.path_prefix.starts_with('/') || parsed.method.is_empty() {
        return answer_error(&ApiError::invalid("A hold needs a method, a path prefix from `/` and nth ≥ 1.", None));
    }
    let id = state.arm_hold(&parsed.method, &parsed.path_prefix, parsed.nth);
    let hold = state.holds.iter().find(|h| h.id == id).map(Hold::json).unwrap_or_default();
    HttpResponse::Ok().json(hold)
}

/// `GET /_sandbox/holds/{id}`.
async fn show(req: HttpRequest, id: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    let state = shared.lock();
    if let Some(refused) = unauthorised(&req, &state) {
        return refused;
    }
    match state.holds.iter().find(|h| h.id == *id) {
        Some(hold) => HttpResponse::Ok().json(hold.json()),
        None => answer_error(&ApiError::no_such("hold", &id, "id")),
    }
}

/// `POST /_sandbox/holds/{id}/release`.
async fn release(req: HttpRequest, id: web::Path<String>, shared: web::Data<Shared>) -> HttpResponse {
    let mut state = shared.lock();
    if let Some(refused) = unauthorised(&req, &state) {
        return refused;
    }
    match state.release_hold(&id) {
        Ok(hold) => HttpResponse::Ok().json(hold),
        Err(e) => answer_error(&e),
    }
}
