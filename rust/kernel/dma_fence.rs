// SPDX-License-Identifier: GPL-2.0

//! DMA fences: completion of device work, shareable across drivers.
//!
//! A producer (a driver's engine) creates fences on a [`FenceContext`], one
//! per job, in the order it will complete them, and signals each through its
//! [`PendingFence`]. Anybody holding a [`Fence`] reference may wait for it,
//! test it, or export it to userspace as a sync_file ([`SyncFileFd`]).
//!
//! C header: [`include/linux/dma-fence.h`](srctree/include/linux/dma-fence.h).
//!
//! # Examples
//!
//! ```
//! use kernel::dma_fence::FenceContext;
//! use kernel::c_str;
//!
//! let ctx = FenceContext::new(c_str!("doctest"), c_str!("doctest-ring"))?;
//! let pending = ctx.new_fence()?;
//! let fence = pending.fence().clone();
//! // The fence's own copies of the names.
//! assert_eq!(fence.driver_name().as_bytes(), b"doctest");
//! assert_eq!(fence.timeline_name().as_bytes(), b"doctest-ring");
//! // Names have a bound.
//! let long = c_str!("a-timeline-name-of-thirty-two-b!");
//! assert_eq!(long.len(), kernel::dma_fence::FENCE_NAME_MAX + 1);
//! assert_eq!(FenceContext::new(c_str!("doctest"), long).err(), Some(EINVAL));
//! assert!(!fence.is_signaled());
//! // Not signalled: a zero timeout returns at once.
//! assert_eq!(fence.wait_timeout(0)?, false);
//! pending.signal(Ok(()));
//! assert!(fence.is_signaled());
//! assert_eq!(fence.status(), Some(Ok(())));
//!
//! // A fence dropped unsignalled is signalled with -ECANCELED.
//! let f = ctx.new_fence()?.fence().clone();
//! assert!(f.is_signaled());
//! assert_eq!(f.status(), Some(Err(kernel::dma_fence::canceled())));
//! # Ok::<(), Error>(())
//! ```

