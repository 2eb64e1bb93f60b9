//! The in-flight table both backends share: a slab of entries with a
//! generation per slot (so a stale key never reaches a newer entry) and an
//! index from the caller's tokens to slots. Allocation-free once warm:
//! freed slots are reused and the index keeps its capacity.
//!
//! Memory per entry matters (an idle TCP connection keeps its receive here,
//! and W10 counts every byte of it), so:
//! - the token lives in the entry only (`Tokened::token`), not also in a map;
//! - the index is an open-addressed table of `u32` slot numbers (linear
//!   probing, at most 3/4 full, deletion by backward shift): 4 bytes a
//!   bucket, 5.3 to 10.7 bytes an entry, where a `HashMap<Token, Key>`
//!   took about 28;
//! - the cancelled mark lives in the slot beside the generation, in room
//!   the entry's alignment leaves there anyway.

use crate::Token;

/// A slab key: slot index in the low 32 bits, the slot's generation (1 to
/// 2^28 - 1) above; never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key(u64);

#[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
impl Key {
    pub(crate) fn to_u64(self) -> u64 {
        self.0
    }

    pub(crate) fn from_u64(v: u64) -> Key {
        Key(v)
    }

    fn index(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
}

/// An entry knows the token it was submitted under.
pub(crate) trait Tokened {
    fn token(&self) -> Token;
}

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    /// The caller asked to cancel the entry (see `Slab::mark_cancelled`).
    cancelled: bool,
    value: Option<T>,
}

/// The smallest index table; it doubles when more than 3/4 full.
const MIN_BUCKETS: usize = 16;

/// Entries in flight, each found by key or by the caller's token.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    /// Slot index + 1 by token hash (0: empty bucket); a power of two long.
    index: Vec<u32>,
    len: usize,
}

impl<T: Tokened> Slab<T> {
    pub(crate) fn new() -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            index: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn contains_token(&self, token: Token) -> bool {
        self.find(token).is_some()
    }

    fn home(&self, token: Token) -> usize {
        let v = token.0;
        let h = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (h >> 32) as usize & (self.index.len() - 1)
    }

    fn token_at(&self, slot: u32) -> Token {
        self.slots[slot as usize - 1]
            .value
            .as_ref()
            .expect("the index names occupied slots only")
            .token()
    }

    /// The bucket holding `token`, and its slot index.
    fn find(&self, token: Token) -> Option<(usize, usize)> {
        if self.index.is_empty() {
            return None;
        }
        let mask = self.index.len() - 1;
        let mut b = self.home(token);
        loop {
            let s = self.index[b];
            if s == 0 {
                return None;
            }
            if self.token_at(s) == token {
                return Some((b, s as usize - 1));
            }
            b = (b + 1) & mask;
        }
    }

    /// The bucket naming slot `slot`, which holds `token`'s entry (no slot
    /// is read on the way: the bucket's content says).
    fn bucket_of(&self, token: Token, slot: usize) -> Option<usize> {
        if self.index.is_empty() {
            return None;
        }
        let mask = self.index.len() - 1;
        let want = slot as u32 + 1;
        let mut b = self.home(token);
        loop {
            match self.index[b] {
                0 => return None,
                s if s == want => return Some(b),
                _ => b = (b + 1) & mask,
            }
        }
    }

    /// Puts slot `slot` (its value in place) into the index.
    fn index_slot(&mut self, slot: usize) {
        let mask = self.index.len() - 1;
        let mut b = self.home(self.token_at(slot as u32 + 1));
        while self.index[b] != 0 {
            b = (b + 1) & mask;
        }
        self.index[b] = slot as u32 + 1;
    }

    /// Empties bucket `hole`, moving later entries of its probe run back
    /// so every entry stays reachable from its home bucket.
    fn unindex(&mut self, mut hole: usize) {
        let mask = self.index.len() - 1;
        let mut b = hole;
        loop {
            b = (b + 1) & mask;
            let s = self.index[b];
            if s == 0 {
                break;
            }
            let home = self.home(self.token_at(s));
            // The entry may move back to the hole if the hole lies between
            // its home and where it sits (cyclically).
            if (b.wrapping_sub(home) & mask) >= (b.wrapping_sub(hole) & mask) {
                self.index[hole] = s;
                hole = b;
            }
        }
        self.index[hole] = 0;
    }

    fn grow_index(&mut self) {
        let buckets = (self.index.len() * 2).max(MIN_BUCKETS);
        self.index = vec![0; buckets];
        for i in 0..self.slots.len() {
            if self.slots[i].value.is_some() {
                self.index_slot(i);
            }
        }
    }

