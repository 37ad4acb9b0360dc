//! Password hashing with Argon2id (the argon2 crate's defaults: 19 MiB, 2 passes).

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use super::AuthError;

pub const MIN_LENGTH: usize = 12;
/// Argon2 hashes whatever it gets; an unbounded password is a cheap way to burn server CPU.
pub const MAX_LENGTH: usize = 1024;

pub fn validate(field: &'static str, password: &str) -> Result<(), AuthError> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Err(AuthError::Invalid {
            field,
            message: format!("must be at least {MIN_LENGTH} characters long"),
        });
    }
    if password.len() > MAX_LENGTH {
        return Err(AuthError::Invalid {
            field,
            message: format!("must be at most {MAX_LENGTH} bytes long"),
        });
    }
    Ok(())
}

pub fn hash(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("cannot hash a password: {e}")))
}

pub fn verify(password: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Spends the same time as a real verification, so an unknown email cannot be told apart from a
/// wrong password by the response time.
pub fn verify_against_nothing(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("docket-timing-equaliser").unwrap_or_default());
    let _ = verify(password, dummy);
}

/// Runs `f` (password hashing or verification) off the async executor: Argon2 is CPU-bound.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuthError::Internal(format!("password task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("wrong horse battery", &h));
        assert!(!verify("anything", "not a hash"));
    }

    #[test]
    fn length_limits() {
        assert!(validate("password", "short").is_err());
        assert!(validate("password", &"x".repeat(MAX_LENGTH + 1)).is_err());
        assert!(validate("password", "twelve chars").is_ok());
    }
}
