//! Reading Stripe request parameters and answering lists.

use super::state::{Answer, ApiError};
use serde_json::{Value, json};

/// A non-empty string parameter.
pub fn s<'a>(p: &'a Value, key: &str) -> Option<&'a str> {
    p.get(key).and_then(Value::as_str).filter(|v| !v.is_empty())
}

pub fn required<'a>(p: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    s(p, key).ok_or_else(|| ApiError::missing_param(key))
}

pub fn integer(p: &Value, key: &str, param: &str) -> Result<Option<i64>, ApiError> {
    s(p, key)
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::invalid(format!("Invalid integer: {v}"), Some(param))))
        .transpose()
}

pub fn one_of<'a>(p: &'a Value, key: &str, param: &str, allowed: &[&str]) -> Result<Option<&'a str>, ApiError> {
    match s(p, key) {
        Some(v) if !allowed.contains(&v) => {
            Err(ApiError::invalid(format!("Invalid {param}: must be one of {}", allowed.join(", ")), Some(param)))
        }
        other => Ok(other),
    }
}

/// Rejects top-level parameters the endpoint does not know, as Stripe does.
pub fn known(p: &Value, allowed: &[&str]) -> Result<(), ApiError> {
    let unknown = p.as_object().and_then(|m| m.keys().find(|k| *k != "expand" && !allowed.contains(&k.as_str())));
    match unknown {
        Some(key) => Err(ApiError::invalid(format!("Received unknown parameter: {key}"), Some(key))),
        None => Ok(()),
    }
}

pub fn metadata(p: &Value) -> Value {
    let entries = p.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    Value::Object(entries.into_iter().filter(|(_, v)| v.as_str().is_some_and(|v| !v.is_empty())).collect())
}

pub fn list(url: &str, items: Vec<Value>, p: &Value) -> Answer {
    let limit = integer(p, "limit", "limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("Invalid limit: must be between 1 and 100", Some("limit")));
    }
    let start = match s(p, "starting_after") {
        Some(after) => items.iter().position(|x| x["id"] == after).map_or(0, |i| i + 1),
        None => 0,
    };
    let rest: Vec<Value> = items.into_iter().skip(start).collect();
    let limit = usize::try_from(limit).unwrap_or(10);
    let has_more = rest.len() > limit;
    let data: Vec<Value> = rest.into_iter().take(limit).collect();
    Ok(json!({"object": "list", "data": data, "has_more": has_more, "url": url}))
}

/// A boolean parameter (`true` or `false`, as Stripe's clients send them).
pub fn boolean(p: &Value, key: &str) -> Result<Option<bool>, ApiError> {
    match s(p, key) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(v) => Err(ApiError::invalid(format!("Invalid boolean: {v}"), Some(key))),
    }
}

/// A list embedded in an object (a subscription's items, an invoice's lines): every element,
/// with its count.
pub fn embedded_list(url: String, items: Vec<Value>) -> Value {
    json!({"object": "list", "total_count": items.len(), "data": items, "has_more": false, "url": url})
}
