//! Doubly linked lists threaded through the slab's entries.
//!
//! A list is two indices; the links live in the entries themselves, so
//! pushing, unlinking and splicing never allocate.

use crate::slab::{NIL, Place, Slab};

/// The ends of one intrusive list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct List {
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

impl List {
    pub(crate) const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };

    pub(crate) fn is_empty(&self) -> bool {
        self.head == NIL
    }

    /// Appends the entry at `index` and records `place` in it.
    pub(crate) fn push_back<T>(&mut self, slab: &mut Slab<T>, index: u32, place: Place) {
        let node = slab.node_mut(index);
        node.prev = self.tail;
        node.next = NIL;
        node.place = place;
        match self.tail {
            NIL => self.head = index,
            tail => slab.node_mut(tail).next = index,
        }
        self.tail = index;
    }

    /// Takes the entry at `index` out of this list, which must hold it.
    pub(crate) fn unlink<T>(&mut self, slab: &mut Slab<T>, index: u32) {
        let node = slab.node(index);
        let (prev, next) = (node.prev, node.next);
        match prev {
            NIL => self.head = next,
            prev => slab.node_mut(prev).next = next,
        }
        match next {
            NIL => self.tail = prev,
            next => slab.node_mut(next).prev = prev,
        }
    }

    /// Removes and returns the first entry's index.
    pub(crate) fn pop_front<T>(&mut self, slab: &mut Slab<T>) -> Option<u32> {
        let head = self.head;
        if head == NIL {
            return None;
        }
        self.unlink(slab, head);
        Some(head)
    }

    /// Sorts the list by deadline in place, keeping list order among equal
    /// deadlines (a stable, bottom-up merge sort over the links: O(n log n),
    /// allocation-free).
    pub(crate) fn sort<T>(&mut self, slab: &mut Slab<T>) {
        let mut run = 1usize;
        loop {
            let mut rest = self.head;
            let mut sorted = List::EMPTY;
            let mut merges = 0;
            while rest != NIL {
                merges += 1;
                let (left, after_left) = split_after(slab, rest, run);
                let (right, after_right) = split_after(slab, after_left, run);
                sorted.append_merged(slab, left, right);
                rest = after_right;
            }
            *self = sorted;
            if merges <= 1 {
                return;
            }
            run *= 2;
        }
    }

    /// Moves every entry of `other` into this list, both sorted by deadline,
    /// and marks them `Ready`. Among equal deadlines this list's entries stay
    /// first: every entry of `other` was started after them (see the wheel's
    /// `take_overdue`). Costs the length of `other` when its entries all
    /// come after this list's, as they usually do.
    pub(crate) fn merge_ready<T>(&mut self, slab: &mut Slab<T>, other: &mut List) {
        let mut cursor = self.head;
        while let Some(index) = other.pop_front(slab) {
            let deadline = slab.node(index).deadline;
            if self.tail == NIL || slab.node(self.tail).deadline <= deadline {
                self.push_back(slab, index, Place::Ready);
                continue;
            }
            while slab.node(cursor).deadline <= deadline {
                cursor = slab.node(cursor).next;
            }
            self.insert_before(slab, cursor, index);
        }
    }

    /// Links the entry at `index` before the entry at `at`, marked `Ready`.
    fn insert_before<T>(&mut self, slab: &mut Slab<T>, at: u32, index: u32) {
        let prev = slab.node(at).prev;
        let node = slab.node_mut(index);
        node.prev = prev;
        node.next = at;
        node.place = Place::Ready;
        slab.node_mut(at).prev = index;
        match prev {
            NIL => self.head = index,
            prev => slab.node_mut(prev).next = index,
        }
    }

    /// Appends the merge of two sorted NIL-terminated chains.
    fn append_merged<T>(&mut self, slab: &mut Slab<T>, mut left: u32, mut right: u32) {
        while left != NIL || right != NIL {
            let take_left = right == NIL
                || (left != NIL && slab.node(left).deadline <= slab.node(right).deadline);
            let index = if take_left { left } else { right };
            let next = slab.node(index).next;
            if take_left {
                left = next
            } else {
                right = next
            }
            let place = slab.node(index).place;
            self.push_back(slab, index, place);
        }
    }
}

/// Cuts the chain starting at `start` after `count` entries: returns the
/// first part's head and the rest's head, each NIL-terminated.
fn split_after<T>(slab: &mut Slab<T>, start: u32, count: usize) -> (u32, u32) {
    if start == NIL {
        return (NIL, NIL);
    }
    let mut last = start;
    for _ in 1..count {
        match slab.node(last).next {
            NIL => break,
            next => last = next,
        }
    }
    let rest = slab.node(last).next;
    slab.node_mut(last).next = NIL;
    (start, rest)
}
