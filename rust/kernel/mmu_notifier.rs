// SPDX-License-Identifier: GPL-2.0

//! MMU interval notifiers: follow changes to a range of a process's page
//! tables.
//!
//! A device that maps a process's memory through its own page tables (a
//! "secondary MMU") must stop using a page as soon as the CPU page tables
//! stop mapping it: on `munmap()`, `mprotect()`, `madvise(MADV_DONTNEED)`,
//! copy-on-write after `fork()`, KSM merging, migration, compaction,
//! swap-out and process exit. An [`IntervalNotifier`] is called
//! ([`Invalidate::invalidate`]) before any such change to its range takes
//! effect, and the change waits until the callback returns.
//!
//! Mirroring then follows the collision-retry protocol of
//! `Documentation/mm/hmm.rst`, with a driver lock of the driver's choice
//! (the "update lock") that the invalidate callback also takes:
//!
//! 1. [`IntervalNotifier::read_begin`] returns a sequence number (without
//!    the update lock held: it waits for running invalidations);
//! 2. the driver looks at the CPU page tables, e.g. with
//!    [`hmm::Range::fault`], without holding the update lock;
//! 3. it takes the update lock and calls [`IntervalNotifier::read_retry`];
//!    if that returns `true`, an invalidation ran in between: unlock and
//!    start again. Otherwise it programs its page table, still under the
//!    lock, and unlocks.
//!
//! The invalidate callback takes the update lock, calls
//! [`InvalidateSeq::set_seq`], removes its mappings of the range, and
//! returns.
//!
//! [`hmm::Range::fault`]: crate::hmm::Range::fault
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h).

use crate::{
    bindings,
    error::Error,
    ffi::{c_ulong, c_void},
    init::{self, PinInit},
    mm::{Mm, MmWithUser},
    prelude::*,
    types::Opaque,
};
use core::marker::PhantomData;

/// Why the CPU page tables of a range change (`enum mmu_notifier_event`).
///
/// # Examples
///
/// ```
/// use kernel::mmu_notifier::Event;
///
/// for e in [
///     Event::Unmap,
///     Event::Clear,
///     Event::ProtectionVma,
///     Event::ProtectionPage,
///     Event::SoftDirty,
///     Event::Release,
///     Event::Migrate,
///     Event::Exclusive,
/// ] {
///     assert_eq!(Event::from_raw(e.into_raw()), Some(e));
/// }
/// assert_eq!(Event::Unmap.into_raw(), kernel::bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP);
/// assert_eq!(Event::from_raw(8), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `munmap()`, or `mremap()` moving the range.
    Unmap,
    /// Page table entries are cleared: `madvise()`, a page replaced by
    /// another (copy-on-write, KSM), reclaim and many more.
    Clear,
    /// `mprotect()` changes the protection of the whole range.
    ProtectionVma,
    /// The write permission of some pages changes (e.g. write-protection
    /// for copy-on-write after `fork()`).
    ProtectionPage,
    /// Soft-dirty tracking is reset; pages and permissions stay the same.
    SoftDirty,
    /// The address space is going away (the process exits): the range is
    /// no longer accessible.
    Release,
    /// Pages are migrated to or from device private memory
    /// (`migrate_vma_setup()`); [`NotifierRange::owner`] is the owner
    /// passed to it.
    Migrate,
    /// A device gets, or loses, exclusive access to pages
    /// (`make_device_exclusive_range()`); [`NotifierRange::owner`] is the
    /// device's owner when it gets access, none when the CPU takes it back.
    Exclusive,
}

impl Event {
    /// Converts from the C enum; `None` for a value this kernel does not
    /// define.
    pub fn from_raw(event: bindings::mmu_notifier_event) -> Option<Self> {
        Some(match event {
            bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP => Self::Unmap,
            bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR => Self::Clear,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_VMA => Self::ProtectionVma,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_PAGE => Self::ProtectionPage,
            bindings::mmu_notifier_event_MMU_NOTIFY_SOFT_DIRTY => Self::SoftDirty,
            bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE => Self::Release,
            bindings::mmu_notifier_event_MMU_NOTIFY_MIGRATE => Self::Migrate,
            bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE => Self::Exclusive,
            _ => return None,
        })
    }

    /// Converts to the C enum.
    pub fn into_raw(self) -> bindings::mmu_notifier_event {
        match self {
            Self::Unmap => bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP,
            Self::Clear => bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR,
            Self::ProtectionVma => bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_VMA,
            Self::ProtectionPage => bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_PAGE,
            Self::SoftDirty => bindings::mmu_notifier_event_MMU_NOTIFY_SOFT_DIRTY,
            Self::Release => bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE,
            Self::Migrate => bindings::mmu_notifier_event_MMU_NOTIFY_MIGRATE,
            Self::Exclusive => bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE,
        }
    }
}

