// SPDX-License-Identifier: GPL-2.0

//! Memory management: user address spaces and their mappings.
//!
//! A user address space is a `struct mm_struct`. It has two reference
//! counts, and which one a user holds decides what it may do:
//!
//! - `mm_count` (`mmgrab()`/`mmdrop()`) keeps the `struct mm_struct` itself
//!   allocated, nothing more: the page tables and mappings may already be
//!   gone. [`ARef<Mm>`] holds one.
//! - `mm_users` (`mmget()`/`mmput()`) keeps the address space alive: its
//!   mappings and page tables exist until the last user is put. Locking the
//!   mmap lock, looking up mappings and faulting pages need it.
//!   [`ARef<MmWithUser>`] holds one.
//!
//! A driver that mirrors a process's memory keeps an [`ARef<Mm>`] (or an
//! MMU notifier, which grabs the mm) and upgrades it with
//! [`Mm::mmget_not_zero`] only for the duration of an operation, so that it
//! never keeps a process's memory alive after the process exits.
//!
//! C headers: [`include/linux/mm.h`](srctree/include/linux/mm.h),
//! [`include/linux/mm_types.h`](srctree/include/linux/mm_types.h),
//! [`include/linux/sched/mm.h`](srctree/include/linux/sched/mm.h) and
//! [`include/linux/mmap_lock.h`](srctree/include/linux/mmap_lock.h).

use crate::{
    bindings,
    types::{ARef, AlwaysRefCounted, Opaque},
};
use core::{marker::PhantomData, ops::Deref, ptr::NonNull};

#[cfg(CONFIG_DEVICE_PRIVATE)]
pub mod devmem;
pub mod migrate;
#[cfg(CONFIG_KUNIT)]
pub mod testing;
pub mod virt;

pub use virt::VmaRef;

/// A user address space, kept allocated by an `mm_count` reference.
///
/// The address space itself may be torn down while an `ARef<Mm>` exists
/// (the process exited): to use it, upgrade to [`MmWithUser`] with
/// [`Mm::mmget_not_zero`]. Dropping an `ARef<Mm>` may sleep.
///
/// # Invariants
///
/// A `&Mm` points to a valid `struct mm_struct` whose `mm_count` is not
/// zero for the lifetime of the reference.
#[repr(transparent)]
pub struct Mm {
    mm: Opaque<bindings::mm_struct>,
}

// SAFETY: `mmdrop()` may be called on any thread, not only the one that
// called `mmgrab()`.
unsafe impl Send for Mm {}
// SAFETY: The methods taking `&Mm` only use atomics or the C locks of the
// mm, so they may be called from several threads at once.
unsafe impl Sync for Mm {}

