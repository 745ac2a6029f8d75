// SPDX-License-Identifier: GPL-2.0

//! Discrete mode's objects: TTM buffer objects, placed in VRAM or system
//! memory and moved by TTM.
//!
//! A TTM object is a softgpu GEM object (`bo.rs`, backing `Ttm`) whose
//! memory is a `kernel::drm::ttm::Bo` of the VRAM device's TTM device. Its
//! CPU mappings are TTM's: every fault maps the page where the object is at
//! that moment, a VRAM page through the BAR (write-combined) or a system
//! page, and every move unmaps them first. In system memory its pages are
//! folios of its own gemfs file (a hold on each while TTM's `ttm_tt` points
//! to them), which migration can move: gemfs's release callback here gives
//! them all back, and the next access takes them again. In baseline mode
//! (`SOFTGPU_BO_TTM_POOL`) they come from TTM's `ttm_pool` instead, as
//! amdgpu's do, and cannot move.
//!
//! Its GPU mappings work the same way: a binding records where the object
//! is mapped ([`add_gpu_mapping`]), `EXEC` fills the entries its job needs
//! from wherever the object is ([`map_page`]: a VRAM entry or a system
//! one), and everything that takes the object's memory away (a move, an
//! eviction, TTM's swapout, gemfs's release) first waits for the jobs
//! using it and clears every entry into it ([`ttm::Driver::move_notify`]),
//! all under the object's reservation. Jobs add their fences to the
//! object's reservation object, which TTM waits for before it moves the
//! object; an object a job is using or about to use is not evicted
//! ([`ttm::Driver::eviction_valuable`]).
//!
//! A move's copy is a job of the engine ([`ttm::Driver::copy_move`],
//! `Engine::submit_copy`), queued once the jobs using the object are done
//! and its entries cleared: `GEM_MOVE` returns before the copy is done,
//! with TTM's ghost object keeping the old memory until the copy's fence
//! signals, and CPU faults, `EXEC`'s jobs (queued behind it) and the next
//! move waiting for it. An eviction waits for its copy. If the job cannot
//! be queued (no memory), the CPU copies.

use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use kernel::{
    c_str,
    dma_fence::ResvUsage,
    drm,
    drm::ttm,
    folio::LockedFolio,
    fs::File,
    gemfs::{self, ObjectRef},
    mm::migrate::MigrateMode,
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
    sync::{Arc, ArcBorrow, Mutex, SpinLock},
    task::cond_resched,
    time::{ktime_ms_delta, msecs_to_jiffies, Ktime},
    types::ARef,
    uapi,
};

use crate::{
    pt::{PageTable, Perm, Pte, PAGE},
    SoftGpu,
};

/// How long a synchronous migration retries for a TTM object's reservation.
const RELEASE_WAIT_MS: i64 = 100;

/// GPU pages whose entries are cleared under one hold of a page table's
/// lock (a PMD's worth): a mapping may span GiBs.
const CLEAR_PIECE: u64 = 512;

/// Where a TTM object is bound in a GPU VM; keyed by (page table address,
/// GPU address).
struct GpuMapping {
    /// The page table of the VM of the binding.
    pt: *const SpinLock<PageTable>,
    va: u64,
    size: u64,
}

// SAFETY: `pt` is only compared and dereferenced while the binding exists,
// in the VM that owns the page table (a mapping is removed with its
// binding, before the VM and its page table go).
unsafe impl Send for GpuMapping {}

impl GpuMapping {
    /// Clears every entry of the mapping, a piece at a time, yielding
    /// between pieces.
    fn clear(&self) {
        // SAFETY: a mapping exists only while its binding does (the type's
        // `Send` comment).
        let pt = unsafe { &*self.pt };
        let (mut va, end) = (self.va, self.va + self.size);
        while va < end {
            let piece_end = end.min(va + CLEAR_PIECE * PAGE);
            let mut t = pt.lock();
            while va < piece_end {
                t.clear(va);
                va += PAGE;
            }
            drop(t);
            cond_resched();
        }
    }
}

