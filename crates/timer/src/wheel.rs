//! The wheel itself: levels of slots, the overdue and ready lists, and the
//! operations on them. The crate documentation explains the design.

use crate::list::List;
use crate::slab::{NIL, Place, Slab};

/// Bits of the deadline that one level covers.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Enough levels for every bit of a `u64` deadline (11 x 6 = 66 >= 64).
pub(crate) const LEVELS: usize = 64_usize.div_ceil(SLOT_BITS as usize);

/// A handle to one timer in a [`Wheel`].
///
/// Keys are small and `Copy`. Each carries the generation of the entry it
/// names, so a key whose timer fired or was cancelled is *stale*: using it
/// does nothing (see [`Wheel::cancel`], [`Wheel::reset`]), even if the
/// wheel has since reused the entry for another timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl Key {
    /// Packs the key into a `u64`, for callers that store keys in their own
    /// integer-keyed tables. [`Key::from_raw`] undoes it.
    pub fn into_raw(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// Rebuilds a key packed by [`Key::into_raw`]. Any `u64` makes a valid
    /// key; one that names no live timer is simply stale.
    pub fn from_raw(raw: u64) -> Key {
        Key {
            index: raw as u32,
            generation: (raw >> 32) as u32,
        }
    }
}

/// Returned by [`Wheel::reset`] for a key whose timer has fired or was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stale timer key: the timer already fired or was cancelled")]
pub struct StaleKey;

/// One expired timer, as [`Wheel::pop_expired`] and [`Advance`] yield it.
#[derive(Debug, PartialEq, Eq)]
pub struct Expired<T> {
    /// The key the timer had; it is stale from now on.
    pub key: Key,
    /// The deadline the timer was due at.
    pub deadline: u64,
    /// The payload given to [`Wheel::insert`].
    pub payload: T,
}

/// One level: 64 slots, a bit per occupied slot, and for each slot a lower
/// bound on the deadlines in it (exact unless its earliest entry left).
#[derive(Debug)]
struct Level {
    occupied: u64,
    slots: [List; SLOTS],
    earliest: [u64; SLOTS],
}

impl Level {
    const EMPTY: Level = Level {
        occupied: 0,
        slots: [List::EMPTY; SLOTS],
        earliest: [u64::MAX; SLOTS],
    };

    fn take_slot(&mut self, slot: usize) -> List {
        self.occupied &= !(1 << slot);
        self.earliest[slot] = u64::MAX;
        std::mem::replace(&mut self.slots[slot], List::EMPTY)
    }
}

/// The level a deadline belongs on, seen from `elapsed` (`deadline > elapsed`):
/// the level whose bits hold the highest bit in which the two differ.
fn level_for(elapsed: u64, deadline: u64) -> usize {
    let highest_differing = 63 - ((elapsed ^ deadline) | (SLOTS as u64 - 1)).leading_zeros();
    (highest_differing / SLOT_BITS) as usize
}

/// The slot that `deadline` falls in on `level`.
fn slot_for(deadline: u64, level: usize) -> usize {
    ((deadline >> (SLOT_BITS as usize * level)) as usize) & (SLOTS - 1)
}

/// The first instant covered by `slot` of `level`, seen from `elapsed`.
fn slot_start(elapsed: u64, level: usize, slot: usize) -> u64 {
    let level_span_bits = SLOT_BITS as usize * (level + 1);
    let level_start = match level_span_bits {
        64.. => 0,
        bits => elapsed & !((1u64 << bits) - 1),
    };
    level_start + ((slot as u64) << (SLOT_BITS as usize * level))
}

/// A hierarchical hashed timer wheel. See the [crate documentation](crate)
/// for the design, the ordering guarantee and the costs.
///
/// `T` is the payload each timer carries, handed back when it expires or is
/// cancelled. Time is a `u64` count of milliseconds on whatever clock the
/// caller uses; the wheel never reads a clock.
#[derive(Debug)]
pub struct Wheel<T> {
    slab: Slab<T>,
    levels: Box<[Level; LEVELS]>,
    /// A bit per level with an occupied slot (bit `L`: `levels[L].occupied
    /// != 0`): the earliest slot is two bit scans away, not a walk over
    /// the levels (an event loop asks at every turn).
    occupied_levels: u16,
    /// Entries inserted with a deadline already reached: ready next advance.
    overdue: List,
    /// Whether `overdue` is in (deadline, start order).
    overdue_sorted: bool,
    /// A lower bound on the deadlines in `overdue`.
    overdue_earliest: u64,
    /// Expired entries in (deadline, start order), waiting to be popped.
    ready: List,
    /// The wheel's time: the largest `now` it was advanced to.
    elapsed: u64,
}