// SAFETY: `mmgrab()` and `mmdrop()` are the reference counting of the
// allocation, and by the type invariant `mm_count` is not zero while a
// `&Mm` exists.
unsafe impl AlwaysRefCounted for Mm {
    fn inc_ref(&self) {
        // SAFETY: By the type invariant the mm is valid and grabbed.
        unsafe { bindings::mmgrab(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns an `mm_count` reference and gives it up.
        unsafe { bindings::mmdrop(obj.cast().as_ptr()) };
    }
}

impl Mm {
    /// Borrows an mm from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct mm_struct` whose `mm_count` stays
    /// above zero for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *const bindings::mm_struct) -> &'a Self {
        // SAFETY: `Mm` is a transparent wrapper of `mm_struct`; validity
        // for `'a` is the caller's promise.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// Returns the raw `struct mm_struct` pointer.
    pub fn as_raw(&self) -> *mut bindings::mm_struct {
        self.mm.get()
    }

    /// Takes an `mm_users` reference, unless the address space is already
    /// being torn down (`mm_users` reached zero: the process exited).
    pub fn mmget_not_zero(&self) -> Option<ARef<MmWithUser>> {
        // SAFETY: By the type invariant the mm is valid.
        if unsafe { bindings::mmget_not_zero(self.as_raw()) } {
            // SAFETY: We just took an `mm_users` reference, which the `ARef`
            // now owns. `MmWithUser` is a transparent wrapper of `Mm`.
            Some(unsafe { ARef::from_raw(NonNull::new_unchecked(self.as_raw().cast())) })
        } else {
            None
        }
    }
}

/// A user address space whose `mm_users` is not zero: its mappings and page
/// tables exist.
///
/// `&MmWithUser` borrows a user reference somebody holds; an
/// `ARef<MmWithUser>` owns one. Dropping an `ARef<MmWithUser>` may sleep,
/// and if it was the last user, tears the address space down.
///
/// # Invariants
///
/// A `&MmWithUser` points to a valid `struct mm_struct` whose `mm_users` is
/// not zero for the lifetime of the reference.
#[repr(transparent)]
pub struct MmWithUser {
    mm: Mm,
}

// SAFETY: `mmput()` may be called on any thread, not only the one that took
// the reference.
unsafe impl Send for MmWithUser {}
// SAFETY: As for `Mm`: the methods taking `&self` synchronise through the
// mm's own locks and atomics.
unsafe impl Sync for MmWithUser {}

// SAFETY: `mmget()` and `mmput()` are the `mm_users` reference counting, and
// by the type invariant `mm_users` is not zero while a `&MmWithUser` exists.
unsafe impl AlwaysRefCounted for MmWithUser {
    fn inc_ref(&self) {
        // SAFETY: By the type invariant `mm_users` is not zero, which is
        // what `mmget()` requires.
        unsafe { bindings::mmget(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller owns an `mm_users` reference and gives it up.
        unsafe { bindings::mmput(obj.cast().as_ptr()) };
    }
}

impl Deref for MmWithUser {
    type Target = Mm;

    fn deref(&self) -> &Mm {
        &self.mm
    }
}

impl MmWithUser {
    /// Borrows an mm that has users from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct mm_struct` whose `mm_users` stays
    /// above zero for `'a`.
    pub unsafe fn from_raw<'a>(ptr: *const bindings::mm_struct) -> &'a Self {
        // SAFETY: `MmWithUser` is a transparent wrapper of `mm_struct`;
        // validity for `'a` is the caller's promise.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// The address space the current task runs in, with a user reference.
    ///
    /// `None` for a kernel thread (unless it adopted an address space with
    /// `kthread_use_mm()`) and for a task that is exiting. An ioctl handler
    /// uses this to reach the memory of the calling process.
    ///
    /// # Examples
    ///
    /// KUnit tests, doctests included, run in a kernel thread:
    ///
    /// ```
    /// use kernel::mm::MmWithUser;
    ///
    /// assert!(MmWithUser::current().is_none());
    /// ```
    pub fn current() -> Option<ARef<Self>> {
        // SAFETY: `get_current()` is always valid to call and returns the
        // running task, which stays valid while it runs this code.
        let task = unsafe { bindings::get_current() };
        // SAFETY: Only the task itself changes its `mm` (exec, exit,
        // `kthread_use_mm()`/`kthread_unuse_mm()`), so reading it from the
        // task races with no writer. A non-null `mm` is valid and grabbed
        // for as long as it is the task's.
        let mm = unsafe { (*task).mm };
        if mm.is_null() {
            return None;
        }
        // SAFETY: `mm` is the current task's, valid and grabbed while this
        // function runs (see above); `mmget_not_zero` copes with an mm that
        // has no users left.
        unsafe { Mm::from_raw(mm) }.mmget_not_zero()
    }

    /// Takes the mmap lock for reading, sleeping until it is available.
    ///
    /// The lock keeps the set of mappings stable. It must not be taken
    /// while holding locks that a page fault or an MMU notifier callback
    /// of this mm may take.
    pub fn mmap_read_lock(&self) -> MmapReadGuard<'_> {
        // SAFETY: By the type invariant the mm is valid and has users.
        unsafe { bindings::mmap_read_lock(self.as_raw()) };
        // INVARIANT: We just took the read lock; the guard releases it.
        MmapReadGuard {
            mm: self,
            _not_send: PhantomData,
        }
    }

    /// Takes the mmap lock for reading if that does not need to wait.
    pub fn mmap_read_trylock(&self) -> Option<MmapReadGuard<'_>> {
        // SAFETY: By the type invariant the mm is valid and has users.
        if unsafe { bindings::mmap_read_trylock(self.as_raw()) } {
            // INVARIANT: We just took the read lock; the guard releases it.
            Some(MmapReadGuard {
                mm: self,
                _not_send: PhantomData,
            })
        } else {
            None
        }
    }
}

/// The mmap lock of an address space, held for reading.
///
/// The mappings ([`VmaRef`]) found through the guard are borrowed from it,
/// so they cannot be used after the lock is released.
///
/// # Invariants
///
/// The guard holds the read side of `mm`'s mmap lock, taken on this thread.
pub struct MmapReadGuard<'a> {
    mm: &'a MmWithUser,
    // Lockdep, and the rwsem's owner tracking, expect the lock to be
    // released by the task that took it.
    _not_send: PhantomData<*mut ()>,
}

impl<'a> MmapReadGuard<'a> {
    /// The address space whose lock this is.
    pub fn mm(&self) -> &'a MmWithUser {
        self.mm
    }

    /// The mapping that contains `addr`, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::mm::{testing, MmWithUser};
    /// use kernel::page::PAGE_SIZE;
    ///
    /// let addr = testing::vm_mmap_anon(4 * PAGE_SIZE, testing::PROT_READ)?;
    /// let mm = MmWithUser::current().ok_or(ENOMEM)?;
    /// let mmap = mm.mmap_read_lock();
    /// let vma = mmap.vma_lookup(addr + PAGE_SIZE).ok_or(EINVAL)?;
    /// assert_eq!((vma.start(), vma.end()), (addr, addr + 4 * PAGE_SIZE));
    /// assert!(vma.is_anonymous() && !vma.has_file() && !vma.is_hugetlb());
    /// assert!(vma.is_readable() && !vma.is_writable() && !vma.is_shared());
    /// // Nothing is ever mapped at address zero.
    /// assert!(mmap.vma_lookup(0).is_none());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn vma_lookup(&self, addr: usize) -> Option<&VmaRef> {
        // SAFETY: By the type invariant the mmap lock is held, as
        // `vma_lookup()` requires; any address is accepted.
        let vma = unsafe { bindings::vma_lookup(self.mm.as_raw(), addr as _) };
        if vma.is_null() {
            return None;
        }
        // SAFETY: The mapping exists and the read lock keeps it from being
        // unmapped or changed for as long as `self` is borrowed.
        Some(unsafe { VmaRef::from_raw(vma) })
    }

