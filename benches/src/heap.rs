//! A binary min-heap timer queue: the structure libuv keeps its timers in.
//!
//! libuv orders timers in a binary heap by (deadline, start counter), so
//! equal deadlines fire in start order, and stops a timer by removing its
//! node from wherever it sits in the heap. This is the same structure as a
//! competent Rust programmer would write it: an array heap of
//! (deadline, seq, entry) triples for cache-friendly sifting, a slab of
//! entries that remember their heap position (for O(log n) removal), and
//! generation-checked keys. The benches compare eventide's wheel against it
//! on the same work, so it gets the same care: no allocation per operation
//! once warm, no bounds-check-heavy indirection in the sift loops.

/// A key to one timer in a [`HeapTimers`]; stale once the timer is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapKey {
    index: u32,
    generation: u32,
}

#[derive(Clone, Copy, Debug)]
struct HeapNode {
    deadline: u64,
    seq: u64,
    entry: u32,
}

impl HeapNode {
    fn before(&self, other: &HeapNode) -> bool {
        (self.deadline, self.seq) < (other.deadline, other.seq)
    }
}

#[derive(Debug)]
struct Entry<T> {
    generation: u32,
    /// Position in the heap array, or `VACANT`.
    position: u32,
    payload: Option<T>,
}

const VACANT: u32 = u32::MAX;

/// A timer queue on a binary min-heap keyed by (deadline, start order).
#[derive(Debug)]
pub struct HeapTimers<T> {
    heap: Vec<HeapNode>,
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    next_seq: u64,
}

impl<T> Default for HeapTimers<T> {
    fn default() -> Self {
        HeapTimers::with_capacity(0)
    }
}

impl<T> HeapTimers<T> {
    /// An empty queue with room for `capacity` timers.
    pub fn with_capacity(capacity: usize) -> Self {
        HeapTimers {
            heap: Vec::with_capacity(capacity),
            entries: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            next_seq: 0,
        }
    }

    /// How many timers are queued.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Starts a timer due at `deadline`. O(log n).
    pub fn insert(&mut self, deadline: u64, payload: T) -> HeapKey {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    generation: 0,
                    position: VACANT,
                    payload: None,
                });
                (self.entries.len() - 1) as u32
            }
        };
        let entry = &mut self.entries[index as usize];
        entry.payload = Some(payload);
        let key = HeapKey {
            index,
            generation: entry.generation,
        };
        self.push_node(deadline, index);
        key
    }

    /// Stops a timer; `None` for a stale key. O(log n).
    pub fn cancel(&mut self, key: HeapKey) -> Option<T> {
        let position = self.live_position(key)?;
        self.remove_at(position);
        Some(self.free_entry(key.index))
    }

    /// Re-arms a timer at `deadline`, after every timer started before.
    /// O(log n). Returns `false` for a stale key.
    pub fn reset(&mut self, key: HeapKey, deadline: u64) -> bool {
        let Some(position) = self.live_position(key) else {
            return false;
        };
        self.remove_at(position);
        self.push_node(deadline, key.index);
        true
    }

    /// The earliest deadline queued.
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.first().map(|node| node.deadline)
    }

    /// Pops the earliest timer if it is due by `now`: (deadline, payload).
    pub fn pop_expired(&mut self, now: u64) -> Option<(u64, T)> {
        let top = *self.heap.first()?;
        if top.deadline > now {
            return None;
        }
        self.remove_at(0);
        Some((top.deadline, self.free_entry(top.entry)))
    }

    fn live_position(&self, key: HeapKey) -> Option<usize> {
        let entry = self.entries.get(key.index as usize)?;
        (entry.generation == key.generation && entry.position != VACANT)
            .then_some(entry.position as usize)
    }

    fn free_entry(&mut self, index: u32) -> T {
        let entry = &mut self.entries[index as usize];
        entry.position = VACANT;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(index);
        entry.payload.take().expect("live heap entry has a payload")
    }

    fn push_node(&mut self, deadline: u64, entry: u32) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(HeapNode {
            deadline,
            seq,
            entry,
        });
        self.sift_up(self.heap.len() - 1);
    }

    fn remove_at(&mut self, position: usize) {
        let last = self.heap.len() - 1;
        self.heap.swap(position, last);
        self.heap.pop();
        if position < last {
            self.sift_down(position);
            self.sift_up(position);
        }
    }

    fn sift_up(&mut self, mut position: usize) {
        let node = self.heap[position];
        while position > 0 {
            let parent = (position - 1) / 2;
            if !node.before(&self.heap[parent]) {
                break;
            }
            self.place(position, self.heap[parent]);
            position = parent;
        }
        self.place(position, node);
    }

    fn sift_down(&mut self, mut position: usize) {
        let node = self.heap[position];
        let len = self.heap.len();
        loop {
            let left = 2 * position + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right].before(&self.heap[left]) {
                right
            } else {
                left
            };
            if !self.heap[child].before(&node) {
                break;
            }
            self.place(position, self.heap[child]);
            position = child;
        }
        self.place(position, node);
    }

    fn place(&mut self, position: usize, node: HeapNode) {
        self.heap[position] = node;
        self.entries[node.entry as usize].position = position as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_deadlines_pop_in_start_order_and_reset_moves_to_the_back() {
        let mut heap = HeapTimers::with_capacity(4);
        let a = heap.insert(10, 'a');
        heap.insert(10, 'b');
        heap.insert(5, 'c');
        assert!(heap.reset(a, 10));
        let popped: Vec<_> = std::iter::from_fn(|| heap.pop_expired(10)).collect();
        assert_eq!(popped, [(5, 'c'), (10, 'b'), (10, 'a')]);
    }

    #[test]
    fn cancel_removes_from_the_middle_and_stale_keys_do_nothing() {
        let mut heap = HeapTimers::with_capacity(0);
        let keys: Vec<_> = (0..100u64)
            .map(|i| heap.insert((i * 37) % 101, i))
            .collect();
        for key in keys.iter().step_by(2) {
            assert!(heap.cancel(*key).is_some());
            assert!(heap.cancel(*key).is_none());
        }
        let mut last = 0;
        let mut count = 0;
        while let Some((deadline, value)) = heap.pop_expired(u64::MAX) {
            assert!(deadline >= last);
            assert_eq!(value % 2, 1);
            last = deadline;
            count += 1;
        }
        assert_eq!(count, 50);
    }
}
