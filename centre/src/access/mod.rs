//! Who may see and do what: users with a role and a site scope, their
//! passwords (argon2), sessions (a random cookie whose hash the database
//! keeps) and the login rate limit.
//!
//! The scope is the one rule every path of the console applies: a user of
//! `shapingba/fengwen` sees the alerts, cameras and snapshots of that street
//! and every community under it, and nothing else. Out-of-scope things are
//! answered as unknown (404), so that an id cannot be probed.
//!
//! - [`limit`]: failed logins per name and per address.

pub mod limit;

use std::fmt;

use alleywatch_contract::check_level;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

/// What a user may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Sees the board, alerts, snapshots and reports of the scope.
    Viewer,
    /// Runs the loop: assess, dispatch, handled, close.
    Operator,
    /// Also tunes cameras.
    Supervisor,
    /// Also manages users (from the command line).
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "supervisor" => Some(Role::Supervisor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may run steps of the loop.
    pub fn acts(self) -> bool {
        self >= Role::Operator
    }
}

/// A part of the site tree: a district, a street of it, or a community of
/// that street. Levels below the scope's depth are empty (any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub district: String,
    pub street: String,
    pub community: String,
}

impl Scope {
    /// Reads `district[/street[/community]]`.
    pub fn parse(path: &str) -> Result<Scope, String> {
        let levels: Vec<&str> = path.split('/').collect();
        if levels.len() > 3 {
            return Err(format!("{path:?} has {} levels; a scope has 1–3", levels.len()));
        }
        for l in &levels {
            check_level(l)?;
        }
        let at = |i: usize| levels.get(i).map_or(String::new(), |s| s.to_string());
        Ok(Scope { district: at(0), street: at(1), community: at(2) })
    }

    /// Whether `site` (`district/street/community`) lies in this scope.
    pub fn contains(&self, district: &str, street: &str, community: &str) -> bool {
        self.district == district
            && (self.street.is_empty() || self.street == street)
            && (self.community.is_empty() || self.community == community)
    }

    /// Whether the site path `district/street/community` lies in this scope.
    pub fn holds(&self, site: &str) -> bool {
        let (d, s, c) = site_levels(site);
        self.contains(d, s, c)
    }

    /// Whether all of `inner` lies in this scope.
    pub fn covers(&self, inner: &Scope) -> bool {
        self.contains(&inner.district, &inner.street, &inner.community)
            && (self.street.is_empty() || !inner.street.is_empty())
            && (self.community.is_empty() || !inner.community.is_empty())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.district)?;
        for l in [&self.street, &self.community] {
            if !l.is_empty() {
                write!(f, "/{l}")?;
            }
        }
        Ok(())
    }
}

/// The district, street and community of a site path (empty when absent).
pub fn site_levels(site: &str) -> (&str, &str, &str) {
    let mut levels = site.splitn(3, '/');
    (levels.next().unwrap_or(""), levels.next().unwrap_or(""), levels.next().unwrap_or(""))
}

/// A logged-in user, as every console handler sees them.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub scope: Scope,
    /// The session's CSRF token, which every change must echo.
    pub csrf: String,
}

/// User names go into commands (`by`, at most 64 bytes) and the audit log.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1–64 characters".into());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')) {
        return Err(format!("{name:?}: only letters, digits and . _ - @"));
    }
    Ok(())
}

/// A password a person must not guess in a weekend.
pub fn check_password(password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < 12 {
        return Err(format!("is {n} characters; at least 12"));
    }
    if password.len() > 1024 {
        return Err("is longer than 1024 bytes".into());
    }
    Ok(())
}

/// The PHC string argon2 (id, default cost) makes of `password`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` matches `phc`. A malformed stored hash never matches.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash no password matches, verified for unknown names so that a
/// login's time does not say whether the name exists.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy: no user has this password").unwrap_or_default())
}

/// 32 random bytes, hex: a session cookie or a CSRF token.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// What the database keeps of a session token: a stolen database does
/// not hold usable cookies.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time that depends only on their length.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_holds_its_subtree_only() {
        let street = Scope::parse("shapingba/fengwen").unwrap();
        assert!(street.contains("shapingba", "fengwen", "xiangxieli"));
        assert!(street.holds("shapingba/fengwen/xiangxieli") && !street.holds("shapingba/tianxing/x"));
        assert!(!street.contains("shapingba", "tianxing", "xiangxieli"));
        assert!(!street.contains("yuzhong", "fengwen", "xiangxieli"));
        let community = Scope::parse("shapingba/fengwen/xiangxieli").unwrap();
        assert!(street.covers(&community) && !community.covers(&street));
        assert!(Scope::parse("shapingba").unwrap().covers(&street));
        assert_eq!(community.to_string(), "shapingba/fengwen/xiangxieli");
        assert!(Scope::parse("a/b/c/d").is_err());
        assert!(Scope::parse("a/+/c").is_err());
        assert!(Scope::parse("").is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterx", &h));
        assert!(!verify_password("anything", "not a hash"));
        assert!(!verify_password("decoy", decoy_hash()));
        assert!(check_password("short").is_err() && check_password("long enough pass").is_ok());
        assert!(check_name("op-1").is_ok() && check_name("op 1").is_err() && check_name("").is_err());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 64);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(!Role::Viewer.acts() && Role::Operator.acts() && Role::Admin.acts());
        assert_eq!(Role::parse("supervisor"), Some(Role::Supervisor));
        assert_eq!(Role::parse("root"), None);
    }
}
