// SPDX-License-Identifier: GPL-2.0

//! Device private memory, and migration of a process's memory into it and
//! back (HMM's migration half, `Documentation/mm/hmm.rst`).
//!
//! A device with memory the CPU cannot address coherently (a discrete GPU's
//! VRAM) gets `struct page`s for it from a `MEMORY_DEVICE_PRIVATE`
//! `dev_pagemap` ([`PageMap`]): `request_free_mem_region()` finds unused
//! physical address space, `memremap_pages()` gives it a memory map. The
//! pages are never mapped by the CPU: when a process's anonymous page is
//! migrated into one ([`PageMap::migrate_to_device`]), the CPU page table
//! keeps a device private swap entry, and the first CPU access to it
//! faults, which calls the map's `migrate_to_ram` and copies the page back
//! into a fresh system page. [`PageMap::migrate_to_ram`] does the same for
//! a range on the driver's request, and [`PageMap::reclaim`] for whatever
//! uses a range of device pages (`migrate_device_range()`), so that the
//! driver can take its memory back.
//!
//! The map hands out its pages itself: the driver lends it the pages it
//! backs with memory ([`PageMap::add_free`]), and takes them back once
//! they are free ([`PageMap::reclaim`]); a page freed by the mm (its last
//! reference dropped: the process unmapped it, or it migrated back) goes
//! back to the map's free list through `page_free`. So no safe code can
//! hand out a page that is in use, and the driver never has to know which
//! `struct page` holds what: a page is its index in the map (page `i` is
//! the `i`-th page of the map's physical range), and the driver's
//! [`DeviceMemory`] copies data between its memory at that index and
//! system pages. This is the division of labour of upstream's newer
//! `drm_pagemap` (`copy_to_devmem`, `copy_to_ram`), and of nouveau's dmem
//! and `lib/test_hmm.c`, whose devices keep free lists of their own.
//!
//! Only private anonymous memory migrates to device private memory in
//! 6.12 (file and shmem pages stay, and `migrate_vma_pages()` would skip
//! them); the migration functions refuse other mappings at once with
//! `EOPNOTSUPP`. Transparent huge pages are split on the way
//! (`migrate_vma_collect()` splits a PMD-mapped THP; the device pages are
//! base pages).
//!
//! Locks: the migration functions take folio locks of the pages they
//! migrate (system pages and device pages) under the caller's mmap read
//! lock, and call MMU notifiers (`MMU_NOTIFY_MIGRATE`, whose owner is
//! [`PageMap::owner`]) with them held. [`DeviceMemory`]'s copies run with
//! those folio locks held and may sleep. The map's free list is a
//! spinlock, innermost: `page_free` may be called wherever a page
//! reference is dropped.
//!
//! C headers: [`include/linux/memremap.h`](srctree/include/linux/memremap.h),
//! [`include/linux/migrate.h`](srctree/include/linux/migrate.h).
//!
//! # Examples
//!
//! Device memory simulated by system pages, as `lib/test_hmm.c` does, with
//! a process's memory migrated into it, faulted back by the CPU, and
//! evicted:
//!
//! ```
//! use kernel::alloc::KVVec;
//! use kernel::c_str;
//! use kernel::folio::Folio;
//! use kernel::mm::devmem::{DeviceMemory, Migrated, PageMap};
//! use kernel::mm::{testing, MmWithUser};
//! use kernel::page::PAGE_SIZE;
//! use kernel::types::ARef;
//! use kernel::uaccess::UserSlice;
//!
//! struct Simulated(KVVec<ARef<Folio>>);
//!
//! fn copy(from: &Folio, from_offset: usize, to: &Folio) -> Result {
//!     let mut buf = [0u8; 256];
//!     for off in (0..PAGE_SIZE).step_by(buf.len()) {
//!         from.read(from_offset + off, &mut buf)?;
//!         to.write(off, &buf)?;
//!     }
//!     Ok(())
//! }
//!
//! impl DeviceMemory for Simulated {
//!     fn copy_to_device(&self, index: usize, src: Option<(&Folio, usize)>) -> Result {
//!         match src {
//!             Some((folio, offset)) => copy(folio, offset, &self.0[index]),
//!             None => (0..PAGE_SIZE)
//!                 .step_by(256)
//!                 .try_for_each(|off| self.0[index].write(off, &[0u8; 256])),
//!         }
//!     }
//!     fn copy_to_ram(&self, index: usize, dst: &Folio) -> Result {
//!         copy(&self.0[index], 0, dst)
//!     }
//! }
//!
//! const PAGES: usize = 512; // 2 MiB, the smallest map.
//! let mut backing = KVVec::new();
//! for _ in 0..PAGES {
//!     backing.push(Folio::alloc(GFP_KERNEL | __GFP_ZERO, 0)?, GFP_KERNEL)?;
//! }
//! let map = PageMap::new(PAGES * PAGE_SIZE, c_str!("rust_doctest_devmem"), Simulated(backing))?;
//! assert_eq!(PageMap::new(PAGE_SIZE, c_str!("bad"), Simulated(KVVec::new())).err(), Some(EINVAL));
//! map.add_free(0, 4)?;
//! assert_eq!(map.add_free(3, 1), Err(EINVAL)); // Lent already.
//! assert_eq!(map.add_free(PAGES, 1), Err(EINVAL));
//! assert_eq!(map.counts(), (4, 0));
//!
//! // Four pages of a process, the last never touched.
//! let len = 4 * PAGE_SIZE;
//! let addr = testing::vm_mmap_anon(len, testing::PROT_READ | testing::PROT_WRITE)?;
//! let word = |i: usize| UserSlice::new(addr + i * PAGE_SIZE, 8);
//! for i in 0..3 {
//!     word(i).writer().write_slice(&(i as u64 + 1).to_ne_bytes())?;
//! }
//! let read = |i: usize| -> Result<u64> {
//!     let mut w = [0u8; 8];
//!     word(i).reader().read_slice(&mut w)?;
//!     Ok(u64::from_ne_bytes(w))
//! };
//! let mm = MmWithUser::current().ok_or(EINVAL)?;
//! {
//!     let mmap = mm.mmap_read_lock();
//!     let vma = mmap.vma_lookup(addr).ok_or(EINVAL)?;
//!     assert_eq!(map.migrate_to_device(vma, addr, addr + len)?, Migrated { collected: 4, moved: 4 });
//!     assert_eq!(map.counts(), (0, 4));
//!     // Already there: nothing to collect.
//!     assert_eq!(map.migrate_to_device(vma, addr, addr + len)?, Migrated::default());
//!     assert_eq!(map.migrate_to_device(vma, addr + 1, addr + len), Err(EINVAL));
//! }
//! assert_eq!(map.stats().to_device, 4);
//!
//! // The CPU touches page 1: it faults back, alone.
//! assert_eq!(read(1)?, 2);
//! assert_eq!(map.stats().faulted_back, 1);
//! assert_eq!(map.counts(), (1, 3));
//!
//! // Page 0 back on request, then the rest evicted.
//! {
//!     let mmap = mm.mmap_read_lock();
//!     let vma = mmap.vma_lookup(addr).ok_or(EINVAL)?;
//!     assert_eq!(map.migrate_to_ram(vma, addr, addr + PAGE_SIZE)?.moved, 1);
//! }
//! assert!(map.reclaim(0, 4)?);
//! assert_eq!(map.counts(), (0, 0));
//! assert_eq!(map.stats().evicted, 2);
//! for i in 0..4 {
//!     assert_eq!(read(i)?, if i < 3 { i as u64 + 1 } else { 0 });
//! }
//! // Reclaimed pages are not handed out: nothing can migrate now.
//! {
//!     let mmap = mm.mmap_read_lock();
//!     let vma = mmap.vma_lookup(addr).ok_or(EINVAL)?;
//!     assert_eq!(map.migrate_to_device(vma, addr, addr + len)?, Migrated { collected: 4, moved: 0 });
//! }
//! assert_eq!(read(2)?, 3);
//!
//! // Shared memory does not migrate to device private memory.
//! let shared = testing::vm_mmap_shared_anon(PAGE_SIZE, testing::PROT_READ | testing::PROT_WRITE)?;
//! let mmap = mm.mmap_read_lock();
//! let vma = mmap.vma_lookup(shared).ok_or(EINVAL)?;
//! assert_eq!(map.migrate_to_device(vma, shared, shared + PAGE_SIZE), Err(EOPNOTSUPP));
//! # Ok::<(), Error>(())
//! ```

