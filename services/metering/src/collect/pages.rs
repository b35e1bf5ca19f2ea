//! Paging through one list across all namespaces, every pod whatever its labels (decision 0039): `limit` and `continue` until the last page,
//! and the whole list again from its first page when a continue token has expired (410), at
//! most `max_restarts` times, so no item is counted twice.

use super::CollectError;
use super::client::{ClusterClient, Counters, Failure};
use serde::Deserialize;
use std::sync::atomic::Ordering;

/// One page of a list: its items and the token of the next page.
#[derive(Deserialize)]
pub(super) struct List<T> {
    #[serde(default = "Vec::new")]
    pub(super) items: Vec<T>,
    #[serde(default)]
    pub(super) metadata: ListMeta,
}

/// A page's list metadata.
#[derive(Default, Deserialize)]
pub(super) struct ListMeta {
    #[serde(default, rename = "continue")]
    pub(super) continue_: Option<String>,
}

/// Reads one page of `what` from its body.
pub(super) fn decode<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<List<T>, CollectError> {
    serde_json::from_slice(body).map_err(|e| CollectError::Malformed { what: what.to_owned(), message: e.to_string() })
}

impl ClusterClient {
    /// Folds every page of the list at `path` (every namespace, no selector) into a fresh `S` with
    /// `fold`, which returns the page's continue token; when a continue token has expired the
    /// list starts again from a fresh `S`, so no item counts twice.
    pub(super) async fn list_all<S>(
        &self,
        path: &str,
        counters: &Counters,
        fresh: impl Fn() -> S,
        mut fold: impl FnMut(&mut S, &str, &[u8]) -> Result<Option<String>, CollectError>,
    ) -> Result<S, CollectError> {
        let what = format!("GET {path}");
        let mut restarts = 0_u32;
        'restart: loop {
            let mut state = fresh();
            let mut token: Option<String> = None;
            loop {
                let mut query = vec![("limit", self.config.page_size.to_string())];
                if let Some(t) = &token {
                    query.push(("continue", t.clone()));
                }
                let query = serde_urlencoded::to_string(&query)
                    .map_err(|e| CollectError::Malformed { what: what.clone(), message: e.to_string() })?;
                let body = match self.get(&format!("{path}?{query}"), &what, counters).await {
                    Ok(body) => body,
                    Err(Failure::Gone) if token.is_some() => {
                        restarts += 1;
                        counters.restarts.fetch_add(1, Ordering::Relaxed);
                        if restarts > self.config.max_restarts {
                            return Err(CollectError::Expired { what, restarts: restarts - 1 });
                        }
                        tracing::info!(cluster = %self.name, what, restarts, "continue token expired; listing again");
                        continue 'restart;
                    }
                    Err(Failure::Gone) => {
                        return Err(CollectError::Refused {
                            what,
                            status: 410,
                            reason: "Gone".to_owned(),
                            message: "410 without a continue token".to_owned(),
                        });
                    }
                    Err(Failure::Fatal(e)) => return Err(e),
                };
                match fold(&mut state, &what, &body)? {
                    Some(t) if !t.is_empty() => token = Some(t),
                    _ => return Ok(state),
                }
            }
        }
    }
}
