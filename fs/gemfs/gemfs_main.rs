// SPDX-License-Identifier: GPL-2.0

//! gemfs: a tmpfs variant for memory that devices hold without blocking
//! migration.
//!
//! Mounts are tmpfs in every respect (options, swap, huge pages,
//! truncation, fallocate) except for `->migrate_folio`. Drivers create
//! objects on a private mount and take "holds" (folio references they
//! account here) for device use. When the mm migrates a held folio, gemfs
//! asks the object's owner to release it, migrates it the standard way and
//! tells the owner where the data went. The C interface is
//! `include/linux/gemfs.h`; the design is in
//! `Documentation/filesystems/gemfs.rst`.
//!
//! Before truncation, hole punching or memory failure removes folios from an
//! object's file, gemfs asks its owner to drop its holds there.
//!
//! The lock order is written once, in the documentation ("Lock order").

use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    bindings, c_str, debugfs,
    ffi::{c_char, c_int, c_ulong, c_void},
    folio::{Folio, LockedFolio},
    fs::{self, AddressSpace, File, FolioMigration, KernMount},
    lockdep,
    mm::migrate,
    new_condvar, new_spinlock,
    prelude::*,
    shmem,
    str::CStr,
    sync::{Arc, ArcBorrow, CondVar, SpinLock},
    time,
    types::{ARef, ForeignOwnable},
};

#[cfg(CONFIG_GEMFS_KUNIT_TEST)]
mod tests;

module! {
    type: Gemfs,
    name: "gemfs",
    author: "gemfs developers",
    description: "tmpfs variant whose folios devices can hold without blocking migration",
    license: "GPL",
}

/// The filesystem type.
struct GemfsType;

impl fs::FileSystem for GemfsType {
    const NAME: &'static CStr = c_str!("gemfs");
    /// tmpfs's flags (`shmem_fs_type`): a user namespace's root may mount
    /// it, and its mounts may be idmapped. Nothing of either differs from
    /// tmpfs: the superblock, inode and file operations are shmem's.
    const FLAGS: i32 = (bindings::FS_USERNS_MOUNT | bindings::FS_ALLOW_IDMAP) as i32;

    fn init_fs_context(fc: &mut fs::FsContext) -> Result {
        shmem::Variant::<GemfsType>::init_fs_context(fc)
    }
}

/// An owner callback in progress on `obj` (see [`CallbackGuard`]): the
/// owner, if the object has one and it holds folios.
fn callback_start(obj: &Object) -> Option<(Owner, CallbackGuard<'_>)> {
    let mut st = obj.state.lock();
    let owner = st.owner.filter(|_| st.nr_holds != 0)?;
    st.callbacks += 1;
    Some((owner, CallbackGuard(obj)))
}

