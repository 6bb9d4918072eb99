//! Login: throttle check, credential checks (and what SCRAM needs from the connection: the
//! stored credentials, a nonce, the channel binding), the maildrop lock, LOGIN-DELAY and the
//! snapshot taken at login, each a stage with its own span (`pop3.login`, `maildrop.lock`,
//! `maildrop.open`).

use super::Session;
use crate::accounts::LoginError;
use crate::auth::Proof;
use crate::coord::lock::LeaseToken;
use crate::coord::lock::held::HeldLease;
use crate::coord::throttle::{Admission, Attempt, AttemptId, LoginThrottle, Settlement, Subject};
use crate::metrics::{GaugeGuard, LoginLabels, OutcomeLabels, ReasonLabels, metrics};
use crate::names::AccountName;
use crate::protocol::machine::LoginOutcome;
use crate::protocol::maildrop::Listing;
use crate::protocol::sasl::{Credentials, Presented};
use crate::store::AccountRecord;
use crate::store::observed::count_calls;
use std::sync::Arc;
use std::time::Duration;
use tracing::field::Empty;
use tracing::{Instrument, info, info_span, warn};

/// The metric and span name of a login's result.
fn label(outcome: &LoginOutcome) -> &'static str {
    match outcome {
        LoginOutcome::LoggedIn { .. } => "ok",
        LoginOutcome::BadCredentials => "bad_credentials",
        LoginOutcome::Throttled => "throttled",
        LoginOutcome::InUse => "in_use",
        LoginOutcome::TooSoon(_) => "login_delay",
        LoginOutcome::Unavailable(_) => "unavailable",
    }
}

