//! Readiness: whether this frontend should receive new connections.
//!
//! One probe loop per process asks the store and the lock service something cheap (a HEAD of a
//! fixed key, a Redis PING) every few seconds. `/readyz`, the gRPC health service and the
//! `cloudpop_ready` gauge all read the same state, so they never disagree. Draining (after
//! SIGTERM) turns readiness off at once, whatever the probes say.

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
    /// Why the last probe failed, if it did (no secrets: backend error texts only).
    pub failure: Option<String>,
    /// Set on SIGTERM and never cleared.
    pub draining: bool,
}

impl State {
    /// Ready: not draining, the last probe succeeded, and recently.
    pub fn is_ready(&self) -> bool {
        !self.draining && self.failure.is_none() && self.last_ok.is_some_and(|t| t.elapsed() < PROBE_INTERVAL * 3)
    }

    /// A one-line explanation for `/readyz`.
    pub fn describe(&self) -> String {
        match (self.draining, &self.failure, self.last_ok) {
            (true, _, _) => "draining: the server is shutting down".into(),
            (false, Some(why), _) => format!("not ready: {why}"),
            (false, None, None) => "not ready: no probe has completed yet".into(),
            (false, None, Some(t)) if t.elapsed() >= PROBE_INTERVAL * 3 => "not ready: probes are stale".into(),
            (false, None, Some(_)) => "ready".into(),
        }
    }
}

/// The shared readiness state of the process.
#[derive(Clone)]
pub struct Readiness {
    state: watch::Sender<State>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self { state: watch::Sender::new(State { last_ok: None, failure: None, draining: false }) }
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

    /// Records one probe: `None` when it succeeded, else why it failed.
    fn record(&self, failure: Option<String>) {
        let was_ready = self.state.borrow().is_ready();
        self.state.send_modify(|s| {
            if failure.is_none() {
                s.last_ok = Some(Instant::now());
            }
            s.failure = failure;
        });
        let now = self.state.borrow().clone();
        metrics().ready.set(i64::from(now.is_ready()));
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
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        loop {
            let failure = match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("probe timed out".into()),
            };
            self.record(failure);
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
    fn ready_only_after_a_fresh_successful_probe_and_never_while_draining() {
        let r = Readiness::default();
        assert!(!r.current().is_ready(), "ready before any probe");
        r.record(None);
        assert!(r.current().is_ready());
        r.record(Some("lock service: redis: io error".into()));
        assert!(!r.current().is_ready());
        assert!(r.current().describe().contains("redis"));
        r.record(None);
        assert!(r.current().is_ready());
        r.start_draining();
        r.record(None);
        assert!(!r.current().is_ready());
        assert!(r.current().describe().starts_with("draining"));
    }
}