/// Asks the owner of `obj` to drop its holds on pages `first..=last`,
/// before they leave the file. `EBUSY` if it holds folios but cannot be
/// asked (it has no `->invalidate`).
fn invalidate(obj: &Arc<Object>, first: usize, last: usize) -> Result {
    // Counted as running from here: the object's destruction waits for us,
    // so the owner's data stays valid for the call.
    let Some((owner, _running)) = callback_start(obj) else {
        return Ok(());
    };
    let Some(invalidate) = owner.invalidate else {
        STATS.invalidate_refused.fetch_add(1, Ordering::Relaxed);
        return Err(EBUSY);
    };
    // The owner sees the object through its C handle, the `Arc`'s foreign
    // form: lend it one for the call.
    let handle = obj.clone().into_foreign();
    // SAFETY: `invalidate` is the owner's callback, which
    // `gemfs_object_set_owner`'s caller keeps callable while the object
    // exists; `handle` is a live object handle until it is taken back below.
    unsafe { invalidate(handle.cast_mut().cast(), first as _, last as _, owner.data) };
    // SAFETY: `handle` came from `into_foreign` above and is not used again.
    drop(unsafe { <Arc<Object> as ForeignOwnable>::from_foreign(handle) });
    STATS.invalidated.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

impl shmem::VariantOps for GemfsType {
    /// `->migrate_folio` of gemfs files: see the module documentation.
    fn migrate_folio(m: &FolioMigration<'_>) -> Result {
        let (src, dst, mode) = (m.src(), m.dst(), m.mode());
        let obj = object_of(m.mapping());
        // Counted as running from here: the object's destruction waits for
        // us, so the owner's data stays valid for the calls below.
        let running = obj
            .as_ref()
            .filter(|_| has_extra_refs(src))
            .and_then(|o| callback_start(o));
        let (Some(obj), Some((owner, _running))) = (obj.as_ref(), running) else {
            let result = m.migrate_default();
            trace::migrate(src, dst, false, &result);
            result?;
            STATS.unheld_migrated.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };

        // The owner sees the object through its C handle, which is the
        // `Arc`'s foreign form: take a reference in that form for the calls.
        let handle = obj.clone().into_foreign();
        let raw_obj = handle.cast_mut().cast::<bindings::gemfs_object>();
        let start = time::Ktime::ktime_get();
        FOLIO_LOCK_MAP.acquire();
        // SAFETY: `release` is the owner's callback, which
        // `gemfs_object_set_owner`'s caller keeps callable while the object
        // exists; `src` is locked and referenced; `raw_obj` stays valid
        // because `handle` holds a reference.
        let ret = unsafe { (owner.release)(raw_obj, src.as_raw(), mode.into_raw(), owner.data) };
        FOLIO_LOCK_MAP.release();
        let ns = ns_since(start);
        trace::release(src, mode, ret, ns);
        count_release(ns);
        if ret == ENOENT.to_errno() {
            // Not the owner's: someone else has the extra references. The
            // default path fails (EAGAIN) if they are still there.
            // SAFETY: `handle` came from `into_foreign` above; not used again.
            drop(unsafe { <Arc<Object> as ForeignOwnable>::from_foreign(handle) });
            let result = m.migrate_default();
            trace::migrate(src, dst, false, &result);
            result?;
            STATS.unheld_migrated.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if ret != 0 {
            // SAFETY: `handle` came from `into_foreign` above; not used again.
            drop(unsafe { <Arc<Object> as ForeignOwnable>::from_foreign(handle) });
            let err = Error::from_errno(ret);
            if err == EBUSY || err == EAGAIN {
                STATS.refused_busy.fetch_add(1, Ordering::Relaxed);
            } else {
                STATS.refused_other.fetch_add(1, Ordering::Relaxed);
            }
            return Err(err);
        }

        // Holds left after a successful release make the reference count check
        // of the default path fail with EAGAIN, which is the right answer: the
        // owner raced a new use of the folio with its release.
        let start = time::Ktime::ktime_get();
        let result = m.migrate_default();
        STATS
            .released_migrate_ns_total
            .fetch_add(ns_since(start), Ordering::Relaxed);
        trace::migrate(src, dst, true, &result);
        let (now, migrated) = match result {
            Ok(()) => {
                STATS.released_migrated.fetch_add(1, Ordering::Relaxed);
                (dst, true)
            }
            Err(_) => {
                STATS.released_not_migrated.fetch_add(1, Ordering::Relaxed);
                (src, false)
            }
        };
        if let Some(migrated_cb) = owner.migrated {
            FOLIO_LOCK_MAP.acquire();
            // SAFETY: as for `release`; `now` is locked and referenced by the
            // migration core for the duration of the call.
            unsafe { migrated_cb(raw_obj, now.as_raw(), migrated, owner.data) };
            FOLIO_LOCK_MAP.release();
        }
        // SAFETY: `handle` came from `into_foreign` above and is not used again.
        drop(unsafe { <Arc<Object> as ForeignOwnable>::from_foreign(handle) });
        result
    }

    /// Truncation or hole punching: shmem holds `invalidate_lock` for
    /// writing, which `gemfs_object_get_folio()` takes for reading, so the
    /// owner cannot take new holds in the range until the folios are gone.
    fn invalidate_range(mapping: &AddressSpace, first: usize, last: usize) -> Result {
        let Some(obj) = object_of(mapping) else {
            return Ok(());
        };
        invalidate(&obj, first, last)
    }

    /// Memory failure: the owner drops its holds on the poisoned folio, and
    /// `gemfs_object_get_folio()` refuses it from now on (`EIO`).
    fn error_remove_folio(mapping: &AddressSpace, folio: &LockedFolio<'_>) -> Result {
        let Some(obj) = object_of(mapping) else {
            return Ok(());
        };
        // Whether the owner holds it or not, it knows: ask it whenever the
        // object has holds, memory failure is rare.
        let first = folio.index();
        // The owner runs under this folio lock, as `->release()` does.
        FOLIO_LOCK_MAP.acquire();
        let r = invalidate(&obj, first, first + folio.nr_pages() - 1);
        FOLIO_LOCK_MAP.release();
        r
    }
}

/// The tracepoints of `include/trace/events/gemfs.h`, emitted by C shims
/// (`gemfs_trace.c`): this kernel's Rust cannot define tracepoints.
mod trace {
    use kernel::{
        error::Result,
        ffi::{c_int, c_void},
        folio::{Folio, LockedFolio},
        mm::migrate::MigrateMode,
    };

    // Defined in gemfs_trace.c; not in any header, as nothing but gemfs
    // calls them. The folios are `struct folio *` in C: declared as void
    // pointers here, as `bindings::folio` reaches types that the
    // `improper_ctypes` lint rejects outside the bindings crate.
    extern "C" {
        fn gemfs_trace_release(folio: *mut c_void, mode: c_int, ret: c_int, ns: u64);
        fn gemfs_trace_migrate(src: *mut c_void, dst: *mut c_void, held: bool, ret: c_int);
    }

    /// `gemfs_release`: the owner of `folio` answered `ret` in `ns`.
    pub(super) fn release(folio: &Folio, mode: MigrateMode, ret: c_int, ns: u64) {
        // SAFETY: `folio` is a locked gemfs folio (the source of a
        // migration), so its mapping and inode are valid during the call.
        unsafe { gemfs_trace_release(folio.as_raw().cast(), mode.into_raw() as c_int, ret, ns) };
    }

    /// `gemfs_migrate`: `src` went through `->migrate_folio` to `dst`.
    pub(super) fn migrate(
        src: &LockedFolio<'_>,
        dst: &LockedFolio<'_>,
        held: bool,
        result: &Result,
    ) {
        let ret = match result {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        };
        // SAFETY: both folios are locked by the migration core for the
        // call; `src` still has its mapping (migration clears it only after
        // `->migrate_folio` returns).
        unsafe { gemfs_trace_migrate(src.as_raw().cast(), dst.as_raw().cast(), held, ret) };
    }
}

/// Counters in `/sys/kernel/debug/gemfs/`.
struct Stats {
    /// Held folios migrated after their owner released them.
    released_migrated: AtomicU64,
    /// Held folios released by their owner whose migration then failed.
    released_not_migrated: AtomicU64,
    /// Releases the owner refused because the device was busy.
    refused_busy: AtomicU64,
    /// Releases the owner refused for another reason.
    refused_other: AtomicU64,
    /// gemfs folios migrated without asking an owner: files of a
    /// `mount -t gemfs`, and folios of objects that nobody holds.
    unheld_migrated: AtomicU64,
    /// Sum and maximum of the time owners took to release, in ns.
    release_ns_total: AtomicU64,
    release_ns_max: AtomicU64,
    /// How long releases took, in decades: below 1 us, 10 us, 100 us,
    /// 1 ms, 10 ms, 100 ms, and longer ([`RELEASE_BUCKETS`]). A release
    /// that waits for a job is in the millisecond buckets, one that does
    /// not in the microsecond ones.
    release_hist: [AtomicU64; RELEASE_BUCKETS.len() + 1],
    /// Time spent migrating released folios (the default path: the
    /// mapping's update and the copy), in ns, to set against the
    /// owners' share of a held folio's migration.
    released_migrate_ns_total: AtomicU64,
    /// Owners asked to drop their holds on a range before truncation, hole
    /// punching or memory failure took folios from it.
    invalidated: AtomicU64,
    /// Truncations, hole punches and memory failures refused (`EBUSY`)
    /// because the owner holds folios and has no `->invalidate`.
    invalidate_refused: AtomicU64,
}

/// The upper bounds (ns, exclusive) of the release time buckets but the
/// last, with the debugfs names of all of them.
const RELEASE_BUCKETS: [u64; 6] = [1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];
const RELEASE_BUCKET_NAMES: [&CStr; RELEASE_BUCKETS.len() + 1] = [
    c_str!("release_lt_1us"),
    c_str!("release_lt_10us"),
    c_str!("release_lt_100us"),
    c_str!("release_lt_1ms"),
    c_str!("release_lt_10ms"),
    c_str!("release_lt_100ms"),
    c_str!("release_ge_100ms"),
];

/// Nanoseconds since `start` (a monotonic clock: never negative).
fn ns_since(start: time::Ktime) -> u64 {
    (time::Ktime::ktime_get() - start).to_ns().max(0) as u64
}

/// Counts a release that took `ns`.
fn count_release(ns: u64) {
    STATS.release_ns_total.fetch_add(ns, Ordering::Relaxed);
    STATS.release_ns_max.fetch_max(ns, Ordering::Relaxed);
    let bucket = RELEASE_BUCKETS.iter().take_while(|&&b| ns >= b).count();
    STATS.release_hist[bucket].fetch_add(1, Ordering::Relaxed);
}

static STATS: Stats = Stats {
    released_migrated: AtomicU64::new(0),
    released_not_migrated: AtomicU64::new(0),
    refused_busy: AtomicU64::new(0),
    refused_other: AtomicU64::new(0),
    unheld_migrated: AtomicU64::new(0),
    release_ns_total: AtomicU64::new(0),
    release_ns_max: AtomicU64::new(0),
    release_hist: [const { AtomicU64::new(0) }; RELEASE_BUCKETS.len() + 1],
    released_migrate_ns_total: AtomicU64::new(0),
    invalidated: AtomicU64::new(0),
    invalidate_refused: AtomicU64::new(0),
};

/// Stands for the folio lock in lockdep's eyes: acquired around owner
/// callbacks (which run under a folio lock) and around the folio lookups of
/// `gemfs_object_get_folio()` (which may take folio locks). An owner that
/// takes, in `->release()`, a lock it also holds while getting folios
/// produces a lockdep report instead of a rare deadlock.
static FOLIO_LOCK_MAP: lockdep::LockdepMap = lockdep::LockdepMap::new();

/// The filesystem type. Static: it embeds lockdep keys.
static GEMFS_TYPE: fs::Registration = fs::Registration::new();

struct Gemfs {
    /// Unregisters the type when the module is unloaded.
    _fs: fs::Registered,
    _debugfs: Option<debugfs::Dir>,
}

impl kernel::Module for Gemfs {
    fn init(module: &'static ThisModule) -> Result<Self> {
        FOLIO_LOCK_MAP.init(c_str!("gemfs_folio_lock"));
        let registration = GEMFS_TYPE.register::<GemfsType>(module)?;
        let dir = debugfs::Dir::new(c_str!("gemfs")).ok();
        if let Some(d) = &dir {
            d.u64_file(c_str!("released_migrated"), &STATS.released_migrated);
            d.u64_file(
                c_str!("released_not_migrated"),
                &STATS.released_not_migrated,
            );
            d.u64_file(c_str!("refused_busy"), &STATS.refused_busy);
            d.u64_file(c_str!("refused_other"), &STATS.refused_other);
            d.u64_file(c_str!("unheld_migrated"), &STATS.unheld_migrated);
            d.u64_file(c_str!("release_ns_total"), &STATS.release_ns_total);
            d.u64_file(c_str!("release_ns_max"), &STATS.release_ns_max);
            for (name, count) in RELEASE_BUCKET_NAMES.iter().zip(&STATS.release_hist) {
                d.u64_file(name, count);
            }
            d.u64_file(
                c_str!("released_migrate_ns_total"),
                &STATS.released_migrate_ns_total,
            );
            d.u64_file(c_str!("invalidated"), &STATS.invalidated);
            d.u64_file(c_str!("invalidate_refused"), &STATS.invalidate_refused);
        }
        Ok(Gemfs {
            _fs: registration,
            _debugfs: dir,
        })
    }
}

/// Whether `folio` has references other than those migration expects at
/// this point: those `folio_expected_ref_count()` counts (the page cache's,
/// one per page; shmem attaches no private data, and migration has unmapped
/// the folio before `->migrate_folio`) and the isolation's. Extra
/// references are holds, or someone else's (a GUP pin, a transient lookup):
/// gemfs keeps no record of which folios are held, which would cost memory
/// for every held folio; the owner knows, and answers `ENOENT` for a folio
/// it does not hold.
fn has_extra_refs(folio: &Folio) -> bool {
    folio.ref_count() as usize > migrate::expected_ref_count(folio) + 1
}

/// An owner callback in progress on an object, counted in its state;
/// `gemfs_object_destroy()` waits until none is.
struct CallbackGuard<'a>(&'a Object);

impl Drop for CallbackGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        st.callbacks -= 1;
        if st.callbacks == 0 {
            self.0.callbacks_done.notify_all();
        }
    }
}

