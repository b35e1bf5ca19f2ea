//! A mail catcher: an SMTP server that keeps every message it accepts, and an HTTP inbox that
//! shows them the way Mailpit's API does, plus a receiver for Slack-style incoming webhooks.
//!
//! SMTP: the conversation is driven by the `mailin` state machine (EHLO/HELO, MAIL, RCPT,
//! DATA with dot-unstuffing, RSET, NOOP, QUIT), one task per connection, no TLS and no
//! authentication (it listens on loopback only). [`MailSim::set_smtp_down`] makes it answer
//! every new connection with `421 Service not available` and close it, as a server that is
//! down for maintenance does, so senders must retry.
//!
//! HTTP (a subset of Mailpit's API v1, same paths and field names):
//! - `GET /api/v1/messages?start=&limit=`: `{total, count, start, messages: [{ID, MessageID,
//!   From: {Name, Address}, To: [..], Subject, Created, Size, Snippet}]}`, newest first;
//! - `GET /api/v1/message/{ID}`: `{ID, MessageID, From, To, Subject, Date, Text, HTML, Size}`;
//! - `GET /api/v1/message/{ID}/raw`: the message as received;
//! - `DELETE /api/v1/messages`: empties the inbox.
//!
//! Webhooks: `POST /webhooks/slack/{token}` takes what Slack's incoming webhooks take (JSON
//! with `text` or `blocks`; `400 invalid_payload` for bad JSON, `400 no_text` without either)
//! and answers `ok`; `GET /api/v1/webhooks` lists what was posted (the sandbox's own route).

use crate::server::Served;
use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use mail_parser::{MessageParser, MimeHeaders};
use mailin::{Action, Handler, Response, SessionBuilder};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The longest line or message the server accepts (bigger ones are refused with 552).
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

/// A message as the SMTP server accepted it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The inbox's id for it.
    pub id: String,
    /// When it was accepted.
    pub at: DateTime<Utc>,
    /// `MAIL FROM`.
    pub envelope_from: String,
    /// `RCPT TO`, each.
    pub envelope_to: Vec<String>,
    /// The message as sent after DATA (dot-unstuffed, CRLF line ends).
    pub raw: Vec<u8>,
}

/// A parsed message, as the inbox API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    /// The inbox's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The `Message-ID` header, without angle brackets.
    #[serde(rename = "MessageID")]
    pub message_id: String,
    /// The sender.
    pub from: Address,
    /// The recipients.
    pub to: Vec<Address>,
    /// The subject.
    pub subject: String,
    /// When it was received (RFC 3339).
    pub date: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    #[serde(rename = "HTML")]
    pub html: String,
    /// Its size in bytes.
    pub size: usize,
}

/// A mailbox: display name and address.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Address {
    /// The display name (may be empty).
    pub name: String,
    /// The address.
    pub address: String,
}

/// A post to the webhook receiver.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct WebhookPost {
    /// Its id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The token in the path (`/webhooks/slack/{token}`).
    pub token: String,
    /// When it arrived (RFC 3339).
    pub received: String,
    /// The JSON body.
    pub body: serde_json::Value,
}

#[derive(Debug, Default)]
struct Inbox {
    messages: Vec<Received>,
    webhooks: Vec<WebhookPost>,
    connections: u64,
}

