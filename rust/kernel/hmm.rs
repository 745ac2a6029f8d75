// SPDX-License-Identifier: GPL-2.0

//! Heterogeneous memory management: mirror a process's page tables into a
//! device's, without pinning pages.
//!
//! [`Range::fault`] reads (and, as asked, faults in) the CPU page table
//! entries of a range as page frame numbers ([`HmmPfn`]), in a read-side
//! critical section of an [`IntervalNotifier`]; the driver then takes its
//! update lock, checks [`IntervalNotifier::read_retry`], and maps the
//! pages into its page table under that lock (see [`Range::fault_locked`]).
//! No page reference is taken: the notifier's invalidate callback removes
//! the device mappings before a page is unmapped, so they never outlive
//! the CPU's.
//!
//! See `Documentation/mm/hmm.rst`.
//!
//! C headers: [`include/linux/hmm.h`](srctree/include/linux/hmm.h) and
//! [`include/linux/rmap.h`](srctree/include/linux/rmap.h).

use crate::{
    alloc::KVVec,
    bindings,
    error::{
        code::{EAGAIN, EBUSY, EFAULT, EINVAL, EOPNOTSUPP},
        Error, Result,
    },
    ffi::c_ulong,
    folio::{Folio, LockedFolio},
    mmu_notifier::{IntervalNotifier, Invalidate, Owner, ReadSeq},
    page::PAGE_SIZE,
    prelude::*,
    time::{ktime_ms_delta, Ktime},
};

const PFN_VALID: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_VALID as c_ulong;
const PFN_WRITE: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_WRITE as c_ulong;
const PFN_ERROR: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_ERROR as c_ulong;
const PFN_FLAGS: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_FLAGS as c_ulong;
const PFN_ORDER_SHIFT: u32 = bindings::hmm_pfn_flags_HMM_PFN_ORDER_SHIFT as u32;
const PFN_REQ_FAULT: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_REQ_FAULT as c_ulong;
const PFN_REQ_WRITE: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_REQ_WRITE as c_ulong;

/// How long [`Range::fault`] usually retries after collisions with
/// invalidations (`HMM_RANGE_DEFAULT_TIMEOUT`), in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u32 = bindings::HMM_RANGE_DEFAULT_TIMEOUT;

/// One page of a [`Range`] after [`Range::fault`]: the CPU page table's
/// state for it, as an HMM PFN (`HMM_PFN_*` flags and a page frame
/// number).
///
/// # Examples
///
/// ```
/// use kernel::hmm::HmmPfn;
///
/// use kernel::bindings::{
///     hmm_pfn_flags_HMM_PFN_ORDER_SHIFT as SHIFT, hmm_pfn_flags_HMM_PFN_VALID as VALID,
///     hmm_pfn_flags_HMM_PFN_WRITE as WRITE,
/// };
///
/// let p = HmmPfn::from_raw(VALID | WRITE | (9 << SHIFT) | 0x1234);
/// assert!(p.is_valid() && p.is_writable() && !p.is_error());
/// assert_eq!((p.pfn(), p.map_order()), (Some(0x1234), Some(9)));
///
/// let ro = HmmPfn::from_raw(VALID | 0x1234);
/// assert!(ro.is_valid() && !ro.is_writable());
/// assert_eq!((ro.pfn(), ro.map_order()), (Some(0x1234), Some(0)));
///
/// let none = HmmPfn::from_raw(0);
/// assert!(!none.is_valid() && none.pfn().is_none() && none.map_order().is_none());
/// ```
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HmmPfn(c_ulong);

impl HmmPfn {
    /// Wraps a raw HMM PFN.
    pub fn from_raw(raw: c_ulong) -> Self {
        Self(raw)
    }

    /// The raw HMM PFN.
    pub fn raw(self) -> c_ulong {
        self.0
    }

    /// Whether a page is mapped (at least readable) and [`Self::pfn`] is
    /// its page frame number. Without it, the page is not present and a
    /// fault ([`Access::Read`]) would bring it in.
    pub fn is_valid(self) -> bool {
        self.0 & PFN_VALID != 0
    }

    /// Whether the page is mapped writable (only with [`Self::is_valid`]).
    pub fn is_writable(self) -> bool {
        self.is_valid() && self.0 & PFN_WRITE != 0
    }

    /// Whether the device must not access the address: no mapping, a
    /// special mapping without pages, poisoned memory.
    pub fn is_error(self) -> bool {
        self.0 & PFN_ERROR != 0
    }

