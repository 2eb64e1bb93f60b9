//! The wheel against a reference model: random sequences of insert, cancel,
//! reset, advance and pop must give exactly what a `BTreeMap` keyed by
//! (deadline, start order) gives.
//!
//! At least 10,000 cases run by default; `PROPTEST_CASES=N` runs more.

use std::collections::{BTreeMap, HashMap};

use eventide_timer::{Key, StaleKey, Wheel};
use proptest::prelude::*;

/// A deadline, relative to the model's time or absolute near the top of u64.
#[derive(Clone, Debug)]
enum When {
    /// `elapsed + n`, saturating.
    After(u64),
    /// `elapsed - n`, saturating: already due.
    Before(u64),
    /// `u64::MAX - n`: far beyond any level but the top one.
    NearEnd(u64),
}

#[derive(Clone, Debug)]
enum Op {
    Insert(When),
    /// Cancel the `n % keys`-th key ever issued (it may be stale).
    Cancel(usize),
    Reset(usize, When),
    /// Advance to a time, then pop up to `pops` entries, cancelling or
    /// inserting in between as an event loop's callbacks would.
    Advance {
        to: When,
        pops: usize,
        meddle: Vec<Op>,
    },
    Pop,
    /// Pop keeping the entry (idle until reset or cancelled).
    PopKeep,
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        6 => (0u64..130).prop_map(When::After),
        3 => (0u64..300_000).prop_map(When::After),
        1 => any::<u64>().prop_map(When::After),
        1 => (0u64..100).prop_map(When::Before),
        1 => (0u64..5_000).prop_map(When::NearEnd),
    ]
}

fn simple_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => when().prop_map(Op::Insert),
        2 => any::<usize>().prop_map(Op::Cancel),
        2 => (any::<usize>(), when()).prop_map(|(k, w)| Op::Reset(k, w)),
        1 => Just(Op::Pop),
        1 => Just(Op::PopKeep),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => simple_op(),
        3 => (when(), 0usize..40, prop::collection::vec(simple_op(), 0..4))
            .prop_map(|(to, pops, meddle)| Op::Advance { to, pops, meddle }),
    ]
}

/// The reference: pending and ready entries keyed by (deadline, seq).
#[derive(Default)]
struct Model {
    pending: BTreeMap<(u64, u64), u32>,
    ready: BTreeMap<(u64, u64), u32>,
    live: HashMap<u32, (u64, u64)>,
    elapsed: u64,
    seq: u64,
}

impl Model {
    fn deadline(&self, when: &When) -> u64 {
        match *when {
            When::After(n) => self.elapsed.saturating_add(n),
            When::Before(n) => self.elapsed.saturating_sub(n),
            When::NearEnd(n) => u64::MAX - n,
        }
    }

    fn insert(&mut self, id: u32, deadline: u64) {
        let order = (deadline, self.seq);
        self.seq += 1;
        self.pending.insert(order, id);
        self.live.insert(id, order);
    }

    fn cancel(&mut self, id: u32) -> Option<u32> {
        let order = self.live.remove(&id)?;
        // An idle entry is live but on neither map.
        self.pending.remove(&order);
        self.ready.remove(&order);
        Some(id)
    }

    fn pop_keep(&mut self) -> Option<(u64, u32)> {
        let ((deadline, _), id) = self.ready.pop_first()?;
        Some((deadline, id))
    }

    fn is_armed(&self, id: u32) -> bool {
        self.live
            .get(&id)
            .is_some_and(|order| self.pending.contains_key(order) || self.ready.contains_key(order))
    }

    fn reset(&mut self, id: u32, deadline: u64) -> Result<(), StaleKey> {
        self.cancel(id).ok_or(StaleKey)?;
        self.insert(id, deadline);
        Ok(())
    }

    fn advance(&mut self, now: u64) {
        self.elapsed = self.elapsed.max(now);
        let later = match self.elapsed.checked_add(1) {
            Some(first_not_due) => self.pending.split_off(&(first_not_due, 0)),
            None => BTreeMap::new(),
        };
        let due = std::mem::replace(&mut self.pending, later);
        self.ready.extend(due);
    }

    fn pop(&mut self) -> Option<(u64, u32)> {
        let ((deadline, _), id) = self.ready.pop_first()?;
        self.live.remove(&id);
        Some((deadline, id))
    }

