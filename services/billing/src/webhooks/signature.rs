//! Stripe's webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, an
//! HMAC-SHA256 over `"<t>.<raw body>"` with the endpoint's secret.

use hmac::{Hmac, Mac};
use hopsbridge_platform::constant_time_eq;
use sha2::Sha256;

/// How far a signature's timestamp may be from now, in seconds (Stripe's default).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a `Stripe-Signature` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No header.
    #[error("the Stripe-Signature header is missing")]
    Missing,
    /// No `t=` or no `v1=`, or one that is not hex.
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    /// No `v1` signature matches.
    #[error("no signature matches the payload")]
    Mismatch,
    /// The timestamp is more than the tolerance away from now.
    #[error("the signature's timestamp is outside the tolerance")]
    Expired,
}

/// Verifies `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]` over `"<t>.<body>"` with the
/// endpoint secret: some `v1` must match (compared in constant time), and `t` must be within
/// [`TOLERANCE_SECS`] of `now`.
///
/// # Errors
/// [`SignatureError`].
pub fn verify(header: Option<&str>, body: &[u8], secret: &[u8], now: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp: Option<i64> = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else { continue };
        match k {
            "t" => timestamp = Some(v.parse().map_err(|_| SignatureError::Malformed)?),
            "v1" => signatures.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    // Every candidate is compared, so the time taken does not say which one matched.
    let matched = signatures.iter().fold(false, |any, s| constant_time_eq(s, &expected) | any);
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn sign(body: &str, secret: &str, t: i64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_matching_signature_within_the_tolerance_verifies() {
        let body = r#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let header = format!("t={now},v1={}", sign(body, "whsec_test_secret", now));
        assert_eq!(verify(Some(&header), body.as_bytes(), b"whsec_test_secret", now + 299), Ok(()));
        // One of several v1 signatures matching is enough (secret rotation).
        let header = format!("t={now},v1={},v1={}", sign(body, "old", now), sign(body, "whsec_test_secret", now));
        assert_eq!(verify(Some(&header), body.as_bytes(), b"whsec_test_secret", now), Ok(()));
    }

    #[test]
    fn forged_stale_missing_and_malformed_signatures_are_refused() {
        let body = r#"{"id":"evt_1"}"#;
        let now = 1_800_000_000;
        let secret = b"whsec_test_secret";
        let good = sign(body, "whsec_test_secret", now);
        let cases = [
            (None, SignatureError::Missing),
            (Some(format!("t={now},v1={}", sign(body, "another", now))), SignatureError::Mismatch),
            (Some(format!("t={now},v1={good}")), SignatureError::Expired),
            (Some(format!("v1={good}")), SignatureError::Malformed),
            (Some(format!("t={now}")), SignatureError::Malformed),
            (Some(format!("t={now},v0={good}")), SignatureError::Malformed),
            (Some(format!("t=yesterday,v1={good}")), SignatureError::Malformed),
            (Some(format!("t={now},v1=zz")), SignatureError::Malformed),
        ];
        for (i, (header, want)) in cases.into_iter().enumerate() {
            let at = if want == SignatureError::Expired { now + 301 } else { now };
            assert_eq!(verify(header.as_deref(), body.as_bytes(), secret, at), Err(want), "case {i}");
        }
        // The body is covered: a changed payload with the old signature fails.
        let header = format!("t={now},v1={good}");
        assert_eq!(verify(Some(&header), br#"{"id":"evt_2"}"#, secret, now), Err(SignatureError::Mismatch));
    }
}
