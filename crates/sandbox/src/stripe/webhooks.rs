//! Webhook delivery: signing as Stripe signs, a background sender with retries and the fault
//! modes a test switches on.

use super::Shared;
use super::params::{known, metadata, required, s};
use super::state::{Answer, ApiError, Attempt, Endpoint, Pending, State, random_id};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the endpoint secret>`.
#[must_use]
pub fn signature_header(body: &str, secret: &str, timestamp: i64) -> String {
    let v1 = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_or_else(
        |_| String::new(),
        |mut mac| {
            mac.update(format!("{timestamp}.{body}").as_bytes());
            mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
        },
    );
    format!("t={timestamp},v1={v1}")
}

/// The most deliveries in flight at once when [`super::WebhookFaults::concurrent`] is on.
const CONCURRENT_DELIVERIES: usize = 64;

/// Does what falls due on the calendar clock (periods ending, invoices finalising) and sends
/// due deliveries, until the simulator is dropped.
pub async fn run(shared: Arc<Shared>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_DELIVERIES));
    loop {
        shared.lock().tick();
        let batch = take_due(&shared);
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let concurrent = shared.lock().faults.concurrent;
        for pending in batch {
            if !concurrent {
                deliver(&shared, &client, pending).await;
                continue;
            }
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
            let (shared, client) = (Arc::clone(&shared), client.clone());
            tokio::spawn(async move {
                deliver(&shared, &client, pending).await;
                drop(slot);
            });
        }
    }
}

/// One attempt of one delivery; a failed attempt is scheduled again with backoff.
async fn deliver(shared: &Shared, client: &reqwest::Client, pending: Pending) {
    let Some((url, secret, body)) =
        shared.lock().deliveries.get(pending.delivery).map(|d| (d.url.clone(), d.secret.clone(), d.body.clone()))
    else {
        return;
    };
    let signature = signature_header(&body, &secret, chrono::Utc::now().timestamp());
    let at = Instant::now();
    let answer = client
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .header("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await;
    let status = answer.ok().map(|r| r.status().as_u16());
    let mut state = shared.lock();
    let faults = state.faults.clone();
    let Some(delivery) = state.deliveries.get_mut(pending.delivery) else { return };
    delivery.attempts.push(Attempt { status, at });
    if status.is_some_and(|s| (200..300).contains(&s)) {
        delivery.succeeded = true;
    } else if u32::try_from(delivery.attempts.len()).unwrap_or(u32::MAX) < faults.max_attempts {
        let exponent = u32::try_from(delivery.attempts.len().saturating_sub(1)).unwrap_or(16).min(16);
        let wait = faults.backoff.saturating_mul(2_u32.saturating_pow(exponent));
        state.pending.push(Pending { delivery: pending.delivery, due: Instant::now() + wait });
    }
}

fn take_due(shared: &Shared) -> Vec<Pending> {
    let mut state = shared.lock();
    let now = Instant::now();
    let (mut due, waiting): (Vec<Pending>, Vec<Pending>) = state.pending.drain(..).partition(|p| p.due <= now);
    state.pending = waiting;
    due.sort_by_key(|p| (p.due, p.delivery));
    if state.faults.out_of_order {
        due.reverse();
    }
    due
}

pub fn create_webhook_endpoint(state: &mut State, p: &Value) -> Answer {
    known(p, &["api_version", "description", "enabled_events", "metadata", "url"])?;
    let url = required(p, "url")?;
    let events: Vec<String> = p
        .get("enabled_events")
        .and_then(Value::as_array)
        .map(|e| e.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
        .filter(|e: &Vec<String>| !e.is_empty())
        .ok_or_else(|| ApiError::missing_param("enabled_events"))?;
    let endpoint = Endpoint { id: State::new_id("we_"), url: url.to_owned(), secret: random_id("whsec_", 32), events };
    let answer = json!({
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "api_version": s(p, "api_version"),
        "application": null,
        "created": state.now(),
        "description": s(p, "description"),
        "enabled_events": endpoint.events,
        "livemode": false,
        "metadata": metadata(p),
        "secret": endpoint.secret,
        "status": "enabled",
        "url": url,
    });
    state.endpoints.push(endpoint);
    Ok(answer)
}