impl<T> Default for Wheel<T> {
    fn default() -> Self {
        Wheel::new()
    }
}

impl<T> Wheel<T> {
    /// An empty wheel at time 0.
    pub fn new() -> Self {
        Wheel::with_capacity(0)
    }

    /// An empty wheel at time 0 with room for `capacity` timers before it
    /// allocates.
    pub fn with_capacity(capacity: usize) -> Self {
        Wheel {
            slab: Slab::with_capacity(capacity),
            levels: Box::new([Level::EMPTY; LEVELS]),
            occupied_levels: 0,
            overdue: List::EMPTY,
            overdue_sorted: true,
            overdue_earliest: u64::MAX,
            ready: List::EMPTY,
            elapsed: 0,
        }
    }

    /// How many timers the wheel holds (pending, overdue, ready and idle).
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether the wheel holds no timer at all.
    pub fn is_empty(&self) -> bool {
        self.slab.len() == 0
    }

    /// How many timers the wheel can hold before it allocates again.
    pub fn capacity(&self) -> usize {
        self.slab.capacity()
    }

    /// Makes room for `additional` more timers without allocating later.
    pub fn reserve(&mut self, additional: usize) {
        self.slab.reserve(additional);
    }

    /// The wheel's time: the largest `now` passed to [`Wheel::advance`] so far.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Starts a timer due at `deadline` and returns its key.
    ///
    /// A deadline at or before [`Wheel::elapsed`] is already due: the timer
    /// expires at the next [`Wheel::advance`], in its (deadline, start order)
    /// place; it never joins an expiry round that is already under way.
    /// O(1); allocates only when the wheel is full.
    pub fn insert(&mut self, deadline: u64, payload: T) -> Key {
        let key = self.slab.insert(deadline, payload);
        self.link(key.index);
        key
    }

    /// Stops the timer `key` names and returns its payload, or `None` when
    /// the key is stale (the timer fired or was cancelled): a stale key never
    /// touches another timer. Works on expired timers not yet popped too. O(1).
    pub fn cancel(&mut self, key: Key) -> Option<T> {
        let index = self.slab.resolve(key)?;
        self.unlink(index);
        Some(self.slab.remove(index).1)
    }

    /// Moves the timer `key` names to `deadline`, as if it had been started
    /// anew now: among equal deadlines it goes after every timer started
    /// before this call (Node's `timeout.refresh()`, libuv's
    /// `uv_timer_again`). An expired timer not yet popped is taken back and
    /// re-armed. O(1).
    ///
    /// # Errors
    ///
    /// [`StaleKey`] when the timer has fired (been popped) or was cancelled;
    /// nothing changes then.
    pub fn reset(&mut self, key: Key, deadline: u64) -> Result<(), StaleKey> {
        let index = self.slab.resolve(key).ok_or(StaleKey)?;
        self.unlink(index);
        self.slab.node_mut(index).deadline = deadline;
        self.link(index);
        Ok(())
    }

    /// Whether `key` names a timer the wheel still holds.
    pub fn contains(&self, key: Key) -> bool {
        self.slab.resolve(key).is_some()
    }

    /// The deadline of the timer `key` names, or `None` for a stale key.
    pub fn deadline(&self, key: Key) -> Option<u64> {
        self.slab
            .resolve(key)
            .map(|index| self.slab.node(index).deadline)
    }

    /// Every timer the wheel holds (pending, overdue, ready and idle): its
    /// key, deadline and payload, in no particular order. For listings
    /// (an event loop's "what is alive"); O(capacity).
    pub fn iter(&self) -> impl Iterator<Item = (Key, u64, &T)> {
        self.slab.iter()
    }

    /// The payload of the timer `key` names, or `None` for a stale key.
    pub fn get(&self, key: Key) -> Option<&T> {
        self.slab.resolve(key).map(|index| self.slab.payload(index))
    }

