//! Password hashing with Argon2id (the argon2 crate's defaults: 19 MiB, 2 passes). Every hash and
//! verification runs through [`Hashing`]: at most a configured number at once, each in a reused
//! working area, so a burst of sign-ins waits (or is refused with 503) instead of costing memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

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

/// Argon2 of `password` with the algorithm, version, parameters and salt of `template`, computed in
/// `memory` (grown when the parameters need more).
fn derive(
    password: &str,
    template: &PasswordHash,
    memory: &mut Vec<Block>,
) -> Result<Output, String> {
    let algorithm = Algorithm::try_from(template.algorithm.as_str()).map_err(|e| e.to_string())?;
    let version = template
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let params = Params::try_from(template).map_err(|e| e.to_string())?;
    let salt = template.salt.as_ref().ok_or("the hash has no salt")?;
    let mut out = vec![0_u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
        .map_err(|e| e.to_string())?;
    Output::new(&out).map_err(|e| e.to_string())
}

fn hash_in(password: &str, memory: &mut Vec<Block>) -> Result<String, String> {
    let params = Params::default();
    let mut phc = PasswordHash {
        algorithm: Algorithm::default().ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(Salt::generate()),
        hash: None,
    };
    phc.hash = Some(derive(password, &phc, memory)?);
    Ok(phc.to_string())
}

fn verify_in(password: &str, stored_hash: &str, memory: &mut Vec<Block>) -> bool {
    PasswordHash::new(stored_hash).is_ok_and(|parsed| {
        // `Output`'s equality is constant-time.
        parsed.hash.is_some() && derive(password, &parsed, memory).ok() == parsed.hash
    })
}

/// The slots password hashing runs in. Argon2 needs 19 MiB per hash: unbounded, 100 parallel
/// sign-ins took 2 GB. Each slot keeps its working memory between uses, because the allocator
/// would otherwise keep freed areas in many per-thread arenas and the peak would still grow.
pub struct Hashing {
    slots: Arc<Semaphore>,
    queue: Duration,
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    /// A hash of a fixed password, verified against for unknown emails.
    dummy: tokio::sync::OnceCell<String>,
}

impl Hashing {
    pub fn new(concurrency: usize, queue: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            queue,
            memory: Arc::new(Mutex::new(Vec::new())),
            dummy: tokio::sync::OnceCell::new(),
        }
    }

    /// Runs `f` on the blocking pool once a slot is free, or fails with 503 `busy` when none frees
    /// up within the queue time.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let busy = AuthError::Busy {
            retry_after_seconds: self.queue.as_secs().max(1),
        };
        let permit = tokio::time::timeout(self.queue, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| busy)?
            .map_err(|e| AuthError::Internal(format!("password hashing closed: {e}")))?;
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            let take = || pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut memory = take().pop().unwrap_or_default();
            let result = f(&mut memory);
            take().push(memory);
            drop(permit);
            result
        })
        .await
        .map_err(|e| AuthError::Internal(format!("password task failed: {e}")))
    }

    pub async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let plain = password.to_owned();
        self.run(move |memory| hash_in(&plain, memory))
            .await?
            .map_err(|e| AuthError::Internal(format!("cannot hash a password: {e}")))
    }

    pub async fn verify(&self, password: &str, stored_hash: &str) -> Result<bool, AuthError> {
        let (plain, stored) = (password.to_owned(), stored_hash.to_owned());
        self.run(move |memory| verify_in(&plain, &stored, memory))
            .await
    }

    /// Spends the same time as a real verification, so an unknown email cannot be told apart from
    /// a wrong password by the response time.
    pub async fn verify_against_nothing(&self, password: &str) -> Result<(), AuthError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| self.hash("docket-timing-equaliser"))
            .await?;
        self.verify(password, dummy).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let hashing = Hashing::new(1, Duration::from_secs(5));
        let h = hashing.hash("correct horse battery").await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(hashing.verify("correct horse battery", &h).await.unwrap());
        assert!(!hashing.verify("wrong horse battery", &h).await.unwrap());
        assert!(!hashing.verify("anything", "not a hash").await.unwrap());
    }

    #[test]
    fn verifies_hashes_the_argon2_crate_made() {
        use argon2::password_hash::PasswordHasher;
        let h = Argon2::default()
            .hash_password(b"correct horse battery")
            .unwrap()
            .to_string();
        let mut memory = Vec::new();
        assert!(verify_in("correct horse battery", &h, &mut memory));
        assert!(!verify_in("wrong horse battery", &h, &mut memory));
        assert_eq!(memory.len(), Params::default().block_count());
    }

    #[tokio::test]
    async fn busy_when_no_slot_frees_up_in_time() {
        let hashing = Hashing::new(1, Duration::from_millis(10));
        let _held = hashing.slots.clone().acquire_owned().await.unwrap();
        let err = hashing.hash("correct horse battery").await.unwrap_err();
        assert!(matches!(
            err,
            AuthError::Busy {
                retry_after_seconds: 1
            }
        ));
    }

    #[test]
    fn length_limits() {
        assert!(validate("password", "short").is_err());
        assert!(validate("password", &"x".repeat(MAX_LENGTH + 1)).is_err());
        assert!(validate("password", "twelve chars").is_ok());
    }
}