    /// The page frame number, if [`Self::is_valid`].
    pub fn pfn(self) -> Option<usize> {
        self.is_valid().then_some(self.0 & !PFN_FLAGS)
    }

    /// The order of the CPU mapping the page is part of, if
    /// [`Self::is_valid`]: `9` for a 2 MiB huge page mapped by a PMD, for
    /// instance. The mapping is naturally aligned, may extend beyond the
    /// range, and all its pages have the same flags.
    pub fn map_order(self) -> Option<u32> {
        self.is_valid()
            .then_some(((self.0 >> PFN_ORDER_SHIFT) & 0x1f) as u32)
    }

    /// The folio of the page, if [`Self::is_valid`].
    ///
    /// A device private page (reported only to its owner, see
    /// [`Range::set_dev_private_owner`]) has a folio whose memory the CPU
    /// cannot access: [`Folio::read`] and the like must not be used on it.
    ///
    /// # Safety
    ///
    /// The caller must be in the critical section of the fault that
    /// produced this value: holding the update lock, after
    /// [`IntervalNotifier::read_retry`] returned `false` under it. `'a`
    /// must end before the update lock is released: from then on the page
    /// may be unmapped and freed, since no reference is held.
    pub unsafe fn folio<'a>(self) -> Option<&'a Folio> {
        // SAFETY: The page is mapped by the CPU page tables, and cannot be
        // unmapped (hence not freed) without an invalidation, which must
        // take the update lock the caller holds for `'a`; a mapped page
        // holds a reference on its folio.
        self.pfn().map(|pfn| unsafe { Folio::from_pfn(pfn) })
    }

    /// Marks the folio of the page dirty (`folio_mark_dirty()`), if
    /// [`Self::is_valid`]: for a device that may write to the page through
    /// a mapping whose writes the CPU page table's dirty bit does not see.
    /// Call it before mapping the page writable into the device, for any
    /// kind of memory: anonymous (in the swap cache or not), shmem, page
    /// cache of any filesystem, hugetlbfs.
    ///
    /// # Safety
    ///
    /// As for [`HmmPfn::folio`]: in the critical section of the fault that
    /// produced this value.
    pub unsafe fn mark_dirty(self) {
        // SAFETY: The caller's guarantee, as `folio()` requires.
        let Some(folio) = (unsafe { self.folio() }) else {
            return;
        };
        // SAFETY: The folio is valid (above). `folio_mark_dirty()` requires
        // that the folio cannot be truncated meanwhile, i.e. that
        // `folio->mapping` (and the inode behind it) stays: "most callers
        // hold the folio lock, but e.g. zap_pte_range() calls it with the
        // folio mapped and the pte lock held, which also locks out
        // truncation". We are in the same position as zap: the CPU page
        // tables map the page (`hmm_range_fault()` found it mapped and no
        // invalidation ran since, `read_retry()`), and it cannot be
        // unmapped without an invalidation, which waits for the update
        // lock the caller holds. Every path that takes a folio out of its
        // mapping unmaps it first while it is mapped: truncation and hole
        // punching (`unmap_mapping_range()` in `truncate_pagecache*()`,
        // then `truncate_cleanup_folio()` for what raced back in),
        // `invalidate_inode_pages2()`, reclaim and shmem swap-out
        // (`try_to_unmap()` before `remove_mapping()`/`shmem_writepage()`),
        // migration (`try_to_migrate()`), hugetlbfs hole punching and
        // truncation (`hugetlb_vmdelete_list()`); page cache removal
        // (`filemap_unaccount_folio()`) even checks that the folio is no
        // longer mapped. The mapping keeps a reference on the file, so
        // the inode stays too. An anonymous folio has no such mapping
        // (nothing to race with, as for zap). It does not sleep: the
        // `dirty_folio` operations (`filemap_dirty_folio()`,
        // `noop_dirty_folio()` for shmem and hugetlbfs,
        // `swap_dirty_folio()`) take only spinlocks, as under zap's pte
        // lock. A write fault brought the page in writable (`page_mkwrite()`
        // ran for a shared file mapping), and writeback write-protects the
        // page (`folio_mkclean()`) through an invalidation before it cleans
        // the folio, so the device cannot write to a folio it has not
        // marked dirty since.
        unsafe { bindings::folio_mark_dirty(folio.as_raw()) };
    }
}

