//! The in-flight table both backends share: a slab of entries with a
//! generation per slot (so a stale key never reaches a newer entry) and the
//! map from the caller's tokens to slab keys. Allocation-free once warm:
//! freed slots are reused and the map keeps its capacity.

use crate::Token;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A slab key: slot index in the low 32 bits, the slot's generation above.
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

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Entries in flight, each found by key or by the caller's token.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    tokens: HashMap<Token, Key, BuildHasherDefault<TokenHasher>>,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            tokens: HashMap::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    pub(crate) fn contains_token(&self, token: Token) -> bool {
        self.tokens.contains_key(&token)
    }

    /// Stores `value` under `token`; the caller checked the token is free.
    /// Generations are 29 bits, so a key never has bits 61 to 63 set (the
    /// io_uring backend tags its internal operations with bit 63 and the
    /// steps of a multi-step operation with bits 61 and 62).
    pub(crate) fn insert(&mut self, token: Token, value: T) -> Key {
        let index = match self.free.pop() {
            Some(i) => i as usize,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                self.slots.len() - 1
            }
        };
        let slot = &mut self.slots[index];
        slot.generation = slot.generation.wrapping_add(1) & 0x1fff_ffff;
        slot.value = Some(value);
        let key = Key((u64::from(slot.generation) << 32) | index as u64);
        self.tokens.insert(token, key);
        key
    }

    pub(crate) fn key_of(&self, token: Token) -> Option<Key> {
        self.tokens.get(&token).copied()
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let slot = self.slots.get_mut(key.index())?;
        if slot.generation != key.generation() {
            return None;
        }
        slot.value.as_mut()
    }

    /// Removes the entry; `token` must be the one it was inserted under.
    pub(crate) fn remove(&mut self, key: Key, token: Token) -> Option<T> {
        let slot = self.slots.get_mut(key.index())?;
        if slot.generation != key.generation() {
            return None;
        }
        let value = slot.value.take()?;
        self.free.push(key.index() as u32);
        self.tokens.remove(&token);
        Some(value)
    }

    /// Keys of all entries (for teardown).
    #[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn keys(&self) -> Vec<Key> {
        self.tokens.values().copied().collect()
    }

    /// Takes every entry out (for teardown).
    #[cfg_attr(not(all(feature = "uring", target_os = "linux")), allow(dead_code))]
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.tokens.clear();
        self.free.clear();
        self.slots.drain(..).filter_map(|s| s.value).collect()
    }
}

/// Tokens are caller-chosen integers, often dense: a multiplicative mix is
/// enough (no hash-flooding concern: tokens come from the program itself).
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct TokenHasher(u64);

impl Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ (v >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}