type ReleaseFn = unsafe extern "C" fn(
    *mut bindings::gemfs_object,
    *mut bindings::folio,
    bindings::migrate_mode,
    *mut c_void,
) -> c_int;
type MigratedFn =
    unsafe extern "C" fn(*mut bindings::gemfs_object, *mut bindings::folio, bool, *mut c_void);
type InvalidateFn =
    unsafe extern "C" fn(*mut bindings::gemfs_object, c_ulong, c_ulong, *mut c_void);

/// The owner of an object: its callbacks, copied from the
/// `gemfs_owner_ops` it registered with, and their argument.
#[derive(Clone, Copy)]
struct Owner {
    release: ReleaseFn,
    migrated: Option<MigratedFn>,
    invalidate: Option<InvalidateFn>,
    data: *mut c_void,
}

// SAFETY: `data` is the owner's, passed back to its own callbacks, which
// the C contract requires to be callable from any thread.
unsafe impl Send for Owner {}

struct State {
    owner: Option<Owner>,
    /// References the owner holds on the object's folios through gemfs.
    nr_holds: usize,
    /// Migrations calling the owner right now (see [`CallbackGuard`]).
    callbacks: usize,
}

/// An object: an unlinked gemfs file, its owner and the owner's holds.
///
/// # Invariants
///
/// `file` is on a gemfs mount. While the object is not destroyed, its
/// mapping's private data holds a reference to it.
#[pin_data]
pub(crate) struct Object {
    file: ARef<File>,
    #[pin]
    state: SpinLock<State>,
    /// Signalled when `State::callbacks` drops to zero.
    #[pin]
    callbacks_done: CondVar,
}

