//! Access tokens (HS256 JWTs signed with `SECRET_KEY`) and opaque secrets (refresh tokens, API
//! keys, recovery codes), which are stored only as SHA-256 hashes.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AuthError;
use crate::config::Secret;

const ISSUER: &str = "docket";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    /// User ID.
    pub sub: String,
    /// Tenant ID.
    pub tid: String,
    /// Session ID.
    pub sid: String,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

pub fn encode_access(
    key: &Secret,
    user_id: &str,
    tenant_id: &str,
    session_id: &str,
    now: DateTime<Utc>,
    ttl: std::time::Duration,
) -> Result<String, AuthError> {
    let claims = AccessClaims {
        sub: user_id.to_owned(),
        tid: tenant_id.to_owned(),
        sid: session_id.to_owned(),
        iss: ISSUER.to_owned(),
        iat: now.timestamp(),
        exp: now.timestamp() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(key.expose().as_bytes()),
    )
    .map_err(|e| AuthError::Internal(format!("cannot sign a token: {e}")))
}

/// Verifies signature (HS256 only, so `alg: none` and key confusion are refused), issuer and expiry.
pub fn decode_access(key: &Secret, token: &str) -> Result<AccessClaims, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<AccessClaims>(
        token,
        &DecodingKey::from_secret(key.expose().as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        AuthError::InvalidToken(match e.kind() {
            ErrorKind::ExpiredSignature => "it has expired",
            ErrorKind::InvalidSignature => "the signature does not match",
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                "the algorithm is not accepted"
            }
            ErrorKind::InvalidIssuer => "it was not issued by Docket",
            _ => "it is malformed",
        })
    })
}

/// A random secret of 32 bytes, hex-encoded, with a readable prefix.
pub fn new_secret(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}{}", hex::encode(bytes))
}

/// Secrets are high-entropy, so a fast hash is enough (no salt or stretching needed).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use std::time::Duration;

    fn key() -> Secret {
        Secret::new("k".repeat(32))
    }

    #[test]
    fn round_trip() {
        let token = encode_access(
            &key(),
            "u1",
            "t1",
            "s1",
            crate::clock::now(),
            Duration::from_secs(60),
        )
        .unwrap();
        let claims = decode_access(&key(), &token).unwrap();
        assert_eq!(
            (
                claims.sub.as_str(),
                claims.tid.as_str(),
                claims.sid.as_str()
            ),
            ("u1", "t1", "s1")
        );
    }

    #[test]
    fn expired_wrong_key_and_garbage_are_rejected() {
        let past = crate::clock::now() - chrono::Duration::hours(2);
        let expired = encode_access(&key(), "u", "t", "s", past, Duration::from_secs(60)).unwrap();
        assert!(matches!(
            decode_access(&key(), &expired),
            Err(AuthError::InvalidToken("it has expired"))
        ));

        let other = encode_access(
            &Secret::new("o".repeat(32)),
            "u",
            "t",
            "s",
            crate::clock::now(),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(matches!(
            decode_access(&key(), &other),
            Err(AuthError::InvalidToken(_))
        ));
        assert!(matches!(
            decode_access(&key(), "not.a.jwt"),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn alg_none_is_rejected() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let exp = crate::clock::now().timestamp() + 600;
        let payload = b64.encode(format!(
            r#"{{"sub":"u","tid":"t","sid":"s","iss":"docket","iat":0,"exp":{exp}}}"#
        ));
        let token = format!("{header}.{payload}.");
        assert!(matches!(
            decode_access(&key(), &token),
            Err(AuthError::InvalidToken(_))
        ));
    }
}
