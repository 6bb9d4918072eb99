//! Bearer-token authentication for the API, with separate `admin` and `ingest` scopes.
//!
//! Tokens come from the environment or files (one per line, so they can be rotated), never from
//! the config file itself, and are compared in constant time.

use crate::secret::Secret;
use tonic::{Request, Status};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Ingest,
}

/// The accepted tokens of each scope.
#[derive(Clone, Default)]
pub struct Tokens {
    admin: Vec<Secret>,
    ingest: Vec<Secret>,
}

impl Tokens {
    pub fn new(admin: Vec<Secret>, ingest: Vec<Secret>) -> Self {
        Self { admin, ingest }
    }

    /// Splits a token list (newlines or commas) into tokens, ignoring blanks.
    pub fn parse_list(text: &str) -> Vec<Secret> {
        text.split([',', '\n', '\r']).map(str::trim).filter(|t| !t.is_empty()).map(Secret::new).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.ingest.is_empty()
    }

    fn scope_of(&self, presented: &str) -> Option<Scope> {
        // Check every token of both scopes so timing does not tell which list matched.
        let admin = self.admin.iter().fold(false, |hit, t| hit | constant_time_eq(t.expose(), presented));
        let ingest = self.ingest.iter().fold(false, |hit, t| hit | constant_time_eq(t.expose(), presented));
        if admin {
            Some(Scope::Admin)
        } else if ingest {
            Some(Scope::Ingest)
        } else {
            None
        }
    }

    /// Checks a request's `authorization: Bearer ...` against the scope the service needs.
    pub fn check<T>(&self, request: &Request<T>, needed: Scope) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let presented = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or_else(|| Status::unauthenticated("authorization must be a Bearer token"))?;
        match self.scope_of(presented.trim()) {
            Some(scope) if scope == needed => Ok(()),
            Some(_) => Err(Status::permission_denied(format!("this token lacks the {needed:?} scope").to_lowercase())),
            None => Err(Status::unauthenticated("invalid token")),
        }
    }

    /// Checks that a request carries any valid token (for reflection).
    pub fn check_any<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.check(request, Scope::Admin).or_else(|_| self.check(request, Scope::Ingest))
    }
}

/// Compares without an early exit; only the length can leak.
fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn scopes_are_separate() {
        let tokens = Tokens::new(Tokens::parse_list("adm1,\nadm2\n"), Tokens::parse_list("ing"));
        assert!(tokens.check(&request(Some("Bearer adm2")), Scope::Admin).is_ok());
        assert!(tokens.check(&request(Some("Bearer ing")), Scope::Ingest).is_ok());
        let denied = tokens.check(&request(Some("Bearer ing")), Scope::Admin).unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        for bad in [None, Some("Bearer nope"), Some("Basic adm1"), Some("Bearer adm")] {
            assert_eq!(tokens.check(&request(bad), Scope::Admin).unwrap_err().code(), tonic::Code::Unauthenticated);
        }
        assert!(Tokens::default().check(&request(Some("Bearer ")), Scope::Admin).is_err());
    }
}
