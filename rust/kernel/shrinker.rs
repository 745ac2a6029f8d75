// SPDX-License-Identifier: GPL-2.0

//! Shrinkers: how reclaim asks a cache to give memory back.
//!
//! Reclaim first asks a shrinker how many objects it could free
//! ([`Shrinker::count`]), then asks it to free some ([`Shrinker::scan`]).
//! Both run in reclaim context: any allocation that may enter reclaim can
//! call them, with whatever locks the allocating task holds, so they must
//! not take a lock that is held across an allocation, and must not
//! allocate with anything but `GFP_NOWAIT`/`GFP_ATOMIC`.
//!
//! C header: [`include/linux/shrinker.h`](srctree/include/linux/shrinker.h).

use crate::{
    bindings,
    error::{code::ENOMEM, Result},
    str::CStr,
    sync::{Arc, ArcBorrow},
    types::ForeignOwnable,
};
use core::{marker::PhantomData, ptr::NonNull};

/// Runs `f` as if in memory reclaim, as far as lockdep is concerned
/// (`fs_reclaim_acquire(GFP_KERNEL)` ... `fs_reclaim_release()`).
///
/// For code that reclaim can reach without being reclaim every time: a
/// callback from migration, say, which direct compaction enters from an
/// allocation. Lockdep then reports at once, as a lock inversion, a lock
/// that `f` takes and that is also held around a `GFP_KERNEL` allocation,
/// or a wait in `f` for a dma-fence whose signalling allocates, instead of
/// the deadlock that memory pressure would one day bring. Without lockdep,
/// just calls `f`.
///
/// # Examples
///
/// ```
/// use kernel::{new_spinlock, shrinker::as_reclaim, stack_pin_init};
///
/// stack_pin_init!(let counter = new_spinlock!(0u64));
/// // A spinlock never held around an allocation may be taken in reclaim.
/// as_reclaim(|| *counter.lock() += 1);
/// assert_eq!(*counter.lock(), 1);
/// ```
pub fn as_reclaim<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: only lockdep annotations, paired on this task.
    unsafe { bindings::fs_reclaim_acquire(bindings::GFP_KERNEL) };
    let r = f();
    // SAFETY: pairs with the acquire above.
    unsafe { bindings::fs_reclaim_release(bindings::GFP_KERNEL) };
    r
}

/// What [`Shrinker::scan`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Freed this many objects (possibly none, which lets reclaim move on).
    Freed(usize),
    /// Cannot make progress in this context (`SHRINK_STOP`): for example
    /// the allocation does not allow what freeing needs.
    Stop,
}

/// The arguments of one call from reclaim.
pub struct ShrinkControl<'a>(&'a mut bindings::shrink_control);

impl ShrinkControl<'_> {
    /// How many objects reclaim asks to scan.
    pub fn nr_to_scan(&self) -> usize {
        self.0.nr_to_scan
    }

    /// Records how many objects were scanned, if not `nr_to_scan`.
    pub fn set_nr_scanned(&mut self, n: usize) {
        self.0.nr_scanned = n;
    }

    /// Whether the allocation that entered reclaim allows filesystem
    /// operations (`__GFP_FS`): truncation and writeback need it.
    pub fn allows_fs(&self) -> bool {
        self.0.gfp_mask & bindings::__GFP_FS != 0
    }

    /// Whether it allows I/O (`__GFP_IO`).
    pub fn allows_io(&self) -> bool {
        self.0.gfp_mask & bindings::__GFP_IO != 0
    }
}

