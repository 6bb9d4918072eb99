//! The SASL exchanges of AUTH (RFC 5034): which mechanisms work on the connection, and the
//! continuation lines of PLAIN, LOGIN, SCRAM-SHA-256(-PLUS), OAUTHBEARER and XOAUTH2.

use super::{Machine, Phase, Step, unreachable_phase};
use crate::protocol::response::{self, Code};
use crate::protocol::sasl::{self, Credentials, Mechanism, Presented};
use crate::protocol::scram;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

impl Machine {
    /// The SASL mechanisms that work on this connection now, in the order advertised.
    pub fn mechanisms(&self) -> Vec<&'static str> {
        let s = &self.settings;
        let mut mechanisms = Vec::new();
        if s.plaintext_allowed {
            mechanisms.extend([Mechanism::Plain, Mechanism::Login]);
        }
        if s.scram {
            mechanisms.push(Mechanism::ScramSha256);
            if s.channel_binding.is_some() {
                mechanisms.push(Mechanism::ScramSha256Plus);
            }
        }
        if s.bearer && s.plaintext_allowed {
            mechanisms.extend([Mechanism::OAuthBearer, Mechanism::XOAuth2]);
        }
        mechanisms.into_iter().map(Mechanism::as_str).collect()
    }

    pub(super) fn in_sasl(&self) -> bool {
        matches!(
            self.phase,
            Phase::SaslPlain
                | Phase::SaslLoginUser
                | Phase::SaslLoginPass { .. }
                | Phase::SaslScramFirst { .. }
                | Phase::SaslScramFinal(..)
                | Phase::SaslScramDone(..)
                | Phase::SaslBearer(_)
                | Phase::SaslBearerFailed
        )
    }

    pub(super) fn begin_sasl(&mut self, mech: &str, initial_response: Option<String>) -> Step {
        if !self.mechanisms().contains(&mech) {
            return Step::Reply(response::err(None, "Unsupported authentication mechanism"));
        }
        match (mech, initial_response) {
            ("SCRAM-SHA-256" | "SCRAM-SHA-256-PLUS", Some(ir)) => self.scram_first(&ir, mech.ends_with("-PLUS")),
            ("SCRAM-SHA-256" | "SCRAM-SHA-256-PLUS", None) => {
                self.phase = Phase::SaslScramFirst { plus: mech.ends_with("-PLUS") };
                Step::Reply(response::continuation(""))
            }
            ("OAUTHBEARER" | "XOAUTH2", Some(ir)) => self.finish_bearer(&ir, mech == "XOAUTH2"),
            ("OAUTHBEARER" | "XOAUTH2", None) => {
                let kind = if mech == "XOAUTH2" { Mechanism::XOAuth2 } else { Mechanism::OAuthBearer };
                self.phase = Phase::SaslBearer(kind);
                Step::Reply(response::continuation(""))
            }
            ("PLAIN", Some(ir)) => self.finish_plain(&ir),
            ("PLAIN", None) => {
                self.phase = Phase::SaslPlain;
                Step::Reply(response::continuation(""))
            }
            ("LOGIN", Some(ir)) => match sasl::login_field(&ir) {
                Ok(user) => {
                    self.phase = Phase::SaslLoginPass { user };
                    Step::Reply(response::continuation(sasl::LOGIN_PASS_CHALLENGE))
                }
                Err(e) => Step::Reply(response::err(None, &e.to_string())),
            },
            ("LOGIN", None) => {
                self.phase = Phase::SaslLoginUser;
                Step::Reply(response::continuation(sasl::LOGIN_USER_CHALLENGE))
            }
            _ => Step::Reply(response::err(None, "Unsupported authentication mechanism")),
        }
    }

    pub(super) fn on_sasl_line(&mut self, line: &[u8]) -> Step {
        let phase = std::mem::replace(&mut self.phase, Phase::Authorization { user: None });
        if let Phase::SaslScramDone(view, reply) = phase {
            // The client's empty answer to the server-final message completes the login.
            if line.is_empty() || line == b"=" {
                self.phase = Phase::Transaction(view);
                return Step::Reply(reply);
            }
            self.phase = Phase::Closed;
            return Step::Close(response::err(None, "Authentication cancelled"));
        }
        if let Phase::SaslBearerFailed = phase {
            return self.auth_failed(Code::Auth, "Authentication failed");
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return Step::Reply(response::err(None, &sasl::SaslError::Base64.to_string()));
        };
        if text.trim() == "*" {
            return Step::Reply(response::err(None, "Authentication cancelled"));
        }
        match phase {
            Phase::SaslScramFirst { plus } => self.scram_first(text, plus),
            Phase::SaslScramFinal(pending, mechanism) => self.scram_final(text, &pending, mechanism),
            Phase::SaslBearer(kind) => self.finish_bearer(text, kind == Mechanism::XOAuth2),
            Phase::SaslPlain => self.finish_plain(text),
            Phase::SaslLoginUser => match sasl::login_field(text) {
                Ok(user) => {
                    self.phase = Phase::SaslLoginPass { user };
                    Step::Reply(response::continuation(sasl::LOGIN_PASS_CHALLENGE))
                }
                Err(e) => Step::Reply(response::err(None, &e.to_string())),
            },
            Phase::SaslLoginPass { user } => match sasl::login_field(text) {
                Ok(password) => self.begin_login(Credentials::password(user, password, Mechanism::Login)),
                Err(e) => Step::Reply(response::err(None, &e.to_string())),
            },
            _ => unreachable_phase(),
        }
    }

    pub(super) fn finish_plain(&mut self, b64: &str) -> Step {
        match sasl::plain(b64) {
            Ok(creds) => self.begin_login(creds),
            Err(e) => Step::Reply(response::err(None, &e.to_string())),
        }
    }

    pub(super) fn finish_bearer(&mut self, b64: &str, xoauth2: bool) -> Step {
        let parsed = if xoauth2 { sasl::xoauth2(b64) } else { sasl::oauthbearer(b64) };
        match parsed {
            Ok(creds) => self.begin_login(creds),
            Err(e) => Step::Reply(response::err(None, &e.to_string())),
        }
    }

    /// SCRAM's client-first message: asks the driver for the user's credentials.
    pub(super) fn scram_first(&mut self, b64: &str, plus: bool) -> Step {
        let message = match sasl::decode(b64) {
            Ok(message) => message,
            Err(e) => return Step::Reply(response::err(None, &e.to_string())),
        };
        let plus_offered = self.settings.channel_binding.is_some();
        match scram::client_first(&message, plus, plus_offered) {
            Ok(first) => {
                let user = first.user.clone();
                let mechanism = if plus { Mechanism::ScramSha256Plus } else { Mechanism::ScramSha256 };
                self.phase = Phase::ScramLookup(first, mechanism);
                Step::ScramLookup { user }
            }
            Err(e) => Step::Reply(response::err(None, &e.to_string())),
        }
    }

    /// Continues after a [`Step::ScramLookup`]: the credentials to challenge with and a fresh
    /// nonce (printable ASCII without commas), or `None` when the account store did not answer.
    pub fn scram_lookup_finished(&mut self, found: Option<(scram::StoredCredentials, String)>) -> Step {
        let Phase::ScramLookup(first, mechanism) =
            std::mem::replace(&mut self.phase, Phase::Authorization { user: None })
        else {
            return unreachable_phase();
        };
        match found {
            Some((credentials, nonce)) => {
                let (pending, server_first) = first.challenge(credentials, &nonce);
                self.phase = Phase::SaslScramFinal(Box::new(pending), mechanism);
                Step::Reply(response::continuation(&STANDARD.encode(server_first)))
            }
            None => Step::Reply(response::err(
                Some(Code::SysTemp),
                "Temporary server failure (account store unavailable), try again later",
            )),
        }
    }

    /// SCRAM's client-final message: a right proof goes on to the login (which still checks
    /// the throttle and the account), a wrong one fails like a wrong password.
    pub(super) fn scram_final(&mut self, b64: &str, pending: &scram::Pending, mechanism: Mechanism) -> Step {
        let message = match sasl::decode(b64) {
            Ok(message) => message,
            Err(e) => return Step::Reply(response::err(None, &e.to_string())),
        };
        let verified = match pending.finish(&message, self.settings.channel_binding.as_deref()) {
            Ok(server_final) => {
                self.scram_final = Some(server_final);
                true
            }
            Err(scram::ScramError::Proof) => false,
            Err(e) => return Step::Reply(response::err(None, &e.to_string())),
        };
        let user = pending.user().to_owned();
        self.begin_login(Credentials { user, presented: Presented::Scram { verified }, mechanism })
    }
}
