//! The last few things computed or fetched, by number: a chain reader's composed windows, an
//! S3 object's chunks, a mount's checked blocks. Shared between threads; the least recently
//! used goes first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// At most `cap` values, by key.
#[derive(Debug)]
pub(crate) struct Recent<T> {
    items: Mutex<VecDeque<(u64, Arc<T>)>>,
    cap: usize,
}

impl<T> Recent<T> {
    /// Room for `cap` values.
    pub(crate) fn new(cap: usize) -> Recent<T> {
        Recent {
            items: Mutex::new(VecDeque::with_capacity(cap)),
            cap: cap.max(1),
        }
    }

    /// The value of `key`, when kept (it becomes the most recently used).
    pub(crate) fn get(&self, key: u64) -> Option<Arc<T>> {
        let mut items = self.items.lock().ok()?;
        let i = items.iter().position(|(k, _)| *k == key)?;
        let hit = items.remove(i)?;
        let value = hit.1.clone();
        items.push_back(hit);
        Some(value)
    }

    /// Keeps `value` as `key`'s, dropping the least recently used when full; returns it.
    pub(crate) fn put(&self, key: u64, value: T) -> Arc<T> {
        let value = Arc::new(value);
        if let Ok(mut items) = self.items.lock() {
            items.retain(|(k, _)| *k != key);
            if items.len() >= self.cap {
                items.pop_front();
            }
            items.push_back((key, value.clone()));
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_first() {
        let r = Recent::new(2);
        r.put(1, "a");
        r.put(2, "b");
        assert_eq!(r.get(1).as_deref(), Some(&"a"));
        r.put(3, "c");
        assert!(r.get(2).is_none());
        assert_eq!(r.get(1).as_deref(), Some(&"a"));
        assert_eq!(r.get(3).as_deref(), Some(&"c"));
    }
}
