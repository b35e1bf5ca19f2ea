//! A browser without JavaScript for the console's tests: plain requests through the gateway,
//! cookies kept, redirects followed by hand so each step can be checked.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc, reason = "a test harness: a broken step fails the test")]

pub mod chromium;

use crate::{Person, Platform};
use std::collections::HashMap;

/// A browser without JavaScript: follows no redirect by itself, keeps its cookies.
#[derive(Debug)]
pub struct Browser {
    /// The gateway's base URL.
    pub base: String,
    /// The cookies it keeps, by name.
    pub cookies: HashMap<String, String>,
    http: reqwest::Client,
}

/// An answer as the browser saw it.
#[derive(Debug)]
pub struct Page {
    /// The status.
    pub status: u16,
    /// Where a redirect points.
    pub location: Option<String>,
    /// The body, as text.
    pub body: String,
}

impl Browser {
    /// A browser with no cookies, for the gateway at `base`.
    #[must_use]
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base: base.to_owned(), cookies: HashMap::new(), http }
    }

    /// A second browser sharing this one's cookies at the time (another tab).
    #[must_use]
    pub fn fork(&self) -> Self {
        Self { base: self.base.clone(), cookies: self.cookies.clone(), http: self.http.clone() }
    }

    /// Sends `request` with the kept cookies, keeping the ones it sets.
    pub async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let r = request.header("cookie", cookie).send().await.unwrap();
        for v in r.headers().get_all("set-cookie") {
            let (name, value) = v.to_str().unwrap().split(';').next().unwrap().split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        Page { status, location, body: r.text().await.unwrap() }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_owned() } else { format!("{}{path}", self.base) }
    }

    /// GET `path`.
    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(self.url(path));
        self.send(request).await
    }

    /// POST a form to `path`.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(form).unwrap();
        let request =
            self.http.post(self.url(path)).header("content-type", "application/x-www-form-urlencoded").body(body);
        self.send(request).await
    }

    /// POSTs a `multipart/form-data` form to `path`, as a browser sends a form with file
    /// inputs: `fields` as text parts, `files` as (field, file name, content).
    pub async fn post_multipart(&mut self, path: &str, fields: &[(&str, &str)], files: &[(&str, &str, &str)]) -> Page {
        let boundary = format!("----hopsbridge{}", uuid::Uuid::new_v4().simple());
        let mut body = String::new();
        for (name, value) in fields {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        for (name, file, content) in files {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n{content}\r\n"
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let request = self
            .http
            .post(self.url(path))
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        self.send(request).await
    }

    /// Signs `person` in through the gateway's login and the sandbox's Auth0, starting from
    /// `path`; answers where the login came back to.
    pub async fn sign_in(&mut self, platform: &Platform, person: &Person, path: &str) -> String {
        let page = self.get(path).await;
        assert_eq!(page.status, 303, "a visitor is sent to sign in: {}", page.body);
        let login = self.get(&page.location.unwrap()).await;
        assert_eq!(login.status, 302);
        platform.world.auth0.sign_in_as(&person.auth0);
        let authorized = self.get(&login.location.unwrap()).await;
        assert_eq!(authorized.status, 302, "{}", authorized.body);
        let callback = self.get(&authorized.location.unwrap()).await;
        assert_eq!(callback.status, 302, "{}", callback.body);
        assert!(self.cookies.contains_key("hb_session"));
        callback.location.unwrap()
    }
}