use crate::{
    alloc::KVVec,
    bindings,
    error::{
        code::{EINVAL, ENOMEM, EOPNOTSUPP},
        to_result, Error, Result,
    },
    ffi::c_ulong,
    folio::Folio,
    init,
    mm::VmaRef,
    new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    str::CStr,
    sync::{Arc, SpinLock},
    types::Opaque,
};
use core::sync::atomic::{AtomicU64, Ordering};

const PFN_VALID: c_ulong = bindings::MIGRATE_PFN_VALID as c_ulong;
const PFN_MIGRATE: c_ulong = bindings::MIGRATE_PFN_MIGRATE as c_ulong;
const PFN_WRITE: c_ulong = bindings::MIGRATE_PFN_WRITE as c_ulong;
const PFN_SHIFT: u32 = bindings::MIGRATE_PFN_SHIFT;

/// Pages per `migrate_vma_setup()` call: the arrays of a batch are 8 KiB.
const BATCH: usize = 512;

/// A device page's data: what the driver copies in and out of its memory.
///
/// The copies are called with the pages involved locked, under the mmap
/// read lock of the process whose memory migrates (or from a CPU fault,
/// or from [`PageMap::reclaim`]); they may sleep, but must not take the
/// mmap lock, folio locks, or locks held while waiting for them.
pub trait DeviceMemory: Send + Sync {
    /// Copies `PAGE_SIZE` bytes of `src` from byte `offset` into device
    /// page `index`, or zeroes the device page if `src` is `None` (a page
    /// the process never touched). An error leaves the page where it was.
    fn copy_to_device(&self, index: usize, src: Option<(&Folio, usize)>) -> Result;

    /// Copies device page `index` into `dst`, a fresh system page.
    /// An error leaves the page in device memory (a CPU fault then gets
    /// `SIGBUS`).
    fn copy_to_ram(&self, index: usize, dst: &Folio) -> Result;

    /// Device page `index` was freed and is back on the map's free list
    /// (or back with the driver, if reclaimed). Called wherever the mm
    /// drops the last reference to a page, possibly in atomic context: it
    /// must not sleep (a driver defers work to a work item, say).
    fn page_freed(&self, _index: usize) {}
}

/// The state of a page of a [`PageMap`].
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// Not lent by the driver: never handed out.
    Unbacked,
    /// Lent and free: on the free list.
    Free,
    /// Handed out: holds a process's data, or is being migrated.
    Used,
    /// Handed out, and to be given back to the driver when freed
    /// ([`PageMap::reclaim`] ran while it was in use).
    Draining,
}

