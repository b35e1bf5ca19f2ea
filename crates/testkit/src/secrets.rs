//! Scanning what a run wrote (log lines, response bodies, events) for the secrets it used.
//!
//! [`SecretScan`] holds each secret by name with the forms it could leak in: as written,
//! base64-encoded (a kubeconfig's fields, a Basic authorization header) and percent-encoded
//! (a URL's userinfo or query). A finding names the secret and where it was seen, never the
//! secret itself, so the failure message leaks nothing either.

/// Shorter secrets would be found by chance.
const MIN_LEN: usize = 8;

/// The secrets of a run, and where any of them was seen.
#[derive(Clone, Debug, Default)]
pub struct SecretScan {
    secrets: Vec<(String, Vec<String>)>,
}

/// One secret seen somewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The secret's name, e.g. `stripe.secret_key`.
    pub secret: String,
    /// Which form was seen: `as written`, `base64` or `percent-encoded`.
    pub form: &'static str,
    /// Where: the label given with the text, e.g. `log line 12` or `POST /api/admin/clusters`.
    pub place: String,
}

impl SecretScan {
    /// No secrets yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` under `name`. Panics when it is shorter than 8 characters: a scan for it
    /// would find it by chance.
    #[must_use]
    pub fn secret(mut self, name: &str, value: &str) -> Self {
        assert!(value.len() >= MIN_LEN, "the secret {name} is too short to scan for");
        let forms = vec![value.to_owned(), base64(value.as_bytes()), percent_encoded(value)];
        self.secrets.push((name.to_owned(), forms));
        self
    }

    /// The secrets' names.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        self.secrets.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Every secret seen in `text`, labelled `place`.
    #[must_use]
    pub fn findings(&self, place: &str, text: &str) -> Vec<Finding> {
        const FORMS: [&str; 3] = ["as written", "base64", "percent-encoded"];
        let mut found = Vec::new();
        for (name, forms) in &self.secrets {
            // A base64 form may start at any of three offsets; the unpadded stem of the whole
            // value's encoding is found when the secret was encoded alone.
            if let Some(i) = forms.iter().position(|f| text.contains(f.trim_end_matches('='))) {
                found.push(Finding { secret: name.clone(), form: FORMS[i], place: place.to_owned() });
            }
        }
        found
    }

    /// Every secret seen in any of `texts` (label, text).
    pub fn scan<'a>(&self, texts: impl IntoIterator<Item = (String, &'a str)>) -> Vec<Finding> {
        texts.into_iter().flat_map(|(place, text)| self.findings(&place, text)).collect()
    }

    /// Fails the test when any secret is in any of `texts`, naming each secret and place
    /// (never the secret).
    pub fn assert_clean<'a>(&self, texts: impl IntoIterator<Item = (String, &'a str)>) {
        let found = self.scan(texts);
        assert!(
            found.is_empty(),
            "secrets leaked:\n{}",
            found.iter().map(|f| format!("{} ({}) in {}", f.secret, f.form, f.place)).collect::<Vec<_>>().join("\n")
        );
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET[index]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`.
fn percent_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_usual_ones() {
        assert_eq!(base64(b"sk_test_abc"), "c2tfdGVzdF9hYmM=");
        assert_eq!(base64(b"user:password"), "dXNlcjpwYXNzd29yZA==");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(percent_encoded("p@ss/w rd"), "p%40ss%2Fw%20rd");
    }

    #[test]
    fn a_secret_is_found_in_each_form_and_named_without_being_quoted() {
        let scan = SecretScan::new().secret("smtp password", "p@ss/word-123").secret("api key", "hw-key-0123456789");
        assert!(scan.findings("clean", "nothing to see here").is_empty());
        let found = scan.findings("log line 1", "smtp://mailer:p%40ss%2Fword-123@mail.example.com:587");
        assert_eq!(
            found,
            vec![Finding { secret: "smtp password".into(), form: "percent-encoded", place: "log line 1".into() }]
        );
        let found = scan.findings("body", r#"{"token":"aHctS2V5"} {"raw":"hw-key-0123456789"}"#);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].secret.as_str(), found[0].form), ("api key", "as written"));
        let encoded = base64(b"hw-key-0123456789");
        assert_eq!(scan.findings("header", &format!("Authorization: Basic {encoded}"))[0].form, "base64");
        let message = std::panic::catch_unwind(|| scan.assert_clean([("line 7".to_owned(), "x hw-key-0123456789 y")]))
            .unwrap_err()
            .downcast::<String>()
            .unwrap();
        assert!(message.contains("api key (as written) in line 7"), "{message}");
        assert!(!message.contains("hw-key-0123456789"), "the failure does not quote the secret");
    }
}