impl Object {
    fn mapping(&self) -> &AddressSpace {
        self.file.mapping()
    }

    /// Pages in the file.
    fn nr_pages(&self) -> usize {
        let size = self.file.size();
        (size as usize).div_ceil(kernel::page::PAGE_SIZE)
    }

    /// Records one more hold (a folio reference the caller hands to the
    /// owner).
    fn add_hold(&self) {
        self.state.lock().nr_holds += 1;
    }

    /// Forgets one hold; false if the object had none.
    fn drop_hold(&self) -> bool {
        let mut st = self.state.lock();
        if st.nr_holds == 0 {
            return false;
        }
        st.nr_holds -= 1;
        true
    }
}

/// Finds the object of a gemfs mapping, if it has one (kernel objects do,
/// files made through a `mount -t gemfs` do not).
fn object_of(mapping: &AddressSpace) -> Option<Arc<Object>> {
    // SAFETY: gemfs mappings only ever hold an `Arc<Object>` in their
    // private data, installed and removed by `gemfs_object_create` and
    // `gemfs_object_destroy` through this same function.
    unsafe { mapping.with_private::<Arc<Object>, _>(|slot| slot.get().map(Arc::from)) }
}

// ---------------------------------------------------------------------------
// The C interface, include/linux/gemfs.h. Each function documents there what
// it expects; the SAFETY comments below rely on those contracts.