/// No page: the end of the free list.
const NONE: u32 = u32::MAX;

/// The bookkeeping of the pages of a [`PageMap`].
struct Pages {
    page_state: KVVec<State>,
    /// The free list, linked through `next`.
    next: KVVec<u32>,
    head: u32,
    free: usize,
    used: usize,
}

impl Pages {
    /// The lock of a map's pages, all unbacked. Not generic, unlike
    /// [`PageMap`]: the lock class key and name of `new_spinlock!` are
    /// statics of the function it is in, and a generic function's statics
    /// would be one key for names in every crate that instantiates it,
    /// which lockdep refuses.
    fn new_lock(page_state: KVVec<State>, next: KVVec<u32>) -> impl PinInit<SpinLock<Self>> {
        new_spinlock!(
            Self {
                page_state,
                next,
                head: NONE,
                free: 0,
                used: 0,
            },
            "mm::devmem::PageMap::pages"
        )
    }

    fn push_free(&mut self, index: usize) {
        self.page_state[index] = State::Free;
        self.next[index] = self.head;
        self.head = index as u32;
        self.free += 1;
    }

    fn pop_free(&mut self) -> Option<usize> {
        if self.head == NONE {
            return None;
        }
        let index = self.head as usize;
        self.head = self.next[index];
        self.page_state[index] = State::Used;
        self.free -= 1;
        self.used += 1;
        Some(index)
    }

    /// Rebuilds the free list from `state`, after pages left it.
    fn relink(&mut self) {
        self.head = NONE;
        self.free = 0;
        for index in (0..self.page_state.len()).rev() {
            if self.page_state[index] == State::Free {
                self.push_free(index);
            }
        }
    }
}

/// What a migration did: of the pages asked for, how many the mm let go
/// (`collected`), and how many moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Migrated {
    /// Pages of the range that could migrate: mapped (or, towards the
    /// device, not yet populated) and not pinned, locked or elsewhere.
    pub collected: usize,
    /// Pages that moved.
    pub moved: usize,
}

impl core::ops::AddAssign for Migrated {
    fn add_assign(&mut self, other: Self) {
        self.collected += other.collected;
        self.moved += other.moved;
    }
}

/// Migration counters of a [`PageMap`], since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pages moved into device memory.
    pub to_device: u64,
    /// Pages moved back by CPU faults (`migrate_to_ram`).
    pub faulted_back: u64,
    /// Pages moved back on request ([`PageMap::migrate_to_ram`]).
    pub migrated_back: u64,
    /// Pages moved back by [`PageMap::reclaim`].
    pub evicted: u64,
}

/// Device private memory: a `MEMORY_DEVICE_PRIVATE` `dev_pagemap` of
/// `npages` pages, with the driver's [`DeviceMemory`] behind them.
///
/// Made with [`PageMap::new`]; dropping it migrates back to system memory
/// whatever still uses its pages ([`PageMap::reclaim`] over the whole
/// map, repeated until every page is free: a page a process has pinned
/// transiently is waited for), then removes the memory map
/// (`memunmap_pages()`, which waits for the last page reference) and
/// releases the physical range.
///
/// # Invariants
///
/// `pgmap` is a `dev_pagemap` of type `MEMORY_DEVICE_PRIVATE` over the
/// `npages` pages from `first_pfn` on, mapped by `memremap_pages()` with
/// `Self::OPS` and owner `pgmap` itself, and its physical range is
/// requested from `iomem_resource`; both until `drop`. A page is
/// [`State::Used`] or [`State::Draining`] exactly from its hand-out
/// (`zone_device_page_init()`) until the mm frees it (`page_free`).
#[pin_data(PinnedDrop)]
pub struct PageMap<T: DeviceMemory> {
    #[pin]
    data: T,
    #[pin]
    pages: SpinLock<Pages>,
    npages: usize,
    first_pfn: usize,
    to_device: AtomicU64,
    faulted_back: AtomicU64,
    migrated_back: AtomicU64,
    evicted: AtomicU64,
    /// Last: the memory map exists only once everything above is
    /// initialised, since its callbacks use it.
    #[pin]
    pgmap: Opaque<bindings::dev_pagemap>,
}

// SAFETY: The C memory map is synchronised by the mm; the bookkeeping is
// under a spinlock, the counters are atomic, and `T` is `Send + Sync`.
unsafe impl<T: DeviceMemory> Send for PageMap<T> {}
// SAFETY: As for `Send`: every method taking `&self` may run on any thread,
// concurrently with the callbacks.
unsafe impl<T: DeviceMemory> Sync for PageMap<T> {}

/// Calls `migrate_vma_finalize()` on a set-up migration when dropped, so
/// that no error path leaves pages locked and unmapped.
struct Finalize<'a>(&'a mut bindings::migrate_vma);

impl Drop for Finalize<'_> {
    fn drop(&mut self) {
        // SAFETY: `migrate_vma_setup()` succeeded on `self.0` (the only way
        // to make a `Finalize`), and its arrays live as long as it does.
        unsafe { bindings::migrate_vma_finalize(self.0) };
    }
}