#[derive(Debug, Default)]
struct Shared {
    inbox: Mutex<Inbox>,
    smtp_down: AtomicBool,
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running mail catcher.
#[derive(Debug)]
pub struct MailSim {
    smtp: SocketAddr,
    api: Served,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl MailSim {
    /// Starts the SMTP server and the inbox API on loopback ports of their own (inside a tokio
    /// runtime, like every simulator).
    ///
    /// # Errors
    /// When a port cannot be bound.
    pub fn start() -> anyhow::Result<Self> {
        let shared = Arc::new(Shared::default());
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let smtp = listener.local_addr()?;
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        let for_api = Arc::clone(&shared);
        let api = Served::start(move |c| routes(c, Arc::clone(&for_api)), None)?;
        Ok(Self { smtp, api, shared, accept })
    }

    /// `smtp://127.0.0.1:<port>`, for `mail.smtp_url`.
    #[must_use]
    pub fn smtp_url(&self) -> String {
        format!("smtp://{}", self.smtp)
    }

    /// The inbox API's base URL.
    #[must_use]
    pub fn url(&self) -> String {
        self.api.url()
    }

    /// The URL to give `mail.admin_webhook_url`.
    #[must_use]
    pub fn webhook_url(&self) -> String {
        format!("{}/webhooks/slack/T000-hopsbridge", self.api.url())
    }

    /// While `down`, every new SMTP connection is answered `421` and closed.
    pub fn set_smtp_down(&self, down: bool) {
        self.shared.smtp_down.store(down, Ordering::SeqCst);
    }

    /// Every message accepted so far, oldest first.
    #[must_use]
    pub fn received(&self) -> Vec<Received> {
        self.shared.inbox().messages.clone()
    }

    /// Every message accepted so far, parsed, oldest first.
    #[must_use]
    pub fn messages(&self) -> Vec<Message> {
        self.received().iter().map(parse).collect()
    }

    /// The messages sent to `address` (compared case-insensitively), oldest first.
    #[must_use]
    pub fn messages_to(&self, address: &str) -> Vec<Message> {
        self.messages().into_iter().filter(|m| m.to.iter().any(|a| a.address.eq_ignore_ascii_case(address))).collect()
    }

    /// Every webhook post so far, oldest first.
    #[must_use]
    pub fn webhooks(&self) -> Vec<WebhookPost> {
        self.shared.inbox().webhooks.clone()
    }

    /// SMTP connections accepted so far (refused ones included).
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.shared.inbox().connections
    }

    /// Stops both servers.
    pub async fn stop(&self) {
        self.accept.abort();
        self.api.stop().await;
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        shared.inbox().connections += 1;
        tokio::spawn(converse(stream, peer.ip(), Arc::clone(&shared)));
    }
}

/// Collects one transaction's envelope and data; stores the message at the final dot.
struct Collector {
    shared: Arc<Shared>,
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
    too_big: bool,
}

impl Handler for Collector {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.from = from.to_owned();
        self.to = to.to_vec();
        self.data.clear();
        self.too_big = false;
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.data.len() + buf.len() > MAX_MESSAGE_BYTES {
            self.too_big = true;
        } else {
            self.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if self.too_big {
            return mailin::response::NO_STORAGE;
        }
        let message = Received {
            id: uuid::Uuid::now_v7().to_string(),
            at: Utc::now(),
            envelope_from: std::mem::take(&mut self.from),
            envelope_to: std::mem::take(&mut self.to),
            raw: std::mem::take(&mut self.data),
        };
        self.shared.inbox().messages.push(message);
        mailin::response::OK
    }
}

async fn converse(stream: tokio::net::TcpStream, peer: IpAddr, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    if shared.smtp_down.load(Ordering::SeqCst) {
        let _ = write.write_all(b"421 sandbox.smtp Service not available, closing transmission channel\r\n").await;
        return;
    }
    let handler = Collector { shared, from: String::new(), to: Vec::new(), data: Vec::new(), too_big: false };
    let mut session = SessionBuilder::new("sandbox.smtp").build(peer, handler);
    if send(&mut write, &session.greeting()).await.is_err() {
        return;
    }
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut bounded = AsyncReadExt::take(&mut reader, u64::try_from(MAX_MESSAGE_BYTES).unwrap_or(u64::MAX));
        match bounded.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = session.process(&line);
        match response.action {
            Action::NoReply => {}
            Action::Reply | Action::UpgradeTls => {
                if send(&mut write, &response).await.is_err() {
                    return;
                }
            }
            Action::Close => {
                let _ = send(&mut write, &response).await;
                return;
            }
        }
    }
}

async fn send(write: &mut tokio::net::tcp::OwnedWriteHalf, response: &Response) -> std::io::Result<()> {
    let bytes = response.buffer()?;
    write.write_all(&bytes).await
}

