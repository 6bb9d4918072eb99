//! The CAPA response of the POP3 machine (RFC 2449): what works on this connection, in this state.

use super::Machine;
use crate::protocol::response;

impl Machine {
    /// The CAPA response: what works on this connection. RFC 2449 section 5: a capability of
    /// the AUTHORIZATION state is announced in both states, so USER, SASL, STLS and UTF8 stay
    /// in the list after login (where the commands themselves are refused).
    pub fn capabilities(&self) -> Vec<u8> {
        let s = &self.settings;
        let before_login = !self.in_transaction();
        let mut caps: Vec<String> = vec!["TOP".into(), "UIDL".into()];
        if s.plaintext_allowed {
            caps.push("USER".into());
        }
        let mechanisms = self.mechanisms();
        if !mechanisms.is_empty() {
            caps.push(format!("SASL {}", mechanisms.join(" ")));
        }
        caps.extend(["RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"].map(String::from));
        if s.stls_available && !s.tls_active {
            caps.push("STLS".into());
        }
        // Retention is an account policy: before login say so with "USER" (RFC 2449 section 6.7).
        match self.user_expire {
            Some(Some(days)) if !before_login => caps.push(format!("EXPIRE {days}")),
            Some(None) if !before_login => caps.push("EXPIRE NEVER".into()),
            _ => caps.push(format!("EXPIRE {} USER", s.expire)),
        }
        // Before login the delay can differ per account (RFC 2449 section 6.5: "USER").
        match self.user_login_delay {
            Some(secs) if !before_login => caps.push(format!("LOGIN-DELAY {secs}")),
            _ => caps.push(format!("LOGIN-DELAY {} USER", s.login_delay_secs)),
        }
        caps.push("UTF8".into());
        caps.push(format!("IMPLEMENTATION {}", s.implementation));
        response::multiline("Capability list follows", caps)
    }
}