impl Session<'_> {
    /// The SCRAM credentials to challenge `user` with (a decoy's for an unknown user) and a
    /// fresh server nonce; `None` when the account store did not answer.
    pub(super) async fn scram_lookup(&self, user: &str) -> Option<(crate::protocol::scram::StoredCredentials, String)> {
        match self.ctx.backends.auth.scram_credentials(user).await {
            Ok(credentials) => Some((credentials, scram_nonce())),
            Err(e) => {
                warn!(error = %e, "SCRAM credentials lookup failed");
                None
            }
        }
    }

    /// Verifies the credentials, locks the maildrop and takes the snapshot.
    pub(super) async fn login(&mut self, creds: Credentials) -> LoginOutcome {
        let mechanism = creds.mechanism.as_str();
        // Never the password or the SASL response: only how the client logged in and how it went.
        let span = info_span!(
            "pop3.login",
            mechanism,
            outcome = Empty,
            throttle = Empty,
            hash_ms = Empty,
            otel.status_code = Empty
        );
        let outcome = self.login_stages(creds).instrument(span.clone()).await;
        let result = label(&outcome);
        span.record("outcome", result);
        if matches!(outcome, LoginOutcome::Unavailable(_)) {
            span.record("otel.status_code", "ERROR");
        }
        metrics().logins.get_or_create(&LoginLabels { mechanism, outcome: result }).inc();
        outcome
    }

    /// The login pipeline: throttle, verify, settle, lock, LOGIN-DELAY, open. Each stage
    /// either hands the next one what it needs or ends the login with its refusal.
    async fn login_stages(&mut self, creds: Credentials) -> LoginOutcome {
        let pipeline = async {
            let attempt = self.admit_attempt(&creds).await?;
            let verified = self.verify(&creds).await;
            attempt.settle(settlement(&verified)).await;
            let account = verified_account(&creds, verified)?;
            let name = AccountName::parse(&account.name)
                .map_err(|_| LoginOutcome::Unavailable("corrupt account record".into()))?;
            let token = self.lock(&name).await?;
            let lease = self.hold(&name, token).await;
            // LOGIN-DELAY is checked only once the maildrop is ours, so a refused `[IN-USE]`
            // login does not count as a login.
            if let Err(refusal) = self.login_delay(&name, &account).await {
                lease.release().await;
                return Err(refusal);
            }
            let opened = self.open_maildrop(&name, lease, &account).await;
            if matches!(opened, LoginOutcome::Unavailable(_)) && account.login_delay_secs > 0 {
                // No login happened: LOGIN-DELAY must not keep the user out for its length.
                if let Err(e) = self.ctx.backends.throttle.forget_login(&name).await {
                    warn!(error = %e, "cannot take back a LOGIN-DELAY record");
                }
            }
            Ok(opened)
        };
        pipeline.await.unwrap_or_else(|refusal| refusal)
    }

    /// Admits the attempt in the throttle, waiting (up to [`THROTTLE_WAIT`]) while attempts
    /// in flight from the same address or at the same account fill the budget left; or refuses
    /// the login (too many failures, still full after the wait, or the throttle cannot be asked).
    async fn admit_attempt(&self, creds: &Credentials) -> Result<InFlight, LoginOutcome> {
        let current = tracing::Span::current();
        let throttle = &self.ctx.backends.throttle;
        let subject = self.ctx.backends.auth.throttle_subject(&creds.user);
        let (id, peer) = (AttemptId::random(), self.peer.ip());
        let give_up = tokio::time::Instant::now() + THROTTLE_WAIT;
        let mut pause = Duration::from_millis(5);
        loop {
            let refusal = match throttle.admit(&subject, peer, id).await {
                Ok(Admission::Admitted(attempt)) => {
                    current.record("throttle", "allowed");
                    let throttle = throttle.clone();
                    return Ok(InFlight { unsettled: Some((throttle, subject, peer, attempt)) });
                }
                Ok(Admission::Wait) if tokio::time::Instant::now() < give_up => {
                    // Jittered, growing pauses: waiting logins do not ask in lockstep.
                    tokio::time::sleep(pause + Duration::from_micros(u64::from(id.0 as u16) % 10_000)).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                    continue;
                }
                Ok(Admission::Wait) => {
                    current.record("throttle", "busy");
                    metrics().throttle_refusals.get_or_create(&ReasonLabels { reason: "in_flight" }).inc();
                    info!(user = %creds.user.escape_debug(), "login refused: too many logins in flight");
                    LoginOutcome::Unavailable("too many logins in progress".into())
                }
                Ok(Admission::Refused) => {
                    current.record("throttle", "refused");
                    metrics().throttle_refusals.get_or_create(&ReasonLabels { reason: "failures" }).inc();
                    info!(user = %creds.user.escape_debug(), "login refused: too many recent failures");
                    LoginOutcome::Throttled
                }
                Err(e) => {
                    current.record("throttle", "unavailable");
                    warn!(error = %e, "login throttle unavailable");
                    LoginOutcome::Unavailable("coordination service unavailable".into())
                }
            };
            return Err(refusal);
        }
    }

    /// Checks what the client presented (a SCRAM proof that did not verify checks nothing).
    async fn verify(&self, creds: &Credentials) -> Result<Option<AccountRecord>, LoginError> {
        let proof = match &creds.presented {
            Presented::Password(password) => Proof::Password(password),
            Presented::Scram { verified: true } => Proof::Scram,
            Presented::Scram { verified: false } => return Ok(None),
            Presented::Token(token) => Proof::Bearer(token),
        };
        self.ctx.backends.auth.login(&creds.user, proof, self.peer.ip()).await
    }

    /// RFC 2449 LOGIN-DELAY: too soon after the last login is refused.
    async fn login_delay(&self, name: &AccountName, account: &AccountRecord) -> Result<(), LoginOutcome> {
        let delay = Duration::from_secs(account.login_delay_secs);
        if delay.is_zero() {
            return Ok(());
        }
        match self.ctx.backends.throttle.begin_login(name, delay).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                info!(user = %name, "login refused: LOGIN-DELAY");
                metrics().throttle_refusals.get_or_create(&ReasonLabels { reason: "login_delay" }).inc();
                Err(LoginOutcome::TooSoon(account.login_delay_secs))
            }
            Err(e) => {
                warn!(error = %e, "login delay check failed");
                Err(LoginOutcome::Unavailable("coordination service unavailable".into()))
            }
        }
    }

    /// Takes the maildrop lock (`maildrop.lock`).
    async fn lock(&self, name: &AccountName) -> Result<LeaseToken, LoginOutcome> {
        let span = info_span!("maildrop.lock", outcome = Empty);
        let acquired =
            self.ctx.backends.locks.acquire(name, self.ctx.settings.lock_lease).instrument(span.clone()).await;
        let (outcome, result) = match acquired {
            Ok(Some(token)) => ("acquired", Ok(token)),
            Ok(None) => {
                info!(user = %name, "maildrop in use");
                ("in_use", Err(LoginOutcome::InUse))
            }
            Err(e) => {
                warn!(error = %e, "maildrop lock failed");
                ("unavailable", Err(LoginOutcome::Unavailable("lock service unavailable".into())))
            }
        };
        span.record("outcome", outcome);
        metrics().lock_acquisitions.get_or_create(&OutcomeLabels { outcome }).inc();
        result
    }

    /// Registers the session and starts renewing its lease.
    async fn hold(&self, name: &AccountName, token: LeaseToken) -> HeldLease {
        let ctx = self.ctx;
        let info = crate::coord::registry::SessionInfo {
            id: self.id.clone(),
            account: name.to_string(),
            peer: self.peer.to_string(),
            frontend: crate::coord::registry::frontend_name(),
            tls: self.machine.tls_active(),
            started_unix: crate::clock::unix_secs(),
        };
        let registration = Some((ctx.backends.sessions.clone(), info));
        HeldLease::hold(ctx.backends.locks.clone(), name.clone(), token, ctx.settings.lock_lease, registration).await
    }

    /// Takes the snapshot (`maildrop.open`) and enters TRANSACTION.
    async fn open_maildrop(&mut self, name: &AccountName, lease: HeldLease, account: &AccountRecord) -> LoginOutcome {
        let span = info_span!(
            "maildrop.open",
            messages = Empty,
            octets = Empty,
            store_calls = Empty,
            otel.status_code = Empty
        );
        let listing = count_calls(self.ctx.backends.messages.view(name)).instrument(span.clone()).await;
        span.record("store_calls", listing.1);
        match listing.0 {
            Ok(view) => {
                let list = view.messages;
                self.upkeep = view.upkeep;
                lease.saw(view.index);
                let octets: u64 = list.iter().map(|m| m.size).sum();
                span.record("messages", list.len());
                span.record("octets", octets);
                self.span.record("account", name.as_str());
                info!(user = %name, messages = list.len(), "logged in");
                self.lease = Some(lease);
                self.address_slot.release();
                self.in_transaction = Some(GaugeGuard::hold(&metrics().sessions_in_transaction));
                self.expire_days = account.expire_days;
                LoginOutcome::LoggedIn {
                    listing: list
                        .into_iter()
                        .map(|m| Listing { uid: crate::store::ids::uidl_of(&m.id), key: m.id, size: m.size })
                        .collect(),
                    login_delay_secs: account.login_delay_secs,
                    expire_days: account.expire_days,
                }
            }
            Err(e) => {
                span.record("otel.status_code", "ERROR");
                warn!(error = %e, "listing maildrop failed");
                lease.release().await;
                LoginOutcome::Unavailable("message store unavailable".into())
            }
        }
    }
}

