//! Authorization as the API server answers it to a client asking about itself:
//! `SelfSubjectAccessReview` (`POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`).
//!
//! The simulated token is allowed everything, as RBAC allows a user bound to `cluster-admin`,
//! unless a test denies a (verb, API group, resource) with [`super::KubeCluster::deny`]; a
//! denied review answers `allowed: false` without a reason, as RBAC does when no rule matches.
//! The review is created (201) and echoed with its status filled in, as the real server does;
//! a review with neither `resourceAttributes` nor `nonResourceAttributes`, or with both, is
//! refused 422 Invalid, and a body that is not a `SelfSubjectAccessReview` 400 BadRequest.
//! Reviews come as JSON (the kube crate) or as Kubernetes protobuf (kubectl, whose client
//! sends built-in types so): the protobuf envelope (`k8s\0`, `runtime.Unknown`) is read as far
//! as the attributes; the answer is JSON, which both accept.

use super::State;
use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde_json::{Value, json};
use std::sync::PoisonError;

/// A permission as a review names it: verb, API group (`""` for core) and resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    /// `list`, `watch`, `get`, `create`, …
    pub verb: String,
    /// The API group; empty for the core group.
    pub group: String,
    /// The resource (plural), such as `pods`.
    pub resource: String,
}

impl Permission {
    /// `verb` on `resource` of `group`.
    #[must_use]
    pub fn new(verb: &str, group: &str, resource: &str) -> Self {
        Self { verb: verb.to_owned(), group: group.to_owned(), resource: resource.to_owned() }
    }
}

fn failure(code: StatusCode, reason: &str, message: &str) -> HttpResponse {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    HttpResponse::build(code).content_type("application/json").body(body.to_string())
}

/// A protobuf field's value: a varint, or the bytes of a length-delimited field.
type Wire<'a> = Result<u64, &'a [u8]>;

/// The fields of a protobuf message: (field number, value).
fn proto_fields(mut buf: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0_u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let value = match key & 7 {
            0 => Ok(varint(&mut buf)?),
            2 => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let (bytes, rest) = (buf.get(..len)?, buf.get(len..)?);
                buf = rest;
                Err(bytes)
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    Some(out)
}

fn proto_field(buf: &[u8], number: u64) -> Option<&[u8]> {
    proto_fields(buf)?.into_iter().find_map(|(n, v)| if n == number { v.err() } else { None })
}

/// A protobuf `SelfSubjectAccessReview` in its envelope, as JSON.
fn from_protobuf(body: &[u8]) -> Option<Value> {
    let unknown = body.strip_prefix(b"k8s\0")?;
    let type_meta = proto_field(unknown, 1)?;
    let kind = std::str::from_utf8(proto_field(type_meta, 2)?).ok()?;
    let raw = proto_field(unknown, 2)?;
    let text = |buf: &[u8], n: u64| proto_field(buf, n).and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned);
    let mut spec = serde_json::Map::new();
    if let Some(spec_bytes) = proto_field(raw, 2) {
        if let Some(r) = proto_field(spec_bytes, 1) {
            let mut attributes = serde_json::Map::new();
            for (n, key) in [
                (1, "namespace"),
                (2, "verb"),
                (3, "group"),
                (4, "version"),
                (5, "resource"),
                (6, "subresource"),
                (7, "name"),
            ] {
                if let Some(v) = text(r, n) {
                    attributes.insert(key.to_owned(), json!(v));
                }
            }
            spec.insert("resourceAttributes".to_owned(), Value::Object(attributes));
        }
        if let Some(r) = proto_field(spec_bytes, 2) {
            spec.insert("nonResourceAttributes".to_owned(), json!({"path": text(r, 1), "verb": text(r, 2)}));
        }
    }
    Some(json!({"kind": kind, "apiVersion": "authorization.k8s.io/v1", "spec": spec}))
}

/// Answers one `SelfSubjectAccessReview`.
pub(super) fn review(state: &State, body: &[u8]) -> HttpResponse {
    let parsed = serde_json::from_slice::<Value>(body).ok().or_else(|| from_protobuf(body));
    let Some(mut review) = parsed else {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the object provided is unrecognized (must be of type SelfSubjectAccessReview)",
        );
    };
    let kind_ok = review["kind"].as_str().is_none_or(|k| k == "SelfSubjectAccessReview")
        && review["apiVersion"].as_str().is_none_or(|v| v == "authorization.k8s.io/v1");
    if !kind_ok || !review.is_object() {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the object provided is unrecognized (must be of type SelfSubjectAccessReview)",
        );
    }
    let resource = review["spec"]["resourceAttributes"].as_object().cloned();
    let non_resource = review["spec"]["nonResourceAttributes"].as_object().cloned();
    let allowed = match (&resource, &non_resource) {
        (Some(attributes), None) => {
            let text = |k: &str| attributes.get(k).and_then(Value::as_str).unwrap_or_default();
            let asked = Permission::new(text("verb"), text("group"), text("resource"));
            let denied = state.denied.lock().unwrap_or_else(PoisonError::into_inner);
            !denied.iter().any(|d| {
                (d.verb == asked.verb || d.verb == "*")
                    && d.group == asked.group
                    && (d.resource == asked.resource || d.resource == "*")
            })
        }
        (None, Some(_)) => true,
        _ => {
            return failure(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: spec.resourceAttributes: Invalid value: \
                 \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            );
        }
    };
    let status = if allowed {
        json!({
            "allowed": true,
            "reason": format!(
                "RBAC: allowed by ClusterRoleBinding \"{name}-admin\" of ClusterRole \"cluster-admin\" to User \"{name}-admin\"",
                name = state.name
            ),
        })
    } else {
        json!({"allowed": false})
    };
    if let Some(o) = review.as_object_mut() {
        o.insert("kind".to_owned(), json!("SelfSubjectAccessReview"));
        o.insert("apiVersion".to_owned(), json!("authorization.k8s.io/v1"));
        o.insert("metadata".to_owned(), json!({"creationTimestamp": null}));
        o.insert("status".to_owned(), status);
    }
    HttpResponse::Created().content_type("application/json").body(review.to_string())
}
