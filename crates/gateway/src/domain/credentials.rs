//! Credential formats. Secrets are random, high-entropy and shown once; only hashes are kept.

use rand::Rng;
use rand::distr::Alphanumeric;

fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new client id (`ck_…`, public) and secret (`cs_…`, shown once).
pub fn new_client_credentials() -> (String, String) {
    (
        format!("ck_{}", random_token(20)),
        format!("cs_{}", random_token(40)),
    )
}

/// An API key `fsk_<id>_<secret>`: the id finds the stored hash, the secret proves possession.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The public id.
    pub id: String,
    /// The secret part.
    pub secret: String,
}

impl ApiKey {
    const PREFIX: &'static str = "fsk_";

    /// A new random key.
    pub fn generate() -> Self {
        Self {
            id: random_token(16),
            secret: random_token(40),
        }
    }

    /// Splits a presented key; `None` when it is not of our shape.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(Self::PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let valid = |part: &str, len: usize| {
            part.len() == len && part.chars().all(|c| c.is_ascii_alphanumeric())
        };
        (valid(id, 16) && valid(secret, 40)).then(|| Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}_{}", Self::PREFIX, self.id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_are_distinct_and_prefixed() {
        let (id, secret) = new_client_credentials();
        let (id2, _) = new_client_credentials();
        assert!(id.starts_with("ck_") && secret.starts_with("cs_"));
        assert_eq!(secret.len(), 43);
        assert_ne!(id, id2);
    }

    #[test]
    fn an_api_key_round_trips_through_its_text_form() {
        let key = ApiKey::generate();
        assert_eq!(ApiKey::parse(&key.to_string()), Some(key));
    }

    #[test]
    fn strings_of_another_shape_are_not_api_keys() {
        for bad in [
            "",
            "fsk_",
            "fsk_abc_def",
            "xyz_0123456789abcdef_x",
            "eyJhbGciOi.x.y",
        ] {
            assert_eq!(ApiKey::parse(bad), None, "{bad}");
        }
    }
}
