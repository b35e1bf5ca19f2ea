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

/// A page of `all` (newest first) as Stripe answers a list whose filters `keep` selects: the
/// `starting_after` cursor is found among every object of the type, filtered or not (Stripe
/// pages by the object's place, so an object that stopped matching between two pages still
/// marks where the next begins), and a cursor naming no such object is refused as Stripe refuses
/// it (400 `resource_missing`, param `starting_after`).
pub fn list_where(url: &str, what: &str, all: Vec<Value>, keep: impl Fn(&Value) -> bool, p: &Value) -> Answer {
    let rest: Vec<Value> = match s(p, "starting_after") {
        Some(after) => {
            let at = all
                .iter()
                .position(|x| x["id"] == after)
                .ok_or_else(|| ApiError::no_such_param(what, after, "starting_after"))?;
            all.into_iter().skip(at + 1).collect()
        }
        None => all,
    };
    let mut without_cursor = p.clone();
    if let Some(map) = without_cursor.as_object_mut() {
        map.remove("starting_after");
    }
    list(url, rest.into_iter().filter(|x| keep(x)).collect(), &without_cursor)
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

#[cfg(test)]
mod tests {
    use super::list_where;
    use serde_json::{Value, json};

    fn ids(page: &Value) -> Vec<&str> {
        page["data"].as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap()).collect()
    }

    #[test]
    fn a_cursor_is_found_among_every_object_and_an_unknown_one_is_refused() {
        let all: Vec<Value> = (1..=5).rev().map(|i| json!({"id": format!("sub_{i}"), "live": i != 3})).collect();
        let live = |x: &Value| x["live"] == true;
        let first = list_where("/v1/subscriptions", "subscription", all.clone(), live, &json!({"limit": "2"})).unwrap();
        assert_eq!((ids(&first), first["has_more"].as_bool()), (vec!["sub_5", "sub_4"], Some(true)));
        // sub_3 stopped matching: a cursor on it still marks its place.
        let after = json!({"limit": "2", "starting_after": "sub_3"});
        let next = list_where("/v1/subscriptions", "subscription", all.clone(), live, &after).unwrap();
        assert_eq!((ids(&next), next["has_more"].as_bool()), (vec!["sub_2", "sub_1"], Some(false)));
        let after = json!({"limit": "2", "starting_after": "sub_4"});
        let next = list_where("/v1/subscriptions", "subscription", all.clone(), live, &after).unwrap();
        assert_eq!((ids(&next), next["has_more"].as_bool()), (vec!["sub_2", "sub_1"], Some(false)));
        let unknown = json!({"starting_after": "sub_9"});
        let refused = list_where("/v1/subscriptions", "subscription", all, live, &unknown).unwrap_err();
        assert_eq!(
            (refused.status, refused.code, refused.param.as_deref()),
            (400, Some("resource_missing"), Some("starting_after"))
        );
    }
}
