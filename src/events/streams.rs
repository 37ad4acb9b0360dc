//! How many event streams each caller holds open in this process: every open stream costs a task,
//! a broadcast receiver and a connection, so one principal may not open them without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct StreamSlots {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream; dropping it (the stream ended or the client went away) frees the slot.
pub struct StreamSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    holder: String,
}

impl StreamSlots {
    /// A slot for `holder`, unless it already holds `limit`.
    pub fn acquire(&self, holder: &str, limit: usize) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(holder.to_owned()).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            open: self.open.clone(),
            holder: holder.to_owned(),
        })
    }

    pub fn held_by(&self, holder: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(holder).copied().unwrap_or(0)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.holder) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_holder_and_freed_on_drop() {
        let slots = StreamSlots::default();
        let first = slots.acquire("user:a", 2).unwrap();
        let second = slots.acquire("user:a", 2).unwrap();
        assert!(slots.acquire("user:a", 2).is_none());
        assert!(
            slots.acquire("user:b", 2).is_some(),
            "others are not affected"
        );
        drop(first);
        assert_eq!(slots.held_by("user:a"), 1);
        assert!(slots.acquire("user:a", 2).is_some());
        drop(second);
    }
}
