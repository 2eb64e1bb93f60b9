//! A small generational slab: the facade's handles (timers, immediates,
//! hooks, work) are an index plus a generation, so a stale handle finds
//! nothing instead of somebody else's entry.

use crate::Error;

/// An index and the generation it was issued at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SlotId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// A slot id as one number (generation in the high half), for listings.
pub(crate) fn raw(id: SlotId) -> u64 {
    (u64::from(id.generation) << 32) | u64::from(id.index)
}

/// Values addressed by [`SlotId`]; freed slots are reused with a new generation.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn insert(&mut self, value: T) -> SlotId {
        self.len += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.value = Some(value);
            return SlotId {
                index,
                generation: slot.generation,
            };
        }
        let index = u32::try_from(self.slots.len()).expect("eventide: more than 2^32 handles");
        self.slots.push(Slot {
            generation: 0,
            value: Some(value),
        });
        SlotId {
            index,
            generation: 0,
        }
    }

    pub(crate) fn get(&self, id: SlotId) -> Option<&T> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, id: SlotId) -> Option<&mut T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.value.as_mut()
    }

    /// The values, with their ids.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SlotId, &T)> + '_ {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            let id = SlotId {
                index: index as u32,
                generation: slot.generation,
            };
            slot.value.as_ref().map(|value| (id, value))
        })
    }

    /// Takes every value out (for a table dropped with its loop).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.len = 0;
        self.free.clear();
        self.slots.drain(..).filter_map(|slot| slot.value)
    }

    pub(crate) fn remove(&mut self, id: SlotId) -> Option<T> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let value = slot.value.take()?;
        self.len -= 1;
        // A slot whose generation is exhausted is retired, never reused.
        if let Some(generation) = slot.generation.checked_add(1) {
            slot.generation = generation;
            self.free.push(id.index);
        }
        Some(value)
    }
}

/// A key into one loop's [`Keyed`] slab: the slot, and the id of the loop
/// whose slab issued it (`Loop::id`, unique in the process).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) slot: SlotId,
    pub(crate) owner: u32,
}

/// A [`Slab`] of one loop, addressed by [`Key`]s: a key another loop
/// issued finds nothing here (as a stale one does), never an entry in the
/// same slot.
pub(crate) struct Keyed<T> {
    owner: u32,
    slab: Slab<T>,
}

impl<T> Keyed<T> {
    /// An empty slab of the loop `owner`.
    pub(crate) fn new(owner: u32) -> Keyed<T> {
        Keyed {
            owner,
            slab: Slab::default(),
        }
    }

    /// The key of `slot` in this slab.
    pub(crate) fn key(&self, slot: SlotId) -> Key {
        Key {
            slot,
            owner: self.owner,
        }
    }

    /// The error for a `key` that finds nothing here: another loop's
    /// ([`Error::ForeignHandle`]), or one whose entry is gone
    /// ([`Error::Stale`]); `what` names the kind of handle.
    pub(crate) fn miss(&self, key: Key, what: &'static str) -> Error {
        if self.is_foreign(key) {
            Error::ForeignHandle { what }
        } else {
            Error::Stale { what }
        }
    }

    /// Whether another loop issued `key`.
    pub(crate) fn is_foreign(&self, key: Key) -> bool {
        key.owner != self.owner
    }

    pub(crate) fn insert(&mut self, value: T) -> Key {
        let slot = self.slab.insert(value);
        self.key(slot)
    }

    /// The values, with their slots.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (SlotId, &T)> + '_ {
        self.slab.iter()
    }

    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        if self.is_foreign(key) {
            return None;
        }
        self.slab.get(key.slot)
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        if self.is_foreign(key) {
            return None;
        }
        self.slab.get_mut(key.slot)
    }

    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        if self.is_foreign(key) {
            return None;
        }
        self.slab.remove(key.slot)
    }

    /// Every value, in slot order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.slab.iter().map(|(_, value)| value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_id_never_reaches_the_value_that_reused_its_slot() {
        let mut slab = Slab::default();
        let old = slab.insert("old");
        assert_eq!(slab.remove(old), Some("old"));
        let new = slab.insert("new");
        assert_eq!(new.index, old.index);
        assert_eq!(slab.get(old), None);
        assert_eq!(slab.remove(old), None);
        assert_eq!(slab.get(new), Some(&"new"));
        assert_eq!(slab.len(), 1);
    }

    #[test]
    fn another_loops_key_finds_nothing_even_in_a_used_slot() {
        let mut mine = Keyed::new(1);
        let mut theirs = Keyed::new(2);
        let a = mine.insert("mine");
        let b = theirs.insert("theirs");
        assert_eq!(a.slot, b.slot, "the same slot in both");
        assert!(mine.is_foreign(b));
        assert_eq!(mine.get(b), None);
        assert_eq!(mine.get_mut(b), None);
        assert_eq!(mine.remove(b), None);
        assert_eq!(mine.get(a), Some(&"mine"));
        assert_eq!(theirs.get(b), Some(&"theirs"));
    }
}
