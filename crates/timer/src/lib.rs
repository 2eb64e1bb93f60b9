//! A hierarchical hashed timer wheel with millisecond resolution.
//!
//! This is the timer store of eventide's event loop, and a plain data
//! structure usable anywhere: it never reads a clock, spawns nothing and
//! holds no locks. The caller says what time it is (a `u64` of
//! milliseconds, e.g. since its loop started) and the wheel says which
//! timers are due, in the order Node.js and libuv promise.
//!
//! ```
//! use eventide_timer::Wheel;
//!
//! let mut wheel = Wheel::new();
//! let a = wheel.insert(10, "a");
//! wheel.insert(5, "b");
//! wheel.insert(10, "c");
//! wheel.reset(a, 10).unwrap(); // like Node's refresh(): "a" now starts after "c"
//!
//! assert_eq!(wheel.next_deadline(), Some(5));
//! let fired: Vec<_> = wheel.advance(10).map(|e| e.payload).collect();
//! assert_eq!(fired, ["b", "c", "a"]);
//! assert!(wheel.is_empty());
//! ```
//!
//! # Costs
//!
//! | operation | cost |
//! |---|---|
//! | [`Wheel::insert`] | O(1), allocation-free once the slab has room |
//! | [`Wheel::cancel`], [`Wheel::reset`] | O(1) |
//! | [`Wheel::next_deadline`] | two bit scans (a word of occupied levels, then the level's slots) |
//! | [`Wheel::advance`] | O(1) per expired timer, plus O(1) each time a timer moves down a level |
//!
//! # The design
//!
//! ## Entries and keys
//!
//! Every timer lives in one slab entry and never moves. Entries are linked
//! into doubly linked lists through indices stored in the entries, so that
//! unlinking a timer from anywhere is O(1) and lists cost no allocation. A
//! [`Key`] is the entry's index plus its generation; the generation goes up
//! each time the entry is freed, so a key kept after its timer fired or was
//! cancelled is *stale* and never reaches another timer. (An entry whose
//! 32-bit generation would wrap is retired, not reused.)
//!
//! ## Levels
//!
//! The wheel's time is `elapsed`: the largest `now` it has been advanced to.
//! A pending timer is filed by the *highest bit in which its deadline
//! differs from `elapsed`*: bits 0-5 put it on level 0, bits 6-11 on
//! level 1, and so on. Within its level, the timer's slot is the deadline's
//! six bits of that level. Each level has 64 slots:
//!
//! | level | one slot spans | the level spans |
//! |---|---|---|
//! | 0 | 1 ms | 64 ms |
//! | 1 | 64 ms | ~4 s |
//! | 2 | ~4 s | ~4.4 min |
//! | 3 | ~4.4 min | ~4.7 h |
//! | 4 | ~4.7 h | ~12.4 days |
//! | 5 | ~12.4 days | ~2.2 years |
//! | 6..=9 | | up to ~2^60 ms |
//! | 10 | 2^60 ms | the rest of `u64` (16 slots used) |
//!
//! Eleven levels of six bits cover all 64 bits, so every deadline up to
//! `u64::MAX` has a slot; nothing needs a separate overflow list. The top
//! levels are the "parking" for far deadlines: a timer waits there and
//! cascades down like any other.
//!
//! Two facts follow from filing by the highest differing bit, and the rest
//! of the design leans on them:
//!
//! 1. Every timer on level `L` lies in the same level-`L` *span* as
//!    `elapsed`, in a slot strictly after `elapsed`'s own. So the next slot
//!    to visit on a level is simply its lowest occupied slot: one
//!    `trailing_zeros` of the level's occupancy word, no wrap-around.
//! 2. Every deadline on level `L` comes after every deadline on the levels
//!    below it. So the next slot of the whole wheel is the next slot of its
//!    lowest occupied level.
//!
//! Both stay true as `elapsed` grows, as long as the wheel never passes the
//! start of an occupied slot without emptying it, which [`Wheel::advance`]
//! makes sure of.
//!
//! ## The rounding rule
//!
//! A deadline is never rounded: a level-0 slot holds exactly one
//! millisecond, and a coarser slot only says when to look again. When the
//! wheel's time reaches the start of an occupied slot on level `L > 0`, the
//! slot is emptied and each timer in it is filed again against the new
//! `elapsed`, landing on a lower level (or becoming ready, if its deadline is
//! that very instant). A timer therefore fires at the first advance whose
//! `now` is at or past its exact deadline, never earlier and never a slot
//! late, and it moves at most once per level on the way down.
//!
//! A deadline at or before `elapsed` when inserted (or reset) is already
//! due. It goes on an *overdue* list, and the next [`Wheel::advance`] merges
//! that list into the ready list in order (a merge sort runs first only if
//! such deadlines arrived out of order).
//!
//! ## The ordering guarantee
//!
//! Timers come out of an advance in (deadline, start order): earlier
//! deadlines first and, among equal deadlines, the one started earlier
//! first, where starting is [`Wheel::insert`] or [`Wheel::reset`]. This is
//! what libuv and Node.js promise (libuv breaks heap ties by a start
//! counter; Node keeps one FIFO list per duration).
//!
//! The wheel keeps it without comparing start counters on the hot path:
//! every slot list is in start order among equal deadlines. A slot only
//! ever receives timers in two ways: moved down from a higher slot when the
//! wheel's time reaches that slot's start, or inserted directly. Every
//! timer moved down was started before the cascade, and every direct insert
//! into a lower slot of that span can only happen after the cascade
//! (before it, a deadline in that span was filed on the higher level).
//! Cascading walks its slot in list order and appends, and when the wheel
//! reaches a span's start, nothing else is filed below it. So the list
//! order is start order, by induction from the top level down; a level-0
//! slot holds a single deadline, and it moves onto the ready list whole, in
//! list order.
//!
//! ## Expiry rounds
//!
//! [`Wheel::advance_to`] moves every due timer onto the ready list in one
//! go, and [`Wheel::pop_expired`] (or the iterator [`Wheel::advance`]
//! returns) hands them out one at a time, so an event loop can run each timer's callback
//! between pops. A callback may cancel or reset a timer that is ready but
//! not yet popped (it leaves the round), and a timer started or reset during
//! the round with a deadline at or before `now` goes on the overdue list: it
//! fires at the *next* advance, never in the round under way. This is how
//! Node behaves: a `setTimeout(f, 0)` made inside a timer callback waits for
//! the next turn of the loop.
//!
//! A repeating timer needs a key that outlives each expiry:
//! [`Wheel::pop_expired_key`] takes the next ready timer off the ready list
//! but leaves it in the wheel, *idle* (on no list, due at no time), so the
//! callback can run with the key still live; [`Wheel::reset`] re-arms it
//! afterwards, or [`Wheel::cancel`] removes it.
//!
//! ## Time
//!
//! The wheel's time never goes backwards: an advance to an earlier `now`
//! than before is an advance to the old time. The wheel starts at time 0.
//!
//! This crate has no unsafe code.

#![forbid(unsafe_code)]

mod list;
mod slab;
mod wheel;

pub use wheel::{Advance, Expired, Key, StaleKey, Wheel};
