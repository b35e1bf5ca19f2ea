//! Meter events, their cancellation by adjustment, and the summaries Stripe aggregates from
//! them, on the calendar clock.

use super::decimal::Dec;
use super::params::{integer, known, list, one_of, required, s};
use super::state::{Answer, ApiError, DAY, MeterRecord, State, random_id};
use serde_json::{Value, json};

/// How far back a meter event's timestamp may lie, and how far ahead.
const PAST_LIMIT: i64 = 35 * DAY;
const FUTURE_LIMIT: i64 = 300;

/// The active meter with `event_name`.
fn active_meter(state: &State, event_name: &str) -> Result<Value, ApiError> {
    state
        .all_where("billing.meter", |m| m["event_name"] == event_name && m["status"] == "active")
        .into_iter()
        .next()
        .ok_or_else(|| {
            ApiError::invalid(format!("No active meter was found for event_name `{event_name}`."), Some("event_name"))
        })
}

fn too_long(param: &str) -> ApiError {
    ApiError {
        code: Some("parameter_invalid_string_too_long"),
        ..ApiError::invalid(format!("{param} must be at most 100 characters."), Some(param))
    }
}

/// `POST /v1/billing/meter_events`: validated as Stripe validates it, then counted.
pub fn create_meter_event(state: &mut State, p: &Value) -> Answer {
    known(p, &["event_name", "identifier", "payload", "timestamp"])?;
    let event_name = required(p, "event_name")?;
    if event_name.len() > 100 {
        return Err(too_long("event_name"));
    }
    let payload = p.get("payload").and_then(Value::as_object).ok_or_else(|| ApiError::missing_param("payload"))?;
    let meter = active_meter(state, event_name)?;
    let customer_key = meter["customer_mapping"]["event_payload_key"].as_str().unwrap_or("stripe_customer_id");
    let value_key = meter["value_settings"]["event_payload_key"].as_str().unwrap_or("value");
    let customer_param = format!("payload[{customer_key}]");
    let customer = payload
        .get(customer_key)
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::missing_param(&customer_param))?
        .to_owned();
    state
        .get("customer", "customer", &customer, &customer_param)
        .map_err(|_| ApiError::no_such_param("customer", &customer, &customer_param))?;
    let value_param = format!("payload[{value_key}]");
    let value = if meter["default_aggregation"]["formula"] == "count" {
        Dec::from_i64(1)
    } else {
        let text =
            payload.get(value_key).and_then(Value::as_str).ok_or_else(|| ApiError::missing_param(&value_param))?;
        let value = Dec::parse(text).ok_or_else(|| {
            ApiError::invalid(format!("The value `{text}` is not a valid number."), Some(&value_param))
        })?;
        if value.significant_digits() > 15 {
            return Err(ApiError::invalid(
                format!("The value in the event payload can have at most 15 digits. Received `{text}`."),
                Some(&value_param),
            ));
        }
        if value.is_negative() {
            return Err(ApiError::invalid(
                format!("The value in the event payload must not be negative. Received `{text}`."),
                Some(&value_param),
            ));
        }
        value
    };
    let now = state.now();
    let timestamp = integer(p, "timestamp", "timestamp")?.unwrap_or(now);
    if timestamp < now - PAST_LIMIT {
        return Err(ApiError::invalid(
            "Timestamp must be within the past 35 days. Meter events with older timestamps are rejected.",
            Some("timestamp"),
        ));
    }
    if timestamp > now + FUTURE_LIMIT {
        return Err(ApiError::invalid("Timestamp must not be more than 5 minutes in the future.", Some("timestamp")));
    }
    let identifier = s(p, "identifier").map_or_else(|| random_id("", 24), str::to_owned);
    if identifier.len() > 100 {
        return Err(too_long("identifier"));
    }
    while let Some((at, _)) = state.meter_identifier_order.front()
        && now - *at >= DAY
    {
        if let Some((at, old)) = state.meter_identifier_order.pop_front()
            && state.meter_identifiers.get(&old).is_some_and(|(seen, _)| *seen == at)
        {
            state.meter_identifiers.remove(&old);
        }
    }
    if state.meter_identifiers.contains_key(&identifier) {
        // Stripe refuses the repeat (and does not count it): a client that sends an identifier
        // again reads this answer as "already counted".
        return Err(ApiError::invalid(
            format!("An event already exists with identifier {identifier}."),
            Some("identifier"),
        ));
    }
    state.meter_identifiers.insert(identifier.clone(), (now, state.meter_records.len()));
    state.meter_identifier_order.push_back((now, identifier.clone()));
    state.meter_records.push(MeterRecord {
        meter: meter["id"].as_str().unwrap_or_default().to_owned(),
        event_name: event_name.to_owned(),
        customer,
        value,
        timestamp,
        received: now,
        identifier: identifier.clone(),
        cancelled: None,
    });
    let event = json!({
        "object": "billing.meter_event",
        "created": now,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": state.livemode,
        "payload": payload,
        "timestamp": timestamp,
    });
    state.meter_events.push(event.clone());
    Ok(event)
}

