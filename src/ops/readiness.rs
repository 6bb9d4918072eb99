//! Readiness: whether this frontend should receive new connections.
//!
//! One probe loop per process asks the store and the lock service something cheap (a HEAD of a
//! fixed key, a Redis PING) every few seconds. `/readyz`, the gRPC health service and the
//! `cloudpop_ready` gauge all read the same state, so they never disagree. Draining (after
//! SIGTERM) turns readiness off at once, whatever the probes say.
//!
//! A frontend is ready once its backends have answered a probe at least once (a pod started
//! with a wrong address or wrong credentials never is, so a rollout stops there). An outage of
//! a backend after that leaves it ready but *degraded*: the store and Redis are shared by the
//! whole pool, so taking every pod out of the Service would only turn POP3 clients'
//! `-ERR [SYS/TEMP]` into connection refused, and mail clients handle the first far better
//! (they keep the account's settings and try again at the next poll). `/readyz` says
//! `ready, degraded: ...`, and `cloudpop_backends_healthy` is 0 meanwhile.

use crate::metrics::metrics;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the backends are probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Longest wait for one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What readiness is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// When the store and lock service last both answered; `None` before the first success.
    pub last_ok: Option<Instant>,
    /// When the last probe ended, answered or not (the probe loop is alive).
    pub last_probe: Option<Instant>,
    /// Why the last probe failed, if it did (no secrets: backend error texts only).
    pub failure: Option<String>,
    /// What the last successful probe warned of (a host clock far from the pool's).
    pub warning: Option<String>,
    /// Set on SIGTERM and never cleared.
    pub draining: bool,
}

impl State {
    /// Ready: not draining, the backends answered at least once, and the probes are alive.
    pub fn is_ready(&self) -> bool {
        !self.draining && self.last_ok.is_some() && self.last_probe.is_some_and(|t| t.elapsed() < PROBE_INTERVAL * 3)
    }

    /// A one-line explanation for `/readyz`.
    pub fn describe(&self) -> String {
        match (self.draining, &self.failure, self.last_ok, self.last_probe) {
            (true, ..) => "draining: the server is shutting down".into(),
            (false, Some(why), None, _) => format!("not ready: {why}"),
            (false, None, None, _) => "not ready: no probe has completed yet".into(),
            (false, _, Some(_), probed) if probed.is_none_or(|t| t.elapsed() >= PROBE_INTERVAL * 3) => {
                "not ready: probes are stale".into()
            }
            (false, Some(why), Some(_), _) => format!("ready, degraded: {why}"),
            (false, None, Some(_), _) => match &self.warning {
                Some(warning) => format!("ready, degraded: {warning}"),
                None => "ready".into(),
            },
        }
    }
}

/// How one probe went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// The backends answered; with what they warned of (a host clock far from the pool's).
    Answered { warning: Option<String> },
    /// Why they did not (no secrets: backend error texts only).
    Failed(String),
}

/// The shared readiness state of the process.
#[derive(Clone)]
pub struct Readiness {
    state: watch::Sender<State>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            state: watch::Sender::new(State {
                last_ok: None,
                last_probe: None,
                failure: None,
                warning: None,
                draining: false,
            }),
        }
    }
}

impl Readiness {
    pub fn current(&self) -> State {
        self.state.borrow().clone()
    }

    /// Changes whenever the state changes (for the gRPC health service).
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state.subscribe()
    }

    /// Turns readiness off for good: the load balancer should stop sending connections.
    pub fn start_draining(&self) {
        self.state.send_modify(|s| s.draining = true);
        metrics().draining.set(1);
        metrics().ready.set(0);
    }

    /// Records one probe.
    fn record(&self, probed: Probe) {
        let was_ready = self.state.borrow().is_ready();
        let was_healthy = self.state.borrow().failure.is_none() && self.state.borrow().warning.is_none();
        self.state.send_modify(|s| {
            let now = Instant::now();
            s.last_probe = Some(now);
            match probed {
                Probe::Answered { warning } => {
                    s.last_ok = Some(now);
                    (s.failure, s.warning) = (None, warning);
                }
                Probe::Failed(why) => s.failure = Some(why),
            }
        });
        let now = self.state.borrow().clone();
        let healthy = now.failure.is_none() && now.warning.is_none();
        metrics().ready.set(i64::from(now.is_ready()));
        metrics().backends_healthy.set(i64::from(healthy));
        if was_healthy && !healthy && now.is_ready() {
            warn!(reason = %now.describe(), "degraded; still serving (-ERR [SYS/TEMP] where a backend is needed)");
        }
        if was_ready != now.is_ready() {
            match now.is_ready() {
                true => info!("ready"),
                false => warn!(reason = %now.describe(), "not ready"),
            }
        }
    }

    /// Runs `probe` (the store's and the lock service's cheapest requests) until `stop` is
    /// cancelled; a failure's text (no secrets: backend error texts only) is what `/readyz` says.
    pub async fn probe_forever<F, Fut, E>(self, probe: F, stop: CancellationToken)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<String>, E>>,
        E: std::fmt::Display,
    {
        loop {
            let probed = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(warning)) => Probe::Answered { warning },
                Ok(Err(e)) => Probe::Failed(e.to_string()),
                Err(_) => Probe::Failed("probe timed out".into()),
            };
            self.record(probed);
            tokio::select! {
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_a_successful_probe_degraded_after_and_never_while_draining() {
        let r = Readiness::default();
        assert!(!r.current().is_ready(), "ready before any probe");
        r.record(Probe::Failed("lock service: redis: io error".into()));
        assert!(!r.current().is_ready(), "ready before the backends ever answered");
        assert_eq!(r.current().describe(), "not ready: lock service: redis: io error");
        r.record(Probe::Answered { warning: None });
        assert!(r.current().is_ready());
        // A shared backend's outage later leaves the pod in the Service, degraded.
        r.record(Probe::Failed("lock service: redis: io error".into()));
        assert!(r.current().is_ready());
        assert_eq!(r.current().describe(), "ready, degraded: lock service: redis: io error");
        r.record(Probe::Answered { warning: Some("clock off".into()) });
        assert_eq!(r.current().describe(), "ready, degraded: clock off");
        r.record(Probe::Answered { warning: None });
        assert!(r.current().is_ready());
        r.start_draining();
        r.record(Probe::Answered { warning: None });
        assert!(!r.current().is_ready());
        assert!(r.current().describe().starts_with("draining"));
    }
}
