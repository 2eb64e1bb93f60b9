//! A timer's callback, stored inline when it is small.
//!
//! A million pending timers are a million callbacks. Boxing each one costs
//! an allocation (32 bytes from the allocator even for a closure that
//! captures one integer) and a pointer hop when it fires. [`TimerCallback`]
//! keeps a closure of up to one word (`INLINE` bytes, pointer-aligned: an
//! index, a small id, one `Rc` or `Box`) in the timer itself, and boxes
//! only larger ones. One word keeps a timer at 24 bytes and a wheel entry
//! at 48: every timer pays for the storage, so it stays small. It is the same idea as a
//! `Box<dyn FnOnce>` with a small-buffer optimisation: the closure's bytes,
//! plus a static table of the three things the timer can do with them.
//!
//! The value is always moved out of the wheel before it is called (a
//! callback may clear its own timer, or start others, while it runs), so
//! the closure never runs from memory the loop might touch meanwhile.

use std::marker::PhantomData;
use std::mem::{self, MaybeUninit};
use std::ptr;

use crate::event_loop::Loop;
use crate::timers::TimerId;

/// Bytes a closure may take and still be stored inline.
const INLINE: usize = mem::size_of::<usize>();

/// The storage: one pointer-sized word, aligned as pointers are.
type Storage = MaybeUninit<[usize; 1]>;

/// What a timer can do with the closure in its storage.
struct VTable {
    /// Calls the closure in place; it stays.
    ///
    /// # Safety
    ///
    /// The storage holds a live closure of this table's type.
    call: unsafe fn(&mut Storage, &mut Loop, TimerId),
    /// Drops the closure in place.
    ///
    /// # Safety
    ///
    /// The storage holds a live closure of this table's type; it is dead
    /// afterwards.
    drop: unsafe fn(&mut Storage),
}

/// A timer callback: a one-shot `FnOnce(&mut Loop)` or a repeating
/// `FnMut(&mut Loop, TimerId)`, inline when small. The empty state
/// ([`TimerCallback::NONE`]) marks an interval whose callback is running.
pub(crate) struct TimerCallback {
    storage: Storage,
    /// [`EMPTY`] when no closure is stored. (A reference rather than an
    /// `Option`, so that `Option<Timer>` can still use its niche: the
    /// wheel's entries stay 48 bytes.)
    vtable: &'static VTable,
    /// The stored closure may hold anything `!Send` or `!Sync` (an `Rc`),
    /// and the bytes above do not say so: without this marker the type
    /// would be `Send + Sync` whatever it holds.
    _not_send: PhantomData<*const ()>,
}

/// The table of the empty state: nothing to call or drop.
static EMPTY: VTable = VTable {
    call: call_nothing,
    drop: drop_nothing,
};

/// # Safety
///
/// None needed: it touches nothing.
unsafe fn call_nothing(_: &mut Storage, _: &mut Loop, _: TimerId) {}

/// # Safety
///
/// None needed: it touches nothing.
unsafe fn drop_nothing(_: &mut Storage) {}

/// Whether a closure of type `F` fits the inline storage.
const fn fits<F>() -> bool {
    mem::size_of::<F>() <= INLINE && mem::align_of::<F>() <= mem::align_of::<Storage>()
}

/// Calls a repeating closure stored inline, leaving it in place.
///
/// # Safety
///
/// `storage` holds a live `F`, written by [`TimerCallback::repeat`].
unsafe fn call_mut_inline<F: FnMut(&mut Loop, TimerId)>(
    storage: &mut Storage,
    lp: &mut Loop,
    id: TimerId,
) {
    // SAFETY: the caller guarantees a live F there (see above); the
    // `&mut Storage` borrow makes this the only reference to it.
    let f = unsafe { &mut *storage.as_mut_ptr().cast::<F>() };
    f(lp, id);
}

/// Drops a closure stored inline.
///
/// # Safety
///
/// `storage` holds a live `F`; it is dead afterwards.
unsafe fn drop_inline<F>(storage: &mut Storage) {
    // SAFETY: the caller guarantees a live F there, and never uses it again.
    unsafe { ptr::drop_in_place(storage.as_mut_ptr().cast::<F>()) }
}

/// The tables of a closure type `F`, stored inline or boxed. A boxed
/// closure is an inline `Box<F>`: one pointer, which fits.
struct Tables<F>(F);

impl<F: FnMut(&mut Loop, TimerId) + 'static> Tables<F> {
    const REPEAT: VTable = VTable {
        call: call_mut_inline::<F>,
        drop: drop_inline::<F>,
    };
}

impl<F: FnMut(&mut Loop, TimerId) + 'static> Tables<Box<F>> {
    const REPEAT_BOXED: VTable = VTable {
        call: call_mut_inline::<Box<F>>,
        drop: drop_inline::<Box<F>>,
    };
}

impl TimerCallback {
    /// No closure: the state of an interval whose callback is out running.
    pub(crate) const NONE: TimerCallback = TimerCallback {
        storage: MaybeUninit::uninit(),
        vtable: &EMPTY,
        _not_send: PhantomData,
    };