    /// The first mapping that ends above `addr`: the one containing `addr`
    /// or, if `addr` is in a hole, the next one.
    pub fn find_vma(&self, addr: usize) -> Option<&VmaRef> {
        // SAFETY: By the type invariant the mmap lock is held, as
        // `find_vma()` requires; any address is accepted.
        let vma = unsafe { bindings::find_vma(self.mm.as_raw(), addr as _) };
        if vma.is_null() {
            return None;
        }
        // SAFETY: As in `vma_lookup`: the read lock keeps the mapping.
        Some(unsafe { VmaRef::from_raw(vma) })
    }
}

impl Drop for MmapReadGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant this guard holds the read lock.
        unsafe { bindings::mmap_read_unlock(self.mm.as_raw()) };
    }
}

/// Pages of the current process's memory pinned for long-term device
/// access (`pin_user_pages_fast()` with `FOLL_LONGTERM`), as drivers that
/// neither mirror nor handle device page faults do (i915's userptr): until
/// they are unpinned, on drop, the pages can be neither migrated nor
/// reclaimed, and the CPU may map other pages at the same addresses
/// (munmap, copy-on-write) without the device noticing.
///
/// Prefer mirroring ([`crate::hmm`]), which pins nothing; this exists as
/// the baseline that mirroring is measured against.
///
/// # Invariants
///
/// Every entry of `pages` is a page that this object pinned once
/// (`FOLL_PIN`), in the order of the range.
///
/// # Examples
///
/// ```
/// use kernel::mm::{testing, PinnedPages};
/// use kernel::page::PAGE_SIZE;
/// use kernel::uaccess::UserSlice;
///
/// let rw = testing::PROT_READ | testing::PROT_WRITE;
/// let addr = testing::vm_mmap_anon(2 * PAGE_SIZE, rw)?;
/// UserSlice::new(addr + PAGE_SIZE, 4).writer().write_slice(b"pin!")?;
/// let pinned = PinnedPages::pin_current(addr, 2 * PAGE_SIZE, true)?;
/// assert_eq!(pinned.len(), 2);
/// let folio = pinned.folio(1).ok_or(EINVAL)?;
/// let mut word = [0u8; 4];
/// folio.read(pinned.offset_in_folio(1).ok_or(EINVAL)?, &mut word)?;
/// assert_eq!(&word, b"pin!");
/// // A pinned page carries a large reference count bias.
/// assert!(folio.ref_count() > 1);
///
/// // Unaligned, empty, unmapped or read-only (for writing) ranges.
/// assert_eq!(PinnedPages::pin_current(addr + 1, PAGE_SIZE, true).err(), Some(EINVAL));
/// assert_eq!(PinnedPages::pin_current(addr, 0, true).err(), Some(EINVAL));
/// assert_eq!(PinnedPages::pin_current(addr, 3 * PAGE_SIZE, true).err(), Some(EFAULT));
/// let ro = testing::vm_mmap_anon(PAGE_SIZE, testing::PROT_READ)?;
/// assert_eq!(PinnedPages::pin_current(ro, PAGE_SIZE, true).err(), Some(EFAULT));
/// # Ok::<(), Error>(())
/// ```
pub struct PinnedPages {
    pages: crate::alloc::KVVec<*mut bindings::page>,
    write: bool,
}

