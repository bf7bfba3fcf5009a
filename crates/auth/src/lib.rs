//! Device tokens: HS256 JWTs whose `sub` is the device id and whose `model`
//! is the device model. The Socket verifies them at the handshake; the CLI
//! and the API issue them. `jsonwebtoken` is used only here.
//!
//! # Layout
//! - [`DeviceClaims`]: what a token says.
//! - [`TokenIssuer`] / [`TokenVerifier`]: sign and check with one shared secret.
//! - [`AuthConfig`]: the `[auth]` configuration section.
//! - [`generate_secret`]: a fresh random secret for development set-ups.
//! - [`api_keys`]: REST API keys, configured as hashes.
//!
//! # Invariants
//! - Only HS256 is accepted; a token signed any other way is refused.
//! - A token without `exp`, or past it, is refused.

pub mod api_keys;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub use api_keys::{ApiKeys, generate_api_key, hash_api_key};

/// The shortest secret accepted: shorter HMAC keys are guessable.
pub const MIN_SECRET_LEN: usize = 16;

/// Clock skew tolerated between the issuer and the Socket.
const LEEWAY_SECS: u64 = 5;

/// What a device token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceClaims {
    /// The device id.
    pub sub: String,
    /// The device model, which selects the command profile.
    pub model: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
}

/// The `[auth]` configuration section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The HS256 secret device tokens are signed with. Services refuse to
    /// start without one; `wharf up` generates one when it is empty.
    pub secret: String,
}

impl AuthConfig {
    /// Every problem with this section, one line each.
    pub fn problems(&self) -> Vec<String> {
        if self.secret.len() < MIN_SECRET_LEN {
            vec![format!(
                "auth.secret: must be at least {MIN_SECRET_LEN} characters (set WHARF_AUTH__SECRET; `wharf token secret` prints a fresh one)"
            )]
        } else {
            Vec::new()
        }
    }
}

/// Why a token was refused; also the `reason` label of auth-failure metrics.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no token presented")]
    Missing,
    #[error("token has expired")]
    Expired,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("token is for device {token_device:?}, not {claimed:?}")]
    WrongDevice {
        token_device: String,
        claimed: String,
    },
    /// The device was deleted after this token was issued.
    #[error("token was revoked: the device was deleted")]
    Revoked,
}

impl AuthError {
    /// A short stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::BadSignature => "bad_signature",
            AuthError::Malformed(_) => "malformed",
            AuthError::WrongDevice { .. } => "wrong_device",
            AuthError::Revoked => "revoked",
        }
    }
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("device id must not be empty")]
    EmptyDevice,
    #[error("device model must not be empty")]
    EmptyModel,
    #[error("failed to sign token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs device tokens.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
}

impl TokenIssuer {
    /// An issuer signing with `secret`.
    pub fn new(secret: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// Returns a token for `device` of `model`, valid for `ttl` from now.
    pub fn issue(&self, device: &str, model: &str, ttl: Duration) -> Result<String, IssueError> {
        let now = unix_now();
        self.issue_at(device, model, now, now.saturating_add(ttl.as_secs()))
    }

    /// Returns a token with explicit issue and expiry times (tests, tools).
    pub fn issue_at(
        &self,
        device: &str,
        model: &str,
        iat: u64,
        exp: u64,
    ) -> Result<String, IssueError> {
        if device.is_empty() {
            return Err(IssueError::EmptyDevice);
        }
        if model.is_empty() {
            return Err(IssueError::EmptyModel);
        }
        let claims = DeviceClaims {
            sub: device.to_owned(),
            model: model.to_owned(),
            exp,
            iat,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.key,
        )?)
    }
}

/// Checks device tokens.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// A verifier accepting tokens signed with `secret`.
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Returns the claims of a valid token, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<DeviceClaims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        match jsonwebtoken::decode::<DeviceClaims>(token, &self.key, &self.validation) {
            Ok(data) if data.claims.sub.is_empty() => {
                Err(AuthError::Malformed("sub is empty".into()))
            }
            Ok(data) => Ok(data.claims),
            Err(error) => Err(match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                _ => AuthError::Malformed(error.to_string()),
            }),
        }
    }

    /// Like [`verify`](Self::verify), and the token must name `device`.
    pub fn verify_for(&self, token: &str, device: &str) -> Result<DeviceClaims, AuthError> {
        let claims = self.verify(token)?;
        if claims.sub != device {
            return Err(AuthError::WrongDevice {
                token_device: claims.sub,
                claimed: device.to_owned(),
            });
        }
        Ok(claims)
    }
}

/// Returns a fresh random secret (64 hex characters).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_a_token_it_issued() {
        let token = TokenIssuer::new(SECRET)
            .issue("thermo-42", "demo-thermostat", Duration::from_secs(60))
            .unwrap();
        let claims = TokenVerifier::new(SECRET).verify(&token).unwrap();
        assert_eq!(claims.sub, "thermo-42");
        assert_eq!(claims.model, "demo-thermostat");
    }

    #[test]
    fn refuses_expired_forged_and_garbage_tokens() {
        let verifier = TokenVerifier::new(SECRET);
        let now = unix_now();
        let expired = TokenIssuer::new(SECRET)
            .issue_at("d", "m", now - 3600, now - 600)
            .unwrap();
        assert_eq!(verifier.verify(&expired), Err(AuthError::Expired));

        let forged = TokenIssuer::new("another-secret-of-enough-length")
            .issue("d", "m", Duration::from_secs(60))
            .unwrap();
        assert_eq!(verifier.verify(&forged), Err(AuthError::BadSignature));

        assert!(matches!(
            verifier.verify("abc.def"),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(verifier.verify("  "), Err(AuthError::Missing));
    }

    #[test]
    fn refuses_a_token_of_another_device() {
        let token = TokenIssuer::new(SECRET)
            .issue("thermo-42", "m", Duration::from_secs(60))
            .unwrap();
        let err = TokenVerifier::new(SECRET)
            .verify_for(&token, "thermo-43")
            .unwrap_err();
        assert_eq!(err.label(), "wrong_device");
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let a = generate_secret();
        assert_eq!(a.len(), 64);
        assert!(a.len() >= MIN_SECRET_LEN);
        assert_ne!(a, generate_secret());
    }
}