/// An opaque cookie that identifies a driver (or device) to the mm.
///
/// The mm passes it back, without ever dereferencing it, in the
/// invalidations that the driver itself causes
/// ([`NotifierRange::owner`]): `make_device_exclusive_range()` and
/// `migrate_vma_setup()` invalidate the range they work on, including for
/// the driver that called them, which recognises (and may ignore) its own
/// events by comparing owners. HMM also uses it to recognise the device
/// private pages of a device ([`hmm::Range::set_dev_private_owner`]).
///
/// An owner made from an address ([`Owner::from_ref`]) is unique only for
/// as long as the object at that address lives: use an object that
/// outlives every use, such as the device.
///
/// [`hmm::Range::set_dev_private_owner`]: crate::hmm::Range::set_dev_private_owner
///
/// # Examples
///
/// ```
/// use kernel::mmu_notifier::Owner;
///
/// let (a, b) = (0u8, 0u8);
/// assert_eq!(Owner::from_ref(&a), Owner::from_ref(&a));
/// assert_ne!(Owner::from_ref(&a), Owner::from_ref(&b));
/// assert!(Owner::NONE.is_none() && !Owner::from_ref(&a).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner(*mut c_void);

// SAFETY: The pointer is a cookie that is compared, never dereferenced.
unsafe impl Send for Owner {}
// SAFETY: As for `Send`.
unsafe impl Sync for Owner {}

impl Owner {
    /// No owner: what the mm passes for invalidations no driver caused.
    pub const NONE: Self = Self(core::ptr::null_mut());

    /// The owner identified by the address of `obj`.
    pub fn from_ref<T>(obj: &T) -> Self {
        Self((obj as *const T).cast_mut().cast())
    }

    /// Whether this is [`Owner::NONE`].
    pub fn is_none(self) -> bool {
        self.0.is_null()
    }

    /// The cookie, as the C API takes it.
    pub fn as_ptr(self) -> *mut c_void {
        self.0
    }
}

/// The range and reason of an invalidation, as passed to
/// [`Invalidate::invalidate`].
///
/// The range is that of the whole invalidation, which may extend beyond
/// the notifier's own range on either side.
///
/// # Invariants
///
/// A `&NotifierRange` points to a valid `struct mmu_notifier_range` that
/// does not change for the lifetime of the reference.
#[repr(transparent)]
pub struct NotifierRange(Opaque<bindings::mmu_notifier_range>);

impl NotifierRange {
    /// Borrows a range from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct mmu_notifier_range` that nobody
    /// changes for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *const bindings::mmu_notifier_range) -> &'a Self {
        // SAFETY: `NotifierRange` is a transparent wrapper; validity for
        // `'a` is the caller's promise.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn raw(&self) -> &bindings::mmu_notifier_range {
        // SAFETY: By the type invariant the range is valid and unchanged
        // while `self` is borrowed.
        unsafe { &*self.0.get() }
    }

    /// The first address of the range.
    pub fn start(&self) -> usize {
        self.raw().start
    }

    /// The address just past the range.
    pub fn end(&self) -> usize {
        self.raw().end
    }

    /// Why the range is invalidated.
    ///
    /// An event this abstraction does not know (none in this kernel) reads
    /// as [`Event::Clear`], which asks for the most conservative reaction:
    /// stop using the range.
    pub fn event(&self) -> Event {
        Event::from_raw(self.raw().event).unwrap_or(Event::Clear)
    }

    /// Whether the callback may sleep. If it is not, the callback must not
    /// sleep: when it would need to (to take a mutex, to wait for the
    /// device), it returns `false` instead, and the caller (such as the OOM
    /// reaper) gives up on the range and tries again later.
    pub fn blockable(&self) -> bool {
        // SAFETY: By the type invariant the range is valid.
        unsafe { bindings::mmu_notifier_range_blockable(self.0.get()) }
    }

    /// The driver that caused the invalidation, for [`Event::Migrate`] and
    /// [`Event::Exclusive`]; [`Owner::NONE`] otherwise.
    pub fn owner(&self) -> Owner {
        Owner(self.raw().owner)
    }
}

/// A sequence number from [`IntervalNotifier::read_begin`], to check with
/// [`IntervalNotifier::read_retry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadSeq(c_ulong);