fn huge_option(huge: c_int) -> Result<&'static CStr> {
    Ok(match huge as u32 {
        bindings::gemfs_huge_GEMFS_HUGE_NEVER => c_str!("huge=never"),
        bindings::gemfs_huge_GEMFS_HUGE_ALWAYS => c_str!("huge=always"),
        bindings::gemfs_huge_GEMFS_HUGE_WITHIN_SIZE => c_str!("huge=within_size"),
        bindings::gemfs_huge_GEMFS_HUGE_ADVISE => c_str!("huge=advise"),
        _ => return Err(EINVAL),
    })
}

/// Mounts a private gemfs instance for a driver.
#[no_mangle]
pub extern "C" fn gemfs_kern_mount(huge: bindings::gemfs_huge) -> *mut bindings::vfsmount {
    let mount = || -> Result<KernMount> {
        let opts = huge_option(huge as c_int)?;
        KernMount::new(&GEMFS_TYPE, Some(opts))
    };
    match mount() {
        Ok(m) => m.into_raw(),
        Err(e) => e.to_ptr(),
    }
}

/// Unmounts a mount from `gemfs_kern_mount()`.
///
/// # Safety
///
/// `mnt` came from `gemfs_kern_mount()` and has no objects left.
#[no_mangle]
pub unsafe extern "C" fn gemfs_kern_unmount(mnt: *mut bindings::vfsmount) {
    // SAFETY: the caller gives back the mount `gemfs_kern_mount` made.
    drop(unsafe { KernMount::from_raw(mnt) });
}