    /// The payload of the timer `key` names, mutably, or `None` for a stale key.
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let index = self.slab.resolve(key)?;
        Some(self.slab.payload_mut(index))
    }

    /// When the wheel next needs advancing, for an event loop's poll timeout;
    /// `None` when it holds no timer.
    ///
    /// Never later than the earliest deadline it holds, and always exact but
    /// in one case: when the earliest timer of a coarse slot was cancelled or
    /// reset, the answer stays at its deadline until the wheel reaches that
    /// slot (one early wake-up, no more). While nothing is due it is later
    /// than [`Wheel::elapsed`]; when something is due (or ready) it is at or
    /// before it. Two bit scans, no list walk.
    #[inline]
    pub fn next_deadline(&self) -> Option<u64> {
        let mut earliest = self.overdue_earliest;
        if self.ready.head != NIL {
            earliest = earliest.min(self.slab.node(self.ready.head).deadline);
        }
        if !self.overdue.is_empty() || self.ready.head != NIL {
            return Some(earliest);
        }
        let (level, slot) = self.next_slot()?;
        Some(self.levels[level].earliest[slot])
    }

    /// Moves the wheel's time to `now` (or keeps it, if `now` is earlier:
    /// time never goes back) and makes every timer due by then ready.
    /// Returns an iterator that pops them in (deadline, start order).
    ///
    /// Timers the iterator does not pop stay ready: [`Wheel::pop_expired`]
    /// or the next advance yields them, still first. To run callbacks that
    /// may start, cancel or reset timers between expiries, use
    /// [`Wheel::advance_to`] and [`Wheel::pop_expired`] instead.
    pub fn advance(&mut self, now: u64) -> Advance<'_, T> {
        self.advance_to(now);
        Advance { wheel: self }
    }

    /// Moves the wheel's time to `now` (or keeps it, if `now` is earlier)
    /// and makes every timer due by then ready, for [`Wheel::pop_expired`]
    /// to hand out one at a time. This begins an expiry round: timers
    /// started or reset from now on are never popped in it, even when
    /// already due; they wait for the next call.
    ///
    /// Costs O(1) per expired timer, plus O(1) per timer moved down a level
    /// (each moves at most once per level), plus O(levels) per slot visited.
    #[inline]
    pub fn advance_to(&mut self, now: u64) {
        // An event loop's turns mostly land here, within the same
        // millisecond and nothing overdue: nothing to do, and no call.
        if now <= self.elapsed && self.overdue.is_empty() {
            return;
        }
        self.advance_slow(now);
    }

    /// [`Wheel::advance_to`] when time moved or something is overdue.
    #[inline(never)]
    fn advance_slow(&mut self, now: u64) {
        self.take_overdue();
        if now <= self.elapsed {
            // Every slot starts after `elapsed` (`link` sends what is due
            // by then to the overdue list): nothing more is due.
            return;
        }
        while let Some((level, slot)) = self.next_slot() {
            let start = slot_start(self.elapsed, level, slot);
            if start > now {
                break;
            }
            self.elapsed = start;
            self.expire_slot(level, slot);
        }
        self.elapsed = now;
    }

    /// Whether a timer is ready: [`Wheel::pop_expired`] and
    /// [`Wheel::pop_expired_key`] would return one.
    #[inline]
    pub fn has_ready(&self) -> bool {
        self.ready.head != NIL
    }

    /// Pops the next ready timer, in (deadline, start order), or `None` when
    /// none is ready. Only [`Wheel::advance_to`] (and [`Wheel::advance`])
    /// make timers ready.
    pub fn pop_expired(&mut self) -> Option<Expired<T>> {
        let index = self.ready.pop_front(&mut self.slab)?;
        let key = self.slab.key_of(index);
        let (deadline, payload) = self.slab.remove(index);
        Some(Expired {
            key,
            deadline,
            payload,
        })
    }

    /// Takes the next ready timer off the ready list, like
    /// [`Wheel::pop_expired`], but keeps it in the wheel: its key stays live
    /// and its payload stays in place ([`Wheel::get_mut`]), on no list and
    /// due at no time, until [`Wheel::reset`] arms it again or
    /// [`Wheel::cancel`] removes it. An event loop uses this for repeating
    /// timers, whose handle must outlive each expiry. Returns the key and
    /// the deadline it expired at.
    pub fn pop_expired_key(&mut self) -> Option<(Key, u64)> {
        let index = self.ready.pop_front(&mut self.slab)?;
        let node = self.slab.node_mut(index);
        node.place = Place::Idle;
        let deadline = node.deadline;
        Some((self.slab.key_of(index), deadline))
    }

    /// Whether the timer `key` names is armed: pending, overdue or ready,
    /// not idle after [`Wheel::pop_expired_key`]. `false` for a stale key.
    pub fn is_armed(&self, key: Key) -> bool {
        self.slab
            .resolve(key)
            .is_some_and(|index| self.slab.node(index).place != Place::Idle)
    }

    /// Links the entry at `index` where its deadline says, seen from `elapsed`.
    fn link(&mut self, index: u32) {
        let deadline = self.slab.node(index).deadline;
        if deadline <= self.elapsed {
            return self.link_overdue(index, deadline);
        }
        let level = level_for(self.elapsed, deadline);
        let slot = slot_for(deadline, level);
        let place = Place::Wheel {
            level: level as u8,
            slot: slot as u8,
        };
        let wheel_level = &mut self.levels[level];
        wheel_level.slots[slot].push_back(&mut self.slab, index, place);
        wheel_level.occupied |= 1 << slot;
        wheel_level.earliest[slot] = wheel_level.earliest[slot].min(deadline);
        self.occupied_levels |= 1 << level;
    }

    /// Empties `slot` of `level` and returns its list.
    fn take_slot(&mut self, level: usize, slot: usize) -> List {
        let wheel_level = &mut self.levels[level];
        let list = wheel_level.take_slot(slot);
        if wheel_level.occupied == 0 {
            self.occupied_levels &= !(1 << level);
        }
        list
    }

    fn link_overdue(&mut self, index: u32, deadline: u64) {
        if let Some(tail) = (self.overdue.tail != NIL).then_some(self.overdue.tail) {
            self.overdue_sorted &= self.slab.node(tail).deadline <= deadline;
        }
        self.overdue_earliest = self.overdue_earliest.min(deadline);
        self.overdue
            .push_back(&mut self.slab, index, Place::Overdue);
    }

    /// Takes the entry at `index` off whichever list holds it.
    fn unlink(&mut self, index: u32) {
        match self.slab.node(index).place {
            Place::Wheel { level, slot } => {
                let (level, slot) = (level as usize, slot as usize);
                let list = &mut self.levels[level].slots[slot];
                list.unlink(&mut self.slab, index);
                if list.is_empty() {
                    self.take_slot(level, slot);
                }
            }
            Place::Overdue => {
                self.overdue.unlink(&mut self.slab, index);
                if self.overdue.is_empty() {
                    self.overdue_sorted = true;
                    self.overdue_earliest = u64::MAX;
                }
            }
            Place::Ready => self.ready.unlink(&mut self.slab, index),
            Place::Idle => {}
            Place::Vacant => unreachable!("unlinking a vacant entry"),
        }
    }

    /// Moves the overdue entries into the ready list, in (deadline, start
    /// order). Start order needs no counter: an overdue entry was started
    /// after the last advance (one started before would have been taken
    /// then), so after every ready entry of the same deadline, and the
    /// overdue list itself is in start order, which a stable sort keeps.
    fn take_overdue(&mut self) {
        if self.overdue.is_empty() {
            return;
        }
        if !self.overdue_sorted {
            self.overdue.sort(&mut self.slab);
        }
        self.ready.merge_ready(&mut self.slab, &mut self.overdue);
        self.overdue_sorted = true;
        self.overdue_earliest = u64::MAX;
    }

    /// The earliest occupied slot: the lowest occupied slot of the lowest
    /// occupied level. Every slot of a level starts after every deadline on
    /// the levels below it, and after `elapsed`, so no wrap-around is needed.
    #[inline]
    fn next_slot(&self) -> Option<(usize, usize)> {
        if self.occupied_levels == 0 {
            return None;
        }
        let level = self.occupied_levels.trailing_zeros() as usize;
        let occupied = self.levels[level].occupied;
        debug_assert_ne!(occupied, 0, "level {level} marked occupied is empty");
        Some((level, occupied.trailing_zeros() as usize))
    }

    /// Empties a slot the wheel's time has reached: entries due now become
    /// ready, in list order (which is start order among equal deadlines);
    /// the rest move to the lower levels, also in list order.
    fn expire_slot(&mut self, level: usize, slot: usize) {
        let mut list = self.take_slot(level, slot);
        while let Some(index) = list.pop_front(&mut self.slab) {
            if self.slab.node(index).deadline <= self.elapsed {
                self.ready.push_back(&mut self.slab, index, Place::Ready);
            } else {
                self.link(index);
            }
        }
    }
}