use crate::{
    bindings, c_str,
    error::{to_result, Error, Result},
    prelude::*,
    str::CStr,
    types::{ARef, AlwaysRefCounted, Opaque},
};
use core::{
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

/// A reference-counted `struct dma_fence`.
///
/// # Invariants
///
/// The fence is initialised; references are counted by `dma_fence_get()`
/// and `dma_fence_put()`.
#[repr(transparent)]
pub struct Fence(Opaque<bindings::dma_fence>);

// SAFETY: dma_fence is reference counted and its operations are thread-safe.
unsafe impl Send for Fence {}
// SAFETY: as above.
unsafe impl Sync for Fence {}

// SAFETY: `dma_fence_get()`/`dma_fence_put()` keep the fence alive.
unsafe impl AlwaysRefCounted for Fence {
    fn inc_ref(&self) {
        // SAFETY: the fence is alive while `self` is.
        unsafe { bindings::dma_fence_get(self.0.get()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up a reference it owns.
        unsafe { bindings::dma_fence_put(obj.cast().as_ptr()) };
    }
}

impl Fence {
    /// The raw fence.
    pub fn as_raw(&self) -> *mut bindings::dma_fence {
        self.0.get()
    }

    /// Whether the fence has been signalled.
    pub fn is_signaled(&self) -> bool {
        // SAFETY: the fence is alive.
        unsafe { bindings::dma_fence_is_signaled(self.as_raw()) }
    }

    /// Its outcome once signalled: `Ok` or the error the producer set.
    pub fn status(&self) -> Option<Result> {
        // SAFETY: the fence is alive.
        let s = unsafe { bindings::dma_fence_get_status(self.as_raw()) };
        match s {
            0 => None,
            1 => Some(Ok(())),
            e => Some(Err(Error::from_errno(e))),
        }
    }

    /// The name of the driver that made it (`->get_driver_name()`, what
    /// sync_file info reports), valid while the fence is.
    pub fn driver_name(&self) -> &CStr {
        // SAFETY: an initialised fence has ops with this callback
        // (`dma_fence_init()` checks it); its string lives at least as long
        // as the fence reference `self` holds, the contract of the callback
        // that every caller of it in the kernel relies on too.
        unsafe {
            let ops = (*self.as_raw()).ops;
            let name = ((*ops).get_driver_name.unwrap_unchecked())(self.as_raw());
            CStr::from_char_ptr(name)
        }
    }

    /// The name of its timeline (`->get_timeline_name()`), valid while the
    /// fence is.
    pub fn timeline_name(&self) -> &CStr {
        // SAFETY: as for `driver_name`.
        unsafe {
            let ops = (*self.as_raw()).ops;
            let name = ((*ops).get_timeline_name.unwrap_unchecked())(self.as_raw());
            CStr::from_char_ptr(name)
        }
    }

    /// Its sequence number in its context.
    pub fn seqno(&self) -> u64 {
        // SAFETY: `seqno` is set once at initialisation.
        unsafe { (*self.as_raw()).seqno }
    }

    /// Waits uninterruptibly for at most `timeout` jiffies. Returns whether
    /// the fence is signalled.
    pub fn wait_timeout(&self, timeout: usize) -> Result<bool> {
        let timeout = timeout.min(isize::MAX as usize) as _;
        // SAFETY: the fence is alive; waiting may sleep, as callers expect.
        let r = unsafe { bindings::dma_fence_wait_timeout(self.as_raw(), false, timeout) };
        if r < 0 {
            return Err(Error::from_errno(r as i32));
        }
        Ok(r > 0 || self.is_signaled())
    }

    /// Waits interruptibly for at most `timeout` jiffies. Returns whether
    /// the fence is signalled; `ERESTARTSYS` if a signal arrived.
    pub fn wait_interruptible_timeout(&self, timeout: usize) -> Result<bool> {
        let timeout = timeout.min(isize::MAX as usize) as _;
        // SAFETY: as in `wait_timeout`.
        let r = unsafe { bindings::dma_fence_wait_timeout(self.as_raw(), true, timeout) };
        if r < 0 {
            return Err(Error::from_errno(r as i32));
        }
        Ok(r > 0 || self.is_signaled())
    }
}

/// What the fences of all contexts made here share: the C callbacks.
///
/// # Invariants
///
/// `fence` is at offset 0, so that the default `->release`
/// (`dma_fence_free()`, an RCU-deferred `kfree()` of the fence pointer)
/// frees the whole allocation. Nothing in it needs dropping.
///
/// The names are copies, inside the allocation, not references to the
/// producer's strings: a fence outlives its producer (in a sync_file, a
/// reservation object of another driver), and the fence core asks for its
/// names for as long as anybody holds it (`SYNC_IOC_FILE_INFO`, debugfs,
/// tracepoints). A module's strings would be gone once it is unloaded;
/// these last exactly as long as the fence, and the callbacks that read
/// them are built in.
#[repr(C)]
struct FenceAlloc {
    fence: Opaque<bindings::dma_fence>,
    lock: Opaque<bindings::spinlock_t>,
    names: FenceNames,
}

/// The longest name of a fence context, in bytes, without its NUL.
pub const FENCE_NAME_MAX: usize = 31;

/// A fence context's names, NUL-terminated within their buffers.
///
/// # Invariants
///
/// Each buffer holds a NUL-terminated string (with no NUL before its end).
#[derive(Clone, Copy)]
struct FenceNames {
    driver: [u8; FENCE_NAME_MAX + 1],
    timeline: [u8; FENCE_NAME_MAX + 1],
}

impl FenceNames {
    /// Copies `driver` and `timeline`; `EINVAL` if one is longer than
    /// [`FENCE_NAME_MAX`].
    fn new(driver: &CStr, timeline: &CStr) -> Result<Self> {
        let copy = |name: &CStr| -> Result<[u8; FENCE_NAME_MAX + 1]> {
            let bytes = name.as_bytes_with_nul();
            let mut buf = [0u8; FENCE_NAME_MAX + 1];
            buf.get_mut(..bytes.len())
                .ok_or(EINVAL)?
                .copy_from_slice(bytes);
            Ok(buf)
        };
        // INVARIANT: a `CStr`'s bytes with their NUL, and no NUL before it,
        // followed by zeroes.
        Ok(Self {
            driver: copy(driver)?,
            timeline: copy(timeline)?,
        })
    }

    fn driver(&self) -> &CStr {
        Self::as_cstr(&self.driver)
    }

    fn timeline(&self) -> &CStr {
        Self::as_cstr(&self.timeline)
    }

    fn as_cstr(buf: &[u8; FENCE_NAME_MAX + 1]) -> &CStr {
        let len = buf.iter().position(|&b| b == 0).unwrap_or(FENCE_NAME_MAX);
        // SAFETY: the type invariant: `buf[len]` is the string's NUL, and
        // there is none before it.
        unsafe { CStr::from_bytes_with_nul_unchecked(&buf[..=len]) }
    }
}

impl FenceAlloc {
    /// # Safety
    ///
    /// `fence` must be the `fence` field of a live `FenceAlloc`.
    unsafe fn from_fence<'a>(fence: *mut bindings::dma_fence) -> &'a Self {
        // SAFETY: `fence` is at offset 0 (type invariant); the caller
        // promises it is in a live `FenceAlloc`.
        unsafe { &*fence.cast::<Self>() }
    }

    /// C callback for the fence name.
    ///
    /// # Safety
    ///
    /// Called by the fence core with a fence made by [`FenceContext::new_fence`].
    unsafe extern "C" fn driver_name(fence: *mut bindings::dma_fence) -> *const crate::ffi::c_char {
        // SAFETY: the ops below are only used for `FenceAlloc` fences.
        unsafe { Self::from_fence(fence) }
            .names
            .driver()
            .as_char_ptr()
    }

    /// C callback for the timeline name.
    ///
    /// # Safety
    ///
    /// As for `driver_name`.
    unsafe extern "C" fn timeline_name(
        fence: *mut bindings::dma_fence,
    ) -> *const crate::ffi::c_char {
        // SAFETY: as above.
        unsafe { Self::from_fence(fence) }
            .names
            .timeline()
            .as_char_ptr()
    }

    const OPS: bindings::dma_fence_ops = bindings::dma_fence_ops {
        use_64bit_seqno: true,
        get_driver_name: Some(Self::driver_name),
        get_timeline_name: Some(Self::timeline_name),
        // `release: None` is `dma_fence_free()`, which frees `FenceAlloc`.
        // SAFETY: all-zero is a valid `dma_fence_ops` (no optional ops).
        ..unsafe { core::mem::zeroed() }
    };
}

static FENCE_OPS: bindings::dma_fence_ops = FenceAlloc::OPS;

/// A timeline of fences that one producer signals in order.
pub struct FenceContext {
    context: u64,
    seqno: AtomicU64,
    names: FenceNames,
}

impl FenceContext {
    /// Allocates a fence context; `driver` and `timeline` name its fences
    /// (in sync_file info and debugfs). Each fence keeps a copy of them, so
    /// that its names outlive the caller (a module unloaded while one of
    /// its fences is still held). `EINVAL` if a name is longer than
    /// [`FENCE_NAME_MAX`] bytes.
    pub fn new(driver: &CStr, timeline: &CStr) -> Result<Self> {
        let names = FenceNames::new(driver, timeline)?;
        Ok(Self {
            // SAFETY: allocating one context number has no precondition.
            context: unsafe { bindings::dma_fence_context_alloc(1) },
            seqno: AtomicU64::new(0),
            names,
        })
    }

    /// Creates the next fence of the timeline. The caller must signal the
    /// fences of a context in the order it created them.
    pub fn new_fence(&self) -> Result<PendingFence> {
        let alloc = KBox::new(
            FenceAlloc {
                fence: Opaque::uninit(),
                lock: Opaque::uninit(),
                names: self.names,
            },
            GFP_KERNEL,
        )?;
        let alloc = KBox::into_raw(alloc);
        let seqno = self.seqno.fetch_add(1, Ordering::Relaxed) + 1;
        // SAFETY: `alloc` is a new, exclusively owned allocation. The lock is
        // initialised before the fence that uses it. From here on the fence's
        // refcount owns the allocation, and `dma_fence_free()` frees it.
        let fence = unsafe {
            let lock = (*alloc).lock.get();
            bindings::__spin_lock_init(
                lock,
                c_str!("dma_fence_lock").as_char_ptr(),
                crate::static_lock_class!().as_ptr(),
            );
            let fence = (*alloc).fence.get();
            bindings::dma_fence_init(fence, &FENCE_OPS, lock, self.context, seqno);
            // INVARIANT: initialised above; we own its one reference.
            ARef::from_raw(NonNull::new_unchecked(fence.cast::<Fence>()))
        };
        Ok(PendingFence { fence })
    }
}

/// A fence signalling critical section (the C
/// `dma_fence_begin_signalling()`/`dma_fence_end_signalling()`), from
/// [`SignallingSection::begin`] until the value is dropped.
///
/// Everything that a fence's signalling depends on, from the moment others
/// can wait for it until it is signalled, must run in one: a device's job
/// execution and completion, for example. Code there must not allocate with
/// reclaim (`GFP_KERNEL`), take locks held around such allocations, nor wait
/// for fences, since reclaim (shrinkers, MMU notifiers, migration) may wait
/// for those very fences. With lockdep, a violation is reported like a lock
/// inversion (`Documentation/driver-api/dma-buf.rst`, "Indefinite DMA
/// Fences"); without it, this does nothing.
///
/// # Examples
///
/// ```
/// use kernel::c_str;
/// use kernel::dma_fence::{FenceContext, SignallingSection};
///
/// let ctx = FenceContext::new(c_str!("doctest"), c_str!("doctest-signal"))?;
/// let job = ctx.new_fence()?;
/// let section = SignallingSection::begin();
/// // ... run the job: no GFP_KERNEL allocation in here ...
/// job.signal(Ok(()));
/// drop(section);
/// # Ok::<(), Error>(())
/// ```
pub struct SignallingSection {
    cookie: bool,
    /// Lockdep tracks the section per task: it ends where it began.
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl SignallingSection {
    /// Begins a signalling critical section (sections nest).
    pub fn begin() -> Self {
        // SAFETY: no precondition; the cookie is given back to
        // `dma_fence_end_signalling()` by `drop`, on this task.
        let cookie = unsafe { bindings::dma_fence_begin_signalling() };
        Self {
            cookie,
            _not_send: core::marker::PhantomData,
        }
    }
}

impl Drop for SignallingSection {
    fn drop(&mut self) {
        // SAFETY: the cookie of the matching `begin`, on the same task.
        unsafe { bindings::dma_fence_end_signalling(self.cookie) };
    }
}

/// `ECANCELED`, which 6.12's `kernel::error::code` lacks.
pub fn canceled() -> Error {
    Error::from_errno(-(bindings::ECANCELED as i32))
}

/// A fence its producer has yet to signal. Dropping it signals the fence
/// with `ECANCELED`, so that no waiter waits forever.
pub struct PendingFence {
    fence: ARef<Fence>,
}

impl PendingFence {
    /// The fence, to hand out to waiters.
    pub fn fence(&self) -> &ARef<Fence> {
        &self.fence
    }

    /// Signals the fence with the outcome of the work.
    pub fn signal(self, outcome: Result) {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: `me.fence` is read out once and `me` is never dropped.
        let fence = unsafe { core::ptr::read(&me.fence) };
        Self::do_signal(&fence, outcome);
    }

    fn do_signal(fence: &Fence, outcome: Result) {
        if let Err(e) = outcome {
            // SAFETY: the fence is alive and not yet signalled (only the
            // `PendingFence` signals it, once).
            unsafe { bindings::dma_fence_set_error(fence.as_raw(), e.to_errno()) };
        }
        // SAFETY: the fence is alive. Signalling twice is impossible: the
        // `PendingFence` is consumed.
        let r = unsafe { bindings::dma_fence_signal(fence.as_raw()) };
        if r != 0 {
            crate::lockdep::warn(c_str!("dma_fence: signalled twice"));
        }
    }
}

impl Drop for PendingFence {
    fn drop(&mut self) {
        Self::do_signal(&self.fence, Err(canceled()));
    }
}

/// A sync_file for a fence and the file descriptor reserved for it, not yet
/// visible to userspace: [`SyncFileFd::install`] publishes it, dropping it
/// releases both.
///
/// # Invariants
///
/// `fd` is a reserved, uninstalled descriptor and `file` the sync_file's
/// file, one reference owned by this value.
pub struct SyncFileFd {
    fd: u32,
    file: NonNull<bindings::file>,
}

impl SyncFileFd {
    /// Creates a sync_file for `fence` and reserves a close-on-exec
    /// descriptor for it in the current process.
    pub fn new(fence: &Fence) -> Result<Self> {
        // SAFETY: reserving a descriptor has no precondition.
        let fd = unsafe { bindings::get_unused_fd_flags(bindings::O_CLOEXEC) };
        to_result(fd)?;
        // SAFETY: the fence is alive; the sync_file takes its own reference.
        let sf = unsafe { bindings::sync_file_create(fence.as_raw()) };
        if sf.is_null() {
            // SAFETY: `fd` was reserved above and is not installed.
            unsafe { bindings::put_unused_fd(fd as u32) };
            return Err(ENOMEM);
        }
        // SAFETY: `sf` is a new sync_file whose `file` we now own.
        let file = unsafe { (*sf).file };
        // INVARIANT: reserved descriptor, owned file reference.
        Ok(Self {
            fd: fd as u32,
            file: NonNull::new(file).ok_or(ENOMEM)?,
        })
    }

    /// The descriptor number it will have.
    pub fn fd(&self) -> u32 {
        self.fd
    }

    /// Makes the descriptor visible to the process.
    pub fn install(self) {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: by the type invariant; `fd_install` consumes both.
        unsafe { bindings::fd_install(me.fd, me.file.as_ptr()) };
    }
}

impl Drop for SyncFileFd {
    fn drop(&mut self) {
        // SAFETY: by the type invariant both are ours and unpublished.
        unsafe {
            bindings::put_unused_fd(self.fd);
            bindings::fput(self.file.as_ptr());
        }
    }
}

/// Which fences of a reservation object to wait for or test (the C `enum
/// dma_resv_usage`). Each usage includes the ones before it: waiting for
/// [`ResvUsage::Read`] also waits for the writers and the kernel's own work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResvUsage {
    /// The kernel's memory management (moves, clears).
    Kernel,
    /// Writes by a device (implicit synchronisation's exclusive fences).
    Write,
    /// Reads by a device.
    Read,
    /// Everything else: work that does not access the buffer's contents
    /// for userspace but must finish before its memory is touched, such as
    /// page table updates. Waiting for it waits for every fence.
    Bookkeep,
}

impl ResvUsage {
    fn into_raw(self) -> bindings::dma_resv_usage {
        match self {
            ResvUsage::Kernel => bindings::dma_resv_usage_DMA_RESV_USAGE_KERNEL,
            ResvUsage::Write => bindings::dma_resv_usage_DMA_RESV_USAGE_WRITE,
            ResvUsage::Read => bindings::dma_resv_usage_DMA_RESV_USAGE_READ,
            ResvUsage::Bookkeep => bindings::dma_resv_usage_DMA_RESV_USAGE_BOOKKEEP,
        }
    }
}

/// A reservation object (`struct dma_resv`): the fences of the work that
/// uses a buffer, shared by every device that maps it (a GEM object's, or
/// a dma-buf's).
///
/// C header: [`include/linux/dma-resv.h`](srctree/include/linux/dma-resv.h).
///
/// # Invariants
///
/// The reservation object is initialised (`dma_resv_init()`) and not yet
/// finalised for as long as a `&Resv` exists.
///
/// # Examples
///
/// ```
/// use kernel::c_str;
/// use kernel::dma_fence::{FenceContext, OwnedResv, ResvUsage};
///
/// let ctx = FenceContext::new(c_str!("doctest"), c_str!("doctest-resv"))?;
/// let resv = OwnedResv::new()?;
/// assert!(resv.test_signaled(ResvUsage::Bookkeep));
/// let job = ctx.new_fence()?;
/// resv.add_fence(job.fence(), ResvUsage::Read)?;
/// // A reader is pending: writers' fences are signalled, readers' not.
/// assert!(resv.test_signaled(ResvUsage::Write));
/// assert!(!resv.test_signaled(ResvUsage::Read));
/// assert!(!resv.test_signaled(ResvUsage::Bookkeep));
/// assert_eq!(resv.wait_timeout(ResvUsage::Bookkeep, 0)?, false);
/// job.signal(Ok(()));
/// assert!(resv.test_signaled(ResvUsage::Bookkeep));
/// assert_eq!(resv.wait_timeout(ResvUsage::Bookkeep, 1)?, true);
/// # Ok::<(), Error>(())
/// ```
#[repr(transparent)]
pub struct Resv(Opaque<bindings::dma_resv>);

// SAFETY: the reservation object's state is protected by its own lock and
// RCU; every operation here is safe from any thread.
unsafe impl Send for Resv {}
// SAFETY: as above.
unsafe impl Sync for Resv {}

impl Resv {
    /// Borrows the reservation object at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` points to an initialised reservation object that is not
    /// finalised before `'a` ends.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::dma_resv) -> &'a Self {
        // SAFETY: `Resv` is a transparent wrapper; validity is the caller's
        // promise, which is the type invariant.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// The raw reservation object.
    pub fn as_raw(&self) -> *mut bindings::dma_resv {
        self.0.get()
    }

    /// Whether every fence of `usage` (and of the usages before it) has
    /// signalled. Does not take the reservation lock, nor sleep.
    pub fn test_signaled(&self, usage: ResvUsage) -> bool {
        // SAFETY: initialised (type invariant); the unlocked test is RCU
        // protected.
        unsafe { bindings::dma_resv_test_signaled(self.as_raw(), usage.into_raw()) }
    }

    /// Waits uninterruptibly, for at most `timeout` jiffies, until every
    /// fence of `usage` has signalled. Returns whether they all have. Does
    /// not take the reservation lock.
    pub fn wait_timeout(&self, usage: ResvUsage, timeout: usize) -> Result<bool> {
        let timeout = timeout.min(isize::MAX as usize) as _;
        // SAFETY: initialised (type invariant); waiting may sleep, as the
        // callers of a waiting function expect.
        let r = unsafe {
            bindings::dma_resv_wait_timeout(self.as_raw(), usage.into_raw(), false, timeout)
        };
        if r < 0 {
            return Err(Error::from_errno(r as i32));
        }
        Ok(r > 0 || self.test_signaled(usage))
    }

    /// Adds `fence` with `usage`: it joins the fences that waiting for
    /// `usage` (or a later one) waits for. Takes the reservation lock and
    /// may allocate (`GFP_KERNEL`), so not from a fence signalling path.
    pub fn add_fence(&self, fence: &Fence, usage: ResvUsage) -> Result {
        let resv = self.as_raw();
        // SAFETY: initialised (type invariant). With no acquire context the
        // lock cannot fail with -EDEADLK; it does not fail otherwise.
        to_result(unsafe { bindings::dma_resv_lock(resv, core::ptr::null_mut()) })?;
        // SAFETY: locked above; reserving allocates a slot, then the fence
        // (referenced by the caller) gets its own reference in it.
        let ret = unsafe {
            let ret = bindings::dma_resv_reserve_fences(resv, 1);
            if ret == 0 {
                bindings::dma_resv_add_fence(resv, fence.as_raw(), usage.into_raw());
            }
            bindings::dma_resv_unlock(resv);
            ret
        };
        to_result(ret)
    }
}

/// A reservation object of its own, for a buffer that has none from
/// elsewhere; finalised on drop.
///
/// # Invariants
///
/// `resv` was initialised with `dma_resv_init()` and stays at its address
/// (it embeds a lock) until `drop` finalises it.
pub struct OwnedResv {
    resv: KBox<Opaque<bindings::dma_resv>>,
}

impl OwnedResv {
    /// A new, empty reservation object.
    pub fn new() -> Result<Self> {
        let resv = KBox::new(Opaque::<bindings::dma_resv>::uninit(), GFP_KERNEL)?;
        // SAFETY: `resv` is allocated, exclusively ours, and does not move
        // (it is on the heap) until it is freed after `dma_resv_fini()`.
        unsafe { bindings::dma_resv_init(resv.get()) };
        // INVARIANT: initialised just above.
        Ok(Self { resv })
    }
}

impl core::ops::Deref for OwnedResv {
    type Target = Resv;

    fn deref(&self) -> &Resv {
        // SAFETY: initialised until `drop` (type invariant).
        unsafe { Resv::from_raw(self.resv.get()) }
    }
}

impl Drop for OwnedResv {
    fn drop(&mut self) {
        // SAFETY: initialised (type invariant); nothing borrows it now.
        unsafe { bindings::dma_resv_fini(self.resv.get()) };
    }
}