/// The data of a softgpu TTM BO.
#[pin_data]
pub(crate) struct TtmData {
    /// The object's gemfs file: its system memory, but in baseline mode
    /// (where it only backs the GEM object).
    gemfs: gemfs::Object<TtmOwner>,
    /// Baseline: system memory from TTM's page pool.
    pub(crate) pool: bool,
    /// Where the object is bound in GPU VMs. Changed and walked with the
    /// object reserved: so a move, which clears every entry of these under
    /// its reservation, and a fault, which sets one under it, never
    /// interleave. Lock order: reservation, this, a VM's page table.
    #[pin]
    gpu: Mutex<RBTree<(usize, u64), GpuMapping>>,
    /// `EXEC`s making the object's pages resident for jobs whose fences
    /// are not yet in its reservation object (`bo.rs`,
    /// `Bo::begin_submission`): until then it is not moved, evicted or
    /// released, as it does not look busy yet.
    submissions: AtomicU32,
    /// Times TTM evicted the object from VRAM to make room.
    pub(crate) evictions: AtomicU64,
}

impl ttm::Driver for SoftGpu {
    type Drm = SoftGpu;
    type BoData = TtmData;
    type Folio = gemfs::Hold;

    fn external_pages(bo: &ttm::Bo<Self>) -> bool {
        !bo.pool
    }

    fn system_folio(bo: &ttm::Bo<Self>, index: usize) -> Result<gemfs::Hold> {
        let hold = bo.gemfs.get_folio(index)?;
        // The CPU mappings (`VM_PFNMAP`: the page cache never sees their
        // writes) and TTM's copies write the folio behind the page cache's
        // back. Once the holds are given back, a clean shmem folio is one
        // that reclaim, or soft offline's `mapping_evict_folio()`, drops as
        // a page of zeroes rather than writing it out or migrating it: the
        // object's contents would be lost. Dirty now, it is kept.
        hold.folio().lock().mark_dirty();
        Ok(hold)
    }

    /// The object's memory goes (moved, evicted, swapped out or released
    /// to migration), idle: no GPU entry may point into it any more.
    fn move_notify(bo: &ttm::Bo<Self>, evict: bool) {
        if evict {
            bo.evictions.fetch_add(1, Ordering::Relaxed);
        }
        for m in bo.gpu.lock().values() {
            m.clear();
        }
    }

    /// Not an object a job is using (its fences unsignalled) or about to
    /// use (being submitted to): TTM evicts idle ones instead, or fails
    /// (`ENOMEM`, TTM's errno for no room).
    fn eviction_valuable(bo: &ttm::Bo<Self>) -> bool {
        !in_use(bo)
    }

    /// The engine copies: see the module's documentation. Called with the
    /// object reserved: `submit_copy` takes the engine's copy submission
    /// mutex, never `EXEC`'s, which is held while waiting for
    /// reservations.
    fn copy_move(bo: &ttm::Bo<Self>, copy: ttm::MoveCopy<'_>) {
        // On failure `copy` is dropped, and the CPU copies.
        let _ = bo.device().drm().data().engine.submit_copy(copy);
    }
}

/// Whether a job may be using the object: one is queued or running (a
/// fence of its reservation object has not signalled), or being submitted.
fn in_use(bo: &ttm::Bo<SoftGpu>) -> bool {
    bo.submissions.load(Ordering::Acquire) != 0 || !bo.resv().test_signaled(ResvUsage::Bookkeep)
}

/// Records that the VM of page table `pt` maps the object at `va`, `size`
/// bytes, before any entry of the binding is set.
pub(crate) fn add_gpu_mapping(
    bo: &ttm::Bo<SoftGpu>,
    pt: &SpinLock<PageTable>,
    va: u64,
    size: u64,
) -> Result {
    let key = (core::ptr::from_ref(pt) as usize, va);
    let m = GpuMapping {
        pt: core::ptr::from_ref(pt),
        va,
        size,
    };
    let node = RBTreeNode::new(key, m, GFP_KERNEL)?;
    let _r = bo.reserve_uninterruptible();
    bo.gpu.lock().insert(node);
    Ok(())
}

