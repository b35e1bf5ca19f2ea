//! The mail catcher speaks SMTP as a real server does and shows what it received through
//! Mailpit's API shape; its webhook receiver answers as Slack's incoming webhooks do.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use hopsbridge_sandbox::mail::MailSim;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn transport(sim: &MailSim) -> AsyncSmtpTransport<Tokio1Executor> {
    AsyncSmtpTransport::<Tokio1Executor>::from_url(&sim.smtp_url()).unwrap().build()
}

fn message(to: &str, subject: &str) -> Message {
    Message::builder()
        .from("Hopsbridge <no-reply@hopsbridge.test>".parse::<Mailbox>().unwrap())
        .to(to.parse::<Mailbox>().unwrap())
        .subject(subject)
        .message_id(Some("<0192-test@hopsbridge.test>".to_owned()))
        .multipart(MultiPart::alternative_plain_html(
            "Join Ada's team:\nhttps://app.hopsbridge.test/invitations/abc\n.\n..dots stay\n".to_owned(),
            "<p>Join <b>Ada</b>'s team</p>".to_owned(),
        ))
        .unwrap()
}

#[tokio::test]
async fn a_message_sent_over_smtp_is_in_the_inbox_with_both_parts() {
    hopsbridge_platform::install_crypto_provider();
    let sim = MailSim::start().unwrap();
    transport(&sim).send(message("Grace <grace@example.com>", "You are invited")).await.unwrap();

    let http = reqwest::Client::new();
    let list: Value = http.get(format!("{}/api/v1/messages", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["total"], 1);
    let summary = &list["messages"][0];
    assert_eq!(summary["Subject"], "You are invited");
    assert_eq!(summary["From"]["Address"], "no-reply@hopsbridge.test");
    assert_eq!(summary["To"][0], json!({"Name": "Grace", "Address": "grace@example.com"}));
    let id = summary["ID"].as_str().unwrap();

    let one: Value = http.get(format!("{}/api/v1/message/{id}", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["MessageID"], "0192-test@hopsbridge.test");
    // Line ends are CRLF on the wire; the text part keeps them.
    let text = one["Text"].as_str().unwrap().replace("\r\n", "\n");
    assert!(text.contains("https://app.hopsbridge.test/invitations/abc"), "{text}");
    assert!(text.contains("\n.\n") && text.contains("..dots stay"), "dot-stuffing is undone exactly: {text:?}");
    assert_eq!(one["HTML"], "<p>Join <b>Ada</b>'s team</p>");

    let raw = http.get(format!("{}/api/v1/message/{id}/raw", sim.url())).send().await.unwrap().text().await.unwrap();
    assert!(raw.contains("Subject: You are invited"), "{raw}");
    assert_eq!(sim.messages_to("GRACE@example.com").len(), 1);

    let missing = http.get(format!("{}/api/v1/message/nope", sim.url())).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    http.delete(format!("{}/api/v1/messages", sim.url())).send().await.unwrap();
    assert!(sim.messages().is_empty());
}

/// A raw SMTP client: one line out, one (possibly multi-line) reply in.
struct Smtp {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Smtp {
    async fn connect(sim: &MailSim) -> (Self, String) {
        let addr = sim.smtp_url().trim_start_matches("smtp://").to_owned();
        let (read, write) = tokio::net::TcpStream::connect(&addr).await.unwrap().into_split();
        let mut smtp = Self { lines: BufReader::new(read).lines(), write };
        let greeting = smtp.reply().await;
        (smtp, greeting)
    }

    /// The reply's lines joined; continuation lines are `250-...`, the last `250 ...`.
    async fn reply(&mut self) -> String {
        let mut all = Vec::new();
        loop {
            let line = self.lines.next_line().await.unwrap().unwrap_or_default();
            let more = line.as_bytes().get(3) == Some(&b'-');
            all.push(line);
            if !more {
                return all.join("\n");
            }
        }
    }

    async fn raw(&mut self, text: &str) {
        self.write.write_all(text.as_bytes()).await.unwrap();
    }

    async fn say(&mut self, line: &str) -> String {
        self.raw(&format!("{line}\r\n")).await;
        self.reply().await
    }
}

#[tokio::test]
async fn the_smtp_conversation_follows_the_protocol() {
    let sim = MailSim::start().unwrap();
    let (mut smtp, greeting) = Smtp::connect(&sim).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let ehlo = smtp.say("EHLO client.test").await;
    assert!(ehlo.lines().all(|l| l.starts_with("250")), "{ehlo}");
    assert!(smtp.say("DATA").await.starts_with("503"), "DATA before MAIL is refused");
    assert!(smtp.say("MAIL FROM:<a@b.test>").await.starts_with("250"));
    assert!(smtp.say("RCPT TO:<c@d.test>").await.starts_with("250"));
    assert!(smtp.say("DATA").await.starts_with("354"));
    // A line that starts with a dot is sent with a second dot (RFC 5321 4.5.2).
    smtp.raw("Subject: raw\r\n\r\nbody\r\n..leading dot\r\n").await;
    assert!(smtp.say(".").await.starts_with("250"), "the final dot ends the message");
    assert!(smtp.say("QUIT").await.starts_with("221"));
    let received = sim.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].envelope_to, ["c@d.test"]);
    assert!(String::from_utf8_lossy(&received[0].raw).ends_with("body\r\n.leading dot\r\n"));
}

#[tokio::test]
async fn while_down_every_connection_is_refused_with_421_and_nothing_is_kept() {
    let sim = MailSim::start().unwrap();
    sim.set_smtp_down(true);
    let err = transport(&sim).send(message("grace@example.com", "Later")).await.unwrap_err();
    assert!(err.to_string().contains("421") || err.is_transient(), "{err}");
    assert!(sim.messages().is_empty());
    sim.set_smtp_down(false);
    transport(&sim).send(message("grace@example.com", "Now")).await.unwrap();
    assert_eq!(sim.messages().len(), 1);
}

#[tokio::test]
async fn the_webhook_receiver_answers_as_slack_does() {
    hopsbridge_platform::install_crypto_provider();
    let sim = MailSim::start().unwrap();
    let http = reqwest::Client::new();
    let post =
        |body: &'static str| http.post(sim.webhook_url()).header("content-type", "application/json").body(body).send();
    let ok = post(r#"{"text":"Drift &lt;3&gt;"}"#).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "ok");
    let bad = post("{not json").await.unwrap();
    assert_eq!((bad.status().as_u16(), bad.text().await.unwrap()), (400, "invalid_payload".to_owned()));
    let empty = post(r#"{"username":"x"}"#).await.unwrap();
    assert_eq!((empty.status().as_u16(), empty.text().await.unwrap()), (400, "no_text".to_owned()));
    let posts = sim.webhooks();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body["text"], "Drift &lt;3&gt;");
    let listed: Value = http.get(format!("{}/api/v1/webhooks", sim.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["Body"]["text"], "Drift &lt;3&gt;");
}
