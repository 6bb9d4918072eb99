//! The process's Prometheus metrics: every family in one place, with help text and units.
//!
//! Labels only ever take values from fixed sets written in the code (listener roles, verbs,
//! outcomes, S3 operation names), never an account name, address or id, so the number of series
//! stays bounded however many users a pool serves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::LazyLock;
use std::time::Duration;

/// `listener`: `pop3` (STLS), `pop3s` (implicit TLS), `api`, `lmtp`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub listener: &'static str,
    /// `limit` (max_connections), `address_limit` (max_connections_per_address),
    /// `proxy_untrusted`, `proxy_invalid`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    pub listener: &'static str,
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    /// `USER`, `PLAIN`, `LOGIN`.
    pub mechanism: &'static str,
    /// `ok`, `bad_credentials`, `throttled`, `in_use`, `login_delay`, `unavailable`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// `fs` or `s3`.
    pub backend: &'static str,
    pub operation: &'static str,
    /// `ok`, `not_found`, `unavailable`, `failed`, `invalid`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreTimeLabels {
    pub backend: &'static str,
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct S3Labels {
    /// The S3 API operation, e.g. `GetObject`, `ListObjectsV2`.
    pub operation: &'static str,
    /// HTTP status class `2xx` .. `5xx`, or `error` when no response arrived.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// `grpc` or `lmtp`.
    pub via: &'static str,
    /// `stored`, `duplicate`, `unknown_mailbox`, `disabled`, `over_quota`, `temporary_failure`.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `tls` or `api_tokens`.
    pub what: &'static str,
    /// `ok` or `failed`.
    pub outcome: &'static str,
}

pub mod known;

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 0.5 ms to about 33 s.
fn latency() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 17))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub connections_accepted: Family<ListenerLabels, Counter>,
    pub connections_open: Family<ListenerLabels, Gauge>,
    pub connections_refused: Family<RefusedLabels, Counter>,
    pub tls_handshakes: Family<TlsLabels, Counter>,
    pub logins: Family<LoginLabels, Counter>,
    pub sessions_in_transaction: Gauge,
    pub commands: Family<VerbLabels, Counter>,
    pub retrieved_bytes: Family<VerbLabels, Counter>,
    pub retrieve_first_byte: Histograms<VerbLabels>,
    pub retrieve_duration: Histograms<VerbLabels>,
    pub store_operations: Family<StoreLabels, Counter>,
    pub store_duration: Histograms<StoreTimeLabels>,
    pub s3_requests: Family<S3Labels, Counter>,
    pub lock_acquisitions: Family<OutcomeLabels, Counter>,
    pub throttle_refusals: Family<ReasonLabels, Counter>,
    pub password_hash_duration: Histogram,
    pub directory_duration: Histogram,
    pub credential_cache_hits: Counter,
    pub credential_cache_shared_hits: Counter,
    pub read_ahead: Family<OutcomeLabels, Counter>,
    pub password_rehashes: Counter,
    pub account_cache_hits: Counter,
    pub sweep_rounds: Counter,
    pub ingest_deliveries: Family<IngestLabels, Counter>,
    pub ingest_bytes: Family<ListenerLabels, Counter>,
    pub spans_dropped: Counter,
    pub reloads: Family<ReloadLabels, Counter>,
    pub ready: Gauge,
    pub backends_healthy: Gauge,
    pub clock_offset_ms: Gauge,
    pub draining: Gauge,
}

impl Metrics {
    fn new() -> Self {
        let m = Self {
            registry: Registry::with_prefix("cloudpop"),
            connections_accepted: Family::default(),
            connections_open: Family::default(),
            connections_refused: Family::default(),
            tls_handshakes: Family::default(),
            logins: Family::default(),
            sessions_in_transaction: Gauge::default(),
            commands: Family::default(),
            retrieved_bytes: Family::default(),
            retrieve_first_byte: Family::new_with_constructor(latency),
            retrieve_duration: Family::new_with_constructor(latency),
            store_operations: Family::default(),
            store_duration: Family::new_with_constructor(latency),
            s3_requests: Family::default(),
            lock_acquisitions: Family::default(),
            throttle_refusals: Family::default(),
            password_hash_duration: latency(),
            directory_duration: latency(),
            credential_cache_hits: Counter::default(),
            credential_cache_shared_hits: Counter::default(),
            read_ahead: Family::default(),
            password_rehashes: Counter::default(),
            account_cache_hits: Counter::default(),
            sweep_rounds: Counter::default(),
            ingest_deliveries: Family::default(),
            ingest_bytes: Family::default(),
            spans_dropped: Counter::default(),
            reloads: Family::default(),
            ready: Gauge::default(),
            backends_healthy: Gauge::default(),
            clock_offset_ms: Gauge::default(),
            draining: Gauge::default(),
        };
        m.register().with_known_series()
    }

