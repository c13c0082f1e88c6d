//! Owner names interned per shard: a record holds a 4-byte number instead of its own copy of
//! the name, and a name is freed when the last record that holds it goes.

use std::collections::HashMap;
use std::sync::Arc;

/// The number of "no owner" (authentication off, or a task shared by everyone).
pub(crate) const NO_OWNER: u32 = u32::MAX;

/// Names by number and numbers by name, with how many records hold each.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    /// Number of each name in use.
    by_name: HashMap<Arc<str>, u32>,
    /// Name and holder count by number; `None` for a free number.
    slots: Vec<Option<(Arc<str>, u32)>>,
    /// Numbers free for reuse.
    free: Vec<u32>,
}

impl Owners {
    /// The number of `name` (or [`NO_OWNER`]), held once more.
    pub(crate) fn acquire(&mut self, name: Option<&str>) -> u32 {
        let Some(name) = name else {
            return NO_OWNER;
        };
        if let Some(&id) = self.by_name.get(name) {
            if let Some(Some((_, holders))) = self.slots.get_mut(id as usize) {
                *holders += 1;
            }
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = Some((name.clone(), 1));
                id
            }
            None => {
                // More distinct owners in one shard than u32 numbers cannot be held in memory
                // anyway; the last number is NO_OWNER.
                let id = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&id| id != NO_OWNER)
                    .expect("fewer than 2^32 - 1 owners per shard. This is a bug.");
                self.slots.push(Some((name.clone(), 1)));
                id
            }
        };
        self.by_name.insert(name, id);
        id
    }

    /// One holder of `id` fewer; the name goes with its last holder.
    pub(crate) fn release(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        let gone = match slot {
            Some((_, holders)) if *holders > 1 => {
                *holders -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        if gone {
            if let Some((name, _)) = slot.take() {
                self.by_name.remove(&name);
            }
            self.free.push(id);
        }
    }

    /// The name of `id`, `None` for [`NO_OWNER`].
    pub(crate) fn name(&self, id: u32) -> Option<&str> {
        match self.slots.get(id as usize) {
            Some(Some((name, _))) => Some(name),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shared_and_freed_with_their_last_holder() {
        let mut owners = Owners::default();
        let alice = owners.acquire(Some("alice"));
        assert_eq!(owners.acquire(Some("alice")), alice);
        let bob = owners.acquire(Some("bob"));
        assert_ne!(alice, bob);
        assert_eq!(owners.acquire(None), NO_OWNER);
        assert_eq!(owners.name(NO_OWNER), None);
        owners.release(alice);
        assert_eq!(owners.name(alice), Some("alice"));
        owners.release(alice);
        assert_eq!(owners.name(alice), None);
        // The freed number is reused for the next new name.
        assert_eq!(owners.acquire(Some("carol")), alice);
        assert_eq!(owners.name(bob), Some("bob"));
    }
}
