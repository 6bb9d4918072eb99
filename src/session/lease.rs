//! A maildrop lock held by a session: renewed in the background for as long as the session
//! lives (even in the middle of a long RETR), released however the session ends. The same loop
//! keeps the session's entry in the pool-wide session registry fresh and notices when an
//! operator asks the session to end.

use crate::lock::{LeaseToken, MaildropLocks};
use crate::names::AccountName;
use crate::sessions::{SessionInfo, SessionRegistry};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

/// A lease on one maildrop, with its renewal task.
pub struct HeldLease {
    maildrop: AccountName,
    token: LeaseToken,
    locks: Arc<dyn MaildropLocks>,
    ttl: Duration,
    lost: CancellationToken,
    ended: CancellationToken,
    registration: Option<(Arc<dyn SessionRegistry>, String)>,
    renewer: JoinHandle<()>,
    released: bool,
}

/// Where the session is registered, and as what.
pub type Registration = (Arc<dyn SessionRegistry>, SessionInfo);

impl HeldLease {
    /// Registers the session (so it is listed as soon as the login answers) and starts renewing
    /// a freshly acquired lease every third of its lifetime.
    pub async fn hold(
        locks: Arc<dyn MaildropLocks>,
        maildrop: AccountName,
        token: LeaseToken,
        ttl: Duration,
        registration: Option<Registration>,
    ) -> Self {
        if let Some((registry, info)) = &registration
            && let Err(e) = registry.register(info, ttl).await
        {
            warn!(error = %e, "cannot register the session; it will not be listed");
        }
        let (lost, ended) = (CancellationToken::new(), CancellationToken::new());
        let registered = registration.as_ref().map(|(registry, info)| (registry.clone(), info.id.clone()));
        let renewer = tokio::spawn(
            renew_forever(
                Renewal { locks: locks.clone(), maildrop: maildrop.clone(), token: token.clone(), ttl, registration },
                lost.clone(),
                ended.clone(),
            )
            .in_current_span(),
        );
        Self { maildrop, token, locks, ttl, lost, ended, registration: registered, renewer, released: false }
    }

    /// Resolves when an operator asked this session to end.
    pub fn ended(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.ended.cancelled()
    }

    pub fn maildrop(&self) -> &AccountName {
        &self.maildrop
    }

    /// Resolves when the lease could not be renewed: the session must stop without changes.
    pub fn lost(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.lost.cancelled()
    }

    /// Renews once more and says whether the lease is still ours; called right before UPDATE.
    pub async fn confirm(&self) -> bool {
        if self.lost.is_cancelled() {
            return false;
        }
        match self.locks.renew(&self.maildrop, &self.token, self.ttl).await {
            Ok(true) => true,
            Ok(false) => {
                warn!("maildrop lease was lost before UPDATE");
                false
            }
            Err(e) => {
                warn!(error = %e, "cannot confirm the maildrop lease before UPDATE");
                false
            }
        }
    }

    /// Stops renewing and releases the lock (compare-and-delete on our token).
    pub async fn release(mut self) {
        self.released = true;
        self.renewer.abort();
        if let Some((registry, id)) = &self.registration {
            let _ = registry.unregister(id).await;
        }
        if let Err(e) = self.locks.release(&self.maildrop, &self.token).await {
            warn!(error = %e, "releasing the maildrop lock failed; it expires by itself");
        }
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        self.renewer.abort();
        if !self.released {
            let (locks, maildrop, token) = (self.locks.clone(), self.maildrop.clone(), self.token.clone());
            let registration = self.registration.take();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Some((registry, id)) = registration {
                        let _ = registry.unregister(&id).await;
                    }
                    let _ = locks.release(&maildrop, &token).await;
                });
            }
        }
    }
}

/// What the background loop keeps alive.
struct Renewal {
    locks: Arc<dyn MaildropLocks>,
    maildrop: AccountName,
    token: LeaseToken,
    ttl: Duration,
    registration: Option<Registration>,
}

async fn renew_forever(renewal: Renewal, lost: CancellationToken, ended: CancellationToken) {
    let Renewal { locks, maildrop, token, ttl, registration } = renewal;
    loop {
        tokio::time::sleep(ttl / 3).await;
        match locks.renew(&maildrop, &token, ttl).await {
            Ok(true) => {
                if let Some((registry, info)) = &registration {
                    // Registry trouble never ends a session: the lease is what matters.
                    let _ = registry.register(info, ttl).await;
                    if registry.end_requested(&info.id).await.unwrap_or(false) {
                        ended.cancel();
                        return;
                    }
                }
            }
            Ok(false) => {
                warn!("maildrop lease lost");
                lost.cancel();
                return;
            }
            Err(e) => {
                warn!(error = %e, "maildrop lease renewal failed");
                lost.cancel();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::LockError;
    use crate::lock::memory::MemoryLocks;
    use async_trait::async_trait;

    /// Grants leases but refuses every renewal, like a lock service that lost our key.
    struct Forgetful(MemoryLocks);

    #[async_trait]
    impl MaildropLocks for Forgetful {
        async fn acquire(&self, m: &AccountName, ttl: Duration) -> Result<Option<LeaseToken>, LockError> {
            self.0.acquire(m, ttl).await
        }
        async fn renew(&self, _: &AccountName, _: &LeaseToken, _: Duration) -> Result<bool, LockError> {
            Ok(false)
        }
        async fn release(&self, m: &AccountName, t: &LeaseToken) -> Result<(), LockError> {
            self.0.release(m, t).await
        }
        async fn force_release(&self, m: &AccountName) -> Result<bool, LockError> {
            self.0.force_release(m).await
        }
        async fn ping(&self) -> Result<(), LockError> {
            self.0.ping().await
        }
        async fn claim(&self, m: &AccountName, s: &str, ttl: Duration) -> Result<Option<LeaseToken>, LockError> {
            self.0.claim(m, s, ttl).await
        }
        async fn unclaim(&self, m: &AccountName, s: &str, t: &LeaseToken) -> Result<(), LockError> {
            self.0.unclaim(m, s, t).await
        }
    }

    #[tokio::test]
    async fn a_lease_that_cannot_be_renewed_is_reported_lost() {
        let locks: Arc<dyn MaildropLocks> = Arc::new(Forgetful(MemoryLocks::new()));
        let name = AccountName::parse("alice").unwrap();
        let token = locks.acquire(&name, Duration::from_millis(60)).await.unwrap().unwrap();
        let lease = HeldLease::hold(locks.clone(), name.clone(), token, Duration::from_millis(60), None).await;
        tokio::time::timeout(Duration::from_secs(5), lease.lost()).await.expect("loss never reported");
        assert!(!lease.confirm().await);
        lease.release().await;
        assert!(locks.acquire(&name, Duration::from_secs(1)).await.unwrap().is_some(), "release did not free the lock");
    }

    #[tokio::test]
    async fn a_healthy_lease_outlives_its_ttl() {
        let locks: Arc<dyn MaildropLocks> = Arc::new(MemoryLocks::new());
        let name = AccountName::parse("bob").unwrap();
        let ttl = Duration::from_millis(90);
        let token = locks.acquire(&name, ttl).await.unwrap().unwrap();
        let lease = HeldLease::hold(locks.clone(), name.clone(), token, ttl, None).await;
        tokio::time::sleep(ttl * 4).await;
        assert!(locks.acquire(&name, ttl).await.unwrap().is_none(), "renewal did not keep the lease");
        assert!(lease.confirm().await);
        lease.release().await;
    }
}