    /// Creates every series of [`known`] label values at zero (S3's wait for [`Self::with_s3`]).
    fn with_known_series(self) -> Self {
        for listener in known::CONNECTION_LISTENERS {
            zero(&self.connections_accepted, &ListenerLabels { listener });
            zero(&self.connections_open, &ListenerLabels { listener });
        }
        for (listener, reasons) in known::REFUSALS {
            for &reason in reasons {
                zero(&self.connections_refused, &RefusedLabels { listener, reason });
            }
        }
        for listener in known::TLS_LISTENERS {
            for outcome in known::OK_FAILED {
                zero(&self.tls_handshakes, &TlsLabels { listener, outcome });
            }
        }
        for mechanism in known::MECHANISMS {
            for outcome in known::LOGIN_OUTCOMES {
                zero(&self.logins, &LoginLabels { mechanism, outcome });
            }
        }
        for verb in known::VERBS.into_iter().chain([known::UNKNOWN_VERB]) {
            zero(&self.commands, &VerbLabels { verb });
        }
        for verb in known::RETRIEVE_VERBS {
            zero(&self.retrieved_bytes, &VerbLabels { verb });
            zero(&self.retrieve_first_byte, &VerbLabels { verb });
            zero(&self.retrieve_duration, &VerbLabels { verb });
        }
        for outcome in known::LOCK_OUTCOMES {
            zero(&self.lock_acquisitions, &OutcomeLabels { outcome });
        }
        for outcome in known::READ_AHEAD_OUTCOMES {
            zero(&self.read_ahead, &OutcomeLabels { outcome });
        }
        for reason in known::THROTTLE_REASONS {
            zero(&self.throttle_refusals, &ReasonLabels { reason });
        }
        for (via, listener) in known::INGEST_VIA {
            zero(&self.ingest_bytes, &ListenerLabels { listener });
            for status in known::INGEST_STATUSES {
                zero(&self.ingest_deliveries, &IngestLabels { via, status });
            }
        }
        for what in known::RELOADS {
            for outcome in known::OK_FAILED {
                zero(&self.reloads, &ReloadLabels { what, outcome });
            }
        }
        self
    }

    /// Creates the object store's request series at zero: called when an S3 store is built,
    /// so an embedded server shows none.
    pub fn with_s3(&self) {
        for operation in known::S3_OPERATIONS {
            for status in known::S3_STATUSES {
                zero(&self.s3_requests, &S3Labels { operation, status });
            }
        }
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register("connections_accepted", "Connections accepted, by listener", self.connections_accepted.clone());
        r.register("connections_open", "Connections open now, by listener", self.connections_open.clone());
        r.register(
            "connections_refused",
            "Connections refused before any command (limit, untrusted or invalid PROXY header)",
            self.connections_refused.clone(),
        );
        r.register("tls_handshakes", "TLS handshakes, by listener and outcome", self.tls_handshakes.clone());
        r.register("logins", "POP3 login attempts, by mechanism and outcome", self.logins.clone());
        r.register(
            "sessions_in_transaction",
            "POP3 sessions holding a maildrop (TRANSACTION state)",
            self.sessions_in_transaction.clone(),
        );
        r.register("commands", "POP3 commands received, by verb", self.commands.clone());
        r.register_with_unit(
            "retrieved",
            "Message octets sent by RETR and TOP, before dot-stuffing",
            Unit::Bytes,
            self.retrieved_bytes.clone(),
        );
        r.register_with_unit(
            "retrieve_first_byte",
            "Time from a RETR or TOP command to the first message octet sent",
            Unit::Seconds,
            self.retrieve_first_byte.clone(),
        );
        r.register_with_unit(
            "retrieve_duration",
            "Time to send a whole RETR or TOP response",
            Unit::Seconds,
            self.retrieve_duration.clone(),
        );
        r.register(
            "store_operations",
            "Message and account store operations, by backend, operation and outcome",
            self.store_operations.clone(),
        );
        r.register_with_unit(
            "store_operation_duration",
            "Latency of store operations (for open: until the body starts)",
            Unit::Seconds,
            self.store_duration.clone(),
        );
        r.register(
            "s3_requests",
            "HTTP requests sent to the object store, retries included, by S3 API operation (for cost accounting)",
            self.s3_requests.clone(),
        );
        r.register("lock_acquisitions", "Maildrop lock attempts, by outcome", self.lock_acquisitions.clone());
        r.register(
            "throttle_refusals",
            "Logins refused by the failed-login throttle or LOGIN-DELAY",
            self.throttle_refusals.clone(),
        );
        r.register_with_unit(
            "password_hash_duration",
            "Time to verify or compute one argon2id password hash",
            Unit::Seconds,
            self.password_hash_duration.clone(),
        );
        r.register_with_unit(
            "directory_check_duration",
            "Time for one answer from the LDAP or HTTP directory (auth_backend), failures included",
            Unit::Seconds,
            self.directory_duration.clone(),
        );
        r.register(
            "credential_cache_hits",
            "Logins accepted from the verified-credential cache, without a password hash",
            self.credential_cache_hits.clone(),
        );
        r.register(
            "credential_cache_shared_hits",
            "Logins accepted from the pool-wide verified-credential cache in Redis, without a password hash",
            self.credential_cache_shared_hits.clone(),
        );
        r.register(
            "read_ahead",
            "Messages read ahead of RETR from the object store, by whether a RETR used them",
            self.read_ahead.clone(),
        );
        r.register(
            "password_rehashes",
            "Imported or outdated password hashes replaced with argon2id at a successful login",
            self.password_rehashes.clone(),
        );
        r.register(
            "account_cache_hits",
            "Account records for logins and deliveries taken from the cache instead of the store",
            self.account_cache_hits.clone(),
        );
        r.register(
            "sweep_rounds",
            "Retention sweep rounds this frontend ran (one frontend of the pool per interval)",
            self.sweep_rounds.clone(),
        );
        r.register("ingest_deliveries", "Per-recipient delivery outcomes", self.ingest_deliveries.clone());
        r.register_with_unit(
            "ingest",
            "Octets of messages accepted for delivery (once per message), by listener",
            Unit::Bytes,
            self.ingest_bytes.clone(),
        );
        r.register(
            "spans_dropped",
            "Trace spans dropped because the export queue was full or the collector failed",
            self.spans_dropped.clone(),
        );
        r.register("reloads", "Reloads of certificates and token files, by outcome", self.reloads.clone());
        r.register("ready", "1 while the process reports ready", self.ready.clone());
        r.register(
            "backends_healthy",
            "1 while the last probe succeeded: the message store and the lock service answered, and the host clock agrees with the pool's",
            self.backends_healthy.clone(),
        );
        r.register(
            "clock_offset_ms",
            "How far the pool's clock (Redis TIME) is ahead of this host's, in milliseconds",
            self.clock_offset_ms.clone(),
        );
        r.register("draining", "1 after SIGTERM, while the process drains", self.draining.clone());
        self
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }

    /// Counts one store operation and its latency.
    pub fn store_call(&self, backend: &'static str, operation: &'static str, outcome: &'static str, took: Duration) {
        self.store_operations.get_or_create(&StoreLabels { backend, operation, outcome }).inc();
        self.store_duration.get_or_create(&StoreTimeLabels { backend, operation }).observe(took.as_secs_f64());
    }
}

/// Creates a family's series for `labels` (at zero) if it is not there yet.
fn zero<L, M, C>(family: &Family<L, M, C>, labels: &L)
where
    L: Clone + std::hash::Hash + Eq,
    C: prometheus_client::metrics::family::MetricConstructor<M>,
{
    drop(family.get_or_create(labels));
}

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Counts a value up while alive: a connection open, a session in TRANSACTION.
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn hold(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts one reload of certificates (`what = "tls"`) or token files (`"api_tokens"`).
pub fn count_reload(what: &'static str, outcome: &'static str) {
    metrics().reloads.get_or_create(&ReloadLabels { what, outcome }).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed_with_units_and_help() {
        let m = Metrics::new();
        m.logins.get_or_create(&LoginLabels { mechanism: "PLAIN", outcome: "ok" }).inc();
        m.retrieved_bytes.get_or_create(&VerbLabels { verb: "RETR" }).inc_by(42);
        m.store_call("s3", "open", "ok", Duration::from_millis(3));
        let text = m.encode();
        assert!(text.contains("cloudpop_logins_total{mechanism=\"PLAIN\",outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("# UNIT cloudpop_retrieved_bytes bytes"), "{text}");
        assert!(text.contains("cloudpop_retrieved_bytes_total{verb=\"RETR\"} 42"), "{text}");
        assert!(text.contains("cloudpop_store_operation_duration_seconds_count{backend=\"s3\",operation=\"open\"} 1"));
        assert!(text.contains("# HELP cloudpop_spans_dropped Trace spans dropped"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn known_series_are_zero_before_the_first_event() {
        let text = Metrics::new().encode();
        for series in [
            "cloudpop_connections_refused_total{listener=\"lmtp\",reason=\"untrusted\"} 0",
            "cloudpop_throttle_refusals_total{reason=\"in_flight\"} 0",
            "cloudpop_reloads_total{what=\"api_tokens\",outcome=\"failed\"} 0",
            "cloudpop_ingest_deliveries_total{via=\"lmtp\",status=\"over_quota\"} 0",
            "cloudpop_ingest_bytes_total{listener=\"api\"} 0",
            "cloudpop_logins_total{mechanism=\"XOAUTH2\",outcome=\"throttled\"} 0",
            "cloudpop_connections_open{listener=\"pop3s\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from\n{text}");
        }
        assert!(!text.contains("cloudpop_s3_requests_total{"), "S3 series without an S3 store");
    }
}
