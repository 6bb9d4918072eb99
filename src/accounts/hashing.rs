//! Password hashing (argon2id) on a fixed pool of working memory.
//!
//! Every hash and every verification needs the algorithm's whole memory cost (7 MiB) at once.
//! Taking it from the general allocator on whichever blocking thread runs the job leaves
//! allocator arenas of that size behind on every such thread, so a login storm grew a fresh
//! process from 10 MB to 1.5 GB for good. Here a fixed number of slots, each big enough for the
//! configured cost, is allocated once and reused: at most `slots` jobs run at a time, and the
//! memory for hashing is `slots x 7 MiB`, whatever the load. A slot is zeroed after each use,
//! so no password-derived block outlives its job.
//!
//! Imported hashes that need more than a slot (Dovecot's ARGON2ID is 64 MiB) or that are slow
//! (bcrypt beyond cost 10) run on a separate *legacy queue* with a memory budget of its own
//! (`legacy_hash_memory_mib`) and at most half the pool's threads: a cut-over day's first
//! logins, or guesses at migrated accounts, wait their turn there instead of allocating 64 MiB
//! per core at once or holding every slot of the pool for seconds. Each such hash is replaced by
//! cloudpop's own at the account's first successful login.

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::Mutex;
use tokio::sync::Semaphore;

/// Argon2id at one of OWASP's equivalent minimum costs: 7 MiB and 5 passes rather than 19 MiB
/// and 2, so that a burst of logins costs CPU time, not a burst of resident memory.
pub fn params() -> Params {
    Params::new(7 * 1024, 5, 1, None).expect("valid argon2 parameters")
}

/// Hash jobs, each running on the blocking pool with one slot of the pool's memory.
pub struct Hasher {
    permits: Semaphore,
    /// Slots not in use; one per permit, allocated on first use.
    free: Mutex<Vec<Box<[Block]>>>,
    /// The legacy queue: jobs at once, and its memory budget in KiB.
    legacy_jobs: Semaphore,
    legacy_kib: Semaphore,
    legacy_budget_kib: u32,
}

impl Hasher {
    /// A pool of `slots` working memories (`slots x 7 MiB` once all have been used), and a
    /// legacy queue allocating at most `legacy_budget_kib` at once.
    pub fn new(slots: usize, legacy_budget_kib: u32) -> Self {
        let slots = slots.max(1);
        Self {
            permits: Semaphore::new(slots),
            free: Mutex::new(Vec::with_capacity(slots)),
            legacy_jobs: Semaphore::new(slots.div_ceil(2)),
            legacy_kib: Semaphore::new(legacy_budget_kib as usize),
            legacy_budget_kib,
        }
    }

    /// Runs `job` on the legacy queue, holding `kib` of its memory budget.
    async fn run_legacy<T: Send + 'static>(&self, kib: u32, job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let _job = self.legacy_jobs.acquire().await.ok()?;
        let _memory = self.legacy_kib.acquire_many(kib.min(self.legacy_budget_kib)).await.ok()?;
        tokio::task::spawn_blocking(job).await.ok()
    }

    /// Runs `job` on the blocking pool with a slot of working memory.
    async fn run<T: Send + 'static>(&self, job: impl FnOnce(&mut [Block]) -> T + Send + 'static) -> Option<T> {
        let _permit = self.permits.acquire().await.ok()?;
        let blocks = crate::sync::lock(&self.free).pop();
        let mut blocks = blocks.unwrap_or_else(|| vec![Block::default(); params().block_count()].into_boxed_slice());
        let (blocks, result) = tokio::task::spawn_blocking(move || {
            let result = job(&mut blocks);
            blocks.fill(Block::default());
            (blocks, result)
        })
        .await
        .ok()?;
        crate::sync::lock(&self.free).push(blocks);
        Some(result)
    }

    /// A PHC string for `password` with a fresh random salt; `None` only if the job died.
    pub async fn hash(&self, password: String) -> Option<String> {
        self.run(move |blocks| hash_with(&password, blocks)).await.flatten()
    }

    /// Whether `password` matches the stored hash (a PHC string, or an imported hash in one of
    /// [`crate::accounts::schemes`]); a malformed hash never matches. Without a hash (an unknown
    /// user) a decoy is verified, so that takes as long as a wrong password.
    pub async fn verify(&self, phc: Option<String>, password: String) -> bool {
        let slot_kib = params().m_cost();
        if let Some(stored) = &phc
            && let Some(oversized) = crate::accounts::schemes::oversized(stored, slot_kib)
        {
            let stored = stored.clone();
            let verified =
                self.run_legacy(oversized.kib, move || match crate::accounts::schemes::is_imported(&stored) {
                    true => crate::accounts::schemes::verify(&stored, password.as_bytes()),
                    false => verify_with(&stored, password.as_bytes(), &mut []),
                });
            return verified.await.unwrap_or(false);
        }
        self.run(move |blocks| match &phc {
            Some(stored) if crate::accounts::schemes::is_imported(stored) => {
                crate::accounts::schemes::verify(stored, password.as_bytes())
            }
            Some(phc) => verify_with(phc, password.as_bytes(), blocks),
            None => {
                let _ = verify_with(decoy(blocks), password.as_bytes(), blocks);
                false
            }
        })
        .await
        .unwrap_or(false)
    }
}