/// A cache that reclaim can shrink.
pub trait Shrinker: Send + Sync + 'static {
    /// How many objects could be freed now; 0 if none (reclaim then does
    /// not call [`Shrinker::scan`]). Must be cheap: no scanning.
    fn count(&self, sc: &ShrinkControl<'_>) -> usize;

    /// Frees up to [`ShrinkControl::nr_to_scan`] objects.
    fn scan(&self, sc: &mut ShrinkControl<'_>) -> Scan;
}

/// A registered shrinker, unregistered on drop.
///
/// # Invariants
///
/// `raw` was returned by `shrinker_alloc()`, set up with this type's
/// callbacks and registered; its `private_data` is an `Arc<T>` in foreign
/// form, owned by this value.
///
/// # Examples
///
/// `drop_slab()` (what `echo 2 > /proc/sys/vm/drop_caches` does) calls every
/// registered shrinker:
///
/// ```
/// use core::sync::atomic::{AtomicUsize, Ordering};
/// use kernel::{c_str, shrinker::{Registration, Scan, ShrinkControl, Shrinker}, sync::Arc};
///
/// struct Cache {
///     objects: AtomicUsize,
/// }
///
/// impl Shrinker for Cache {
///     fn count(&self, _sc: &ShrinkControl<'_>) -> usize {
///         self.objects.load(Ordering::Relaxed)
///     }
///     fn scan(&self, sc: &mut ShrinkControl<'_>) -> Scan {
///         let have = self.objects.load(Ordering::Relaxed);
///         let n = sc.nr_to_scan().min(have);
///         self.objects.fetch_sub(n, Ordering::Relaxed);
///         Scan::Freed(n)
///     }
/// }
///
/// let cache = Arc::new(Cache { objects: AtomicUsize::new(1000) }, GFP_KERNEL)?;
/// let reg = Registration::register(c_str!("doctest-cache"), cache.clone())?;
/// // SAFETY: `drop_slab()` may be called from any sleepable context.
/// unsafe { kernel::bindings::drop_slab() };
/// assert_eq!(cache.objects.load(Ordering::Relaxed), 0);
/// drop(reg);
/// // Unregistered: reclaim no longer sees the cache.
/// cache.objects.store(1000, Ordering::Relaxed);
/// // SAFETY: as above.
/// unsafe { kernel::bindings::drop_slab() };
/// assert_eq!(cache.objects.load(Ordering::Relaxed), 1000);
/// # Ok::<(), Error>(())
/// ```
pub struct Registration<T: Shrinker> {
    raw: NonNull<bindings::shrinker>,
    _data: PhantomData<Arc<T>>,
}

// SAFETY: the registration only owns an `Arc<T>` (`T: Send + Sync`) and a
// shrinker that may be freed from any thread.
unsafe impl<T: Shrinker> Send for Registration<T> {}
// SAFETY: `&Registration` gives no access to anything.
unsafe impl<T: Shrinker> Sync for Registration<T> {}

impl<T: Shrinker> Registration<T> {
    /// Registers `data` as a shrinker named `name` (as shown in
    /// `/sys/kernel/debug/shrinker/` with `CONFIG_SHRINKER_DEBUG`).
    pub fn register(name: &CStr, data: Arc<T>) -> Result<Self> {
        let fmt = crate::c_str!("%s");
        // SAFETY: "%s" with a NUL-terminated string, which is copied.
        let raw = unsafe { bindings::shrinker_alloc(0, fmt.as_char_ptr(), name.as_char_ptr()) };
        let raw = NonNull::new(raw).ok_or(ENOMEM)?;
        // SAFETY: `raw` is a new, unregistered shrinker that only we use.
        unsafe {
            let s = raw.as_ptr();
            (*s).count_objects = Some(count_callback::<T>);
            (*s).scan_objects = Some(scan_callback::<T>);
            (*s).private_data = data.into_foreign().cast_mut();
            bindings::shrinker_register(s);
        }
        // INVARIANT: set up and registered just above.
        Ok(Self {
            raw,
            _data: PhantomData,
        })
    }
}

impl<T: Shrinker> Drop for Registration<T> {
    fn drop(&mut self) {
        let s = self.raw.as_ptr();
        // SAFETY: registered (type invariant). Read before `shrinker_free`,
        // after which the structure is freed (after an RCU grace period).
        let data = unsafe { (*s).private_data };
        // SAFETY: `shrinker_free` unregisters the shrinker and waits for the
        // callbacks that are running: none runs, or will run, after it.
        unsafe { bindings::shrinker_free(s) };
        // SAFETY: `data` came from `into_foreign` in `register`, and no
        // callback borrows it any more.
        drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign(data) });
    }
}

/// Borrows the data of shrinker `s`.
///
/// # Safety
///
/// `s` must be a shrinker of a live [`Registration<T>`], and the borrow
/// must end before the registration is dropped.
unsafe fn data<'a, T: Shrinker>(s: *mut bindings::shrinker) -> ArcBorrow<'a, T> {
    // SAFETY: `private_data` is an `Arc<T>` in foreign form (invariant of
    // `Registration`), alive until `shrinker_free` has waited for us.
    unsafe { <Arc<T> as ForeignOwnable>::borrow((*s).private_data) }
}

/// `shrinker.count_objects`.
///
/// # Safety
///
/// Called by reclaim only, with a registered shrinker of this type and a
/// valid control structure.
unsafe extern "C" fn count_callback<T: Shrinker>(
    s: *mut bindings::shrinker,
    sc: *mut bindings::shrink_control,
) -> crate::ffi::c_ulong {
    // SAFETY: reclaim calls us only while the shrinker is registered;
    // `shrinker_free` waits for us to return.
    let data = unsafe { data::<T>(s) };
    // SAFETY: `sc` is valid and ours for the duration of the call.
    let sc = ShrinkControl(unsafe { &mut *sc });
    data.count(&sc) as _
}

/// `shrinker.scan_objects`.
///
/// # Safety
///
/// As for [`count_callback`].
unsafe extern "C" fn scan_callback<T: Shrinker>(
    s: *mut bindings::shrinker,
    sc: *mut bindings::shrink_control,
) -> crate::ffi::c_ulong {
    // SAFETY: as in `count_callback`.
    let data = unsafe { data::<T>(s) };
    // SAFETY: as in `count_callback`.
    let mut sc = ShrinkControl(unsafe { &mut *sc });
    match data.scan(&mut sc) {
        // Never `SHRINK_STOP` or `SHRINK_EMPTY` by accident.
        Scan::Freed(n) => n.min(usize::MAX - 2) as _,
        Scan::Stop => !0,
    }
}
