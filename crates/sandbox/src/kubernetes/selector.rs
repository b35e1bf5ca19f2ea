//! Label selectors in the Kubernetes grammar: `a=b`, `a==b`, `a!=b`, `a in (x,y)`,
//! `a notin (x)`, `a`, `!a`, joined by commas (all must hold).

use std::collections::BTreeMap;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed label selector; the empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

fn valid_key(k: &str) -> bool {
    let name = k.rsplit_once('/').map_or(k, |(_, n)| n);
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0_i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(s.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unable to parse requirement: unbalanced parentheses in {s:?}"));
        }
    }
    if depth != 0 {
        return Err("unable to parse requirement: found '', expected: ')'".to_string());
    }
    parts.push(s.get(start..).unwrap_or_default());
    Ok(parts)
}

fn values(list: &str) -> Result<Vec<String>, String> {
    let inner = list
        .trim()
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: found '{}', expected: '('", list.trim()))?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    for v in &vals {
        if !valid_value(v) {
            return Err(format!("unable to parse requirement: values[0]: Invalid value: {v:?}"));
        }
    }
    Ok(vals)
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    if valid_key(k) {
        Ok(k.to_owned())
    } else {
        Err(format!(
            "unable to parse requirement: key: Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'"
        ))
    }
}

fn requirement(part: &str) -> Result<Requirement, String> {
    let p = part.trim();
    if let Some(k) = p.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key(k)?));
    }
    if let Some((k, v)) = p.split_once("!=") {
        let v = v.trim();
        if !valid_value(v) {
            return Err(format!("unable to parse requirement: values[0]: Invalid value: {v:?}"));
        }
        return Ok(Requirement::NotIn(key(k)?, vec![v.to_owned()]));
    }
    if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
        let v = v.trim();
        if !valid_value(v) {
            return Err(format!("unable to parse requirement: values[0]: Invalid value: {v:?}"));
        }
        return Ok(Requirement::In(key(k)?, vec![v.to_owned()]));
    }
    let words: Vec<&str> = p.splitn(2, char::is_whitespace).collect();
    match words.as_slice() {
        [k] => Ok(Requirement::Exists(key(k)?)),
        [k, rest] => {
            let rest = rest.trim_start();
            if let Some(list) = rest.strip_prefix("notin") {
                Ok(Requirement::NotIn(key(k)?, values(list)?))
            } else if let Some(list) = rest.strip_prefix("in") {
                Ok(Requirement::In(key(k)?, values(list)?))
            } else {
                Err(format!("unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"))
            }
        }
        _ => Err("unable to parse requirement: found '', expected: identifier".to_owned()),
    }
}

impl Selector {
    /// Parses `labelSelector`, answering the API server's message on error.
    ///
    /// # Errors
    /// When the text is not a selector.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        split_top(s)?.into_iter().map(requirement).collect::<Result<Vec<_>, _>>().map(Self)
    }

    /// Whether `labels` satisfy every requirement.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether the selector is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