/// Forgets the binding at `va` of page table `pt`, clearing its entries
/// first, with the object reserved: no move frees the memory they point
/// into before they are gone.
pub(crate) fn remove_gpu_mapping(bo: &ttm::Bo<SoftGpu>, pt: &SpinLock<PageTable>, va: u64) {
    let key = (core::ptr::from_ref(pt) as usize, va);
    let r = bo.reserve_uninterruptible();
    let mut maps = bo.gpu.lock();
    if let Some(m) = maps.get(&key) {
        m.clear();
    }
    let node = maps.remove_node(&key);
    drop(maps);
    drop(r);
    drop(node);
}

/// Maps page `index` of the object at `va` of page table `pt`, allowing
/// `perm`, where the object is now: a VRAM entry for its VRAM page, or a
/// system entry for its page in system memory (taken first: a gemfs
/// folio, or a page of TTM's pool). The entry stays until the object's
/// memory goes ([`ttm::Driver::move_notify`]) or the binding does. Called
/// with the VM's bindings locked, never from a job: it may allocate with
/// reclaim. The page tables of `va` are reserved (by the binding).
pub(crate) fn map_page(
    bo: &ttm::Bo<SoftGpu>,
    pt: &SpinLock<PageTable>,
    va: u64,
    index: usize,
    perm: Perm,
) -> Result {
    let r = bo.reserve_uninterruptible();
    let pte = if r.mem_type() == ttm::PL_VRAM {
        let offset = index.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        Pte::vram(r.vram_offset(offset).ok_or(EINVAL)?, perm)
    } else {
        r.populate()?;
        Pte::system(r.system_pfn(index).ok_or(EINVAL)?, perm)
    };
    pt.lock().set(va, pte);
    Ok(())
}

/// Marks the object as being submitted to (see [`TtmData::submissions`]).
///
/// Moves, evictions and gemfs's release look at the count with the object
/// reserved, and clear its GPU entries under that same reservation. One
/// that took the reservation before the count went up may be clearing
/// them right now, after `make_resident` has seen them present and
/// skipped them: the job would then fault on a page the submission had
/// been promised. Taking the reservation once after the increment orders
/// the two: a mover that held it first has finished (its clearing is seen
/// next), and one that takes it later sees the count. Called with the
/// VM's bindings locked, which nest outside reservations.
pub(crate) fn begin_submission(bo: &ttm::Bo<SoftGpu>) {
    bo.submissions.fetch_add(1, Ordering::AcqRel);
    drop(bo.reserve_uninterruptible());
}

/// Ends what [`begin_submission`] began: the job's fence is in the
/// object's reservation object, or the job was cancelled.
pub(crate) fn end_submission(bo: &ttm::Bo<SoftGpu>) {
    bo.submissions.fetch_sub(1, Ordering::AcqRel);
}

/// The owner of a TTM object's gemfs file: what gemfs asks when migration
/// wants one of its folios.
pub(crate) struct TtmOwner {
    /// The BO whose data holds the gemfs object, once it exists.
    bo: AtomicPtr<ttm::Bo<SoftGpu>>,
    pub(crate) released: AtomicU64,
    pub(crate) refused: AtomicU64,
}