/// Whether `stored` is a hash this version makes (argon2id with the current parameters); any
/// other (imported, or older parameters) is replaced at the next successful login.
pub fn is_current(stored: &str) -> bool {
    let params = params();
    let prefix = format!("$argon2id$v=19$m={},t={},p={}$", params.m_cost(), params.t_cost(), params.p_cost());
    stored.starts_with(&prefix)
}

/// A hash of nothing in particular, made once (with the first job's memory).
fn decoy(blocks: &mut [Block]) -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_with("decoy password for unknown users", blocks).expect("decoy hash"))
}

fn hash_with(password: &str, blocks: &mut [Block]) -> Option<String> {
    let params = params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; Salt::RECOMMENDED_LENGTH * 2];
    let salt_raw = salt.as_salt().decode_b64(&mut salt_bytes).ok()?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, blocks)
        .ok()?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).ok()?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).ok()?),
    };
    Some(hash.to_string())
}

/// Verifies with the slot's memory; a hash whose memory cost exceeds it (one imported with
/// other parameters, on the legacy queue) gets its own allocation.
fn verify_with(phc: &str, password: &[u8], blocks: &mut [Block]) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(hash.algorithm), Params::try_from(&hash)) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    let computed = if params.block_count() <= blocks.len() {
        argon.hash_password_into_with_memory(password, salt, out, &mut *blocks)
    } else {
        argon.hash_password_into(password, salt, out)
    };
    // `Output` compares in constant time.
    computed.is_ok() && Output::new(out).is_ok_and(|out| out == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordHasher;

    #[tokio::test]
    async fn hashes_verify_and_match_the_reference_implementation() {
        let hasher = Hasher::new(2, 64 * 1024);
        let ours = hasher.hash("correct horse".into()).await.unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{ours}");
        assert!(is_current(&ours));
        assert!(hasher.verify(Some(ours.clone()), "correct horse".into()).await);
        assert!(!hasher.verify(Some(ours.clone()), "correct horsE".into()).await);
        // A hash made by the argon2 crate's own path verifies here, and ours verifies there.
        let salt = SaltString::generate(&mut OsRng);
        let reference = Argon2::default().hash_password(b"battery staple", &salt).unwrap().to_string();
        assert!(hasher.verify(Some(reference), "battery staple".into()).await, "a 19 MiB reference hash");
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2::PasswordVerifier::verify_password(&Argon2::default(), b"correct horse", &parsed).is_ok());
        assert!(!hasher.verify(Some("not a hash".into()), "x".into()).await);
        assert!(!hasher.verify(None, "decoy password for unknown users".into()).await, "the decoy let someone in");
    }

    #[tokio::test]
    async fn slots_are_reused_and_zeroed() {
        let hasher = Hasher::new(1, 64 * 1024);
        for _ in 0..3 {
            hasher.hash("pw".into()).await.unwrap();
        }
        let free = hasher.free.lock().unwrap();
        assert_eq!(free.len(), 1, "one slot, allocated once");
        assert!(free[0].iter().all(|b| b.as_ref().iter().all(|w| *w == 0)), "a used slot was not zeroed");
    }
}