/// Creates an object of `size` bytes on gemfs mount `mnt`.
///
/// # Safety
///
/// `mnt` is a live gemfs mount and `name` a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn gemfs_object_create(
    mnt: *mut bindings::vfsmount,
    name: *const c_char,
    size: bindings::loff_t,
    vm_flags: c_ulong,
) -> *mut bindings::gemfs_object {
    let create = || -> Result<*mut bindings::gemfs_object> {
        if size <= 0 {
            return Err(EINVAL);
        }
        // SAFETY: the caller promises a live mount and a C string.
        let (mnt, name) = unsafe { (fs::Mount::from_raw(mnt), CStr::from_char_ptr(name)) };
        let file = shmem::file_setup(mnt, name, size, vm_flags)?;
        if file.fs_type() != GEMFS_TYPE.get()? {
            return Err(EINVAL);
        }
        let obj = Arc::pin_init(
            try_pin_init!(Object {
                file,
                state <- new_spinlock!(
                    State { owner: None, nr_holds: 0, callbacks: 0 },
                    "gemfs_object_state"
                ),
                callbacks_done <- new_condvar!("gemfs_object_callbacks_done"),
            }),
            GFP_KERNEL,
        )?;
        let mapping_ref = obj.clone();
        // SAFETY: see `object_of`.
        unsafe {
            obj.mapping()
                .with_private::<Arc<Object>, _>(|slot| slot.replace(Some(mapping_ref)))
        };
        Ok(obj.into_foreign().cast_mut().cast())
    };
    create().unwrap_or_else(|e| e.to_ptr())
}