    /// Stores `value` under `token` (its own); the caller checked the
    /// token is free. Generations are 28 bits, so a key never has bits 60
    /// to 63 set (the io_uring backend tags its internal operations with
    /// bit 63 and the steps of a multi-step operation with bits 60 to 62).
    pub(crate) fn insert(&mut self, token: Token, value: T) -> Key {
        debug_assert_eq!(token, value.token());
        if (self.len + 1) * 4 > self.index.len() * 3 {
            self.grow_index();
        }
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                assert!(self.slots.len() < u32::MAX as usize - 1, "slab full");
                self.slots.push(Slot {
                    generation: 0,
                    cancelled: false,
                    value: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        // Never 0, so neither is a key (the polling backend's queues use 0
        // for "none").
        slot.generation = (slot.generation & 0x0fff_ffff) % 0x0fff_ffff + 1;
        slot.cancelled = false;
        slot.value = Some(value);
        let key = Key((u64::from(slot.generation) << 32) | index as u64);
        self.index_slot(index);
        self.len += 1;
        key
    }

    pub(crate) fn key_of(&self, token: Token) -> Option<Key> {
        let (_, i) = self.find(token)?;
        Some(Key((u64::from(self.slots[i].generation) << 32) | i as u64))
    }

    fn slot(&self, key: Key) -> Option<&Slot<T>> {
        let slot = self.slots.get(key.index())?;
        (slot.generation == key.generation() && slot.value.is_some()).then_some(slot)
    }

    #[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        self.slot(key).and_then(|s| s.value.as_ref())
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let slot = self.slots.get_mut(key.index())?;
        if slot.generation != key.generation() {
            return None;
        }
        slot.value.as_mut()
    }

    /// Whether the entry under `key` was marked cancelled.
    #[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn is_cancelled(&self, key: Key) -> bool {
        self.slot(key).is_some_and(|s| s.cancelled)
    }

    /// Marks the entry under `key` cancelled; returns whether it already was.
    #[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn mark_cancelled(&mut self, key: Key) -> bool {
        match self.slots.get_mut(key.index()) {
            Some(s) if s.generation == key.generation() && s.value.is_some() => {
                std::mem::replace(&mut s.cancelled, true)
            }
            _ => false,
        }
    }

    /// Removes the entry; `token` must be the one it was inserted under.
    pub(crate) fn remove(&mut self, key: Key, token: Token) -> Option<T> {
        let i = key.index();
        if self.slot(key)?.value.as_ref()?.token() != token {
            return None;
        }
        let bucket = self.bucket_of(token, i)?;
        self.unindex(bucket);
        let value = self.slots[i].value.take()?;
        self.free.push(i as u32);
        self.len -= 1;
        Some(value)
    }

    /// Removes the entry under `key`, whatever its token.
    #[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn take(&mut self, key: Key) -> Option<T> {
        let token = self.slot(key)?.value.as_ref()?.token();
        self.remove(key, token)
    }

    /// Keys of all entries (for teardown).
    #[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn keys(&self) -> Vec<Key> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.value.is_some())
            .map(|(i, s)| Key((u64::from(s.generation) << 32) | i as u64))
            .collect()
    }

    /// Takes every entry out (for teardown).
    #[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.index.clear();
        self.free.clear();
        self.len = 0;
        self.slots.drain(..).filter_map(|s| s.value).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug)]
    struct E(Token);

    impl Tokened for E {
        fn token(&self) -> Token {
            self.0
        }
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_mark_takes_no_room_of_its_own() {
        // A 48-byte entry with a niche for `Option` (as the io_uring
        // backend's has, in `OpKind`'s tag) in a 56-byte slot.
        type Entry48 = (Box<u64>, [u64; 5]);
        assert_eq!(size_of::<Entry48>(), 48);
        assert_eq!(size_of::<Slot<Entry48>>(), 56);
    }

    /// Random inserts and removes (tokens from a small range, so probe runs
    /// collide and wrap), checked against a `HashMap` after every step.
    #[test]
    fn the_index_agrees_with_a_map() {
        let mut slab: Slab<E> = Slab::new();
        let mut model: HashMap<u64, (Key, bool)> = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Dense and sparse tokens, as the facade makes them.
            let t = if x & 1 == 0 {
                (x >> 8) % 3000
            } else {
                ((x >> 8) % 3000) << 32 | 7
            };
            let token = Token(t);
            let grow = step < 100_000;
            match model.get(&t).copied() {
                Some((key, _)) if !grow || x & 0x30 == 0 => {
                    assert!(slab.get_mut(key).is_some());
                    assert!(slab.remove(key, Token(t ^ 1)).is_none(), "wrong token");
                    let e = if x & 0x40 == 0 {
                        slab.remove(key, token)
                    } else {
                        slab.take(key)
                    };
                    let e = e.expect("in the slab");
                    assert_eq!(e.0, token);
                    assert!(slab.get_mut(key).is_none(), "stale key");
                    model.remove(&t);
                }
                Some((key, marked)) => {
                    assert_eq!(slab.key_of(token), Some(key));
                    assert_eq!(slab.is_cancelled(key), marked);
                    assert_eq!(slab.mark_cancelled(key), marked);
                    assert!(slab.is_cancelled(key));
                    model.insert(t, (key, true));
                }
                None => {
                    assert!(!slab.contains_token(token));
                    let key = slab.insert(token, E(token));
                    assert!(!slab.is_cancelled(key));
                    model.insert(t, (key, false));
                }
            }
            assert_eq!(slab.len(), model.len());
            if step % 10_000 == 0 {
                for (&t, &(key, _)) in &model {
                    assert_eq!(slab.key_of(Token(t)), Some(key));
                }
                assert_eq!(slab.keys().len(), model.len());
            }
        }
        assert_eq!(slab.drain().len(), model.len());
        assert_eq!(slab.len(), 0);
    }
}
