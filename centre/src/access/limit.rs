//! The login rate limit: failed attempts are counted per user name and per
//! client address in a fixed window; past the limit, every attempt of that
//! name or address is refused (429) until the window ends, the right
//! password included, so a guesser learns nothing from trying.
//!
//! The table is bounded: a flood of made-up names cannot grow it past
//! [`MAX_KEYS`]; when full, expired windows go first, then everything.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_KEYS: usize = 10_000;

/// How many addresses' worth of names one address may try: an office
/// behind one NAT has several operators.
const PER_ADDRESS: u32 = 10;

pub struct LoginLimit {
    attempts: u32,
    window: Duration,
    failures: Mutex<HashMap<Key, (Instant, u32)>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Name(String),
    Address(IpAddr),
}

impl LoginLimit {
    pub fn new(attempts: u32, window: Duration) -> LoginLimit {
        LoginLimit { attempts, window, failures: Mutex::new(HashMap::new()) }
    }

    /// Whether a login of `name` from `from` may be tried now.
    pub fn allows(&self, name: &str, from: IpAddr, now: Instant) -> bool {
        let Ok(map) = self.failures.lock() else { return false };
        let over = |key: Key, limit: u32| {
            map.get(&key).is_some_and(|&(start, n)| now.duration_since(start) < self.window && n >= limit)
        };
        !over(Key::Name(name.to_lowercase()), self.attempts) && !over(Key::Address(from), self.attempts * PER_ADDRESS)
    }

    /// Counts a failed login.
    pub fn failed(&self, name: &str, from: IpAddr, now: Instant) {
        let Ok(mut map) = self.failures.lock() else { return };
        if map.len() + 2 > MAX_KEYS {
            map.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            if map.len() + 2 > MAX_KEYS {
                map.clear();
            }
        }
        for key in [Key::Name(name.to_lowercase()), Key::Address(from)] {
            let entry = map.entry(key).or_insert((now, 0));
            if now.duration_since(entry.0) >= self.window {
                *entry = (now, 0);
            }
            entry.1 += 1;
        }
    }

    /// A successful login clears its name's count (not the address's).
    pub fn succeeded(&self, name: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&Key::Name(name.to_lowercase()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_locked_for_the_window_after_its_failures() {
        let limit = LoginLimit::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limit.allows("Op-1", ip, t0));
            limit.failed("Op-1", ip, t0);
        }
        assert!(!limit.allows("op-1", ip, t0));
        // Another address does not unlock the name.
        assert!(!limit.allows("op-1", other, t0));
        assert!(limit.allows("op-2", ip, t0));
        assert!(limit.allows("op-1", ip, t0 + Duration::from_secs(61)));
        // One address guessing many names is stopped too.
        for i in 0..30 {
            limit.failed(&format!("name-{i}"), other, t0);
        }
        assert!(!limit.allows("op-3", other, t0));
    }
}