/// How long a login waits for attempts in flight to settle before it is refused as busy.
const THROTTLE_WAIT: Duration = Duration::from_secs(10);

/// What a check's result means for the throttle.
fn settlement(verified: &Result<Option<AccountRecord>, LoginError>) -> Settlement {
    match verified {
        Ok(Some(_)) => Settlement::Succeeded,
        Ok(None) => Settlement::Failed,
        Err(_) => Settlement::Unchecked,
    }
}

/// An attempt admitted by the throttle, until settled. Dropped unsettled (the client left, the
/// login deadline passed), it is settled as unchecked in the background, so it does not hold
/// its address's budget until [`crate::coord::throttle::IN_FLIGHT_FOR`].
struct InFlight {
    unsettled: Option<(Arc<dyn LoginThrottle>, Subject, std::net::IpAddr, Attempt)>,
}

impl InFlight {
    async fn settle(mut self, settlement: Settlement) {
        let Some((throttle, subject, peer, attempt)) = self.unsettled.take() else { return };
        if let Err(e) = throttle.settle(&subject, peer, attempt, settlement).await {
            warn!(error = %e, "cannot settle a login attempt in the throttle");
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some((throttle, subject, peer, attempt)) = self.unsettled.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = throttle.settle(&subject, peer, attempt, Settlement::Unchecked).await;
            });
        }
    }
}

/// The account a check verified, or the login's refusal.
fn verified_account(
    creds: &Credentials,
    verified: Result<Option<AccountRecord>, LoginError>,
) -> Result<AccountRecord, LoginOutcome> {
    match verified {
        Ok(Some(account)) => Ok(account),
        Ok(None) => {
            info!(user = %creds.user.escape_debug(), "login failed");
            Err(LoginOutcome::BadCredentials)
        }
        Err(LoginError::Busy) => {
            warn!("login refused: too many logins waiting for a password check");
            Err(LoginOutcome::Unavailable("too many logins in progress".into()))
        }
        Err(LoginError::Store(e)) => {
            warn!(error = %e, "account lookup failed");
            Err(LoginOutcome::Unavailable("account store unavailable".into()))
        }
        Err(LoginError::Directory(e)) => {
            warn!(error = %e, "login could not be checked");
            Err(LoginOutcome::Unavailable("authentication service unavailable".into()))
        }
    }
}

/// The connection's `tls-exporter` channel binding (RFC 9266) for SCRAM-SHA-256-PLUS. Only
/// over TLS 1.3: a TLS 1.2 exporter is safe only with the extended master secret, which a
/// server cannot confirm through rustls.
pub(super) fn channel_binding<S>(stream: &tokio_rustls::server::TlsStream<S>) -> Option<Vec<u8>> {
    let conn = stream.get_ref().1;
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None).ok()
}

/// A fresh SCRAM server nonce: 18 random bytes as base64 (no commas).
fn scram_nonce() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).expect("operating system random source");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