impl<T: DeviceMemory> PageMap<T> {
    const OPS: &'static bindings::dev_pagemap_ops = &bindings::dev_pagemap_ops {
        page_free: Some(Self::page_free_callback),
        migrate_to_ram: Some(Self::migrate_to_ram_callback),
        memory_failure: None,
    };

    /// Makes device private memory of `size` bytes (a multiple of 2 MiB,
    /// the memory map's granularity), with `data` behind it, named `name`
    /// in `/proc/iomem`. Its pages are all unbacked: lend them with
    /// [`PageMap::add_free`].
    ///
    /// `EINVAL` for a size of zero or not a multiple of 2 MiB; `ENOMEM` or
    /// `EBUSY` when no physical address space or memory map can be had.
    pub fn new(size: usize, name: &'static CStr, data: impl PinInit<T>) -> Result<Arc<Self>> {
        const GRANULE: usize = 2 << 20;
        if size == 0 || size % GRANULE != 0 {
            return Err(EINVAL);
        }
        let npages = size / PAGE_SIZE;
        let mut state = KVVec::with_capacity(npages, GFP_KERNEL)?;
        let mut next = KVVec::with_capacity(npages, GFP_KERNEL)?;
        for _ in 0..npages {
            state.push(State::Unbacked, GFP_KERNEL)?;
            next.push(NONE, GFP_KERNEL)?;
        }
        // SAFETY: `iomem_resource` is the root of the physical address
        // space, which `request_free_mem_region()` locks; `name` is
        // `'static`, as the resource keeps it.
        let res = unsafe {
            bindings::request_free_mem_region(
                core::ptr::addr_of_mut!(bindings::iomem_resource),
                size as c_ulong,
                name.as_char_ptr(),
            )
        };
        // SAFETY: `res` is a valid pointer or an error pointer, either way
        // fine to test.
        if unsafe { bindings::IS_ERR(res.cast()) } || res.is_null() {
            return Err(if res.is_null() {
                ENOMEM
            } else {
                // SAFETY: An error pointer, as just checked.
                Error::from_errno(unsafe { bindings::PTR_ERR(res.cast()) } as i32)
            });
        }
        // SAFETY: `res` is the resource just requested, valid until
        // released.
        let start = unsafe { (*res).start };
        let release = || {
            // SAFETY: The range was requested above and nothing maps it.
            unsafe { bindings::release_mem_region(start, size as u64) }
        };
        let map = move |slot: *mut Opaque<bindings::dev_pagemap>| {
            let pgmap = Opaque::raw_get(slot);
            // SAFETY: `slot` is the `pgmap` field of the `Self` being
            // initialised: valid for writes and pinned (it is never moved,
            // and the callbacks find their `Self` from it). Zeroed first,
            // as C callers' `kzalloc()` has it, then the one range, the
            // type, `OPS` (`'static`) and an owner (itself: unique to the
            // map, so `MMU_NOTIFY_MIGRATE` events and HMM faults can tell
            // this map's pages from others'); every other field of `Self`
            // is initialised before this field (declaration order), so
            // the callbacks, which can run only once pages are handed out
            // after `new` returns, find them initialised.
            let ret = unsafe {
                pgmap.write_bytes(0, 1);
                *(*pgmap).__bindgen_anon_1.range.as_mut() = bindings::range {
                    start,
                    end: start + size as u64 - 1,
                };
                (*pgmap).nr_range = 1;
                (*pgmap).type_ = bindings::memory_type_MEMORY_DEVICE_PRIVATE;
                (*pgmap).ops = Self::OPS;
                (*pgmap).owner = pgmap.cast();
                bindings::memremap_pages(pgmap, bindings::numa_node_id())
            };
            // SAFETY: An error pointer or the map's virtual address (unused:
            // device private pages have none the CPU may use).
            if unsafe { bindings::IS_ERR(ret) } {
                // SAFETY: An error pointer, as just checked.
                Err(Error::from_errno(unsafe { bindings::PTR_ERR(ret) } as i32))
            } else if ret.is_null() {
                Err(ENOMEM)
            } else {
                Ok(())
            }
        };
        let this = Arc::pin_init(
            try_pin_init!(Self {
                data <- data,
                pages <- Pages::new_lock(state, next),
                npages,
                first_pfn: (start as usize) / PAGE_SIZE,
                to_device: AtomicU64::new(0),
                faulted_back: AtomicU64::new(0),
                migrated_back: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
                // SAFETY: The closure initialises the field completely when
                // it returns `Ok`; when it fails, `memremap_pages()` has
                // undone what it did, and the range is released below.
                pgmap <- unsafe { init::pin_init_from_closure(map) },
            }? Error),
            GFP_KERNEL,
        );
        if this.is_err() {
            // Either the allocation failed (nothing was mapped) or
            // `memremap_pages()` did (and unwound itself).
            release();
        }
        this
    }

    /// The driver's data.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The map's pages.
    pub fn npages(&self) -> usize {
        self.npages
    }

    /// The owner of the map's pages, as HMM and MMU notifiers see it:
    /// `hmm_range_fault()` reports this map's pages (rather than migrating
    /// them back) to a range whose device private owner it is, and the
    /// invalidations of this map's migrations carry it.
    #[cfg(CONFIG_MMU_NOTIFIER)]
    pub fn owner(&self) -> crate::mmu_notifier::Owner {
        // The address of `pgmap`, as `new` set it in `pgmap.owner`.
        crate::mmu_notifier::Owner::from_ref(&self.pgmap)
    }

    /// The index of the page whose frame is `pfn`, if it is one of this
    /// map's pages (as HMM reports a device private page, see
    /// [`crate::hmm::HmmPfn::pfn`]).
    pub fn index_of(&self, pfn: usize) -> Option<usize> {
        let index = pfn.checked_sub(self.first_pfn)?;
        (index < self.npages).then_some(index)
    }

    /// Pages free (lent and not in use) and pages in use.
    pub fn counts(&self) -> (usize, usize) {
        let p = self.pages.lock();
        (p.free, p.used)
    }

    /// Pages in use among `[first, first + count)`.
    pub fn used_in(&self, first: usize, count: usize) -> usize {
        let p = self.pages.lock();
        let end = first.saturating_add(count).min(self.npages);
        (first.min(end)..end)
            .filter(|&i| matches!(p.page_state[i], State::Used | State::Draining))
            .count()
    }

    /// The migration counters.
    pub fn stats(&self) -> Stats {
        Stats {
            to_device: self.to_device.load(Ordering::Relaxed),
            faulted_back: self.faulted_back.load(Ordering::Relaxed),
            migrated_back: self.migrated_back.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }

    /// Lends pages `[first, first + count)` to the map, which hands them
    /// out from now on: the driver has memory behind them.
    ///
    /// `EINVAL` (and nothing changes) for a range outside the map or one
    /// with a page already lent.
    pub fn add_free(&self, first: usize, count: usize) -> Result {
        let end = first.checked_add(count).ok_or(EINVAL)?;
        if end > self.npages {
            return Err(EINVAL);
        }
        let mut p = self.pages.lock();
        if p.page_state[first..end]
            .iter()
            .any(|s| *s != State::Unbacked)
        {
            return Err(EINVAL);
        }
        for index in (first..end).rev() {
            p.push_free(index);
        }
        Ok(())
    }

    /// Takes pages `[first, first + count)` back from the map: free pages
    /// at once, pages in use once they are migrated back to system memory
    /// (`migrate_device_range()`, copying with
    /// [`DeviceMemory::copy_to_ram`]) and freed. Returns whether every
    /// page of the range is back (the driver may then reuse its memory);
    /// otherwise call it again later: a page stays in use while, for
    /// instance, a process has it pinned, or its copy failed.
    ///
    /// No page of the range is handed out again after this, until lent
    /// anew. `EINVAL` for a range outside the map.
    pub fn reclaim(&self, first: usize, count: usize) -> Result<bool> {
        let end = first.checked_add(count).ok_or(EINVAL)?;
        if end > self.npages {
            return Err(EINVAL);
        }
        let mut in_use = false;
        {
            let mut p = self.pages.lock();
            let mut unlinked = false;
            for index in first..end {
                match p.page_state[index] {
                    State::Free => {
                        p.page_state[index] = State::Unbacked;
                        unlinked = true;
                    }
                    State::Used | State::Draining => {
                        p.page_state[index] = State::Draining;
                        in_use = true;
                    }
                    State::Unbacked => {}
                }
            }
            if unlinked {
                p.relink();
            }
        }
        if in_use {
            let mut start = first;
            while start < end {
                let n = (end - start).min(BATCH);
                self.evict(start, n)?;
                start += n;
            }
        }
        let p = self.pages.lock();
        Ok(p.page_state[first..end]
            .iter()
            .all(|s| *s == State::Unbacked))
    }

    /// Migrates the private anonymous pages of `[start, end)` of `vma`
    /// into device memory. Pages already in device memory (this map's or
    /// another device's), pinned or locked pages, and pages for which no
    /// device page is free stay where they are: see the returned counts.
    /// The device page table, if the driver mirrors the range, is told by
    /// the `MMU_NOTIFY_MIGRATE` invalidation with this map's
    /// [`PageMap::owner`]; the next `hmm_range_fault()` with that owner
    /// reports the device pages.
    ///
    /// `EINVAL` for an unaligned or empty range, or one outside `vma`;
    /// `EOPNOTSUPP` for a mapping that is not private anonymous memory
    /// (shared, file-backed, hugetlbfs, `VM_IO`/`VM_PFNMAP`), which 6.12
    /// does not migrate to device private memory. Nothing changes then.
    pub fn migrate_to_device(&self, vma: &VmaRef, start: usize, end: usize) -> Result<Migrated> {
        check_range(vma, start, end)?;
        let flags = bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_SYSTEM as c_ulong;
        let done = self.migrate_vma(vma, start, end, flags, |_, src, dst| {
            let mut collected = 0;
            for (s, d) in src.iter().zip(dst.iter_mut()) {
                if *s & PFN_MIGRATE == 0 {
                    continue;
                }
                collected += 1;
                // An unpopulated page (pte_none) or the zero page has no
                // source: its device page is zeroed.
                let spage = (*s & PFN_VALID != 0).then(|| (*s >> PFN_SHIFT) as usize);
                if spage.is_some_and(|pfn| self.index_of(pfn).is_some()) {
                    // Cannot happen with `SELECT_SYSTEM`; never copy a
                    // device page onto itself.
                    continue;
                }
                let Some(index) = self.hand_out() else {
                    continue;
                };
                let src_page = spage.map(|pfn| {
                    // SAFETY: The page is collected: locked, unmapped and
                    // referenced by the migration until finalize, so its
                    // folio stays.
                    let folio = unsafe { Folio::from_pfn(pfn) };
                    (folio, (pfn - folio.pfn()) * PAGE_SIZE)
                });
                if self.data.copy_to_device(index, src_page).is_err() {
                    self.put_handed_out(index);
                    continue;
                }
                let writable = *s & PFN_WRITE != 0 || (spage.is_none() && vma.is_writable());
                *d = self.migrate_pfn(index) | if writable { PFN_WRITE } else { 0 };
            }
            collected
        })?;
        self.to_device
            .fetch_add(done.moved as u64, Ordering::Relaxed);
        Ok(done)
    }

    /// Migrates this map's pages in `[start, end)` of `vma` back to system
    /// memory (fresh movable pages, allocated by the mapping's NUMA
    /// policy). Other pages stay where they are. Errors as for
    /// [`PageMap::migrate_to_device`]; pages for which no system page
    /// could be allocated stay in device memory (see the counts).
    pub fn migrate_to_ram(&self, vma: &VmaRef, start: usize, end: usize) -> Result<Migrated> {
        check_range(vma, start, end)?;
        let flags = bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_DEVICE_PRIVATE as c_ulong;
        let done = self.migrate_vma(vma, start, end, flags, |mv, src, dst| {
            self.copy_back(src, dst, |i| {
                // SAFETY: `mv.vma` is the mapping being migrated, valid
                // under the mmap lock the caller holds; the address is in
                // it.
                unsafe { alloc_movable(mv.vma, mv.start + i * PAGE_SIZE) }
            })
        })?;
        self.migrated_back
            .fetch_add(done.moved as u64, Ordering::Relaxed);
        Ok(done)
    }

    /// `migrate_vma_setup()`, `fill(args, src, dst)` (which returns the
    /// pages collected), `migrate_vma_pages()` and `migrate_vma_finalize()`
    /// over `[start, end)` of `vma`, in batches of [`BATCH`] pages.
    fn migrate_vma(
        &self,
        vma: &VmaRef,
        start: usize,
        end: usize,
        flags: c_ulong,
        mut fill: impl FnMut(&bindings::migrate_vma, &[c_ulong], &mut [c_ulong]) -> usize,
    ) -> Result<Migrated> {
        let mut src = KVVec::from_elem(0 as c_ulong, BATCH, GFP_KERNEL)?;
        let mut dst = KVVec::from_elem(0 as c_ulong, BATCH, GFP_KERNEL)?;
        let mut done = Migrated::default();
        let mut addr = start;
        while addr < end {
            let next = end.min(addr + BATCH * PAGE_SIZE);
            let n = (next - addr) / PAGE_SIZE;
            dst[..n].fill(0);
            let mut args = bindings::migrate_vma {
                vma: vma.as_raw(),
                dst: dst.as_mut_ptr(),
                src: src.as_mut_ptr(),
                cpages: 0,
                npages: 0,
                start: addr as c_ulong,
                end: next as c_ulong,
                pgmap_owner: self.pgmap.get().cast(),
                flags,
                fault_page: core::ptr::null_mut(),
            };
            // SAFETY: `vma` is valid under the mmap read lock its borrow
            // stands for, `[addr, next)` is within it (`check_range`), and
            // `src` and `dst` have room for the batch's `n` pages.
            to_result(unsafe { bindings::migrate_vma_setup(&mut args) })?;
            let args = Finalize(&mut args);
            {
                // SAFETY: The arrays belong to this batch: `src` was filled
                // by setup and is only read; `dst` is the driver's until
                // `migrate_vma_pages()`. The slices end before the C code
                // uses the arrays again.
                let (s, d) = unsafe {
                    (
                        core::slice::from_raw_parts(args.0.src, n),
                        core::slice::from_raw_parts_mut(args.0.dst, n),
                    )
                };
                done.collected += fill(args.0, s, d);
            }
            // SAFETY: Set up above; every `dst` entry is zero or a locked,
            // referenced page whose data is the source's.
            unsafe { bindings::migrate_vma_pages(args.0) };
            // SAFETY: As above, read only, until finalize: `src` now tells
            // which pages moved.
            let (s, d) = unsafe {
                (
                    core::slice::from_raw_parts(args.0.src, n),
                    core::slice::from_raw_parts(args.0.dst, n),
                )
            };
            done.moved += moved(s, d);
            // Dropping `args` finalizes: moved pages are unlocked and the
            // old ones freed, the rest restored.
            drop(args);
            addr = next;
        }
        Ok(done)
    }

    /// Fills `dst` for the collected device pages of `src` with system
    /// pages from `alloc(i)` holding their data; returns the pages
    /// collected.
    fn copy_back(
        &self,
        src: &[c_ulong],
        dst: &mut [c_ulong],
        mut alloc: impl FnMut(usize) -> Option<LockedNew>,
    ) -> usize {
        let mut collected = 0;
        for (i, (s, d)) in src.iter().zip(dst.iter_mut()).enumerate() {
            if *s & PFN_MIGRATE == 0 || *s & PFN_VALID == 0 {
                continue;
            }
            let Some(index) = self.index_of((*s >> PFN_SHIFT) as usize) else {
                // Another map's page (same owner is impossible: the owner
                // is this map).
                continue;
            };
            collected += 1;
            let Some(new) = alloc(i) else {
                continue;
            };
            if self.data.copy_to_ram(index, new.folio()).is_err() {
                continue;
            }
            *d = new.into_migrate_pfn() | (*s & PFN_WRITE);
        }
        collected
    }

    /// A free page, handed out: referenced once and locked
    /// (`zone_device_page_init()`), for a migration's `dst`.
    fn hand_out(&self) -> Option<usize> {
        let index = self.pages.lock().pop_free()?;
        // SAFETY: The page is one of the map's (index < npages), mapped by
        // `memremap_pages()` (type invariant), and was free: its reference
        // count is zero and nobody else can hand it out (it left the free
        // list under the lock). The map is live, so its `pgmap` reference
        // can be taken.
        unsafe { bindings::zone_device_page_init(self.page(index)) };
        Some(index)
    }

    /// Undoes [`PageMap::hand_out`] for a page never given to the mm: it
    /// is unlocked and its reference dropped, which frees it.
    fn put_handed_out(&self, index: usize) {
        let page = self.page(index);
        // SAFETY: Handed out by `hand_out`: locked and referenced once, by
        // us. Dropping the reference calls `page_free`.
        unsafe {
            let folio = bindings::page_folio(page);
            bindings::folio_unlock(folio);
            bindings::folio_put(folio);
        }
    }

    /// The `MIGRATE_PFN` entry of page `index`.
    fn migrate_pfn(&self, index: usize) -> c_ulong {
        (((self.first_pfn + index) as c_ulong) << PFN_SHIFT) | PFN_VALID
    }

    fn page(&self, index: usize) -> *mut bindings::page {
        // SAFETY: Page `index` of the map has a `struct page`:
        // `memremap_pages()` made them for the whole range (type
        // invariant), callers pass `index < npages`.
        unsafe { bindings::pfn_to_page((self.first_pfn + index) as c_ulong) }
    }

    /// Migrates back whatever uses pages `[first, first + n)`
    /// (`migrate_device_range()`), `n <= BATCH`.
    fn evict(&self, first: usize, n: usize) -> Result {
        let mut src = KVVec::from_elem(0 as c_ulong, n, GFP_KERNEL)?;
        let mut dst = KVVec::from_elem(0 as c_ulong, n, GFP_KERNEL)?;
        // SAFETY: The pages are the map's (type invariant, `first + n <=
        // npages`); `src` has room for `n` entries. It collects (locks
        // and unmaps) the pages in use, skipping free ones.
        to_result(unsafe {
            bindings::migrate_device_range(
                src.as_mut_ptr(),
                (self.first_pfn + first) as c_ulong,
                n as c_ulong,
            )
        })?;
        self.copy_back(&src, &mut dst, |_| {
            // SAFETY: No mapping: a page of the node the task runs on.
            unsafe { alloc_movable(core::ptr::null_mut(), 0) }
        });
        // SAFETY: `src` was set up by `migrate_device_range()`; each `dst`
        // entry is zero or a locked, referenced system page with the
        // source's data. Then finalize: moved device pages are freed,
        // the rest restored.
        unsafe {
            bindings::migrate_device_pages(src.as_mut_ptr(), dst.as_mut_ptr(), n as c_ulong);
        }
        let moved = moved(&src, &dst);
        // SAFETY: As above.
        unsafe {
            bindings::migrate_device_finalize(src.as_mut_ptr(), dst.as_mut_ptr(), n as c_ulong);
        }
        self.evicted.fetch_add(moved as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The map a page of it belongs to.
    ///
    /// # Safety
    ///
    /// `page` must be a page of a live `PageMap<T>` (a device private page
    /// whose `pgmap` has `Self::OPS`, as the callbacks get).
    unsafe fn from_page<'a>(page: *mut bindings::page) -> &'a Self {
        // SAFETY: The page is a zone device page of a map (caller's
        // guarantee), whose `pgmap` is the `pgmap` field of a `Self`.
        unsafe {
            let pgmap = bindings::page_pgmap(page);
            &*crate::container_of!(pgmap, Self, pgmap).cast::<Self>()
        }
    }

    /// `dev_pagemap_ops::page_free`: the mm dropped the last reference to a
    /// page: it goes back to the free list, or to the driver if reclaimed.
    unsafe extern "C" fn page_free_callback(page: *mut bindings::page) {
        // SAFETY: The mm calls `page_free` on pages of a map with
        // `Self::OPS`; the map is live while any page is in use
        // (`memunmap_pages()` in drop waits for the last one).
        let this = unsafe { Self::from_page(page) };
        // SAFETY: A page of the map.
        let pfn = unsafe { bindings::page_to_pfn(page) } as usize;
        let Some(index) = this.index_of(pfn) else {
            return;
        };
        let mut p = this.pages.lock();
        match p.page_state[index] {
            State::Used => p.push_free(index),
            State::Draining => p.page_state[index] = State::Unbacked,
            // Only handed-out pages are freed (type invariant).
            State::Free | State::Unbacked => return,
        }
        p.used -= 1;
        drop(p);
        this.data.page_freed(index);
    }

    /// `dev_pagemap_ops::migrate_to_ram`: the CPU touched a page in device
    /// memory. Migrates it (and only it) back into a fresh system page.
    unsafe extern "C" fn migrate_to_ram_callback(
        vmf: *mut bindings::vm_fault,
    ) -> bindings::vm_fault_t {
        // SAFETY: `do_swap_page()` calls it with a valid fault on a device
        // private entry of a map with `Self::OPS`, holding the mmap (or
        // VMA) lock, the page locked and referenced.
        let (page, vma, address) = unsafe {
            let v = &(*vmf).__bindgen_anon_1;
            ((*vmf).page, v.vma, v.address)
        };
        // SAFETY: As above: `page` is one of a live map's pages.
        let this = unsafe { Self::from_page(page) };
        let mut src: c_ulong = 0;
        let mut dst: c_ulong = 0;
        let mut args = bindings::migrate_vma {
            vma,
            dst: &mut dst,
            src: &mut src,
            cpages: 0,
            npages: 0,
            start: address & !(PAGE_SIZE as c_ulong - 1),
            end: (address & !(PAGE_SIZE as c_ulong - 1)) + PAGE_SIZE as c_ulong,
            pgmap_owner: this.pgmap.get().cast(),
            flags: bindings::migrate_vma_direction_MIGRATE_VMA_SELECT_DEVICE_PRIVATE as c_ulong,
            fault_page: page,
        };
        // SAFETY: The fault's VMA is valid under its lock; the page range
        // is the faulting page's; `fault_page` is the locked page, as
        // `migrate_vma_setup()` expects of a `migrate_to_ram` caller.
        if unsafe { bindings::migrate_vma_setup(&mut args) } != 0 {
            return bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t;
        }
        let args = Finalize(&mut args);
        let mut oom = false;
        {
            // SAFETY: One entry each, owned by this migration (as in
            // `migrate_vma`); the slices end before the C code goes on.
            let (s, d) = unsafe {
                (
                    core::slice::from_raw_parts(args.0.src, 1),
                    core::slice::from_raw_parts_mut(args.0.dst, 1),
                )
            };
            this.copy_back(s, d, |_| {
                // SAFETY: The fault's VMA, and the faulting address in it.
                let new = unsafe { alloc_movable(vma, address as usize) };
                oom = new.is_none();
                new
            });
        }
        // SAFETY: Set up above; `dst` is zero or a locked page with the
        // data.
        unsafe { bindings::migrate_vma_pages(args.0) };
        drop(args);
        // Finalized: the arrays are ours again.
        let collected = src & PFN_MIGRATE != 0;
        let moved = moved(&[src], &[dst]) == 1;
        if moved {
            this.faulted_back.fetch_add(1, Ordering::Relaxed);
            0
        } else if oom {
            bindings::vm_fault_reason_VM_FAULT_OOM as bindings::vm_fault_t
        } else if !collected {
            // Not collected (someone else is migrating it): the fault is
            // retried.
            0
        } else {
            // The copy failed: the data cannot be reached.
            bindings::vm_fault_reason_VM_FAULT_SIGBUS as bindings::vm_fault_t
        }
    }
}

#[pinned_drop]
impl<T: DeviceMemory> PinnedDrop for PageMap<T> {
    fn drop(self: Pin<&mut Self>) {
        // Everything back to system memory, so that `memunmap_pages()`,
        // which waits for the last page reference, does not wait forever on
        // a page a process still maps.
        let mut tries = 0u32;
        loop {
            match self.reclaim(0, self.npages) {
                Ok(true) => break,
                Ok(false) | Err(_) => {}
            }
            tries += 1;
            if tries % 1000 == 0 {
                pr_warn!("device private pages still in use after {tries} tries\n");
            }
            // SAFETY: Sleeping is allowed here: process context (a map is
            // dropped where it may sleep: `memunmap_pages()` does), no
            // locks held.
            unsafe { bindings::msleep(1) };
        }
        // SAFETY: Mapped by `new` (type invariant), every page free and
        // back: nothing uses the map. `memunmap_pages()` waits for the
        // last `pgmap` reference, then removes the memory map.
        unsafe { bindings::memunmap_pages(self.pgmap.get()) };
        let start = (self.first_pfn * PAGE_SIZE) as u64;
        // SAFETY: The range requested by `new`, no longer mapped.
        unsafe { bindings::release_mem_region(start, (self.npages * PAGE_SIZE) as u64) };
    }
}

/// The pages of a migration that moved: those still to migrate after
/// `migrate_vma_pages()` (or `migrate_device_pages()`) with a destination.
fn moved(src: &[c_ulong], dst: &[c_ulong]) -> usize {
    src.iter()
        .zip(dst)
        .filter(|(s, d)| **s & PFN_MIGRATE != 0 && **d != 0)
        .count()
}

/// A fresh system page for a migration's `dst`: locked and referenced once;
/// the migration takes both over ([`LockedNew::into_migrate_pfn`]).
struct LockedNew(*mut bindings::folio);

impl LockedNew {
    fn folio(&self) -> &Folio {
        // SAFETY: A referenced folio, for as long as `self` holds it.
        unsafe { Folio::from_raw(self.0) }
    }

    /// Hands the page to the migration (`migrate_vma_pages()` and finalize
    /// take the lock and the reference over).
    fn into_migrate_pfn(self) -> c_ulong {
        let pfn = self.folio().pfn();
        core::mem::forget(self);
        ((pfn as c_ulong) << PFN_SHIFT) | PFN_VALID
    }
}

impl Drop for LockedNew {
    fn drop(&mut self) {
        // SAFETY: Locked and referenced by us (never handed over).
        unsafe {
            bindings::folio_unlock(self.0);
            bindings::folio_put(self.0);
        }
    }
}

/// A fresh, locked, movable system page: for `vma` at `addr` by its memory
/// policy, or (with a null `vma`) on the local node.
///
/// # Safety
///
/// `vma` is null, or a mapping valid under its mmap lock (held) with
/// `addr` in it.
unsafe fn alloc_movable(vma: *mut bindings::vm_area_struct, addr: usize) -> Option<LockedNew> {
    // SAFETY: The caller's guarantee for `vma` and `addr`.
    let folio = unsafe { bindings::alloc_movable_folio(vma, addr as c_ulong) };
    if folio.is_null() {
        return None;
    }
    // SAFETY: A fresh folio, referenced by us, not yet visible to anyone:
    // the lock is uncontended.
    unsafe { bindings::folio_lock(folio) };
    Some(LockedNew(folio))
}

/// Checks a range of a mapping for migration between system and device
/// private memory (see [`PageMap::migrate_to_device`] for the errors).
fn check_range(vma: &VmaRef, start: usize, end: usize) -> Result {
    if start % PAGE_SIZE != 0 || end % PAGE_SIZE != 0 || start >= end {
        return Err(EINVAL);
    }
    if start < vma.start() || end > vma.end() {
        return Err(EINVAL);
    }
    if !vma.is_anonymous() || vma.is_shared() || vma.is_hugetlb() {
        return Err(EOPNOTSUPP);
    }
    Ok(())
}
