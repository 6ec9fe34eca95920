//! Per-key exponential backoff: remembers, for each key (a file name, say), how many
//! attempts failed in a row and until when the next attempt must wait. Pure logic: the
//! caller passes the current time, so tests need no clock and no sleeping.
//!
//! Used so that a failing step (an after-commit move, a transient read error) is tried
//! at most once per backoff step instead of on every pass of a loop.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct State {
    attempts: u32,
    until: Instant,
}

/// Backoff state of every key that failed and has not succeeded since.
#[derive(Debug, Clone)]
pub struct Backoffs<K> {
    first: Duration,
    max: Duration,
    keys: HashMap<K, State>,
}

impl<K: Hash + Eq + Clone> Backoffs<K> {
    /// The first failure waits `first`, each further one twice as long, at most `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoffs {
            first,
            max,
            keys: HashMap::new(),
        }
    }

    /// The wait after `attempts` failures in a row: `first * 2^(attempts-1)`, capped at
    /// `max` (zero for zero attempts).
    pub fn delay(&self, attempts: u32) -> Duration {
        if attempts == 0 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(attempts - 1);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// Records a failure of `key` at `now`; returns the attempts failed so far (1 after
    /// the first).
    pub fn failed(&mut self, key: &K, now: Instant) -> u32 {
        let attempts = self.attempts(key).saturating_add(1);
        let delay = self.delay(attempts);
        // An instant too far in the future to represent means "not in this lifetime";
        // waiting `max` is the closest sensible thing.
        let until = now
            .checked_add(delay)
            .or_else(|| now.checked_add(self.max))
            .unwrap_or(now);
        self.keys.insert(key.clone(), State { attempts, until });
        attempts
    }

    /// Forgets `key`: its next failure starts again at `first`.
    pub fn succeeded(&mut self, key: &K) {
        self.keys.remove(key);
    }

    /// True while `key` must not be tried again yet.
    pub fn is_waiting(&self, key: &K, now: Instant) -> bool {
        self.keys.get(key).is_some_and(|s| now < s.until)
    }

    /// Failures of `key` in a row (0 if it never failed or succeeded since).
    pub fn attempts(&self, key: &K) -> u32 {
        self.keys.get(key).map_or(0, |s| s.attempts)
    }

    /// The earliest moment a waiting key may be tried again (for sleeping until then
    /// instead of polling); `None` when no key is tracked.
    pub fn next_due(&self) -> Option<Instant> {
        self.keys.values().map(|s| s.until).min()
    }

    /// Keys currently tracked (failed and not succeeded since).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keeps only keys for which `keep` is true (e.g. files still listed), so state of
    /// keys that went away does not pile up.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.keys.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn backoffs() -> Backoffs<String> {
        Backoffs::new(SEC, 60 * SEC)
    }

    #[test]
    fn delay_doubles_from_first_and_is_capped() {
        let b = backoffs();
        let delays: Vec<u64> = (0..10).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(delays, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // No overflow for absurd attempt counts.
        assert_eq!(b.delay(u32::MAX), 60 * SEC);
        let ms = Backoffs::<u8>::new(Duration::from_millis(100), 30 * SEC);
        assert_eq!(ms.delay(3), Duration::from_millis(400));
        assert_eq!(ms.delay(20), 30 * SEC);
    }

    #[test]
    fn a_failed_key_waits_its_delay_then_may_be_tried() {
        let mut b = backoffs();
        let key = "a.csv".to_string();
        let t0 = Instant::now();
        assert!(!b.is_waiting(&key, t0));
        assert_eq!(b.failed(&key, t0), 1);
        assert!(b.is_waiting(&key, t0));
        assert!(b.is_waiting(&key, t0 + SEC / 2));
        assert!(!b.is_waiting(&key, t0 + SEC));
        // Second failure: twice as long, counted from that failure.
        let t1 = t0 + SEC;
        assert_eq!(b.failed(&key, t1), 2);
        assert!(b.is_waiting(&key, t1 + SEC));
        assert!(!b.is_waiting(&key, t1 + 2 * SEC));
        assert_eq!(b.attempts(&key), 2);
        assert_eq!(b.next_due(), Some(t1 + 2 * SEC));
    }

    #[test]
    fn keys_are_independent_and_success_resets() {
        let mut b = backoffs();
        let (a, c) = ("a.csv".to_string(), "c.csv".to_string());
        let t0 = Instant::now();
        b.failed(&a, t0);
        b.failed(&a, t0);
        b.failed(&a, t0);
        assert!(!b.is_waiting(&c, t0));
        assert_eq!(b.attempts(&c), 0);
        assert_eq!(b.attempts(&a), 3);
        b.succeeded(&a);
        assert_eq!(b.attempts(&a), 0);
        assert!(!b.is_waiting(&a, t0));
        assert!(b.is_empty());
        // After a success the next failure starts at `first` again.
        assert_eq!(b.failed(&a, t0), 1);
        assert!(!b.is_waiting(&a, t0 + SEC));
    }

    #[test]
    fn retain_drops_keys_that_went_away() {
        let mut b = backoffs();
        let t0 = Instant::now();
        for k in ["a.csv", "b.csv", "c.csv"] {
            b.failed(&k.to_string(), t0);
        }
        assert_eq!(b.len(), 3);
        b.retain(|k| k != "b.csv");
        assert_eq!(b.len(), 2);
        assert_eq!(b.attempts(&"b.csv".to_string()), 0);
        assert_eq!(b.attempts(&"a.csv".to_string()), 1);
        assert_eq!(Backoffs::<String>::new(SEC, SEC).next_due(), None);
    }
}