/// Borrows an object handle.
///
/// # Safety
///
/// `obj` came from `gemfs_object_create()` and is not destroyed for `'a`.
unsafe fn borrow<'a>(obj: *mut bindings::gemfs_object) -> ArcBorrow<'a, Object> {
    // SAFETY: the handle is `Arc::into_foreign` output, still owned by the
    // caller.
    unsafe { <Arc<Object> as ForeignOwnable>::borrow(obj.cast_const().cast()) }
}

/// Destroys an object: the owner must have dropped all its holds. Holds
/// left (an owner bug, reported) keep the object's accounting alive until
/// they are put. Waits for owner callbacks already running: none runs
/// once it returns, so the caller must not hold a lock they take.
///
/// # Safety
///
/// `obj` came from `gemfs_object_create()`; it is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn gemfs_object_destroy(obj: *mut bindings::gemfs_object) {
    // SAFETY: the caller gives back its handle.
    let obj = unsafe { <Arc<Object> as ForeignOwnable>::from_foreign(obj.cast_const().cast()) };
    // SAFETY: see `object_of`.
    let mapping_ref = unsafe {
        obj.mapping()
            .with_private::<Arc<Object>, _>(|slot| slot.replace(None))
    };
    // The wait below is for owner callbacks, which run under a folio lock:
    // tell lockdep every time, as for the callbacks themselves, so that a
    // caller holding a lock that the callbacks (or the waits they do) need
    // is reported, not only when a callback happens to be running.
    FOLIO_LOCK_MAP.acquire();
    FOLIO_LOCK_MAP.release();
    let mut st = obj.state.lock();
    st.owner = None;
    // A migration may have found the owner just before: the owner's data
    // must outlive its callbacks, so wait for them. They take only the
    // owner's locks, which its caller must not hold here.
    while st.callbacks != 0 {
        obj.callbacks_done.wait(&mut st);
    }
    if st.nr_holds != 0 {
        // An owner bug. Its holds keep the object alive until they are
        // put, but the owner is no longer asked to release them: their
        // folios cannot migrate meanwhile.
        pr_warn!("object destroyed with {} holds left\n", st.nr_holds);
        lockdep::warn(c_str!("gemfs: object destroyed with holds"));
    }
    drop(st);
    drop(mapping_ref);
}

/// The object's file, for mapping it to userspace (borrowed).
///
/// # Safety
///
/// `obj` is a live object handle.
#[no_mangle]
pub unsafe extern "C" fn gemfs_object_file(
    obj: *mut bindings::gemfs_object,
) -> *mut bindings::file {
    // SAFETY: the caller promises a live handle.
    unsafe { borrow(obj) }.file.as_raw()
}

/// Sets the owner whose callbacks gemfs calls for held folios.
///
/// # Safety
///
/// `obj` is a live object handle; `ops` is NULL or points to a valid
/// `gemfs_owner_ops` for the call (it is copied); its functions stay
/// callable, with `owner_data`, until the object is destroyed.
#[no_mangle]
pub unsafe extern "C" fn gemfs_object_set_owner(
    obj: *mut bindings::gemfs_object,
    ops: *const bindings::gemfs_owner_ops,
    owner_data: *mut c_void,
) -> c_int {
    // SAFETY: the caller promises a live handle.
    let obj = unsafe { borrow(obj) };
    // SAFETY: `ops` is NULL or valid for the call (caller's promise); the
    // callbacks are copied out of it, so it need not outlive the call.
    let Some(ops) = (unsafe { ops.as_ref() }) else {
        return EINVAL.to_errno();
    };
    let Some(release) = ops.release else {
        return EINVAL.to_errno();
    };
    let mut st = obj.state.lock();
    if st.owner.is_some() {
        return EBUSY.to_errno();
    }
    st.owner = Some(Owner {
        release,
        migrated: ops.migrated,
        invalidate: ops.invalidate,
        data: owner_data,
    });
    0
}