impl ReadSeq {
    /// The raw sequence number, as `struct hmm_range` takes it.
    pub(crate) fn raw(self) -> c_ulong {
        self.0
    }
}

/// The sequence number of a running invalidation, passed to
/// [`Invalidate::invalidate`].
///
/// Unless the callback ignores the invalidation, it must call
/// [`InvalidateSeq::set_seq`] under the update lock (see the [module
/// documentation](self)): that is what makes [`IntervalNotifier::read_retry`]
/// see the collision.
#[must_use = "call set_seq() under the update lock, unless ignoring the invalidation"]
pub struct InvalidateSeq<'a> {
    notifier: *mut bindings::mmu_interval_notifier,
    seq: c_ulong,
    _notifier: PhantomData<&'a ()>,
}

impl InvalidateSeq<'_> {
    /// Records the invalidation in the notifier (`mmu_interval_set_seq()`),
    /// so that a [`IntervalNotifier::read_retry`] of any reader that
    /// started before it returns `true`.
    ///
    /// Call it with the update lock held, the lock under which the driver
    /// calls [`IntervalNotifier::read_retry`] and programs its page table.
    pub fn set_seq(self) {
        // SAFETY: `notifier` is the notifier being invalidated, valid for
        // the duration of the callback (`'a`), which is what this is
        // borrowed for. Writing the sequence is what the callback is for.
        unsafe { bindings::mmu_interval_set_seq(self.notifier, self.seq) };
    }
}

/// The callback of an [`IntervalNotifier`].
pub trait Invalidate: Send + Sync {
    /// Called before the CPU page tables of (part of) the notifier's range
    /// change: after it returns, the device must not access the pages of
    /// `range` (intersected with the notifier's range) through mappings it
    /// made before.
    ///
    /// Unless it ignores the event (for instance an [`Event::Exclusive`]
    /// or [`Event::Migrate`] whose [`NotifierRange::owner`] is the
    /// driver's own), it takes the update lock, calls
    /// [`InvalidateSeq::set_seq`], removes the device's mappings of the
    /// range and, if [`NotifierRange::blockable`], waits for the device to
    /// stop using them.
    ///
    /// Returns `true` when done. It may return `false` only when the range
    /// is not blockable and finishing would need to sleep; for a blockable
    /// range the return value must be `true` (`false` is a kernel warning).
    ///
    /// The callback runs in the context of whatever changes the mm (a
    /// system call, reclaim, the OOM reaper): it must not allocate memory
    /// with `GFP_KERNEL` or take locks held around such allocations, and
    /// must not drop the [`IntervalNotifier`].
    fn invalidate(&self, range: &NotifierRange, cur_seq: InvalidateSeq<'_>) -> bool;
}

/// An MMU interval notifier (`struct mmu_interval_notifier`): calls
/// `T::invalidate` for every change to the CPU page tables of a range of
/// an address space, and holds the driver's data `T`.
///
/// Created pinned ([`IntervalNotifier::new`]); dropping it removes it,
/// waiting for a running callback to finish. Dereferences to `T`.
///
/// # Examples
///
/// A mirror whose update lock is a mutex, and which counts the unmaps it
/// sees:
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use kernel::mm::{testing, MmWithUser};
/// use kernel::mmu_notifier::{Event, IntervalNotifier, Invalidate, InvalidateSeq, NotifierRange};
/// use kernel::page::PAGE_SIZE;
/// use kernel::{new_mutex, sync::Mutex};
///
/// #[pin_data]
/// struct Mirror {
///     #[pin]
///     update: Mutex<()>,
///     unmapped: AtomicU32,
/// }
///
/// impl Invalidate for Mirror {
///     fn invalidate(&self, range: &NotifierRange, seq: InvalidateSeq<'_>) -> bool {
///         if !range.blockable() {
///             // Taking the mutex may sleep.
///             return false;
///         }
///         let _update = self.update.lock();
///         seq.set_seq();
///         // A device would remove its mappings of the range here.
///         if range.event() == Event::Unmap {
///             self.unmapped.fetch_add(1, Ordering::Relaxed);
///         }
///         true
///     }
/// }
///
/// let len = 4 * PAGE_SIZE;
/// let addr = testing::vm_mmap_anon(len, testing::PROT_READ | testing::PROT_WRITE)?;
/// let mm = MmWithUser::current().ok_or(EINVAL)?;
/// let mirror = || pin_init!(Mirror { update <- new_mutex!(()), unmapped: AtomicU32::new(0) });
/// let notifier = KBox::pin_init(IntervalNotifier::new(&mm, addr, len, mirror()), GFP_KERNEL)?;
/// assert_eq!((notifier.start(), notifier.last()), (addr, addr + len - 1));
/// assert!(core::ptr::eq(notifier.mm(), &**mm));
///
/// let seq = notifier.read_begin();
/// let update = notifier.update.lock();
/// assert!(!notifier.read_retry(seq));
/// drop(update);
///
/// testing::vm_munmap(addr + PAGE_SIZE, PAGE_SIZE)?;
/// assert_eq!(notifier.unmapped.load(Ordering::Relaxed), 1);
/// let update = notifier.update.lock();
/// assert!(notifier.read_retry(seq));
/// // Dropping the notifier waits for callbacks, which take `update`.
/// drop(update);
///
/// // The C API reports an empty or overflowing range as EOVERFLOW.
/// let eoverflow = Error::from_errno(-(kernel::bindings::EOVERFLOW as i32));
/// let empty = KBox::pin_init(IntervalNotifier::new(&mm, addr, 0, mirror()), GFP_KERNEL);
/// assert_eq!(empty.err(), Some(eoverflow));
/// let wraps = KBox::pin_init(IntervalNotifier::new(&mm, usize::MAX, 2, mirror()), GFP_KERNEL);
/// assert_eq!(wraps.err(), Some(eoverflow));
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// `notifier` is inserted in the interval tree of the mm it points to,
/// with `Self::OPS` as its operations, from the end of the initialiser
/// until `drop` removes it; the insertion holds an `mm_count` reference.
#[pin_data(PinnedDrop)]
pub struct IntervalNotifier<T: Invalidate> {
    #[pin]
    data: T,
    #[pin]
    notifier: Opaque<bindings::mmu_interval_notifier>,
}

// SAFETY: The C notifier is synchronised by the mm (its subscription lock
// and the sequence protocol), so it may be used and removed from any
// thread; `T` is `Send`.
unsafe impl<T: Invalidate> Send for IntervalNotifier<T> {}
// SAFETY: The methods taking `&self` may run concurrently with each other
// and with the callback (they read, or the C side synchronises them); `T`
// is `Sync`.
unsafe impl<T: Invalidate> Sync for IntervalNotifier<T> {}

impl<T: Invalidate> IntervalNotifier<T> {
    const OPS: &'static bindings::mmu_interval_notifier_ops =
        &bindings::mmu_interval_notifier_ops {
            invalidate: Some(Self::invalidate_callback),
        };

