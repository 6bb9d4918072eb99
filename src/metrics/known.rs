//! The label values of each family. The series they make are created at zero when the process
//! starts (S3's when the object store is built), so that dashboards and alerts read 0 rather
//! than "no data" before the first event; the code counts only values listed here.

/// Listeners that accept connections (`api` counts only its TLS handshakes).
pub const CONNECTION_LISTENERS: [&str; 3] = ["pop3", "pop3s", "lmtp"];
/// Why each listener turns a connection away.
pub const REFUSALS: [(&str, &[&str]); 3] = [
    ("pop3", &["limit", "address_limit", "proxy_untrusted", "proxy_invalid"]),
    ("pop3s", &["limit", "address_limit", "proxy_untrusted", "proxy_invalid"]),
    ("lmtp", &["limit", "untrusted"]),
];
pub const TLS_LISTENERS: [&str; 4] = ["pop3", "pop3s", "lmtp", "api"];
pub const OK_FAILED: [&str; 2] = ["ok", "failed"];
/// Login mechanisms, as named on the wire.
pub const MECHANISMS: [&str; 7] =
    ["USER", "PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "OAUTHBEARER", "XOAUTH2"];
pub const LOGIN_OUTCOMES: [&str; 6] = ["ok", "bad_credentials", "throttled", "in_use", "login_delay", "unavailable"];
/// POP3 verbs counted by name; any other word counts as `(unknown)`.
pub const VERBS: [&str; 16] = [
    "USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "UTF8", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP",
    "UIDL", "QUIT",
];
pub const UNKNOWN_VERB: &str = "(unknown)";
pub const RETRIEVE_VERBS: [&str; 2] = ["RETR", "TOP"];
pub const LOCK_OUTCOMES: [&str; 3] = ["acquired", "in_use", "unavailable"];
pub const THROTTLE_REASONS: [&str; 3] = ["failures", "in_flight", "login_delay"];
pub const READ_AHEAD_OUTCOMES: [&str; 2] = ["used", "unused"];
/// Ways mail reaches a serving process (`import` and `cli` count in their own process).
pub const INGEST_VIA: [(&str, &str); 2] = [("grpc", "api"), ("lmtp", "lmtp")];
pub const INGEST_STATUSES: [&str; 6] =
    ["stored", "duplicate", "unknown_mailbox", "disabled", "over_quota", "temporary_failure"];
pub const RELOADS: [&str; 2] = ["tls", "api_tokens"];
/// The S3 operations cloudpop sends; anything else is counted as `other`.
pub const S3_OPERATIONS: [&str; 12] = [
    "GetObject",
    "HeadObject",
    "PutObject",
    "ListObjectsV2",
    "DeleteObject",
    "DeleteObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "HeadBucket",
    "other",
];
pub const S3_STATUSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];