/// What [`Range::fault`] asks of every page of a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Fault nothing in: report the current state of the page tables.
    Snapshot,
    /// Fault in every page that is not present (`HMM_PFN_REQ_FAULT`).
    Read,
    /// Fault in every page that is not present or not writable, breaking
    /// copy-on-write (`HMM_PFN_REQ_FAULT | HMM_PFN_REQ_WRITE`).
    Write,
}

impl Access {
    fn default_flags(self) -> c_ulong {
        match self {
            Self::Snapshot => 0,
            Self::Read => PFN_REQ_FAULT,
            Self::Write => PFN_REQ_FAULT | PFN_REQ_WRITE,
        }
    }
}

/// A range of a process's address space to mirror (`struct hmm_range`),
/// within the range of an [`IntervalNotifier`], and the [`HmmPfn`]s of its
/// pages.
///
/// # Examples
///
/// ```
/// use kernel::hmm::{Access, Range};
/// use kernel::mm::{testing, MmWithUser};
/// use kernel::mmu_notifier::{IntervalNotifier, Invalidate, InvalidateSeq, NotifierRange};
/// use kernel::page::PAGE_SIZE;
/// use kernel::uaccess::UserSlice;
/// use kernel::{new_mutex, sync::Mutex};
///
/// #[pin_data]
/// struct Mirror {
///     #[pin]
///     update: Mutex<()>,
/// }
///
/// impl Invalidate for Mirror {
///     fn invalidate(&self, range: &NotifierRange, seq: InvalidateSeq<'_>) -> bool {
///         if !range.blockable() {
///             return false;
///         }
///         let _update = self.update.lock();
///         seq.set_seq();
///         true
///     }
/// }
///
/// const RW: u32 = testing::PROT_READ | testing::PROT_WRITE;
/// let len = 4 * PAGE_SIZE;
/// let addr = testing::vm_mmap_anon(len, RW)?;
/// // Only the first page is present, written.
/// UserSlice::new(addr + 8, 8).writer().write_slice(&0x1122334455667788u64.to_ne_bytes())?;
/// let mm = MmWithUser::current().ok_or(EINVAL)?;
/// let mirror = || pin_init!(Mirror { update <- new_mutex!(()) });
/// let notifier = KBox::pin_init(IntervalNotifier::new(&mm, addr, len, mirror()), GFP_KERNEL)?;
///
/// let mut snap = Range::new(&notifier, addr, addr + len, Access::Snapshot)?;
/// let update = snap.fault_locked(kernel::hmm::DEFAULT_TIMEOUT_MS, || notifier.update.lock())?;
/// let pfns = snap.pfns();
/// assert!(pfns[0].is_valid() && pfns[0].is_writable());
/// assert!(pfns[1..].iter().all(|p| !p.is_valid() && !p.is_error()));
/// // SAFETY: The update lock is held and `read_retry()` returned false.
/// let folio = unsafe { pfns[0].folio() }.ok_or(EINVAL)?;
/// let offset = (pfns[0].pfn().unwrap_or(0) - folio.pfn()) * PAGE_SIZE;
/// let mut word = [0u8; 8];
/// folio.read(offset + 8, &mut word)?;
/// assert_eq!(u64::from_ne_bytes(word), 0x1122334455667788);
/// drop(update);
///
/// // A read fault maps the rest (the shared zero page: read-only).
/// let mut read = Range::new(&notifier, addr, addr + len, Access::Read)?;
/// drop(read.fault_locked(1000, || notifier.update.lock())?);
/// assert!(read.pfns().iter().all(|p| p.is_valid()));
/// assert!(!read.pfns()[3].is_writable());
/// // A write fault breaks copy-on-write.
/// let mut write = Range::new(&notifier, addr + 3 * PAGE_SIZE, addr + len, Access::Write)?;
/// drop(write.fault_locked(1000, || notifier.update.lock())?);
/// assert!(write.pfns()[0].is_writable());
///
/// // Unaligned, empty and out-of-notifier ranges.
/// assert_eq!(Range::new(&notifier, addr + 1, addr + len, Access::Read).err(), Some(EINVAL));
/// assert_eq!(Range::new(&notifier, addr, addr, Access::Read).err(), Some(EINVAL));
/// assert_eq!(Range::new(&notifier, addr, addr + len + PAGE_SIZE, Access::Read).err(), Some(EINVAL));
/// // Unmapped memory.
/// testing::vm_munmap(addr + 3 * PAGE_SIZE, PAGE_SIZE)?;
/// let mut gone = Range::new(&notifier, addr + 2 * PAGE_SIZE, addr + len, Access::Read)?;
/// assert_eq!(gone.fault(1000).err(), Some(EFAULT));
/// // A snapshot of it reports the hole as an error rather than failing.
/// let mut snap = Range::new(&notifier, addr + 2 * PAGE_SIZE, addr + len, Access::Snapshot)?;
/// snap.fault(1000)?;
/// assert!(snap.pfns()[0].is_valid() && snap.pfns()[1].is_error());
///
/// // Writing read-only memory.
/// let ro = testing::vm_mmap_anon(PAGE_SIZE, testing::PROT_READ)?;
/// let ro_notifier = KBox::pin_init(IntervalNotifier::new(&mm, ro, PAGE_SIZE, mirror()), GFP_KERNEL)?;
/// let mut w = Range::new(&ro_notifier, ro, ro + PAGE_SIZE, Access::Write)?;
/// assert_eq!(w.fault(1000).err(), Some(EPERM));
/// # Ok::<(), Error>(())
/// ```
pub struct Range<'a, T: Invalidate> {
    notifier: &'a IntervalNotifier<T>,
    start: usize,
    end: usize,
    default_flags: c_ulong,
    dev_private_owner: Owner,
    pfns: KVVec<c_ulong>,
}