    /// Creates a notifier for the range `[start, start + length)` of `mm`,
    /// holding `data`.
    ///
    /// The range need not be mapped, nor page aligned. The C API's errors:
    /// `EOVERFLOW` if `length` is zero or the range wraps around, `ENOMEM`.
    ///
    /// May sleep, and takes `mm`'s mmap lock for writing the first time a
    /// notifier is created on it: the caller must not hold that lock.
    /// `data` is initialised first, so the callback, which may run as soon
    /// as the notifier is inserted, sees it initialised.
    pub fn new<'a, E: 'a>(
        mm: &'a MmWithUser,
        start: usize,
        length: usize,
        data: impl PinInit<T, E> + 'a,
    ) -> impl PinInit<Self, Error> + 'a
    where
        T: 'a,
        Error: From<E>,
    {
        // The initialiser borrows `mm` for `'a`, so `mm` keeps its users
        // until the insertion, which requires them.
        let insert = move |slot: *mut Opaque<bindings::mmu_interval_notifier>| {
            let notifier = Opaque::raw_get(slot);
            // SAFETY: `slot` is the notifier field of the `Self` being
            // initialised, valid for writes and pinned. It is zeroed (the
            // state C callers' `kzalloc()` gives) and then inserted: `mm`
            // has users (see above), as insertion requires; `OPS` is
            // `'static`; the callback finds `data` initialised (field order
            // of `try_pin_init!` below).
            let ret = unsafe {
                notifier.write_bytes(0, 1);
                bindings::mmu_interval_notifier_insert(
                    notifier,
                    mm.as_raw(),
                    start as c_ulong,
                    length as c_ulong,
                    Self::OPS,
                )
            };
            if ret == 0 {
                Ok(())
            } else {
                Err(Error::from_errno(ret))
            }
        };
        // INVARIANT: Once the initialiser succeeded, the notifier is
        // inserted with `Self::OPS`.
        try_pin_init!(Self {
            data <- data,
            // SAFETY: The closure initialises the field completely when it
            // returns `Ok`, and leaves nothing to undo when it fails (the
            // insertion did not happen). The field is `#[pin]`ned and not
            // moved afterwards.
            notifier <- unsafe { init::pin_init_from_closure(insert) },
        }? Error)
    }

