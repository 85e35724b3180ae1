//! Tokens and scopes. A token is `xfh_` and 32 random bytes in hex; the server stores only its
//! sha256 (a token has 256 bits of entropy, so a plain hash suffices: no dictionary to try).
use crate::HubError;
use serde::{Deserialize, Serialize};

/// What a token may do. `write` implies `read`; `admin` implies both. `worker` is what a build
/// worker's token holds: claim jobs, read the models they build, upload artifacts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
    Worker,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
            Scope::Worker => "worker",
        }
    }

    pub fn parse(s: &str) -> Result<Scope, HubError> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            "worker" => Ok(Scope::Worker),
            _ => Err(HubError::BadRequest(format!(
                "scopes: '{}' is not one of read, write, admin, worker",
                crate::names::clip(s)
            ))),
        }
    }
}

/// A set of scopes, stored as `read,write`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(pub Vec<Scope>);

impl Scopes {
    pub fn parse(s: &str) -> Result<Scopes, HubError> {
        let mut v = s.split(',').filter(|x| !x.is_empty()).map(Scope::parse).collect::<Result<Vec<_>, _>>()?;
        v.sort();
        v.dedup();
        Ok(Scopes(v))
    }

    pub fn text(&self) -> String {
        self.0.iter().map(|s| s.name()).collect::<Vec<_>>().join(",")
    }

    /// Whether these scopes allow `s` (admin ⊇ write ⊇ read).
    pub fn allows(&self, s: Scope) -> bool {
        let has = |x| self.0.contains(&x);
        match s {
            Scope::Read => has(Scope::Read) || has(Scope::Write) || has(Scope::Admin),
            Scope::Write => has(Scope::Write) || has(Scope::Admin),
            Scope::Admin => has(Scope::Admin),
            Scope::Worker => has(Scope::Worker) || has(Scope::Admin),
        }
    }
}

/// A new random token.
pub fn new_token() -> String {
    format!("xfh_{}", crate::random_hex(32))
}

/// What the server stores of a token.
pub fn token_hash(token: &str) -> String {
    crate::sha256_hex(token.as_bytes())
}

/// Checks a token's form before any lookup (bounded, no odd characters).
pub fn check_token_form(t: &str) -> Result<(), HubError> {
    if t.len() != 68 || !t.starts_with("xfh_") || !t[4..].bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HubError::Unauthorized("the bearer token is malformed".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        let s = Scopes::parse("write,read,write").unwrap();
        assert_eq!(s.text(), "read,write");
        assert!(s.allows(Scope::Read) && s.allows(Scope::Write) && !s.allows(Scope::Admin) && !s.allows(Scope::Worker));
        assert!(Scopes::parse("root").is_err());
        let t = new_token();
        assert!(check_token_form(&t).is_ok());
        assert!(check_token_form("xfh_zz").is_err());
        assert_ne!(token_hash(&t), t);
    }
}
