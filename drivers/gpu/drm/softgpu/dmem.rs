// SPDX-License-Identifier: GPL-2.0

//! Device private memory: userptr pages migrated into VRAM.
//!
//! In discrete mode the VRAM also holds pages of processes' anonymous
//! memory that `USERPTR_MIGRATE` moved there, as HMM's migration does for
//! nouveau's dmem and Xe's SVM. The VRAM gets `struct page`s from a
//! `MEMORY_DEVICE_PRIVATE` memory map (`kernel::mm::devmem::PageMap`) of
//! the BAR's size, one page per page of VRAM: device page `i` holds its
//! data at VRAM offset `i * PAGE_SIZE`. The map hands out only the pages
//! of chunks ([`CHUNK`]) that this module has allocated from the VRAM's
//! buddy allocator, the same `drm_buddy` TTM's VRAM manager places
//! objects in, and returns a chunk to it once all its pages are free
//! again ([`Dmem::trim`]): device private pages and TTM objects share the
//! VRAM.
//!
//! The CPU page tables hold device private entries for migrated pages; a
//! CPU access faults the page back (`migrate_to_ram`, a copy out of the
//! BAR into a fresh movable system page). The device page table maps
//! migrated pages as VRAM entries: the userptr's HMM fault reports this
//! map's pages to the device (its owner is the map's, see
//! [`Dmem::owner`]) and [`Dmem::vram_offset`] translates them. Every
//! migration, either way, first invalidates the range through the MMU
//! notifiers (`MMU_NOTIFY_MIGRATE`), which clears the userptr's entries
//! after the VM's pending jobs, so no job sees a page in the middle of a
//! move; the next submission faults the pages in from where they are.
//!
//! VRAM pressure: before TTM places an object in VRAM (`GEM_CREATE`,
//! `GEM_MOVE`), [`Dmem::make_room`] migrates device private pages back to
//! system memory (`migrate_device_range()`), chunk by chunk, until the
//! buddy allocator has the room, ahead of TTM's own eviction of objects.
//! Unbinding the device migrates everything back ([`Dmem::close`]) before
//! the map goes.
//!
//! Locks: mmap lock -> `chunks` (mutex; the migration ioctl backs chunks
//! with the mmap lock held) -> the buddy allocator's mutex; `chunks` ->
//! folio locks (reclaiming a chunk migrates its pages back). The copies
//! take only the slot's BAR spinlock (innermost, through [`Aperture`]), so
//! a CPU fault, which holds the mmap lock and the page lock, takes nothing
//! else of softgpu's.

use kernel::{
    c_str,
    drm::buddy::{Allocation, Buddy, Request},
    folio::Folio,
    impl_has_work,
    mm::devmem::{DeviceMemory, Migrated, PageMap},
    mmu_notifier::Owner,
    new_mutex, new_spinlock, new_work,
    page::PAGE_SIZE,
    pci::Bar,
    prelude::*,
    rbtree::RBTree,
    sync::{Arc, Mutex, SpinLock},
    workqueue::{self, Work, WorkItem},
};

/// VRAM backs device private pages in chunks of this many bytes: one buddy
/// block each, aligned to its size, so a chunk is a run of the map's
/// pages.
pub(crate) const CHUNK: usize = 256 << 10;
const CHUNK_PAGES: usize = CHUNK / PAGE_SIZE;

/// Where the VRAM's BAR is to be had (the VRAM slot, `vram.rs`, which
/// sits above this module): lent for a copy, under a spinlock, while the
/// device is bound.
pub(crate) trait Aperture: Send + Sync {
    /// Calls `f` on the BAR's mapping; `ENODEV` once the device is gone.
    /// `f` must not sleep.
    fn with_bar_mut(&self, f: &mut dyn FnMut(&Bar) -> Result) -> Result;
}

/// The VRAM side of the map: copies through the BAR.
#[pin_data]
struct VramPages {
    aperture: Arc<dyn Aperture>,
    /// The device private memory this is part of, for [`Dmem::trim`] when
    /// a page is freed (see `page_freed`); set by [`Dmem::new`], taken by
    /// [`Dmem::close`], so that the reference cycle ends when the device
    /// goes.
    #[pin]
    dmem: SpinLock<Option<Arc<Dmem>>>,
}