impl<'a, T: Invalidate> Range<'a, T> {
    /// Creates a range over `[start, end)` of the notifier's address space,
    /// asking `access` of every page, and allocates its PFN array.
    ///
    /// `EINVAL` unless the range is non-empty, page aligned and within the
    /// notifier's range (whose invalidations are what keeps the result
    /// valid).
    pub fn new(
        notifier: &'a IntervalNotifier<T>,
        start: usize,
        end: usize,
        access: Access,
    ) -> Result<Self> {
        if start % PAGE_SIZE != 0 || end % PAGE_SIZE != 0 || !notifier.covers(start, end) {
            return Err(EINVAL);
        }
        let pfns = KVVec::from_elem(0, (end - start) / PAGE_SIZE, GFP_KERNEL)?;
        Ok(Self {
            notifier,
            start,
            end,
            default_flags: access.default_flags(),
            dev_private_owner: Owner::NONE,
            pfns,
        })
    }

    /// Reports the device private pages of `owner` (the owner of their
    /// `dev_pagemap`) as valid PFNs instead of faulting them back to system
    /// memory. By default ([`Owner::NONE`]) all device private pages are
    /// faulted back.
    pub fn set_dev_private_owner(&mut self, owner: Owner) {
        self.dev_private_owner = owner;
    }

