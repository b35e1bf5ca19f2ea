//! Invitation tokens: 32 bytes from the operating system's generator, sent as base64url
//! without padding (43 characters); only their SHA-256 is stored, so a database read gives
//! no working link.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Random bytes in a token (256 bits).
pub const TOKEN_BYTES: usize = 32;

/// The length of a token as sent.
pub const TOKEN_CHARS: usize = 43;

/// A new token, as it goes into the link, and its hash, as it is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The token as sent (base64url, no padding).
    pub text: String,
    /// Its SHA-256.
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Draws a token from the operating system's generator.
    ///
    /// # Errors
    /// When the generator fails (the host is broken).
    pub fn generate() -> Result<Self, rand::Error> {
        let mut bytes = [0_u8; TOKEN_BYTES];
        rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
        let text = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hash(&text);
        Ok(Self { text, hash })
    }
}

/// The stored hash of a token as received. Anything not shaped like a token has no hash any
/// invitation could hold (`None`).
#[must_use]
pub fn parse(received: &str) -> Option<Vec<u8>> {
    let shaped = received.len() == TOKEN_CHARS
        && received.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && URL_SAFE_NO_PAD.decode(received).is_ok_and(|bytes| bytes.len() == TOKEN_BYTES);
    shaped.then(|| hash(received))
}

fn hash(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_differ() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.text.len(), TOKEN_CHARS);
        assert_ne!(a.text, b.text);
        assert_eq!(parse(&a.text), Some(a.hash.clone()));
        assert_eq!(a.hash.len(), 32);
        assert_ne!(a.hash, a.text.as_bytes());
    }

    #[test]
    fn anything_else_has_no_hash() {
        let a = Token::generate().unwrap();
        for bad in
            ["", "abc", &format!("{}=", a.text), &a.text[..42], &format!("{}A", a.text), &a.text.replace(|_| true, "+")]
        {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(!format!("{a:?}").contains(&a.text), "the token never reaches a log");
    }
}