    fn earliest(&self) -> Option<u64> {
        let pending = self.pending.first_key_value().map(|(k, _)| k.0);
        let ready = self.ready.first_key_value().map(|(k, _)| k.0);
        pending.into_iter().chain(ready).min()
    }
}

/// The wheel and the model side by side, with every key ever issued.
#[derive(Default)]
struct Harness {
    wheel: Wheel<u32>,
    model: Model,
    keys: Vec<Key>,
}

impl Harness {
    fn key(&self, pick: usize) -> Option<(u32, Key)> {
        if self.keys.is_empty() {
            return None;
        }
        let id = pick % self.keys.len();
        Some((id as u32, self.keys[id]))
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Insert(when) => {
                let deadline = self.model.deadline(when);
                let id = self.keys.len() as u32;
                self.keys.push(self.wheel.insert(deadline, id));
                self.model.insert(id, deadline);
            }
            Op::Cancel(pick) => {
                if let Some((id, key)) = self.key(*pick) {
                    prop_assert_eq!(self.wheel.cancel(key), self.model.cancel(id));
                }
            }
            Op::Reset(pick, when) => {
                if let Some((id, key)) = self.key(*pick) {
                    let deadline = self.model.deadline(when);
                    prop_assert_eq!(
                        self.wheel.reset(key, deadline),
                        self.model.reset(id, deadline)
                    );
                }
            }
            Op::Pop => self.pop()?,
            Op::PopKeep => {
                let got = self.wheel.pop_expired_key();
                let expected = self
                    .model
                    .pop_keep()
                    .map(|(deadline, id)| (self.keys[id as usize], deadline));
                prop_assert_eq!(got, expected);
            }
            Op::Advance { to, pops, meddle } => {
                let now = self.model.deadline(to);
                self.wheel.advance_to(now);
                self.model.advance(now);
                for (i, extra) in meddle.iter().enumerate() {
                    for _ in 0..*pops / (i + 1) {
                        self.pop()?;
                    }
                    self.apply(extra)?;
                }
                for _ in 0..*pops {
                    self.pop()?;
                }
            }
        }
        self.check()
    }

    fn pop(&mut self) -> Result<(), TestCaseError> {
        let got = self.wheel.pop_expired().map(|e| {
            assert_eq!(
                e.key, self.keys[e.payload as usize],
                "expired entry carries its key"
            );
            (e.deadline, e.payload)
        });
        prop_assert_eq!(got, self.model.pop());
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.wheel.len(), self.model.live.len());
        prop_assert_eq!(self.wheel.elapsed(), self.model.elapsed);
        let next = self.wheel.next_deadline();
        match self.model.earliest() {
            None => prop_assert_eq!(next, None),
            Some(earliest) => {
                let next = next.expect("next_deadline is Some while timers are held");
                prop_assert!(
                    next <= earliest,
                    "next_deadline {} > earliest {}",
                    next,
                    earliest
                );
                if self.model.ready.is_empty() && earliest > self.model.elapsed {
                    prop_assert!(
                        next > self.model.elapsed,
                        "nothing is due, yet {} <= now",
                        next
                    );
                }
            }
        }
        for (id, key) in self.keys.iter().enumerate().rev().take(8) {
            let expected = self.model.live.get(&(id as u32)).map(|order| order.0);
            prop_assert_eq!(self.wheel.deadline(*key), expected);
            prop_assert_eq!(self.wheel.is_armed(*key), self.model.is_armed(id as u32));
        }
        Ok(())
    }

    /// Pops everything: advancing to the end of time must yield every timer.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        let got: Vec<_> = self
            .wheel
            .advance(u64::MAX)
            .map(|e| (e.deadline, e.payload))
            .collect();
        self.model.advance(u64::MAX);
        let expected: Vec<_> = std::iter::from_fn(|| self.model.pop()).collect();
        prop_assert_eq!(got, expected);
        // What is left is idle: live, on no list, removed by cancel.
        let idle: Vec<u32> = self.model.live.keys().copied().collect();
        for id in idle {
            prop_assert_eq!(self.wheel.cancel(self.keys[id as usize]), Some(id));
        }
        prop_assert!(self.wheel.is_empty());
        Ok(())
    }
}

fn cases() -> u32 {
    let asked = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    asked.unwrap_or(0).max(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_wheel_yields_exactly_what_the_reference_model_yields(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        let mut harness = Harness::default();
        for op in &ops {
            harness.apply(op)?;
        }
        harness.finish()?;
    }
}
