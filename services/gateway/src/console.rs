//! The console's way into the API ([`hopsbridge_console::Backend`]): the signed-in person is
//! the one the request's session cookie names, resolved exactly as a browser's `/api/…`
//! request is (token, suspension, rate limits, roles), and each call goes to the owning
//! service through the same routing table with the same signed caller headers. The console
//! checks its forms' CSRF token itself before it calls, so a call here needs no header for it.

use crate::error::GatewayCode;
use crate::proxy::{Authenticated, Proxy, Target, WorkerClient, authenticate_token, is_public};
use crate::session::session_of;
use actix_web::{HttpRequest, ResponseError as _, web};
use futures::future::LocalBoxFuture;
use hopsbridge_console::{Answer, Backend, Method, Viewer};
use hopsbridge_platform::caller::{Caller, Role};
use hopsbridge_platform::http::{ApiError, ErrorCode as _};
use std::sync::Arc;

/// The gateway as the console's backend.
#[derive(Debug)]
pub struct ConsoleBackend {
    proxy: Arc<Proxy>,
}

impl ConsoleBackend {
    /// The console over `proxy`'s routes, keys and limits.
    #[must_use]
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Self { proxy }
    }
}

fn answer_of(e: &ApiError) -> Answer {
    Answer::error(e.status_code().as_u16(), e.code())
}

/// The worker's HTTP client (each actix worker registers its own).
fn worker_client(req: &HttpRequest) -> Option<WorkerClient> {
    req.app_data::<web::Data<WorkerClient>>().map(|c| c.get_ref().clone())
}

impl ConsoleBackend {
    /// The person the session cookie names, signed in as the proxy would take them.
    async fn person(&self, req: &HttpRequest, path: &str) -> Result<Option<(Caller, String)>, Answer> {
        let Some(session) = self.proxy.sessions.as_ref().and_then(|sealer| session_of(sealer, req)) else {
            return Ok(None);
        };
        if self.proxy.per_ip.check(&req.peer_addr().map(|a| a.ip())).is_err() {
            return Err(Answer::error(429, "rate_limited"));
        }
        let client = worker_client(req).ok_or_else(|| Answer::error(500, "internal_error"))?;
        match authenticate_token(&self.proxy, &client, &session.access_token, path).await {
            Ok(Ok(Authenticated::Person(caller, _))) => Ok(Some((caller, session.csrf))),
            Ok(Ok(Authenticated::Machine(_))) => Err(answer_of(&GatewayCode::MachineClientAdminOnly.error())),
            Ok(Err(_limited)) => Err(Answer::error(429, "rate_limited")),
            // A session whose token no longer verifies is no session: sign in again.
            Err(e) if e.code() == GatewayCode::InvalidToken.code() => Ok(None),
            Err(e) => Err(answer_of(&e)),
        }
    }

    async fn forward(
        &self,
        req: &HttpRequest,
        method: Method,
        path_and_query: &str,
        body: Option<serde_json::Value>,
    ) -> Answer {
        let path = path_and_query.split_once('?').map_or(path_and_query, |(p, _)| p);
        let Some(upstream) = self.proxy.routes.upstream(path) else {
            return answer_of(&GatewayCode::RouteNotFound.error());
        };
        let Some(target) = Target::new(upstream, path_and_query) else {
            return answer_of(&GatewayCode::InvalidPath.error());
        };
        let verb =
            actix_web::http::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(actix_web::http::Method::GET);
        let caller = if is_public(&verb, path_and_query) {
            None
        } else {
            match self.person(req, path).await {
                Ok(Some((caller, _))) => Some(caller),
                Ok(None) => return answer_of(&GatewayCode::Unauthenticated.error()),
                Err(answer) => return answer,
            }
        };
        let Some(client) = worker_client(req) else {
            return Answer::error(500, "internal_error");
        };
        send(&self.proxy, &client, &target, method, caller.as_ref(), body).await
    }
}

async fn send(
    proxy: &Proxy,
    client: &WorkerClient,
    target: &Target<'_>,
    method: Method,
    caller: Option<&Caller>,
    body: Option<serde_json::Value>,
) -> Answer {
    let verb = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut outgoing = client.0.request(verb, target.url.clone()).header("accept", "application/json");
    let body = body.map(|b| b.to_string());
    if let Some(caller) = caller {
        let now = chrono::Utc::now().timestamp();
        let signed_body = body.as_deref().unwrap_or_default().as_bytes();
        for (name, value) in proxy.key.sign_with_body(method.as_str(), target.path_and_query, signed_body, caller, now)
        {
            outgoing = outgoing.header(name, value);
        }
    }
    if let Some(id) = hopsbridge_platform::http::current_request_id() {
        outgoing = outgoing.header("x-request-id", id);
    }
    for (name, value) in hopsbridge_platform::telemetry::trace_context_of(&tracing::Span::current()) {
        outgoing = outgoing.header(name, value);
    }
    if let Some(body) = body {
        outgoing = outgoing.header("content-type", "application/json").body(body);
    }
    let response = match outgoing.send().await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(error = %e, upstream = target.upstream, "upstream unreachable");
            return answer_of(&GatewayCode::UpstreamUnavailable.error());
        }
    };
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(bytes) => Answer { status, body: bytes.to_vec() },
        Err(e) => {
            tracing::warn!(error = %e, upstream = target.upstream, "upstream answer cut short");
            answer_of(&GatewayCode::UpstreamUnavailable.error())
        }
    }
}

impl Backend for ConsoleBackend {
    fn viewer<'a>(&'a self, req: &'a HttpRequest) -> LocalBoxFuture<'a, Result<Option<Viewer>, Answer>> {
        Box::pin(async move {
            // A suspended person may still open the billing page (to add a card or buy
            // credits, which lifts billing's suspension), as the API's billing routes let them.
            let page = req.path();
            let acting_on = if page == "/billing" || page.starts_with("/billing/") { "/api/billing" } else { "/" };
            Ok(self.person(req, acting_on).await?.map(|(caller, csrf)| Viewer {
                email: caller.email.as_ref().map(ToString::to_string).unwrap_or_default(),
                owner: caller.roles.contains(&Role::Owner),
                admin: caller.roles.contains(&Role::Admin),
                csrf,
            }))
        })
    }

    fn call<'a>(
        &'a self,
        req: &'a HttpRequest,
        method: Method,
        path: String,
        body: Option<serde_json::Value>,
    ) -> LocalBoxFuture<'a, Answer> {
        Box::pin(async move { self.forward(req, method, &path, body).await })
    }

    fn login_enabled(&self) -> bool {
        self.proxy.sessions.is_some()
    }
}