    /// Stores `value` (which must fit) with its table.
    fn store<T>(value: T, vtable: &'static VTable) -> TimerCallback {
        assert!(
            fits::<T>(),
            "eventide: a stored timer callback must fit inline"
        );
        let mut storage = Storage::uninit();
        // SAFETY: `fits::<T>()` (just checked) makes the storage large and
        // aligned enough for a T; it is uninitialised and ours, so writing
        // does not overwrite (or leak) anything.
        unsafe { ptr::write(storage.as_mut_ptr().cast::<T>(), value) };
        TimerCallback {
            storage,
            vtable,
            _not_send: PhantomData,
        }
    }

    /// A timer's callback (`setInterval`'s; `setTimeout`'s, which runs
    /// again when its timeout is refreshed from inside it).
    pub(crate) fn repeat<F: FnMut(&mut Loop, TimerId) + 'static>(f: F) -> TimerCallback {
        if fits::<F>() {
            TimerCallback::store(f, &Tables::<F>::REPEAT)
        } else {
            TimerCallback::store(Box::new(f), &Tables::<Box<F>>::REPEAT_BOXED)
        }
    }

    /// Whether a closure is stored.
    pub(crate) fn is_some(&self) -> bool {
        !ptr::eq(self.vtable, &EMPTY)
    }

    /// Takes the closure out, leaving [`TimerCallback::NONE`].
    pub(crate) fn take(&mut self) -> TimerCallback {
        mem::replace(self, TimerCallback::NONE)
    }

    /// Calls the closure, which comes back to be stored again (if it
    /// panics, unwinding drops it).
    pub(crate) fn call(mut self, lp: &mut Loop, id: TimerId) -> TimerCallback {
        let vtable = self.vtable;
        // SAFETY: `vtable` is the table the storage's closure was stored
        // with (or EMPTY, which touches nothing), and the call leaves the
        // closure live. If it panics, unwinding drops `self`, which drops
        // the closure once, after the call's borrow of it has ended.
        unsafe { (vtable.call)(&mut self.storage, lp, id) };
        self
    }
}

impl Drop for TimerCallback {
    fn drop(&mut self) {
        let vtable = mem::replace(&mut self.vtable, &EMPTY);
        // SAFETY: the storage holds a live closure of `vtable`'s type (or
        // nothing, for EMPTY, whose drop touches nothing); it is never used
        // again after this.
        unsafe { (vtable.drop)(&mut self.storage) };
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// Counts drops of the closures that hold one.
    struct Token(Rc<Cell<u32>>);

    impl Drop for Token {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    /// `<T as AmbiguousIfSend<_>>::check()` compiles only when exactly
    /// one impl applies: for a `T` that is `Send` both do, the type
    /// parameter cannot be inferred, and the call fails to compile.
    trait AmbiguousIfSend<Which> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    struct IsSend;
    impl<T: ?Sized + Send> AmbiguousIfSend<IsSend> for T {}

    trait AmbiguousIfSync<Which> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    struct IsSync;
    impl<T: ?Sized + Sync> AmbiguousIfSync<IsSync> for T {}

    /// A stored callback may hold an `Rc`: the type is neither `Send` nor
    /// `Sync` (a compile-time check: this module does not build if it is).
    #[test]
    fn a_timer_callback_is_neither_send_nor_sync() {
        <TimerCallback as AmbiguousIfSend<_>>::check();
        <TimerCallback as AmbiguousIfSync<_>>::check();
        // The probe itself tells the two apart.
        <Rc<u8> as AmbiguousIfSend<_>>::check();
    }

    #[test]
    fn small_closures_are_inline_and_large_ones_boxed() {
        let small = 7u64;
        assert!(fits::<u64>());
        assert!(fits::<Rc<u8>>());
        assert!(!fits::<[u64; 2]>());
        assert!(fits::<Box<[u64; 3]>>());
        let callback = TimerCallback::repeat(move |_, _| assert_eq!(small, 7));
        assert!(callback.is_some());
        assert_eq!(mem::size_of::<TimerCallback>(), 2 * mem::size_of::<usize>());
        assert_eq!(
            mem::size_of::<Option<TimerCallback>>(),
            mem::size_of::<TimerCallback>()
        );
    }

    #[test]
    fn an_unfired_callback_is_dropped_exactly_once_inline_or_boxed() {
        let drops = Rc::new(Cell::new(0));
        let inline = Token(Rc::clone(&drops));
        let boxed = (Token(Rc::clone(&drops)), [0u64; 4]);
        let a = TimerCallback::repeat(move |_, _| {
            let _ = &inline;
        });
        let b = TimerCallback::repeat(move |_, _| {
            let _ = &boxed;
        });
        drop(a);
        drop(b);
        assert_eq!(drops.get(), 2);
        let mut c = TimerCallback::repeat({
            let token = Token(Rc::clone(&drops));
            move |_, _| {
                let _ = &token;
            }
        });
        let taken = c.take();
        assert!(!c.is_some());
        drop(c);
        assert_eq!(drops.get(), 2, "an empty callback drops nothing");
        drop(taken);
        assert_eq!(drops.get(), 3);
    }
}
