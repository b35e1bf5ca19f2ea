//! The outage control: while set, every authenticated API request is answered with one error
//! status and changes nothing, until it is cleared. Unlike `fail_next`, it does not run out
//! however many requests a client's retries send.

use super::Shared;
use super::holds::{answer_error, unauthorised};
use super::state::ApiError;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/_sandbox/outage", web::put().to(start)).route("/_sandbox/outage", web::delete().to(end));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutageBody {
    status: u16,
}

/// `PUT /_sandbox/outage` with JSON `{status}` (429 or 500-599) and the secret key.
async fn start(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let mut state = shared.lock();
    if let Some(refused) = unauthorised(&req, &state) {
        return refused;
    }
    let status = match serde_json::from_slice::<OutageBody>(&body) {
        Ok(b) if b.status == 429 || (500..=599).contains(&b.status) => b.status,
        Ok(_) => return answer_error(&ApiError::invalid("An outage's status is 429 or 500-599.", Some("status"))),
        Err(e) => return answer_error(&ApiError::invalid(format!("Invalid outage: {e}"), None)),
    };
    state.outage = Some(status);
    HttpResponse::Ok().json(json!({"object": "sandbox.outage", "status": status}))
}

/// `DELETE /_sandbox/outage`: requests are served again.
async fn end(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let mut state = shared.lock();
    if let Some(refused) = unauthorised(&req, &state) {
        return refused;
    }
    state.outage = None;
    HttpResponse::Ok().json(json!({"object": "sandbox.outage", "status": null}))
}
