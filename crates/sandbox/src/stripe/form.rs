//! Stripe's form encoding: `a[b][0][c]=v` keys decoded into nested JSON objects and arrays.

use super::state::ApiError;
use serde_json::{Map, Value};

/// Decodes a form body or query string; keys whose segments are all indices become arrays.
pub fn parse(input: &str) -> Result<Value, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(input)
        .map_err(|_| ApiError::invalid("Invalid request: the body could not be decoded as a form.", None))?;
    let mut root = Map::new();
    for (key, value) in pairs {
        let path = split_key(&key)?;
        insert(&mut root, &key, &path, value)?;
    }
    Ok(arrays(Value::Object(root)))
}

fn split_key(key: &str) -> Result<Vec<String>, ApiError> {
    let bad = || ApiError::invalid(format!("Invalid parameter name: {key}"), Some(key));
    let (head, mut rest) = key.find('[').map_or((key, ""), |at| (&key[..at], &key[at..]));
    if head.is_empty() {
        return Err(bad());
    }
    let mut path = vec![head.to_owned()];
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('[') else { return Err(bad()) };
        let Some(close) = inner.find(']') else { return Err(bad()) };
        path.push(inner[..close].to_owned());
        rest = &inner[close + 1..];
    }
    Ok(path)
}

fn insert(map: &mut Map<String, Value>, key: &str, path: &[String], value: String) -> Result<(), ApiError> {
    let conflict =
        || ApiError::invalid(format!("Invalid parameter: {key} conflicts with another parameter"), Some(key));
    let Some((first, rest)) = path.split_first() else { return Err(conflict()) };
    // An empty segment (`expand[]=x`) appends to the list.
    let name = if first.is_empty() { map.len().to_string() } else { first.clone() };
    if rest.is_empty() {
        if map.contains_key(&name) {
            return Err(conflict());
        }
        map.insert(name, Value::String(value));
        return Ok(());
    }
    let child = map.entry(name).or_insert_with(|| Value::Object(Map::new()));
    match child {
        Value::Object(inner) => insert(inner, key, rest, value),
        _ => Err(conflict()),
    }
}

fn arrays(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let all_indices = !map.is_empty() && map.keys().all(|k| k.parse::<usize>().is_ok());
            if all_indices {
                let mut items: Vec<(usize, Value)> =
                    map.into_iter().filter_map(|(k, v)| k.parse().ok().map(|i| (i, arrays(v)))).collect();
                items.sort_by_key(|(i, _)| *i);
                Value::Array(items.into_iter().map(|(_, v)| v).collect())
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::parse;
    use serde_json::json;

    #[test]
    fn nested_keys_become_objects_and_arrays() {
        let v = parse("items[0][price]=p1&items[1][price]=p2&metadata[a]=1&recurring[meter]=mtr_1&expand[]=x").unwrap();
        assert_eq!(
            v,
            json!({"items": [{"price": "p1"}, {"price": "p2"}], "metadata": {"a": "1"},
                   "recurring": {"meter": "mtr_1"}, "expand": ["x"]})
        );
    }

    #[test]
    fn malformed_and_conflicting_keys_are_rejected() {
        assert!(parse("a[b=1").is_err());
        assert!(parse("a=1&a[b]=2").is_err());
        assert!(parse("a[b]=2&a=1").is_err());
    }
}