fn parse(received: &Received) -> Message {
    let parsed = MessageParser::default().parse(&received.raw);
    let address = |a: Option<&mail_parser::Address<'_>>| -> Vec<Address> {
        a.map(|list| {
            list.iter()
                .map(|addr| Address {
                    name: addr.name().unwrap_or_default().to_owned(),
                    address: addr.address().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let Some(m) = parsed else {
        return Message {
            id: received.id.clone(),
            message_id: String::new(),
            from: Address { name: String::new(), address: received.envelope_from.clone() },
            to: received.envelope_to.iter().map(|a| Address { name: String::new(), address: a.clone() }).collect(),
            subject: String::new(),
            date: received.at.to_rfc3339(),
            text: String::from_utf8_lossy(&received.raw).into_owned(),
            html: String::new(),
            size: received.raw.len(),
        };
    };
    let text = m.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    let html = m
        .html_bodies()
        .find(|part| part.content_type().is_some_and(|ct| ct.subtype() == Some("html")))
        .and_then(|part| part.text_contents().map(str::to_owned))
        .unwrap_or_default();
    Message {
        id: received.id.clone(),
        message_id: m.message_id().unwrap_or_default().to_owned(),
        from: address(m.from())
            .into_iter()
            .next()
            .unwrap_or(Address { name: String::new(), address: received.envelope_from.clone() }),
        to: address(m.to()),
        subject: m.subject().unwrap_or_default().to_owned(),
        date: received.at.to_rfc3339(),
        text,
        html,
        size: received.raw.len(),
    }
}

/// What the list route answers per message.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Summary {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "MessageID")]
    message_id: String,
    from: Address,
    to: Vec<Address>,
    subject: String,
    created: String,
    size: usize,
    snippet: String,
}

#[derive(Deserialize)]
struct Page {
    start: Option<usize>,
    limit: Option<usize>,
}

fn routes(c: &mut web::ServiceConfig, shared: Arc<Shared>) {
    c.app_data(web::Data::from(shared))
        .route("/api/v1/messages", web::get().to(list))
        .route("/api/v1/messages", web::delete().to(delete_all))
        .route("/api/v1/message/{id}", web::get().to(one))
        .route("/api/v1/message/{id}/raw", web::get().to(raw))
        .route("/api/v1/webhooks", web::get().to(webhooks))
        .route("/webhooks/slack/{token}", web::post().to(slack));
}

async fn list(shared: web::Data<Shared>, page: web::Query<Page>) -> HttpResponse {
    let received = shared.inbox().messages.clone();
    let total = received.len();
    let start = page.start.unwrap_or(0);
    let limit = page.limit.unwrap_or(50);
    let messages: Vec<Summary> = received
        .iter()
        .rev()
        .skip(start)
        .take(limit)
        .map(|r| {
            let m = parse(r);
            Summary {
                snippet: m.text.chars().take(250).collect(),
                id: m.id,
                message_id: m.message_id,
                from: m.from,
                to: m.to,
                subject: m.subject,
                created: m.date,
                size: m.size,
            }
        })
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "total": total, "count": messages.len(), "start": start, "messages": messages,
    }))
}

async fn one(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    let found = shared.inbox().messages.iter().find(|m| m.id == *id).cloned();
    match found {
        Some(r) => HttpResponse::Ok().json(parse(&r)),
        None => HttpResponse::NotFound().content_type("text/plain").body("message not found"),
    }
}

async fn raw(shared: web::Data<Shared>, id: web::Path<String>) -> HttpResponse {
    let found = shared.inbox().messages.iter().find(|m| m.id == *id).map(|m| m.raw.clone());
    match found {
        Some(raw) => HttpResponse::Ok().content_type("text/plain").body(raw),
        None => HttpResponse::NotFound().content_type("text/plain").body("message not found"),
    }
}

async fn delete_all(shared: web::Data<Shared>) -> HttpResponse {
    shared.inbox().messages.clear();
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

async fn webhooks(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.inbox().webhooks.clone())
}

async fn slack(shared: web::Data<Shared>, token: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return HttpResponse::BadRequest().content_type("text/plain").body("invalid_payload");
    };
    let has = |k: &str| json.get(k).is_some_and(|v| v.as_str().is_none_or(|s| !s.is_empty()) && !v.is_null());
    if !has("text") && !has("blocks") {
        return HttpResponse::BadRequest().content_type("text/plain").body("no_text");
    }
    shared.inbox().webhooks.push(WebhookPost {
        id: uuid::Uuid::now_v7().to_string(),
        token: token.into_inner(),
        received: Utc::now().to_rfc3339(),
        body: json,
    });
    HttpResponse::Ok().content_type("text/plain").body("ok")
}