    /// The notifier the range belongs to.
    pub fn notifier(&self) -> &'a IntervalNotifier<T> {
        self.notifier
    }

    /// The first address of the range.
    pub fn start(&self) -> usize {
        self.start
    }

    /// The address just past the range.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The state of each page of the range, as of the last
    /// [`Range::fault`]; all invalid before the first.
    ///
    /// Meaningful only in the critical section: under the update lock,
    /// after [`IntervalNotifier::read_retry`] returned `false`.
    pub fn pfns(&self) -> &[HmmPfn] {
        let pfns = self.pfns.as_slice();
        // SAFETY: `HmmPfn` is a transparent wrapper of `c_ulong`, so the
        // slices have the same layout.
        unsafe { core::slice::from_raw_parts(pfns.as_ptr().cast(), pfns.len()) }
    }

    /// Fills [`Range::pfns`] (`hmm_range_fault()`): reads the CPU page
    /// tables of the range, faulting pages in as the range's [`Access`]
    /// asks, and returns the sequence number to check with
    /// [`IntervalNotifier::read_retry`] under the update lock.
    ///
    /// Follows `Documentation/mm/hmm.rst`: starts a read-side critical
    /// section, takes the mmap lock, and starts again while
    /// `hmm_range_fault()` reports a collision with an invalidation
    /// (`EBUSY`), for up to `timeout_ms` milliseconds, after which it fails
    /// with `EBUSY`. Other errors: `EFAULT` if part of the range is not
    /// mapped (or cannot be faulted in), or the process has exited; `EPERM`
    /// for a write fault on memory that is not writable; `ENOMEM`.
    ///
    /// Must not be called with the update lock held (it waits for
    /// invalidations, which take it) nor the mmap lock. It may sleep.
    pub fn fault(&mut self, timeout_ms: u32) -> Result<ReadSeq> {
        let started = Ktime::ktime_get();
        // The notifier keeps the mm allocated, not its address space: take
        // a user reference for the duration, as a process that has exited
        // has nothing left to mirror.
        let mm = self.notifier.mm().mmget_not_zero().ok_or(EFAULT)?;
        loop {
            let seq = self.notifier.read_begin();
            let mut range = bindings::hmm_range {
                notifier: self.notifier.as_raw(),
                notifier_seq: seq.raw(),
                start: self.start as c_ulong,
                end: self.end as c_ulong,
                hmm_pfns: self.pfns.as_mut_ptr(),
                default_flags: self.default_flags,
                pfn_flags_mask: 0,
                dev_private_owner: self.dev_private_owner.as_ptr(),
            };
            let mmap = mm.mmap_read_lock();
            // SAFETY: The mmap lock of the notifier's mm is held, as
            // `hmm_range_fault()` requires. `range` is a valid range of
            // that mm, within the notifier's range (checked in `new`),
            // with a PFN array of one entry per page that nothing else
            // accesses during the call (`&mut self`).
            let ret = unsafe { bindings::hmm_range_fault(&mut range) };
            drop(mmap);
            match ret {
                0 => return Ok(seq),
                e if e == EBUSY.to_errno() => {
                    let waited = ktime_ms_delta(Ktime::ktime_get(), started);
                    if waited >= i64::from(timeout_ms) {
                        return Err(EBUSY);
                    }
                }
                e => return Err(Error::from_errno(e)),
            }
        }
    }

    /// Runs [`Range::fault`], takes the update lock with `lock`, and
    /// returns its guard once [`IntervalNotifier::read_retry`] confirms,
    /// under it, that no invalidation ran since: [`Range::pfns`] can then
    /// be mapped into the device page table until the guard is dropped.
    /// Starts again on a collision, for up to `timeout_ms` milliseconds in
    /// all.
    ///
    /// `lock` must take the lock that the notifier's callback takes around
    /// [`InvalidateSeq::set_seq`].
    ///
    /// [`InvalidateSeq::set_seq`]: crate::mmu_notifier::InvalidateSeq::set_seq
    pub fn fault_locked<G>(&mut self, timeout_ms: u32, mut lock: impl FnMut() -> G) -> Result<G> {
        let started = Ktime::ktime_get();
        loop {
            let waited = ktime_ms_delta(Ktime::ktime_get(), started);
            let left = i64::from(timeout_ms) - waited;
            if left <= 0 {
                return Err(EBUSY);
            }
            let seq = self.fault(left as u32)?;
            let guard = lock();
            if !self.notifier.read_retry(seq) {
                return Ok(guard);
            }
        }
    }
}

/// Pages that [`make_device_exclusive`] made exclusive to a device: the
/// CPU page tables map them to special entries, and the first CPU access
/// takes them back (through an [`Event::Exclusive`] invalidation whose
/// owner is [`Owner::NONE`]).
///
/// The pages stay locked and referenced while this lives, which keeps the
/// CPU from taking them back: map them into the device under the update
/// lock, then drop this (which unlocks and puts them). Do not touch the
/// pages from the CPU before, from this thread: that would wait for the
/// page locks it holds.
///
/// [`Event::Exclusive`]: crate::mmu_notifier::Event::Exclusive
///
/// # Invariants
///
/// Each non-null entry of `pages` is a page that was made exclusive, whose
/// folio lock and one reference this object owns.
#[cfg(CONFIG_DEVICE_PRIVATE)]
pub struct ExclusivePages<'g> {
    pages: KVVec<*mut bindings::page>,
    // Borrows the mmap lock guard: page locks nest inside the mmap lock,
    // so they must be released before it is.
    _mmap: core::marker::PhantomData<&'g ()>,
}

