//! NATS for tests: a prefix per test on the shared server, and private servers to kill.

use futures::StreamExt;
use hopsbridge_contracts::Subjects;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A subject and stream prefix of its own on a NATS server; its streams are deleted on drop.
#[derive(Debug)]
pub struct TestBus {
    url: String,
    prefix: String,
}

impl TestBus {
    /// A new prefix on the shared test server.
    pub async fn new() -> Self {
        Self::on(&crate::nats_url()).await
    }

    /// A new prefix on the server at `url`.
    pub async fn on(url: &str) -> Self {
        crate::init();
        // t<unix seconds>_<random>: the time lets a later run sweep leftovers.
        let prefix = format!("t{}_{}", crate::unix_now(), crate::random_suffix());
        sweep(url).await;
        Self { url: url.to_owned(), prefix }
    }

    /// The server's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Subject names under the prefix.
    #[must_use]
    pub fn subjects(&self) -> Subjects {
        Subjects::new(&self.prefix).expect("valid prefix")
    }

    /// A NATS config for a service, using this prefix.
    #[must_use]
    pub fn config(&self) -> hopsbridge_platform::config::NatsConfig {
        hopsbridge_platform::config::NatsConfig {
            url: self.url.clone(),
            prefix: self.prefix.clone(),
            stream_max_age_hours: 1,
            duplicate_window_secs: 120,
            stream_replicas: 1,
        }
    }

    /// A JetStream context on the server.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(async_nats::connect(&self.url).await.expect("connect to NATS"))
    }

    /// Publishes `event` in its envelope as its producer would (`Nats-Msg-Id` = the event id,
    /// a new one when `id` is `None`), waits for the PubAck, and answers the event id.
    pub async fn publish<E: hopsbridge_contracts::Event>(&self, event: &E, id: Option<String>) -> String {
        use prost::Message as _;
        let id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let envelope = hopsbridge_contracts::events::Envelope {
            event_id: id.clone(),
            event_type: E::TYPE.into(),
            schema_version: 1,
            producer: E::PRODUCER.name().into(),
            payload: event.encode_to_vec(),
            ..Default::default()
        };
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(envelope.encode_to_vec().into())
            .message_id(id.clone());
        let js = self.jetstream().await;
        js.send_publish(self.subjects().event::<E>(), message).await.expect("publish").await.expect("PubAck");
        id
    }

    /// Publishes `change` about `member` as the team service announces it
    /// (TeamMemberJoinedV1 with the role Data scientist, or TeamMemberRemovedV1), and answers
    /// the event's id.
    pub async fn publish_membership(
        &self,
        member: hopsbridge_domain::UserId,
        change: hopsbridge_domain::membership::Change,
    ) -> String {
        use hopsbridge_contracts::events::{TeamMemberJoinedV1, TeamMemberRemovedV1};
        use hopsbridge_domain::membership::Change;
        match change {
            Change::Joined { id, owner, at } => {
                let event = TeamMemberJoinedV1 {
                    owner_user_id: owner.to_string(),
                    member_user_id: member.to_string(),
                    project_role: "Data scientist".into(),
                    membership_id: id.to_string(),
                    joined_at_unix_micros: at,
                };
                self.publish(&event, None).await
            }
            Change::Removed { id, owner, at } => {
                let event = TeamMemberRemovedV1 {
                    owner_user_id: owner.to_string(),
                    member_user_id: member.to_string(),
                    membership_id: id.to_string(),
                    removed_at_unix_micros: at,
                    reason: "left".into(),
                };
                self.publish(&event, None).await
            }
        }
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let url = self.url.clone();
        let upper = format!("{}_", self.prefix.to_uppercase());
        crate::block_on_side(async move {
            let Ok(client) = async_nats::connect(&url).await else {
                return;
            };
            let js = async_nats::jetstream::new(client);
            let names: Vec<String> = js.stream_names().filter_map(|n| async move { n.ok() }).collect().await;
            for name in names.into_iter().filter(|n| n.starts_with(&upper)) {
                let _ = js.delete_stream(&name).await;
            }
        });
    }
}

/// Deletes test streams (`T<unix seconds>_…`) older than an hour.
async fn sweep(url: &str) {
    let Ok(client) = async_nats::connect(url).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let names: Vec<String> = js.stream_names().filter_map(|n| async move { n.ok() }).collect().await;
    let cutoff = crate::unix_now().saturating_sub(3600);
    for name in names {
        let Some(rest) = name.strip_prefix('T') else {
            continue;
        };
        let Some((secs, _)) = rest.split_once('_') else {
            continue;
        };
        if secs.parse::<u64>().is_ok_and(|t| t < cutoff) {
            let _ = js.delete_stream(&name).await;
        }
    }
}

/// A private `nats-server` with JetStream on a free port, with its own store directory, so a
/// test can stop it and start it again (its streams survive, as on a real restart).
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub async fn start() -> Self {
        crate::init();
        let port = free_port();
        let store = std::env::temp_dir().join(format!("hb-nats-{}", crate::random_suffix()));
        let mut server = Self { port, store, child: None };
        server.resume().await;
        server
    }

    /// `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub async fn resume(&mut self) {
        if self.child.is_some() {
            return;
        }
        let child = Command::new(binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (is it installed? scripts/test.sh installs it)");
        self.child = Some(child);
        let url = self.url();
        let up = crate::eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                match async_nats::connect(&url).await {
                    // JetStream is up before the server listens for clients.
                    Ok(c) => c.flush().await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(up, "nats-server did not come up on port {}", self.port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let sbin = PathBuf::from("/usr/sbin/nats-server");
    if sbin.exists() { sbin } else { PathBuf::from("nats-server") }
}

/// Ports handed out by [`free_port`]: below Linux's ephemeral range (32768–60999), from which
/// the kernel picks the local port of every outgoing connection and of every `:0` bind.
const FREE_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A port that was free a moment ago, for a server a test starts later.
///
/// A port the kernel chose for a `:0` bind could be given to an outgoing connection before
/// the server binds it (a test opens hundreds), so ports come from [`FREE_PORTS`] instead. Each
/// process starts at a random place in it and counts on, so one process never hands out the
/// same port twice and two test processes rarely meet; a port something already listens on is
/// skipped.
#[must_use]
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: std::sync::OnceLock<AtomicU16> = std::sync::OnceLock::new();
    let span = FREE_PORTS.end - FREE_PORTS.start;
    let next = NEXT.get_or_init(|| AtomicU16::new((uuid::Uuid::new_v4().as_u128() % u128::from(span)) as u16));
    for _ in 0..span {
        let port = FREE_PORTS.start + next.fetch_add(1, Ordering::Relaxed) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FREE_PORTS:?}")
}
