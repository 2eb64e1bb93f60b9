//! The arena that owns every timer entry, with generation-checked keys.
//!
//! Entries never move once inserted; lists elsewhere in the wheel link them
//! by index. A vacant entry sits on a free list and keeps its generation,
//! which goes up by one each time the entry is freed, so a [`Key`] taken
//! before the free no longer matches. An entry whose generation would wrap
//! around is retired instead of reused: no stale key can ever match again.

use crate::Key;

/// The index that stands for "no entry" in every link.
pub(crate) const NIL: u32 = u32::MAX;

/// Where an entry is linked: a live entry is always on exactly one list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// In slot `slot` of wheel level `level`.
    Wheel { level: u8, slot: u8 },
    /// Inserted with a deadline that had already passed; ready at the next advance.
    Overdue,
    /// Expired, waiting to be popped.
    Ready,
    /// Live but on no list: expired and handed out by
    /// `Wheel::pop_expired_key`, until it is reset or cancelled.
    Idle,
    /// Not a live timer: on the free list (through `next`) or retired.
    Vacant,
}

/// One timer, or a vacant entry. Kept flat and small (24 bytes plus the
/// payload): the wheel's speed is mostly the cache lines it touches.
#[derive(Debug)]
pub(crate) struct Node<T> {
    pub(crate) deadline: u64,
    pub(crate) prev: u32,
    /// The next entry on this entry's list; for a vacant entry, on the free list.
    pub(crate) next: u32,
    generation: u32,
    pub(crate) place: Place,
    payload: Option<T>,
}

/// The entries, a free list through the vacant ones, and a count.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<Node<T>>,
    free_head: u32,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Slab {
            entries: Vec::with_capacity(capacity),
            free_head: NIL,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    pub(crate) fn reserve(&mut self, additional: usize) {
        let vacant = self.entries.len() - self.len;
        self.entries.reserve(additional.saturating_sub(vacant));
    }

    /// Stores a timer, not yet on any list, and returns its key; reuses a
    /// vacant entry when there is one.
    pub(crate) fn insert(&mut self, deadline: u64, payload: T) -> Key {
        self.len += 1;
        if self.free_head != NIL {
            let index = self.free_head;
            let node = &mut self.entries[index as usize];
            debug_assert_eq!(
                node.place,
                Place::Vacant,
                "free list points at a live entry"
            );
            self.free_head = node.next;
            node.deadline = deadline;
            node.payload = Some(payload);
            return Key {
                index,
                generation: node.generation,
            };
        }
        let index = u32::try_from(self.entries.len())
            .ok()
            .filter(|&i| i != NIL)
            .expect("eventide-timer: more than u32::MAX - 1 live timers");
        self.entries.push(Node {
            deadline,
            prev: NIL,
            next: NIL,
            generation: 0,
            place: Place::Vacant,
            payload: Some(payload),
        });
        Key {
            index,
            generation: 0,
        }
    }

    /// The index of the live entry `key` names, or `None` for a stale key.
    pub(crate) fn resolve(&self, key: Key) -> Option<u32> {
        let node = self.entries.get(key.index as usize)?;
        (node.generation == key.generation && node.payload.is_some()).then_some(key.index)
    }

    /// The key that names the live entry at `index` now.
    pub(crate) fn key_of(&self, index: u32) -> Key {
        Key {
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Frees the entry at `index` (live, and off every list) and returns
    /// its deadline and payload.
    pub(crate) fn remove(&mut self, index: u32) -> (u64, T) {
        let node = &mut self.entries[index as usize];
        let payload = node.payload.take().expect("removing a vacant entry");
        node.place = Place::Vacant;
        self.len -= 1;
        // An entry whose generation is exhausted is retired (left off the
        // free list): reusing it could let a stale key match again.
        if let Some(generation) = node.generation.checked_add(1) {
            node.generation = generation;
            node.next = self.free_head;
            self.free_head = index;
        }
        (node.deadline, payload)
    }

    pub(crate) fn node(&self, index: u32) -> &Node<T> {
        &self.entries[index as usize]
    }

    pub(crate) fn node_mut(&mut self, index: u32) -> &mut Node<T> {
        &mut self.entries[index as usize]
    }

    /// The payload of the live entry at `index`.
    pub(crate) fn payload(&self, index: u32) -> &T {
        self.entries[index as usize]
            .payload
            .as_ref()
            .expect("payload of a vacant entry")
    }

    /// The payload of the live entry at `index`, mutably.
    pub(crate) fn payload_mut(&mut self, index: u32) -> &mut T {
        self.entries[index as usize]
            .payload
            .as_mut()
            .expect("payload of a vacant entry")
    }

    /// The live entries: key, deadline and payload, in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key, u64, &T)> {
        self.entries.iter().enumerate().filter_map(|(index, node)| {
            let payload = node.payload.as_ref()?;
            let key = Key {
                index: index as u32,
                generation: node.generation,
            };
            Some((key, node.deadline, payload))
        })
    }

    /// Sets the generation of the entry at `index`: tests use it to reach
    /// the wrap-around case without four billion reuses.
    #[cfg(test)]
    pub(crate) fn set_generation(&mut self, index: u32, generation: u32) {
        self.entries[index as usize].generation = generation;
    }
}