impl TtmOwner {
    /// The BO, once made.
    fn bo(&self) -> Option<&ttm::Bo<SoftGpu>> {
        let p = self.bo.load(Ordering::Acquire);
        // SAFETY: set once, by `create`, to the BO whose data holds the
        // gemfs object of this owner. The owner is used by gemfs's
        // callbacks only, and the BO's data is dropped (destroying the
        // gemfs object, which waits for running callbacks and calls none
        // afterwards) before the BO's memory is freed.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// Gives a folio of the object back for migration: with the object
    /// reserved (trylock only: the folio is locked, and populating takes
    /// folio locks under the reservation) and idle, its CPU and GPU
    /// mappings are torn down and every hold of its `ttm_tt` dropped
    /// (`release_system_pages`). Asynchronous migration gives up at once if
    /// the reservation is taken or a job may be using the object; the
    /// synchronous modes retry for the reservation and wait for the jobs
    /// for up to `RELEASE_WAIT_MS` in all. An object being submitted to is
    /// refused at once, as `bo.rs` refuses its objects.
    fn do_release(&self, folio: &LockedFolio<'_>, mode: MigrateMode) -> Result {
        let Some(bo) = self.bo() else {
            return Err(ENOENT);
        };
        let start = Ktime::ktime_get();
        let mut r = loop {
            if let Some(r) = bo.try_reserve() {
                break r;
            }
            if mode == MigrateMode::Async
                || ktime_ms_delta(Ktime::ktime_get(), start) >= RELEASE_WAIT_MS
            {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(EBUSY);
            }
            cond_resched();
        };
        if r.system_pfn(folio.index()) != Some(folio.pfn()) {
            // Not held by the object's tt (in VRAM, not populated, or a
            // reference of someone else's).
            return Err(ENOENT);
        }
        // Not `in_use()`: its two halves are answered differently. An EXEC
        // between residency and its fence is refused at once: there is no
        // fence yet to wait on, and it may be waiting for another object's
        // reservation or folio that this migration holds. A job's fence is
        // waited for in the sync modes, bounded: a running job waits for
        // nothing migration holds.
        if bo.submissions.load(Ordering::Acquire) != 0 {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(EBUSY);
        }
        if !bo.resv().test_signaled(ResvUsage::Bookkeep) {
            let left = RELEASE_WAIT_MS - ktime_ms_delta(Ktime::ktime_get(), start);
            let idle = mode != MigrateMode::Async
                && left > 0
                && bo
                    .resv()
                    .wait_timeout(ResvUsage::Bookkeep, msecs_to_jiffies(left as u32))?;
            if !idle {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(EBUSY);
            }
        }
        r.release_system_pages()?;
        self.released.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl gemfs::Owner for TtmOwner {
    fn release(
        owner: ArcBorrow<'_, Self>,
        _obj: &ObjectRef,
        folio: &LockedFolio<'_>,
        mode: MigrateMode,
    ) -> Result {
        // As `bo.rs` does: lockdep treats this as reclaim (direct
        // compaction calls it from an allocation).
        kernel::shrinker::as_reclaim(|| owner.do_release(folio, mode))
    }

    /// The file of a TTM object is not mapped to user space (the object's
    /// mappings are TTM's): it is hole-punched only by [`move_to`], when
    /// the object has just moved into VRAM and holds nothing, with the
    /// reservation held (so the trylock below fails and nothing is done);
    /// memory failure may still poison a folio. Its holds are dropped if the object can be reserved without waiting
    /// (waiting could deadlock with a populate waiting for this very
    /// invalidation); otherwise they stay until the object next leaves
    /// system memory.
    fn invalidate(owner: ArcBorrow<'_, Self>, _obj: &ObjectRef, _first: usize, _last: usize) {
        if let Some(mut r) = owner.bo().and_then(|bo| bo.try_reserve()) {
            let _ = r.release_system_pages();
        }
    }
}

/// The placement of `SOFTGPU_BO_VRAM` / `SOFTGPU_BO_SYSTEM` flags: one of
/// them, or both for VRAM if there is room without evicting, else system
/// memory (TTM's first pass over the places evicts nothing). `EINVAL` for
/// neither.
pub(crate) fn placement(flags: u32) -> Result<ttm::Placement> {
    let vram = ttm::Place::new(ttm::PL_VRAM, 0);
    let system = ttm::Place::new(ttm::PL_SYSTEM, 0);
    match flags & (uapi::SOFTGPU_BO_VRAM | uapi::SOFTGPU_BO_SYSTEM) {
        uapi::SOFTGPU_BO_VRAM => ttm::Placement::new(&[vram]),
        uapi::SOFTGPU_BO_SYSTEM => ttm::Placement::new(&[system]),
        0 => Err(EINVAL),
        _ => ttm::Placement::new(&[vram, system]),
    }
}

/// Makes a TTM BO of `size` bytes on the VRAM device's TTM device, placed
/// as `placement` says, with its gemfs file: `ENODEV` without a VRAM
/// device. Returns the BO and the file (for the GEM object).
pub(crate) fn create(
    dev: &drm::Device<SoftGpu>,
    size: usize,
    placement: &ttm::Placement,
    pool: bool,
) -> Result<(ARef<ttm::Bo<SoftGpu>>, ARef<File>)> {
    let tdev = dev.data().vram.ttm().ok_or(ENODEV)?;
    make_room(dev, size, placement);
    let owner = Arc::new(
        TtmOwner {
            bo: AtomicPtr::new(core::ptr::null_mut()),
            released: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        },
        GFP_KERNEL,
    )?;
    let obj = dev
        .data()
        .mount
        .create_object(c_str!("softgpu-ttm"), size, owner.clone())?;
    let file: ARef<File> = obj.file().into();
    let bo = ttm::Bo::new(
        &tdev,
        ttm::BoType::Device,
        size,
        placement,
        try_pin_init!(TtmData {
            gemfs: obj,
            pool,
            gpu <- new_mutex!(RBTree::new(), "softgpu_ttm_gpu_mappings"),
            submissions: AtomicU32::new(0),
            evictions: AtomicU64::new(0),
        }),
    )?;
    let p: *const ttm::Bo<SoftGpu> = &*bo;
    owner.bo.store(p.cast_mut(), Ordering::Release);
    Ok((bo, file))
}

/// Before TTM places an object of `size` bytes in VRAM (if `placement`
/// allows it): moves userptr pages that migrated into VRAM back to system
/// memory until VRAM has the room, so that device private pages give way
/// first and TTM evicts objects only when they are not enough (`dmem.rs`).
/// Called without any reservation held: it takes folio locks and waits
/// for the jobs using the pages.
pub(crate) fn make_room(dev: &drm::Device<SoftGpu>, size: usize, placement: &ttm::Placement) {
    if !placement.allows(ttm::PL_VRAM) {
        return;
    }
    if let Some(d) = dev.data().vram.dmem() {
        d.make_room(size as u64);
    }
}

/// What `GEM_INFO` reports of a TTM object: whether it is in VRAM, and
/// its pages in memory (all of them in VRAM, the populated ones in system
/// memory).
pub(crate) fn info(bo: &ttm::Bo<SoftGpu>) -> Result<(bool, u64)> {
    let r = bo.reserve()?;
    let pages = bo.size() / kernel::page::PAGE_SIZE;
    if r.mem_type() == ttm::PL_VRAM {
        return Ok((true, pages as u64));
    }
    let resident = (0..pages).filter(|&i| r.system_pfn(i).is_some()).count();
    Ok((false, resident as u64))
}

/// Folios of the object given back to migration, and requests refused as
/// busy (its reservation taken).
pub(crate) fn release_counts(bo: &ttm::Bo<SoftGpu>) -> (u64, u64) {
    let o = bo.gemfs.owner();
    (
        o.released.load(Ordering::Relaxed),
        o.refused.load(Ordering::Relaxed),
    )
}

/// `GEM_MOVE`: moves the object to the placement of `flags`
/// (`ttm_bo_validate()`, evicting idle objects from VRAM if needed), after
/// the jobs using it. `EBUSY` while an `EXEC` is making its pages resident
/// for a job (the job would find them gone).
pub(crate) fn move_to(dev: &drm::Device<SoftGpu>, bo: &ttm::Bo<SoftGpu>, flags: u32) -> Result {
    let placement = placement(flags)?;
    make_room(dev, bo.size(), &placement);
    let mut r = bo.reserve()?;
    if bo.submissions.load(Ordering::Acquire) != 0 {
        return Err(EBUSY);
    }
    let from = r.mem_type();
    r.validate(&placement)?;
    if from != ttm::PL_VRAM && r.mem_type() == ttm::PL_VRAM && !bo.pool {
        // The contents are in VRAM now, and the `ttm_tt` gave its holds
        // back; the gemfs file still has the folios, which would keep a
        // second copy of the object in system memory for as long as it
        // stays in VRAM. Out they go (the next move to system memory
        // copies the object into new ones). Under the reservation, as
        // every populate is: the file's `invalidate_lock` nests inside it.
        kernel::shmem::truncate_range(bo.gemfs.file(), 0, -1)?;
    }
    Ok(())
}

/// fdinfo's memory regions (`drm-total-system`, `drm-total-vram`, ...):
/// system memory, where every object but a TTM object in VRAM is, then
/// VRAM while a VRAM device is bound.
pub(crate) const REGION_SYSTEM: usize = 0;
pub(crate) const REGION_VRAM: usize = 1;

/// The names of the regions, indexed by `REGION_*`.
pub(crate) fn memory_regions(dev: &drm::Device<SoftGpu>) -> &'static [&'static kernel::str::CStr] {
    const SYSTEM: &[&kernel::str::CStr] = &[c_str!("system")];
    const BOTH: &[&kernel::str::CStr] = &[c_str!("system"), c_str!("vram")];
    if dev.data().vram.ttm().is_some() {
        BOTH
    } else {
        SYSTEM
    }
}

/// Where a TTM object's memory is, for fdinfo: in VRAM, all of it
/// resident there; in system memory, the pages its `ttm_tt` has now
/// (none before the first access, none after migration took them back
/// until the next). Waits for the object's reservation (interruptibly).
pub(crate) fn memory_info(bo: &ttm::Bo<SoftGpu>) -> Result<drm::gem::MemoryInfo> {
    let (vram, pages) = info(bo)?;
    Ok(drm::gem::MemoryInfo {
        region: if vram { REGION_VRAM } else { REGION_SYSTEM },
        resident: pages as usize * kernel::page::PAGE_SIZE,
        status: if pages != 0 {
            drm::gem::STATUS_RESIDENT
        } else {
            0
        },
    })
}

/// The header of debugfs `ttm`: a line per TTM object, with its id (as in
/// `objects`), size in bytes, placement (`vram` or `system`), system
/// memory (`gemfs` or `pool`), folios given back to migration and release
/// requests refused, then the pages it is on, in the object's page order,
/// as runs (`first-last`, hexadecimal, comma-separated): its page frames
/// in system memory (`-` if it has none now), its VRAM pages (offset in
/// the VRAM / page size) in VRAM.
pub(crate) fn show_header(p: &drm::Printer) {
    p.print(format_args!(
        "{:>8} {:>12} {:>6} {:>5} {:>8} {:>8} pages\n",
        "id", "size", "place", "sys", "released", "refused"
    ));
}

/// One line of debugfs `ttm` (see [`show_header`]) for object `id`.
pub(crate) fn show(id: u64, bo: &ttm::Bo<SoftGpu>, p: &drm::Printer) -> Result {
    let (released, refused) = release_counts(bo);
    let r = bo.reserve()?;
    let vram = r.mem_type() == ttm::PL_VRAM;
    p.print(format_args!(
        "{:>8} {:>12} {:>6} {:>5} {:>8} {:>8} ",
        id,
        bo.size(),
        if vram { "vram" } else { "system" },
        if bo.pool { "pool" } else { "gemfs" },
        released,
        refused
    ));
    let page = kernel::page::PAGE_SIZE;
    let frame = |i: usize| {
        if vram {
            r.vram_offset(i * page).map(|o| o as usize / page)
        } else {
            r.system_pfn(i)
        }
    };
    // Runs of consecutive frames, printed as each ends.
    let mut run: Option<(usize, usize)> = None;
    let mut sep = "";
    let mut print_run = |(first, last): (usize, usize)| {
        if first == last {
            p.print(format_args!("{sep}{first:x}"));
        } else {
            p.print(format_args!("{sep}{first:x}-{last:x}"));
        }
        sep = ",";
    };
    for i in 0..bo.size() / page {
        let Some(f) = frame(i) else { continue };
        run = match run {
            Some((first, last)) if f == last + 1 => Some((first, f)),
            Some(done) => {
                print_run(done);
                Some((f, f))
            }
            None => Some((f, f)),
        };
        if i % 4096 == 4095 {
            cond_resched();
        }
    }
    match run {
        Some(done) => print_run(done),
        None => p.print(format_args!("-")),
    }
    p.print(format_args!("\n"));
    Ok(())
}