impl DeviceMemory for VramPages {
    fn copy_to_device(&self, index: usize, src: Option<(&Folio, usize)>) -> Result {
        let offset = index * PAGE_SIZE;
        self.aperture.with_bar_mut(&mut |bar| {
            match src {
                Some((folio, at)) => bar.try_copy_from_folio(offset, folio, at, PAGE_SIZE)?,
                None => bar.try_fill(offset, PAGE_SIZE, 0)?,
            }
            // The data must be in VRAM before the CPU mapping goes.
            bar.flush_wc();
            Ok(())
        })
    }

    fn copy_to_ram(&self, index: usize, dst: &Folio) -> Result {
        self.aperture
            .with_bar_mut(&mut |bar| bar.try_copy_to_folio(index * PAGE_SIZE, dst, 0, PAGE_SIZE))
    }

    fn page_freed(&self, _index: usize) {
        // Maybe the last page of its chunk: give idle chunks back to the
        // allocator from a work item (this may be atomic context; freeing
        // VRAM takes the allocator's mutex). Queued at most once at a time;
        // a failed enqueue drops the clone, never the last reference (the
        // back reference here is another).
        let dmem = self.dmem.lock().clone();
        if let Some(d) = dmem {
            let _ = workqueue::system().enqueue(d);
        }
    }
}

/// The chunks of VRAM lent to the map, by the map's index of their first
/// page (their VRAM offset in pages), and whether the device is going.
struct Chunks {
    list: RBTree<usize, Allocation>,
    closed: bool,
}

/// Device private memory of the bound VRAM device.
#[pin_data]
pub(crate) struct Dmem {
    map: Arc<PageMap<VramPages>>,
    buddy: Buddy,
    #[pin]
    chunks: Mutex<Chunks>,
    /// Runs [`Dmem::trim`] after pages are freed.
    #[pin]
    trim_work: Work<Dmem>,
}

impl_has_work! {
    impl HasWork<Self> for Dmem { self.trim_work }
}

impl WorkItem for Dmem {
    type Pointer = Arc<Dmem>;

    fn run(this: Arc<Dmem>) {
        this.trim();
    }
}

impl Dmem {
    /// Device private memory over the whole of the VRAM that `buddy`
    /// manages (rounded down to the memory map's 2 MiB), reached through
    /// `aperture`'s BAR.
    pub(crate) fn new(aperture: Arc<dyn Aperture>, buddy: &Buddy) -> Result<Arc<Self>> {
        let size = (buddy.size() as usize) & !((2 << 20) - 1);
        let map = PageMap::new(
            size,
            c_str!("softgpu VRAM (device private)"),
            pin_init!(VramPages {
                aperture,
                dmem <- new_spinlock!(None, "softgpu::dmem::VramPages::dmem"),
            }),
        )?;
        let this = Arc::pin_init(
            pin_init!(Self {
                map,
                buddy: buddy.clone(),
                chunks <- new_mutex!(
                    Chunks {
                        list: RBTree::new(),
                        closed: false,
                    },
                    "softgpu::dmem::Dmem::chunks"
                ),
                trim_work <- new_work!("softgpu::dmem::Dmem::trim_work"),
            }),
            GFP_KERNEL,
        )?;
        *this.map.data().dmem.lock() = Some(this.clone());
        Ok(this)
    }

    /// The owner of the device private pages, for HMM faults of the
    /// device's mirrors.
    pub(crate) fn owner(&self) -> Owner {
        self.map.owner()
    }

    /// The VRAM offset of the data of the page whose frame is `pfn`, if it
    /// is one of this device's private pages.
    pub(crate) fn vram_offset(&self, pfn: usize) -> Option<u64> {
        self.map.index_of(pfn).map(|i| (i * PAGE_SIZE) as u64)
    }

    /// Backs chunks with VRAM until `pages` pages are free, or VRAM is
    /// full (then as many as there are).
    fn reserve(&self, pages: usize) -> Result {
        let mut chunks = self.chunks.lock();
        if chunks.closed {
            return Err(ENODEV);
        }
        while self.map.counts().0 < pages {
            // Within the map (the VRAM beyond its last 2 MiB has no pages).
            let req = Request::new(CHUNK as u64)
                .min_block_size(CHUNK as u64)
                .range(0, (self.map.npages() * PAGE_SIZE) as u64);
            let vram = match self.buddy.alloc(&req) {
                Ok(a) => a,
                Err(e) if e == ENOSPC => break,
                Err(e) => return Err(e),
            };
            let Some(block) = vram.blocks().next() else {
                break;
            };
            let first = block.offset() as usize / PAGE_SIZE;
            chunks.list.try_create_and_insert(first, vram, GFP_KERNEL)?;
            self.map.add_free(first, CHUNK_PAGES)?;
        }
        Ok(())
    }

