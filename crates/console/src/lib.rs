//! The console: server-rendered pages for people (cluster, usage and cost, billing, team,
//! settings) and admins, served by the gateway on the same origin as the API.
//!
//! The pages own no data and decide no permission. Each handler asks the public API for what
//! it shows through a [`Backend`], which the gateway implements with its own forwarding: the
//! request goes to the owning service as the signed-in person, with the same signed caller
//! headers a browser's `/api/…` request would get, so every rule stays in the services.
//! Forms post to the console, which checks the session's CSRF token (a hidden field) before
//! making the change through the API. Templates are askama's, which escape every value; charts
//! are SVG drawn here ([`chart`]); one stylesheet and no script are served by the binary.

pub mod api;
pub mod chart;
pub mod format;
mod pages;

use actix_web::web;
use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The person a request's session cookie signs in, as the gateway resolved them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    /// Their email address.
    pub email: String,
    /// They own an account (else they are a team member, billed to their owner).
    pub owner: bool,
    /// They operate the platform.
    pub admin: bool,
    /// The session's CSRF token, which every console form carries back.
    pub csrf: String,
}

/// An answer of the API: its status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body (JSON for the API's answers and errors).
    pub body: Vec<u8>,
}

impl Answer {
    /// An answer with `status` and the error `code`, as the API words its errors.
    #[must_use]
    pub fn error(status: u16, code: &str) -> Self {
        Self { status, body: serde_json::json!({ "code": code }).to_string().into_bytes() }
    }

    /// A 2xx answer.
    #[must_use]
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as `T`.
    ///
    /// # Errors
    /// When the body is not `T` in JSON.
    pub fn json<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }

    /// The error code of an error answer, when the body has one.
    #[must_use]
    pub fn code(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
            .unwrap_or_default()
    }
}

/// HTTP methods the console calls the API with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    /// Its name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Delete => "DELETE",
        }
    }
}

/// How the console reaches the API and learns who is signed in. The gateway implements it
/// over its forwarding; tests implement it with canned answers.
pub trait Backend: Send + Sync + 'static {
    /// The person the request's session signs in; `Ok(None)` when nobody is (no cookie, or one
    /// that expired); `Err` with the API's answer when the person may not go on (suspended,
    /// deleted, rate-limited, or the gateway cannot tell).
    fn viewer<'a>(&'a self, req: &'a actix_web::HttpRequest) -> LocalBoxFuture<'a, Result<Option<Viewer>, Answer>>;

    /// Calls the public API as the request's signed-in person (anonymously for the public
    /// routes): `path` is `/api/…` with its query, `body` is sent as JSON.
    fn call<'a>(
        &'a self,
        req: &'a actix_web::HttpRequest,
        method: Method,
        path: String,
        body: Option<serde_json::Value>,
    ) -> LocalBoxFuture<'a, Answer>;

    /// Whether browser sign-in is configured (else the console can show only public pages).
    fn login_enabled(&self) -> bool;
}

/// The console's routes: `/`, `/cluster`, `/usage`, `/usage/{day}`, `/billing`, `/team`,
/// `/invitations/{token}`, `/settings`, `/admin/…` and `/console.css`, with their forms.
pub fn configure(cfg: &mut web::ServiceConfig, backend: Arc<dyn Backend>) {
    pages::configure(cfg, web::Data::from(backend));
}