/// Makes the pages of `[start, end)` exclusive to a device
/// (`make_device_exclusive_range()`), faulting them in writable first.
///
/// Only private anonymous pages can be made exclusive; others (and pages
/// that are locked by someone else at that moment) are left as they are:
/// see [`ExclusivePages::is_exclusive`]. The invalidation this causes
/// carries `owner`, which the driver's own [`Invalidate::invalidate`]
/// recognises and ignores ([`NotifierRange::owner`]).
///
/// `EINVAL` unless the range is non-empty and page aligned; `EFAULT` if
/// nothing is mapped at `start`; other errors of `get_user_pages_remote()`.
///
/// [`NotifierRange::owner`]: crate::mmu_notifier::NotifierRange::owner
///
/// # Examples
///
/// ```
/// use core::sync::atomic::{AtomicU32, Ordering};
/// use kernel::hmm::make_device_exclusive;
/// use kernel::mm::{testing, MmWithUser};
/// use kernel::mmu_notifier::{Event, IntervalNotifier, Invalidate, InvalidateSeq, NotifierRange, Owner};
/// use kernel::page::PAGE_SIZE;
/// use kernel::uaccess::UserSlice;
///
/// static DEVICE: u8 = 0;
///
/// #[pin_data]
/// struct Counts {
///     own: AtomicU32,
///     cpu: AtomicU32,
/// }
///
/// impl Invalidate for Counts {
///     fn invalidate(&self, range: &NotifierRange, seq: InvalidateSeq<'_>) -> bool {
///         if range.event() == Event::Exclusive && range.owner() == Owner::from_ref(&DEVICE) {
///             // Our own exclusive access being set up: nothing to undo.
///             self.own.fetch_add(1, Ordering::Relaxed);
///             return true;
///         }
///         if range.event() == Event::Exclusive {
///             self.cpu.fetch_add(1, Ordering::Relaxed);
///         }
///         // This mirror maps nothing, so it needs no update lock.
///         seq.set_seq();
///         true
///     }
/// }
///
/// let len = 2 * PAGE_SIZE;
/// let addr = testing::vm_mmap_anon(len, testing::PROT_READ | testing::PROT_WRITE)?;
/// UserSlice::new(addr, 8).writer().write_slice(&7u64.to_ne_bytes())?;
/// let mm = MmWithUser::current().ok_or(EINVAL)?;
/// let counts = pin_init!(Counts { own: AtomicU32::new(0), cpu: AtomicU32::new(0) });
/// let notifier = KBox::pin_init(IntervalNotifier::new(&mm, addr, len, counts), GFP_KERNEL)?;
///
/// let mmap = mm.mmap_read_lock();
/// let exclusive = make_device_exclusive(&mmap, addr, addr + len, Owner::from_ref(&DEVICE))?;
/// assert_eq!(exclusive.len(), 2);
/// assert!(exclusive.all_exclusive());
/// let folio = exclusive.folio(0).ok_or(EINVAL)?;
/// assert!(folio.is_locked());
/// let mut word = [0u8; 8];
/// folio.read(0, &mut word)?;
/// assert_eq!(u64::from_ne_bytes(word), 7);
/// // A device would map the pages here.
/// drop(exclusive);
/// drop(mmap);
/// // At least one invalidation per page, all ours.
/// assert!(notifier.own.load(Ordering::Relaxed) >= 2);
/// assert_eq!(notifier.cpu.load(Ordering::Relaxed), 0);
///
/// // The CPU takes the first page back, and the data is still there.
/// UserSlice::new(addr, 8).reader().read_slice(&mut word)?;
/// assert_eq!(u64::from_ne_bytes(word), 7);
/// assert_eq!(notifier.cpu.load(Ordering::Relaxed), 1);
///
/// let mmap = mm.mmap_read_lock();
/// assert_eq!(make_device_exclusive(&mmap, addr + 1, addr + len, Owner::NONE).err(), Some(EINVAL));
/// # Ok::<(), Error>(())
/// ```
#[cfg(CONFIG_DEVICE_PRIVATE)]
pub fn make_device_exclusive<'g>(
    mmap: &'g crate::mm::MmapReadGuard<'_>,
    start: usize,
    end: usize,
    owner: Owner,
) -> Result<ExclusivePages<'g>> {
    if start % PAGE_SIZE != 0 || end % PAGE_SIZE != 0 || start >= end {
        return Err(EINVAL);
    }
    let mut pages = KVVec::from_elem(core::ptr::null_mut(), (end - start) / PAGE_SIZE, GFP_KERNEL)?;
    // SAFETY: The mmap lock of the mm is held (`mmap`), as the GUP inside
    // requires; `pages` has room for every page of the range. On success
    // the function stores, for each page it found, either null or a page
    // it made exclusive, locked, with a reference; the entries it did not
    // reach stay null.
    let ret = unsafe {
        bindings::make_device_exclusive_range(
            mmap.mm().as_raw(),
            start as c_ulong,
            end as c_ulong,
            pages.as_mut_ptr(),
            owner.as_ptr(),
        )
    };
    if ret < 0 {
        return Err(Error::from_errno(ret));
    }
    // INVARIANT: See the safety comment above.
    Ok(ExclusivePages {
        pages,
        _mmap: core::marker::PhantomData,
    })
}