/// The iterator [`Wheel::advance`] returns: pops ready timers in
/// (deadline, start order). Dropping it early leaves the rest ready.
#[derive(Debug)]
pub struct Advance<'a, T> {
    wheel: &'a mut Wheel<T>,
}

impl<T> Iterator for Advance<'_, T> {
    type Item = Expired<T>;

    fn next(&mut self) -> Option<Expired<T>> {
        self.wheel.pop_expired()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The earliest slot by a walk over every level, as `next_slot` did
    /// before the levels' bits.
    fn next_slot_by_walk<T>(wheel: &Wheel<T>) -> Option<(usize, usize)> {
        wheel.levels.iter().enumerate().find_map(|(level, l)| {
            (l.occupied != 0).then(|| (level, l.occupied.trailing_zeros() as usize))
        })
    }

    #[test]
    fn the_levels_bits_follow_inserts_cancels_resets_and_advances() {
        let mut wheel = Wheel::new();
        let mut keys = Vec::new();
        // A fixed pseudo-random walk over deadlines from 1 ms to years.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..4000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let now = wheel.elapsed();
            match x % 8 {
                0..=3 => {
                    let span = 1u64 << ((x >> 8) % 40);
                    keys.push(wheel.insert(now + (x >> 16) % span + 1, round));
                }
                4 if !keys.is_empty() => {
                    let key = keys.swap_remove((x >> 8) as usize % keys.len());
                    wheel.cancel(key);
                }
                5 if !keys.is_empty() => {
                    let key = keys[(x >> 8) as usize % keys.len()];
                    let _ = wheel.reset(key, now + (x >> 16) % 100_000);
                }
                _ => {
                    let to = now + (x >> 8) % (1 << ((x >> 4) % 24));
                    wheel.advance(to).for_each(drop);
                }
            }
            assert_eq!(
                wheel.next_slot(),
                next_slot_by_walk(&wheel),
                "round {round}"
            );
            for (level, l) in wheel.levels.iter().enumerate() {
                assert_eq!(wheel.occupied_levels & (1 << level) != 0, l.occupied != 0);
            }
        }
    }

    #[test]
    fn level_for_uses_the_highest_differing_bit() {
        assert_eq!(level_for(0, 1), 0);
        assert_eq!(level_for(0, 63), 0);
        assert_eq!(level_for(0, 64), 1);
        assert_eq!(level_for(64, 127), 0);
        assert_eq!(level_for(63, 64), 1);
        assert_eq!(level_for(0, 4095), 1);
        assert_eq!(level_for(0, 4096), 2);
        assert_eq!(level_for(0, u64::MAX), LEVELS - 1);
        assert_eq!(level_for(1 << 59, 1 << 60), 10);
    }

    #[test]
    fn slot_start_covers_the_top_level_without_overflow() {
        assert_eq!(slot_start(5, 0, 7), 7);
        assert_eq!(slot_start(70, 1, 3), 3 * 64);
        assert_eq!(slot_start(u64::MAX - 1, 10, 15), 15 << 60);
        assert_eq!(slot_start(0, 10, 1), 1 << 60);
    }

    #[test]
    fn a_retired_entry_is_never_reused_so_its_last_key_stays_stale() {
        let mut wheel = Wheel::new();
        let key = wheel.insert(10, "a");
        wheel.slab.set_generation(key.index, u32::MAX);
        let last = Key {
            index: key.index,
            generation: u32::MAX,
        };
        assert_eq!(wheel.cancel(last), Some("a"));
        let next = wheel.insert(10, "b");
        assert_ne!(next.index, key.index, "the retired entry was reused");
        assert_eq!(wheel.cancel(last), None);
        assert_eq!(
            wheel.cancel(Key {
                index: key.index,
                generation: 0
            }),
            None
        );
        assert_eq!(wheel.len(), 1);
    }
}