/// `POST /v1/billing/meter_event_adjustments`: cancels one event by identifier, only within
/// 24 hours of Stripe receiving it. A cancelled event counts nowhere from then on: not in
/// summaries, not on invoices finalised later.
pub fn create_adjustment(state: &mut State, p: &Value) -> Answer {
    known(p, &["cancel", "event_name", "type"])?;
    let event_name = required(p, "event_name")?;
    one_of(p, "type", "type", &["cancel"])?.ok_or_else(|| ApiError::missing_param("type"))?;
    let identifier = s(&p["cancel"], "identifier").ok_or_else(|| ApiError::missing_param("cancel[identifier]"))?;
    active_meter(state, event_name)?;
    let now = state.now();
    let param = Some("cancel[identifier]");
    let record = state
        .meter_records
        .iter_mut()
        .rev()
        .find(|r| r.identifier == identifier && r.event_name == event_name)
        .ok_or_else(|| {
            ApiError::invalid(format!("No meter event with identifier {identifier} was found for {event_name}."), param)
        })?;
    if now - record.received >= DAY {
        return Err(ApiError::invalid(
            format!(
                "The meter event with identifier {identifier} can no longer be cancelled: events can only be cancelled \
                 within 24 hours of being received."
            ),
            param,
        ));
    }
    if record.cancelled.is_some() {
        return Err(ApiError::invalid(
            format!("The meter event with identifier {identifier} has already been cancelled."),
            param,
        ));
    }
    record.cancelled = Some(now);
    Ok(json!({
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": state.livemode,
        "status": "pending",
        "type": "cancel",
    }))
}

/// What `meter` aggregated for `customer` from the events with timestamps in `[from, to)`
/// received by `as_of` and not cancelled by then: their sum, their count, or the last one's
/// value, per the meter's formula.
pub fn usage(state: &State, meter: &str, customer: &str, from: i64, to: i64, as_of: i64) -> Dec {
    let formula = state.objects.get(meter).and_then(|m| m["default_aggregation"]["formula"].as_str()).unwrap_or("sum");
    let counted = state.meter_records.iter().filter(|r| {
        r.meter == meter
            && r.customer == customer
            && (from..to).contains(&r.timestamp)
            && r.received <= as_of
            && r.cancelled.is_none_or(|c| c > as_of)
    });
    match formula {
        "count" => Dec::from_i64(i64::try_from(counted.count()).unwrap_or(i64::MAX)),
        // The latest timestamp wins; between equal timestamps, the later arrival.
        "last" => {
            counted.enumerate().max_by_key(|(i, r)| (r.timestamp, *i)).map_or_else(Dec::zero, |(_, r)| r.value.clone())
        }
        _ => counted.fold(Dec::zero(), |total, r| total.add(&r.value)),
    }
}

/// `GET /v1/billing/meters/{id}/event_summaries`: the customer's aggregated usage in
/// `[start_time, end_time)`, as one summary or one per hour or UTC day (newest first; windows
/// without events left out), paged like every list.
pub fn event_summaries(state: &State, meter_id: &str, p: &Value) -> Answer {
    known(p, &["customer", "end_time", "limit", "start_time", "starting_after", "value_grouping_window"])?;
    let meter = state.get("billing.meter", "billing.meter", meter_id, "id")?;
    let customer = required(p, "customer")?;
    state
        .get("customer", "customer", customer, "customer")
        .map_err(|_| ApiError::no_such_param("customer", customer, "customer"))?;
    let start = integer(p, "start_time", "start_time")?.ok_or_else(|| ApiError::missing_param("start_time"))?;
    let end = integer(p, "end_time", "end_time")?.ok_or_else(|| ApiError::missing_param("end_time"))?;
    for (value, param) in [(start, "start_time"), (end, "end_time")] {
        if value % 60 != 0 {
            return Err(ApiError::invalid(format!("{param} must be aligned with minute boundaries."), Some(param)));
        }
    }
    if start >= end {
        return Err(ApiError::invalid("start_time must be before end_time.", Some("start_time")));
    }
    let window = one_of(p, "value_grouping_window", "value_grouping_window", &["day", "hour"])?;
    let step = match window {
        Some("day") => DAY,
        Some(_) => 3600,
        None => end - start,
    };
    if window.is_some() {
        let what = if step == DAY { "UTC day" } else { "hour" };
        for (value, param) in [(start, "start_time"), (end, "end_time")] {
            if value % step != 0 {
                return Err(ApiError::invalid(
                    format!(
                        "{param} must be aligned with {what} boundaries when value_grouping_window is {}.",
                        window.unwrap_or_default()
                    ),
                    Some(param),
                ));
            }
        }
    }
    let now = state.now();
    let mode = state.mode();
    let mut summaries = Vec::new();
    let mut from = start;
    while from < end {
        let to = (from + step).min(end);
        let any = state.meter_records.iter().any(|r| {
            r.meter == meter_id && r.customer == customer && (from..to).contains(&r.timestamp) && r.cancelled.is_none()
        });
        if any || window.is_none() {
            summaries.push(json!({
                "id": format!("mtrusg_{mode}_{}_{from}", meter_id.trim_start_matches("mtr_")),
                "object": "billing.meter_event_summary",
                "aggregated_value": usage(state, meter_id, customer, from, to, now).to_f64(),
                "end_time": to,
                "livemode": state.livemode,
                "meter": meter["id"],
                "start_time": from,
            }));
        }
        from = to;
    }
    summaries.reverse();
    list(&format!("/v1/billing/meters/{meter_id}/event_summaries"), summaries, p)
}