    /// Migrates `[start, end)` of `vma` (private anonymous memory) into
    /// VRAM, as far as VRAM has room.
    pub(crate) fn migrate_to_vram(
        &self,
        vma: &kernel::mm::VmaRef,
        start: usize,
        end: usize,
    ) -> Result<Migrated> {
        self.reserve((end - start) / PAGE_SIZE)?;
        self.map.migrate_to_device(vma, start, end)
    }

    /// Migrates this device's pages in `[start, end)` of `vma` back to
    /// system memory.
    pub(crate) fn migrate_to_system(
        &self,
        vma: &kernel::mm::VmaRef,
        start: usize,
        end: usize,
    ) -> Result<Migrated> {
        self.map.migrate_to_ram(vma, start, end)
    }

    /// Gives the chunks none of whose pages is in use back to the buddy
    /// allocator.
    pub(crate) fn trim(&self) {
        let mut chunks = self.chunks.lock();
        let mut idle = KVec::new();
        for (&first, _) in chunks.list.iter() {
            if self.map.used_in(first, CHUNK_PAGES) == 0 && idle.push(first, GFP_KERNEL).is_err() {
                break;
            }
        }
        for first in idle {
            if self.map.reclaim(first, CHUNK_PAGES) == Ok(true) {
                // Dropping the allocation frees the VRAM.
                drop(chunks.list.remove(&first));
            }
        }
    }

    /// Migrates device private pages back to system memory, the chunks with
    /// the fewest pages in use first, until the buddy allocator has `bytes`
    /// free (or nothing is left in VRAM). Returns whether it has.
    pub(crate) fn make_room(&self, bytes: u64) -> bool {
        self.trim();
        loop {
            if self.buddy.avail() >= bytes {
                return true;
            }
            let mut chunks = self.chunks.lock();
            let victim = chunks
                .list
                .iter()
                .map(|(&first, _)| first)
                .min_by_key(|&first| self.map.used_in(first, CHUNK_PAGES));
            let Some(first) = victim else {
                return false;
            };
            match self.map.reclaim(first, CHUNK_PAGES) {
                Ok(true) => drop(chunks.list.remove(&first)),
                // Pages still in use (pinned for a moment, or a copy
                // failed): the memory stays, and so does the chunk. Its
                // free pages are no longer handed out.
                _ => return self.buddy.avail() >= bytes,
            }
        }
    }

    /// Migrates every page back to system memory and stops handing out
    /// pages: the device is going. Waits for pages a process has pinned for
    /// a moment.
    pub(crate) fn close(&self) {
        let mut chunks = self.chunks.lock();
        chunks.closed = true;
        while self.map.reclaim(0, self.map.npages()) != Ok(true) {
            drop(chunks);
            crate::delay::usleep(1000);
            chunks = self.chunks.lock();
        }
        chunks.list = RBTree::new();
        drop(chunks);
        // No page is in use, none will be: the cycle through the map ends.
        let back = self.map.data().dmem.lock().take();
        drop(back);
    }

    /// VRAM lent to device private pages now, in bytes.
    pub(crate) fn vram_bytes(&self) -> u64 {
        (self.chunks.lock().list.iter().count() * CHUNK) as u64
    }

    /// debugfs `devmem`: pages free and in use, chunks, and the migration
    /// counters.
    pub(crate) fn show(&self, p: &kernel::drm::Printer) {
        let (free, used) = self.map.counts();
        let s = self.map.stats();
        let chunks = self.chunks.lock().list.iter().count();
        p.print(format_args!(
            "pages: {}\nchunk_bytes: {CHUNK}\nchunks: {chunks}\nfree: {free}\nused: {used}\n\
             to_vram: {}\nfaulted_back: {}\nmigrated_back: {}\nevicted: {}\n",
            self.map.npages(),
            s.to_device,
            s.faulted_back,
            s.migrated_back,
            s.evicted
        ));
    }
}