/// Returns the folio holding page `index`, with a hold the owner must drop
/// with `gemfs_object_put_folio()`.
///
/// # Safety
///
/// `obj` is a live object handle.
#[no_mangle]
pub unsafe extern "C" fn gemfs_object_get_folio(
    obj: *mut bindings::gemfs_object,
    index: c_ulong,
) -> *mut bindings::folio {
    // SAFETY: the caller promises a live handle.
    let obj = unsafe { borrow(obj) };
    let get = || -> Result<*mut bindings::folio> {
        let mapping = obj.mapping();
        // Truncation and hole punching hold this for writing from before
        // they ask the owner to drop its holds until the folios are gone: a
        // hold taken meanwhile would be on a folio leaving the file.
        let _invalidate = mapping.invalidate_lock_shared();
        if index >= obj.nr_pages() {
            return Err(EINVAL);
        }
        // shmem may lock folios (swap-in, allocation): tell lockdep.
        FOLIO_LOCK_MAP.acquire();
        FOLIO_LOCK_MAP.release();
        // `EINVAL` beyond the end of the file, `EIO` for a poisoned folio.
        let folio = shmem::read_folio(mapping, index)?;
        obj.add_hold();
        // Each hold keeps the object alive, so that a hold put after an
        // (erroneous) destroy still finds its accounting.
        core::mem::forget(Arc::from(obj));
        Ok(ARef::into_raw(folio).as_ptr().cast())
    };
    get().unwrap_or_else(|e| e.to_ptr())
}

/// Drops a hold taken with `gemfs_object_get_folio()` or
/// `gemfs_object_hold_locked_folio()`.
///
/// # Safety
///
/// `obj` is a live object handle and `folio` a folio the caller holds
/// through it.
#[no_mangle]
pub unsafe extern "C" fn gemfs_object_put_folio(
    obj_handle: *mut bindings::gemfs_object,
    folio: *mut bindings::folio,
) {
    // SAFETY: the caller holds `folio` through the object, and the hold
    // keeps the object alive.
    let obj = unsafe { borrow(obj_handle) };
    if !obj.drop_hold() {
        lockdep::warn(c_str!("gemfs: put of a folio, but the object has no holds"));
        return;
    }
    // SAFETY: the hold owned one reference to the folio; it is gone.
    drop(unsafe { ARef::from_raw(core::ptr::NonNull::new_unchecked(folio.cast::<Folio>())) });
    // SAFETY: the hold also owned a reference to the object (see
    // `gemfs_object_get_folio`); the handle is `Arc::into_raw` output.
    drop(unsafe { <Arc<Object> as ForeignOwnable>::from_foreign(obj_handle.cast_const().cast()) });
}

/// Takes a hold on a folio the caller has locked (from `->migrated()`),
/// without sleeping. Returns 0: it cannot fail (the int leaves room for an
/// error in a later version of the interface).
///
/// # Safety
///
/// `obj` is a live object handle; `folio` is locked and in `obj`'s file.
#[no_mangle]
pub unsafe extern "C" fn gemfs_object_hold_locked_folio(
    obj: *mut bindings::gemfs_object,
    folio: *mut bindings::folio,
) -> c_int {
    // SAFETY: the caller promises a live handle and a locked folio.
    let (obj, f) = unsafe { (borrow(obj), Folio::from_raw(folio)) };
    let folio: ARef<Folio> = f.into();
    obj.add_hold();
    core::mem::forget(folio);
    core::mem::forget(Arc::from(obj));
    0
}

/// Number of holds the owner has on the object's folios.
///
/// # Safety
///
/// `obj` is a live object handle.
#[no_mangle]
pub unsafe extern "C" fn gemfs_object_holds(obj: *mut bindings::gemfs_object) -> c_ulong {
    // SAFETY: the caller promises a live handle.
    unsafe { borrow(obj) }.state.lock().nr_holds as c_ulong
}