// SAFETY: Pins may be dropped on any thread; the page pointers are only
// read.
unsafe impl Send for PinnedPages {}
// SAFETY: `&PinnedPages` only reads the pointers and the pages' folios.
unsafe impl Sync for PinnedPages {}

impl PinnedPages {
    /// Pins the pages of `[start, start + len)` of the current process's
    /// address space, for writing if `write` (which breaks copy-on-write
    /// first), migrating them out of `ZONE_MOVABLE` and CMA first as
    /// `FOLL_LONGTERM` does.
    ///
    /// `EINVAL` unless the range is non-empty, page aligned and does not
    /// wrap; `EFAULT` if part of it is not mapped, not writable for a
    /// write, or cannot be pinned (a `VM_IO` or `VM_PFNMAP` mapping); also
    /// `EFAULT` when called from a kernel thread without an mm; `ENOMEM`.
    pub fn pin_current(start: usize, len: usize, write: bool) -> crate::error::Result<Self> {
        use crate::error::{code::*, Error};
        use crate::page::PAGE_SIZE;
        if len == 0 || start % PAGE_SIZE != 0 || len % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        start.checked_add(len).ok_or(EINVAL)?;
        let n = len / PAGE_SIZE;
        let mut pages: crate::alloc::KVVec<*mut bindings::page> =
            crate::alloc::KVVec::with_capacity(n, crate::alloc::flags::GFP_KERNEL)?;
        let mut flags = bindings::FOLL_LONGTERM;
        if write {
            flags |= bindings::FOLL_WRITE;
        }
        while pages.len() < n {
            let done = pages.len();
            let want = i32::try_from(n - done).unwrap_or(i32::MAX);
            // SAFETY: `pages` has room for `n - done` more entries after the
            // `done` initialised ones (capacity `n`); the function
            // initialises the first `ret` of them and any address range is
            // accepted (it is checked against the current mm).
            let ret = unsafe {
                bindings::pin_user_pages_fast(
                    start + done * PAGE_SIZE,
                    want,
                    flags,
                    pages.as_mut_ptr().add(done),
                )
            };
            if ret <= 0 {
                let err = if ret == 0 {
                    EFAULT
                } else {
                    Error::from_errno(ret)
                };
                // Partly pinned: undo it. `pages` holds the `done` pins.
                drop(Self {
                    pages,
                    write: false,
                });
                // GUP says -EFAULT for an unmapped or unwritable range (and
                // -ENOMEM or -EINTR on the way).
                return Err(err);
            }
            // SAFETY: The call initialised `ret` more entries (at most
            // `want`), which fit in the capacity.
            unsafe { pages.set_len(done + ret as usize) };
        }
        // INVARIANT: Each entry was pinned once by the calls above.
        Ok(Self { pages, write })
    }

    /// The number of pages.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether there are none (never: ranges are not empty).
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The page frame number of page `index` of the range.
    pub fn pfn(&self, index: usize) -> Option<usize> {
        let page = *self.pages.get(index)?;
        // SAFETY: The page is pinned (type invariant), so valid.
        Some(unsafe { bindings::page_to_pfn(page) } as usize)
    }

    /// The folio of page `index` of the range.
    pub fn folio(&self, index: usize) -> Option<&crate::folio::Folio> {
        let page = *self.pages.get(index)?;
        // SAFETY: The page is pinned (type invariant), which holds a
        // reference on its folio for as long as `self` lives.
        Some(unsafe { crate::folio::Folio::from_raw(bindings::page_folio(page)) })
    }

    /// The byte offset of page `index` of the range within its folio.
    pub fn offset_in_folio(&self, index: usize) -> Option<usize> {
        let folio = self.folio(index)?;
        Some((self.pfn(index)? - folio.pfn()) * crate::page::PAGE_SIZE)
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        // SAFETY: By the type invariant each entry is pinned once by us;
        // they are unpinned here, once. Pages pinned for writing may have
        // been written by the device: they are marked dirty (taking each
        // folio's lock, so that truncation cannot race).
        unsafe {
            bindings::unpin_user_pages_dirty_lock(
                self.pages.as_mut_ptr(),
                self.pages.len() as _,
                self.write,
            )
        };
    }
}
