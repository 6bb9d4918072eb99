//! A per-user policy from outside the account record (a directory's attributes, for now),
//! copied onto the record whenever it differs, so deliveries and the sweeper apply it too.

use crate::store::AccountRecord;

/// The longest LOGIN-DELAY an account may have, in seconds (a day).
pub const MAX_LOGIN_DELAY_SECS: u64 = 86_400;
/// The longest EXPIRE an account may have, in days (a century).
pub const MAX_EXPIRE_DAYS: u32 = 36_500;

/// Per-user policy a directory may set; `None` keeps what the mailbox record says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub login_delay_secs: Option<u64>,
    /// `Some(None)`: keep messages for ever.
    pub expire_days: Option<Option<u32>>,
    pub quota_bytes: Option<u64>,
    pub quota_messages: Option<u64>,
}

impl Policy {
    /// The policy within the bounds every account keeps (a directory may say anything).
    pub fn bounded(&self) -> Self {
        Self {
            login_delay_secs: self.login_delay_secs.map(|v| v.min(MAX_LOGIN_DELAY_SECS)),
            expire_days: self.expire_days.map(|v| v.map(|d| d.min(MAX_EXPIRE_DAYS))),
            ..self.clone()
        }
    }

    /// Whether `record` already says everything this policy sets.
    pub fn is_applied(&self, record: &AccountRecord) -> bool {
        self.login_delay_secs.is_none_or(|v| v == record.login_delay_secs)
            && self.expire_days.is_none_or(|v| v == record.expire_days)
            && self.quota_bytes.is_none_or(|v| v == record.quota_bytes)
            && self.quota_messages.is_none_or(|v| v == record.quota_messages)
    }

    pub fn apply(&self, record: &mut AccountRecord) {
        if let Some(v) = self.login_delay_secs {
            record.login_delay_secs = v;
        }
        if let Some(v) = self.expire_days {
            record.expire_days = v;
        }
        if let Some(v) = self.quota_bytes {
            record.quota_bytes = v;
        }
        if let Some(v) = self.quota_messages {
            record.quota_messages = v;
        }
    }
}