    /// Returns the raw `struct mmu_interval_notifier` pointer.
    pub fn as_raw(&self) -> *mut bindings::mmu_interval_notifier {
        self.notifier.get()
    }

    /// The address space the notifier follows.
    ///
    /// Only `mm_count` is held: use [`Mm::mmget_not_zero`] to work on the
    /// address space; it fails once the process has exited.
    pub fn mm(&self) -> &Mm {
        // SAFETY: By the type invariant the notifier is inserted; `mm` is
        // set by the insertion, never changes, and is grabbed until the
        // notifier is removed in `drop`, after `self` is last borrowed.
        unsafe { Mm::from_raw((*self.as_raw()).mm) }
    }

    /// The first address of the notifier's range.
    pub fn start(&self) -> usize {
        // SAFETY: By the type invariant the notifier is inserted; its
        // interval is set at insertion and never changes.
        unsafe { (*self.as_raw()).interval_tree.start }
    }

    /// The last address (inclusive) of the notifier's range.
    pub fn last(&self) -> usize {
        // SAFETY: As in `start`.
        unsafe { (*self.as_raw()).interval_tree.last }
    }

    /// Whether `[start, end)` is non-empty and within the notifier's range.
    pub fn covers(&self, start: usize, end: usize) -> bool {
        start < end && start >= self.start() && end - 1 <= self.last()
    }

    /// Starts a read-side critical section (`mmu_interval_read_begin()`):
    /// returns the sequence number to pass to [`Self::read_retry`].
    ///
    /// May sleep: if an invalidation of the range is running, waits until
    /// it ends. So it must not be called with the update lock held.
    pub fn read_begin(&self) -> ReadSeq {
        // SAFETY: By the type invariant the notifier is inserted.
        ReadSeq(unsafe { bindings::mmu_interval_read_begin(self.as_raw()) })
    }

    /// Ends a read-side critical section (`mmu_interval_read_retry()`):
    /// returns `true` if an invalidation started since `seq` was read, in
    /// which case whatever was learned about the page tables is stale and
    /// must be read again.
    ///
    /// Must be called with the update lock held (the lock the callback
    /// takes around [`InvalidateSeq::set_seq`]); when it returns `false`
    /// the driver may program its page table until it releases that lock.
    pub fn read_retry(&self, seq: ReadSeq) -> bool {
        // SAFETY: By the type invariant the notifier is inserted. The
        // function compares a word; the update lock (the caller's
        // obligation) orders it against `set_seq`, and without it the
        // answer is merely unreliable.
        unsafe { bindings::mmu_interval_read_retry(self.as_raw(), seq.0) }
    }

    /// Whether an invalidation started since `seq` was read
    /// (`mmu_interval_check_retry()`), without the update lock: a hint to
    /// give up early on a long operation. `false` is not reliable; only
    /// [`Self::read_retry`] is.
    pub fn check_retry(&self, seq: ReadSeq) -> bool {
        // SAFETY: By the type invariant the notifier is inserted; the read
        // is a `READ_ONCE()`.
        unsafe { bindings::mmu_interval_check_retry(self.as_raw(), seq.0) }
    }

    /// # Safety
    ///
    /// Called by the mm only, with `notifier` an inserted notifier of this
    /// type and `range` valid for the duration of the call.
    unsafe extern "C" fn invalidate_callback(
        notifier: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: c_ulong,
    ) -> bool {
        // SAFETY: Notifiers with `Self::OPS` are only ever the `notifier`
        // field of a `Self` (type invariant), which stays valid until it is
        // removed, which waits for this callback to return.
        let this = unsafe {
            &*crate::container_of!(
                notifier.cast::<Opaque<bindings::mmu_interval_notifier>>(),
                Self,
                notifier
            )
        };
        // SAFETY: The mm passes a range that is valid and unchanged for the
        // duration of the callback.
        let range = unsafe { NotifierRange::from_raw(range) };
        let seq = InvalidateSeq {
            notifier,
            seq: cur_seq,
            _notifier: PhantomData,
        };
        this.data.invalidate(range, seq)
    }
}

impl<T: Invalidate> core::ops::Deref for IntervalNotifier<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.data
    }
}

#[pinned_drop]
impl<T: Invalidate> PinnedDrop for IntervalNotifier<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: By the type invariant the notifier is inserted; removing
        // it waits for a running callback and drops the insertion's
        // `mm_count` reference. `data` is dropped only after this.
        unsafe { bindings::mmu_interval_notifier_remove(self.as_raw()) };
    }
}