/// Gets the page at `addr` ready for [`make_device_exclusive`], or tells
/// why it can never be made exclusive, so that a caller need not retry
/// until a timeout on a refusal that will not change.
///
/// Faults the page in writable (`get_user_pages_remote()` with
/// `FOLL_WRITE | FOLL_SPLIT_PMD`, as [`make_device_exclusive`] does, which
/// breaks copy-on-write and splits a PMD mapping into PTEs), then looks at
/// its folio. In 6.12 `make_device_exclusive_range()` only takes:
///
/// - anonymous folios that are not hugetlb (`folio_make_device_exclusive()`
///   refuses others, "to avoid potential writeback issues"): anything
///   else, shmem, page cache and hugetlb pages, is `EOPNOTSUPP`;
/// - the first page of a folio (it refuses `PageTail()` pages), and for the
///   first page of a large folio it converts every PTE mapping the folio.
///   So a large anonymous folio (a THP, or an mTHP) is split here into
///   small folios (`split_huge_page_to_list_to_order()` to order 0), which
///   the next call makes exclusive one page at a time. `EAGAIN` if the
///   folio is locked by someone else or cannot be split now (extra
///   references: being migrated, or pinned): the caller retries, or gives
///   up after its timeout.
///
/// Shared and hugetlbfs mappings are refused (`EOPNOTSUPP`) before any
/// fault: they never map anonymous folios.
///
/// `EINVAL` for an unaligned address; `EFAULT` if nothing is mapped at
/// `addr` or it cannot be made writable (`get_user_pages_remote()`'s
/// errors otherwise).
///
/// # Examples
///
/// ```
/// use kernel::hmm::prepare_device_exclusive;
/// use kernel::mm::{testing, MmWithUser};
/// use kernel::page::PAGE_SIZE;
///
/// let rw = testing::PROT_READ | testing::PROT_WRITE;
/// let addr = testing::vm_mmap_anon(PAGE_SIZE, rw)?;
/// let mm = MmWithUser::current().ok_or(EINVAL)?;
/// let mmap = mm.mmap_read_lock();
/// prepare_device_exclusive(&mmap, addr)?;
/// assert_eq!(prepare_device_exclusive(&mmap, addr + 1).err(), Some(EINVAL));
/// drop(mmap);
/// let shared = testing::vm_mmap_shared_anon(PAGE_SIZE, rw)?;
/// let mmap = mm.mmap_read_lock();
/// assert_eq!(prepare_device_exclusive(&mmap, shared).err(), Some(EOPNOTSUPP));
/// # Ok::<(), Error>(())
/// ```
#[cfg(CONFIG_DEVICE_PRIVATE)]
pub fn prepare_device_exclusive(mmap: &crate::mm::MmapReadGuard<'_>, addr: usize) -> Result {
    if addr % PAGE_SIZE != 0 {
        return Err(EINVAL);
    }
    // Shared and hugetlbfs mappings never map anonymous folios that could
    // be made exclusive: refuse them without faulting (and dirtying) the
    // page for nothing. The folio checks below remain the rule.
    let vma = mmap.vma_lookup(addr).ok_or(EFAULT)?;
    if vma.is_shared() || vma.is_hugetlb() {
        return Err(EOPNOTSUPP);
    }
    let mut page: *mut bindings::page = core::ptr::null_mut();
    let flags = bindings::FOLL_GET | bindings::FOLL_WRITE | bindings::FOLL_SPLIT_PMD;
    // SAFETY: The mmap lock of the mm is held (`mmap`) and `locked` is null,
    // so GUP neither needs to take it nor drops it; `page` has room for the
    // one page asked for.
    let ret = unsafe {
        bindings::get_user_pages_remote(
            mmap.mm().as_raw(),
            addr as c_ulong,
            1,
            flags,
            &mut page,
            core::ptr::null_mut(),
        )
    };
    if ret < 0 {
        return Err(Error::from_errno(ret as i32));
    }
    if ret != 1 || page.is_null() {
        return Err(EFAULT);
    }
    // SAFETY: GUP with `FOLL_GET` returned a valid page and took a
    // reference on its folio, which we own and put below; a referenced
    // folio cannot be freed, nor split into others but by us (splitting
    // needs every extra reference accounted for).
    let folio = unsafe { bindings::page_folio(page) };
    // SAFETY: `folio` is valid (above).
    let (anon, hugetlb, large) = unsafe {
        (
            bindings::folio_test_anon(folio),
            bindings::folio_test_hugetlb(folio),
            bindings::folio_test_large(folio),
        )
    };
    let mut ret = Ok(());
    if !anon || hugetlb {
        ret = Err(EOPNOTSUPP);
    } else if large {
        // SAFETY: `folio` is valid; a trylock never sleeps.
        if unsafe { bindings::folio_trylock(folio) } {
            // SAFETY: We hold the folio lock and a reference on the folio
            // (GUP's), as splitting requires; the mmap lock keeps the
            // anonymous mapping (and its anon_vma) alive. On success the
            // lock and our reference stay with the small folio of `page`
            // (`__split_huge_page()` unlocks and puts the others); on
            // failure the folio is unchanged, still locked and referenced.
            let err = unsafe { split_huge_page(page) };
            // SAFETY: Either way `page_folio(page)` is now the folio we
            // hold locked and referenced (see above); release both.
            unsafe {
                let folio = bindings::page_folio(page);
                bindings::folio_unlock(folio);
                bindings::folio_put(folio);
            }
            return if err == 0 { Ok(()) } else { Err(EAGAIN) };
        }
        ret = Err(EAGAIN);
    }
    // SAFETY: We own GUP's reference (above) and give it up once.
    unsafe { bindings::folio_put(folio) };
    ret
}

/// `split_huge_page()`, which is not a function without THP.
///
/// # Safety
///
/// As for `split_huge_page()`: the caller holds the folio of `page` locked
/// and referenced.
#[cfg(all(CONFIG_DEVICE_PRIVATE, CONFIG_TRANSPARENT_HUGEPAGE))]
unsafe fn split_huge_page(page: *mut bindings::page) -> crate::ffi::c_int {
    // SAFETY: as the caller promises.
    unsafe { bindings::split_huge_page_to_list_to_order(page, core::ptr::null_mut(), 0) }
}

/// Without THP there is no large anonymous folio to split: never called.
#[cfg(all(CONFIG_DEVICE_PRIVATE, not(CONFIG_TRANSPARENT_HUGEPAGE)))]
unsafe fn split_huge_page(_page: *mut bindings::page) -> crate::ffi::c_int {
    EBUSY.to_errno()
}

#[cfg(CONFIG_DEVICE_PRIVATE)]
impl ExclusivePages<'_> {
    /// The number of pages of the range.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether the range is empty (never: ranges are not).
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Whether page `index` of the range was made exclusive.
    pub fn is_exclusive(&self, index: usize) -> bool {
        self.pages.get(index).is_some_and(|p| !p.is_null())
    }

    /// Whether every page of the range was made exclusive.
    pub fn all_exclusive(&self) -> bool {
        self.pages.iter().all(|p| !p.is_null())
    }

    /// The folio of page `index`, locked, if it was made exclusive: see
    /// [`ExclusivePages::folio`].
    pub fn locked_folio(&self, index: usize) -> Option<LockedFolio<'_>> {
        let folio = self.folio(index)?;
        // SAFETY: By the type invariant the folio is locked and referenced
        // for as long as `self` lives, which the result borrows.
        Some(unsafe { LockedFolio::from_locked(folio.as_raw()) })
    }

    /// The folio of page `index`, if it was made exclusive. Only the first
    /// page of a folio can be made exclusive, so the page is the folio's
    /// first.
    pub fn folio(&self, index: usize) -> Option<&Folio> {
        let page = *self.pages.get(index)?;
        if page.is_null() {
            return None;
        }
        // SAFETY: By the type invariant the page is referenced (and
        // locked) for as long as `self` lives, which the result borrows.
        Some(unsafe { Folio::from_raw(bindings::page_folio(page)) })
    }
}

#[cfg(CONFIG_DEVICE_PRIVATE)]
impl Drop for ExclusivePages<'_> {
    fn drop(&mut self) {
        for &page in self.pages.iter() {
            if page.is_null() {
                continue;
            }
            // SAFETY: By the type invariant we own the lock and a reference
            // of the page's folio; both are released here, once. The CPU
            // may take the page back from then on.
            unsafe {
                let folio = bindings::page_folio(page);
                bindings::folio_unlock(folio);
                bindings::folio_put(folio);
            }
        }
    }
}
