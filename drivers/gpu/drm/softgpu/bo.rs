// SPDX-License-Identifier: GPL-2.0

//! Buffer objects: GEM objects backed by gemfs (or, in baseline mode, by a
//! plain shmem file that stays pinned while bound).
//!
//! An object holds a folio only while at least one device page table entry
//! points into it ("resident"). With gemfs, the folio is taken with a gemfs
//! hold, and migration asks for it back through [`BoOwner::release`]: if no
//! job that may use the object is running, the entries are cleared (the
//! modelled TLB flushed with them) and the hold dropped; the next job
//! that accesses the page takes the new folio when it is submitted
//! (`Vm::make_resident`). In baseline (pinned) mode the
//! folio is an ordinary page reference, which migration cannot move.
//!
//! An object imported from another driver's dma-buf (PRIME) has neither:
//! its pages are the exporter's, listed by the mapping of the DRM core's
//! attachment, which pins them for as long as the object lives (a static
//! import, see `Bo::import`). Its page table entries point at them without
//! taking references; gemfs, migration and the shrinker never see it.

use crate::{
    objects::Objects,
    pt::{PageTable, Perm, Pte, PAGE},
};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use kernel::{
    bindings, c_str,
    dma_fence::{Fence, Resv, ResvUsage},
    drm::{self, gem, ttm},
    folio::{Folio, LockedFolio},
    fs::File,
    gemfs::{self, Hold, ObjectRef},
    mm::migrate::MigrateMode,
    new_spinlock,
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
    shmem,
    sync::{Arc, ArcBorrow, SpinLock},
    task::cond_resched,
    types::ARef,
    uapi,
};

/// How long a synchronous migration waits for the jobs using an object.
const RELEASE_WAIT_MS: u32 = 100;

/// The GEM object of softgpu.
pub(crate) type GemObject = gem::Object<Bo>;

/// A reference to a folio that the device page table points into.
enum PageRef {
    /// A gemfs hold: migration can ask for it back.
    Held(Hold),
    /// A plain reference: pinned until unbound.
    Pinned(ARef<Folio>),
    /// Page `index` of an imported dma-buf, at `pfn`: no reference, the
    /// object's attachment keeps the exporter's page in place.
    Imported { pfn: usize, index: usize },
}

impl PageRef {
    fn folio(&self) -> Option<&Folio> {
        match self {
            PageRef::Held(h) => Some(h.folio()),
            PageRef::Pinned(f) => Some(f),
            PageRef::Imported { .. } => None,
        }
    }

    /// The object page index of the first page.
    fn first(&self) -> usize {
        match self {
            PageRef::Imported { index, .. } => *index,
            _ => self.folio().map_or(0, |f| f.index()),
        }
    }

    fn nr_pages(&self) -> usize {
        self.folio().map_or(1, |f| f.nr_pages())
    }

    fn pfn(&self) -> usize {
        match self {
            PageRef::Imported { pfn, .. } => *pfn,
            _ => self.folio().map_or(0, |f| f.pfn()),
        }
    }
}

/// A folio the device page tables point into, and how many entries do.
struct Resident {
    page: PageRef,
    ptes: u32,
}

/// Pages in the largest folio gemfs or shmem gives out (PMD order): a
/// folio's slot is at its first page, which is aligned to its size.
const MAX_FOLIO_PAGES: usize = 512;

/// The resident folios of an object, each in the slot of its first page.
///
/// A dense table rather than a tree of folios: making a page resident
/// allocates nothing (the object lock is a spinlock), and it costs one slot
/// per page, allocated once, instead of a slab object per resident folio
/// churned with every fault and release. Unmovable kernel memory is what
/// this project is about: each scattered slab page can cost a huge page.
///
/// # Invariants
///
/// `slots` is empty, or has one slot per page of the object. A resident
/// folio of `n` pages at index `i` is in `slots[i]`, `i` is a multiple of
/// `n` and `n <= MAX_FOLIO_PAGES`; the `n - 1` slots after it are `None`.
/// `ptes`, `pages` and `folios` are the sums over the resident folios.
struct Residency {
    slots: KVVec<Option<Resident>>,
    ptes: u64,
    pages: usize,
    folios: usize,
}

// Four slots per cache line: the table costs 8 bytes per 1 KiB of object.
const _: () = assert!(core::mem::size_of::<Option<Resident>>() <= 32);

impl Residency {
    const fn new() -> Self {
        Self {
            slots: KVVec::new(),
            ptes: 0,
            pages: 0,
            folios: 0,
        }
    }

    /// An empty table for an object of `pages` pages.
    fn alloc_slots(pages: usize) -> Result<KVVec<Option<Resident>>> {
        let mut slots = KVVec::with_capacity(pages, GFP_KERNEL)?;
        for _ in 0..pages {
            // Within the capacity: does not allocate.
            slots.push(None, GFP_KERNEL)?;
        }
        Ok(slots)
    }

    fn resident(&self, first: usize) -> Option<&Resident> {
        self.slots.get(first)?.as_ref()
    }

    /// Makes `page`'s folio resident, unless it is already: then `page` is
    /// given back (a spare reference, for the caller to drop).
    fn insert(&mut self, page: PageRef) -> core::result::Result<(), PageRef> {
        let (first, nr) = (page.first(), page.nr_pages());
        match self.slots.get_mut(first) {
            Some(slot @ None) => {
                *slot = Some(Resident { page, ptes: 0 });
                self.pages += nr;
                self.folios += 1;
                Ok(())
            }
            _ => Err(page),
        }
    }

    /// Counts `n` more page table entries into the folio at `first`.
    fn add_ptes(&mut self, first: usize, n: u32) {
        if let Some(Some(r)) = self.slots.get_mut(first) {
            r.ptes += n;
            self.ptes += u64::from(n);
        }
    }

    /// Counts `n` fewer entries into the folio at `first`, and takes it out
    /// if no entry is left.
    fn sub_ptes(&mut self, first: usize, n: u32) -> Option<Resident> {
        let r = self.slots.get_mut(first)?.as_mut()?;
        r.ptes -= n;
        self.ptes -= u64::from(n);
        if r.ptes == 0 {
            self.take(first)
        } else {
            None
        }
    }

    /// Takes the folio at `first` out, whatever points into it.
    fn take(&mut self, first: usize) -> Option<Resident> {
        let r = self.slots.get_mut(first)?.take()?;
        self.ptes -= u64::from(r.ptes);
        self.pages -= r.page.nr_pages();
        self.folios -= 1;
        Some(r)
    }

    /// The resident folio that starts first in pages `from..=last`: its
    /// first page and size. To find the folios overlapping a range of
    /// pages, start from [`Self::scan_start`] of its first page.
    fn next(&self, from: usize, last: usize) -> Option<(usize, usize)> {
        let end = last.saturating_add(1).min(self.slots.len());
        (from..end).find_map(|i| Some((i, self.slots[i].as_ref()?.page.nr_pages())))
    }

    /// Where a folio overlapping page `index` may start, at the earliest.
    fn scan_start(index: usize) -> usize {
        index - index % MAX_FOLIO_PAGES
    }

    /// Takes every resident folio out, with the table: for the caller to
    /// drop outside its locks. The next fault allocates a new table.
    fn take_all(&mut self) -> Residency {
        core::mem::replace(self, Self::new())
    }
}

/// A binding: part of an object mapped at a GPU address.
pub(crate) struct Binding {
    pub(crate) obj: ARef<GemObject>,
    pub(crate) va: u64,
    pub(crate) bo_offset: u64,
    pub(crate) size: u64,
    pub(crate) readonly: bool,
}

/// The GPU address of object page `index` in a mapping of
/// `[bo_offset, bo_offset + size)` of the object at `va`, if it maps it.
fn va_of(va: u64, bo_offset: u64, size: u64, index: usize) -> Option<u64> {
    let off = (index as u64).checked_mul(PAGE)?;
    (off >= bo_offset && off < bo_offset + size).then(|| va + off - bo_offset)
}

impl Binding {
    /// The GPU address of object page `index`, if this binding maps it.
    pub(crate) fn va_of(&self, index: usize) -> Option<u64> {
        va_of(self.va, self.bo_offset, self.size, index)
    }
}

/// Where an object is bound; keyed by (page table address, GPU address).
struct Mapping {
    /// The page table of the VM of the binding.
    pt: *const SpinLock<PageTable>,
    va: u64,
    bo_offset: u64,
    size: u64,
}

// SAFETY: `pt` is only compared and dereferenced while the binding exists,
// in the VM that owns the page table (a mapping is removed with its
// binding).
unsafe impl Send for Mapping {}

impl Mapping {
    fn va_of(&self, index: usize) -> Option<u64> {
        va_of(self.va, self.bo_offset, self.size, index)
    }
}

/// State shared by the GEM object and gemfs's owner callbacks.
struct BoInner {
    resident: Residency,
    mappings: RBTree<(usize, u64), Mapping>,
    madv: u32,
    /// The shrinker dropped the contents of this `DONTNEED` object.
    purged: bool,
    /// Truncations and hole punches of the object's file so far (gemfs's
    /// `invalidate`): a fault that got its folio before one of them drops
    /// it, as the folio may have left the file.
    invalidations: u64,
    /// `EXEC`s making the object's pages resident for their jobs whose
    /// fences are not yet in the reservation object (see
    /// [`Bo::begin_submission`]): release and the shrinker refuse its
    /// folios meanwhile.
    submissions: u32,
}

/// The owner of an object's memory: what gemfs calls back into.
#[pin_data]
pub(crate) struct BoOwner {
    #[pin]
    inner: SpinLock<BoInner>,
    /// The device's objects, whose page counts the shrinker reads.
    objects: Arc<Objects>,
    /// Whether folios are gemfs holds (not pinned): resident pages count
    /// as held for the shrinker.
    gemfs: bool,
    /// The GEM object's reservation object, once the object exists: every
    /// job that may use the object has its fence there (see
    /// [`Bo::set_busy`]). For gemfs's release callback, which gets the
    /// owner but not the GEM object.
    resv: AtomicPtr<bindings::dma_resv>,
    released: AtomicU64,
    refused: AtomicU64,
    gpu_faults: AtomicU64,
}

impl BoOwner {
    /// Whether no job that may use the object is running: every fence in
    /// its reservation object has signalled (all usages: what the engine
    /// may read, write, and the bookkeeping of jobs submitted before the
    /// object was bound, see [`Bo::set_busy`]).
    fn idle(&self) -> bool {
        self.resv()
            .map_or(true, |r| r.test_signaled(ResvUsage::Bookkeep))
    }

    /// Whether a job may use the object's folios: one is queued or running
    /// ([`Self::idle`]), or is being submitted, its pages made resident
    /// but its fence not yet added ([`Bo::begin_submission`]). Under the
    /// object lock, which the submission's mark is changed under.
    fn in_use(&self, inner: &BoInner) -> bool {
        inner.submissions != 0 || !self.idle()
    }

    /// The object's reservation object; `None` before the GEM object is
    /// made, when no job can have used it.
    fn resv(&self) -> Option<&Resv> {
        let p = self.resv.load(Ordering::Acquire);
        // SAFETY: set once, by `Bo::create`, to the reservation object of
        // the GEM object whose data holds this owner. That reservation
        // object outlives every use of the owner here: the owner is used by
        // the GEM object's own methods (while it is alive) and by gemfs's
        // release callback, and the object's `Drop` (which `gem::Object`
        // runs before it releases the C part, reservation object included)
        // destroys the gemfs object, which waits for running callbacks and
        // calls none afterwards.
        (!p.is_null()).then(|| unsafe { Resv::from_raw(p) })
    }

    /// Accounts pages that device page tables now point into.
    fn held_add(&self, pages: usize) {
        if self.gemfs {
            self.objects.held_pages.fetch_add(pages, Ordering::Relaxed);
        }
    }

    /// Accounts pages of resident folios given up.
    fn held_sub(&self, pages: usize) {
        if self.gemfs {
            self.objects.held_pages.fetch_sub(pages, Ordering::Relaxed);
        }
    }

    /// Clears every page table entry into the resident folio at `first`,
    /// of `nr` pages, in every VM it is mapped in. Returns how many there
    /// were.
    fn unmap_folio(inner: &BoInner, first: usize, nr: usize) -> u32 {
        let mut cleared = 0;
        for m in inner.mappings.values() {
            // SAFETY: a mapping exists only while its binding does, and the
            // VM removes its bindings before it and its page table go away.
            let pt = unsafe { &*m.pt };
            let mut pt = pt.lock();
            for index in first..first + nr {
                if m.va_of(index).is_some_and(|va| pt.clear(va)) {
                    cleared += 1;
                }
            }
        }
        cleared
    }
}

enum Backing {
    Gemfs(gemfs::Object<BoOwner>),
    Shmem(ARef<File>),
    /// Imported: the page frame number of each page of the dma-buf.
    Import(KVec<usize>),
    /// Discrete mode: a TTM BO, in VRAM or system memory (`tbo.rs`). Its
    /// GPU entries are the TTM object's (`tbo::map_page()`), which moves:
    /// the owner records its bindings but has no residency.
    Ttm(ARef<ttm::Bo<crate::SoftGpu>>),
}

/// softgpu's GEM object data.
pub(crate) struct Bo {
    /// Unique on the device; the key in its object list.
    pub(crate) id: u64,
    pub(crate) pinned: bool,
    /// Size in pages.
    pages: usize,
    owner: Arc<BoOwner>,
    backing: Backing,
}

/// The header of debugfs `objects`: one line per object, with its id, size
/// in bytes, backing, madvise state, device page table entries into it, GPU
/// bindings, folios released (to migration or the shrinker), releases
/// refused as busy, and GPU faults that made a page resident.
pub(crate) fn show_header(p: &drm::Printer) {
    p.print(format_args!(
        "{:>8} {:>12} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}\n",
        "id", "size", "mode", "madv", "resident", "bindings", "released", "refused", "gpu_faults"
    ));
}

/// Outcome counters of an object, for `GEM_INFO`.
pub(crate) struct BoInfo {
    pub(crate) resident_pages: u64,
    pub(crate) released: u64,
    pub(crate) refused: u64,
    pub(crate) gpu_faults: u64,
    pub(crate) purgeable: bool,
    pub(crate) purged: bool,
}

impl Bo {
    fn new_owner(dev: &drm::Device<crate::SoftGpu>, gemfs: bool) -> Result<Arc<BoOwner>> {
        Arc::pin_init(
            pin_init!(BoOwner {
                inner <- new_spinlock!(
                    BoInner {
                        resident: Residency::new(),
                        mappings: RBTree::new(),
                        madv: uapi::SOFTGPU_MADV_WILLNEED,
                        purged: false,
                        invalidations: 0,
                        submissions: 0,
                    },
                    "softgpu_bo"
                ),
                objects: dev.data().objects.clone(),
                gemfs,
                resv: AtomicPtr::new(core::ptr::null_mut()),
                released: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                gpu_faults: AtomicU64::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// Creates the object of a foreign dma-buf (PRIME import), whose pages
    /// are listed by the mapping of the DRM core's attachment. That is a
    /// static attachment: the exporter keeps the pages in place for as long
    /// as the object lives (a vgem or drm_gem_shmem exporter pins them at
    /// attach), so the object does not need `move_notify`, and takes no
    /// reference on the pages. `EOPNOTSUPP` if the memory has no struct
    /// pages (the engine reaches memory through them) or is not made of
    /// whole pages.
    pub(crate) fn import(
        dev: &drm::Device<crate::SoftGpu>,
        import: &gem::Import<'_>,
    ) -> Result<ARef<GemObject>> {
        if cfg!(CONFIG_DMABUF_DEBUG) {
            // The core mangles the page links of the tables it gives
            // importers, to catch those that use the pages: we do.
            return Err(EOPNOTSUPP);
        }
        let size = import.attachment().dma_buf().size();
        let pfns = import.sg_table().pfns(size)?;
        let owner = Self::new_owner(dev, false)?;
        let objects = &dev.data().objects;
        let id = objects.new_id();
        let obj = GemObject::new_import(
            dev,
            import,
            Bo {
                id,
                pinned: false,
                pages: size / PAGE as usize,
                owner,
                backing: Backing::Import(pfns),
            },
        )?;
        obj.owner.resv.store(obj.resv().as_raw(), Ordering::Release);
        objects.insert(id, &obj)?;
        Ok(obj)
    }

    /// Whether the object was imported from another driver's dma-buf.
    pub(crate) fn is_import(&self) -> bool {
        matches!(self.backing, Backing::Import(_))
    }

    /// The TTM BO of a discrete-mode object.
    pub(crate) fn ttm(&self) -> Option<&ARef<ttm::Bo<crate::SoftGpu>>> {
        match &self.backing {
            Backing::Ttm(t) => Some(t),
            _ => None,
        }
    }

    /// Creates a discrete-mode object of `size` bytes on `dev`: a TTM BO
    /// placed as `placement` says (`tbo.rs`); `ENODEV` without a VRAM
    /// device.
    pub(crate) fn create_ttm(
        dev: &drm::Device<crate::SoftGpu>,
        size: usize,
        placement: &ttm::Placement,
        pool: bool,
    ) -> Result<ARef<GemObject>> {
        let (tbo, file) = crate::tbo::create(dev, size, placement, pool)?;
        let owner = Self::new_owner(dev, false)?;
        let objects = &dev.data().objects;
        let id = objects.new_id();
        let obj = GemObject::new(
            dev,
            size,
            file,
            Bo {
                id,
                pinned: false,
                pages: size / PAGE as usize,
                owner,
                backing: Backing::Ttm(tbo),
            },
        )?;
        obj.owner.resv.store(obj.resv().as_raw(), Ordering::Release);
        objects.insert(id, &obj)?;
        Ok(obj)
    }

    /// Creates an object of `size` bytes on `dev`.
    pub(crate) fn create(
        dev: &drm::Device<crate::SoftGpu>,
        size: usize,
        pinned: bool,
    ) -> Result<ARef<GemObject>> {
        let owner = Self::new_owner(dev, !pinned)?;
        let len = i64::try_from(size).map_err(|_| EINVAL)?;
        let norsv = kernel::bindings::VM_NORESERVE as usize;
        let (file, backing): (ARef<File>, _) = if pinned {
            let f = shmem::file_setup_internal(c_str!("softgpu-pinned"), len, norsv)?;
            // What drm_gem_shmem does for pages it keeps pinned.
            f.mapping().set_gfp_unmovable();
            (f.clone(), Backing::Shmem(f))
        } else {
            let o = dev
                .data()
                .mount
                .create_object(c_str!("softgpu"), size, owner.clone())?;
            (o.file().into(), Backing::Gemfs(o))
        };
        let objects = &dev.data().objects;
        let id = objects.new_id();
        let obj = GemObject::new(
            dev,
            size,
            file,
            Bo {
                id,
                pinned,
                pages: size / PAGE as usize,
                owner,
                backing,
            },
        )?;
        // Before any binding, so before the first hold gemfs may ask for.
        obj.owner.resv.store(obj.resv().as_raw(), Ordering::Release);
        objects.insert(id, &obj)?;
        Ok(obj)
    }

    /// Takes a reference to the folio of page `index` for the device (or,
    /// for an import, finds the exporter's page).
    fn acquire(obj: &GemObject, index: usize) -> Result<PageRef> {
        match &obj.backing {
            Backing::Gemfs(o) => Ok(PageRef::Held(o.get_folio(index)?)),
            Backing::Shmem(f) => Ok(PageRef::Pinned(shmem::read_folio(f.mapping(), index)?)),
            Backing::Import(pfns) => Ok(PageRef::Imported {
                pfn: *pfns.get(index).ok_or(EFAULT)?,
                index,
            }),
            // Mapped by `tbo::map_page()`, never acquired here.
            Backing::Ttm(_) => Err(EOPNOTSUPP),
        }
    }

    /// Records that the VM of page table `pt` maps the object at `va`.
    pub(crate) fn add_mapping(
        &self,
        pt: &SpinLock<PageTable>,
        va: u64,
        bo_offset: u64,
        size: u64,
    ) -> Result {
        let m = Mapping {
            pt: core::ptr::from_ref(pt),
            va,
            bo_offset,
            size,
        };
        let key = (core::ptr::from_ref(pt) as usize, va);
        // Allocated here: the object lock is a spinlock (gemfs's release,
        // which takes it, may not sleep).
        let node = RBTreeNode::new(key, m, GFP_KERNEL)?;
        if let Backing::Ttm(t) = &self.backing {
            // Its entries are the TTM object's, which moves (`tbo.rs`).
            crate::tbo::add_gpu_mapping(t, pt, va, size)?;
        }
        let mut inner = self.owner.inner.lock();
        if inner.purged {
            drop(inner);
            if let Backing::Ttm(t) = &self.backing {
                // Recorded above, nothing mapped through it yet: undone,
                // so that no record outlives the binding that failed.
                crate::tbo::remove_gpu_mapping(t, pt, va);
            }
            return Err(EFAULT);
        }
        inner.mappings.insert(node);
        Ok(())
    }

    /// Forgets binding `b` of the VM of page table `pt`: clears its entries
    /// and drops the folios no entry points into any more. Called with the
    /// VM's bindings locked, and `b` no longer in them, so no fault fills
    /// its entries meanwhile.
    ///
    /// A binding may span GiBs: its pages are done a PMD's worth (one
    /// largest folio, [`MAX_FOLIO_PAGES`]) at a time under the spinlocks,
    /// yielding between. The mapping stays recorded until the end, so that
    /// a release or the shrinker, which may run between two pieces, clears
    /// this binding's entries too when it takes a folio.
    pub(crate) fn remove_mapping(&self, pt: &SpinLock<PageTable>, b: &Binding) {
        let key = (core::ptr::from_ref(pt) as usize, b.va);
        if let Backing::Ttm(t) = &self.backing {
            // Nothing resident here: the entries are the TTM object's.
            crate::tbo::remove_gpu_mapping(t, pt, b.va);
            let mapping = self.owner.inner.lock().mappings.remove_node(&key);
            drop(mapping);
            return;
        }
        let first = (b.bo_offset / PAGE) as usize;
        let last = first + (b.size / PAGE) as usize - 1;
        // Folios are aligned to their size, at most `MAX_FOLIO_PAGES`: none
        // straddles two pieces that start at multiples of it.
        let mut at = Residency::scan_start(first);
        loop {
            let piece_last = (at + MAX_FOLIO_PAGES - 1).min(last);
            let mut inner = self.owner.inner.lock();
            let mut pt = pt.lock();
            while let Some((head, nr)) = inner.resident.next(at, piece_last) {
                at = head + nr;
                let mut cleared = 0;
                for index in head.max(first)..(head + nr).min(last + 1) {
                    if b.va_of(index).is_some_and(|va| pt.clear(va)) {
                        cleared += 1;
                    }
                }
                if let Some(gone) = inner.resident.sub_ptes(head, cleared) {
                    self.owner.held_sub(nr);
                    // Under the locks, as putting a hold or a folio
                    // reference does not sleep.
                    drop(gone);
                }
            }
            drop(pt);
            at = piece_last + 1;
            if at > last {
                let mapping = inner.mappings.remove_node(&key);
                drop(inner);
                drop(mapping);
                return;
            }
            drop(inner);
            cond_resched();
        }
    }

    /// Makes page `index`'s folio resident and maps its pages of binding
    /// `b` in page table `pt`, counting it as a GPU fault if `for_job` (a
    /// submission makes it resident for its job, see `Vm::make_resident`).
    /// Called with the VM's bindings locked, so `b` stays, never from a
    /// job: it may allocate with reclaim and sleep on folio locks.
    pub(crate) fn populate(
        &self,
        pt: &SpinLock<PageTable>,
        b: &Binding,
        index: usize,
        for_job: bool,
    ) -> Result {
        let obj = &*b.obj;
        if let Backing::Ttm(t) = &self.backing {
            // Mapped from wherever the TTM object is (`tbo.rs`); its memory
            // is the device's own, atomics work on it.
            let perm = if b.readonly { Perm::Read } else { Perm::Atomic };
            let va = b.va_of(index).ok_or(EINVAL)?;
            crate::tbo::map_page(t, pt, va, index, perm)?;
            if for_job {
                self.owner.gpu_faults.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(());
        }
        let invalidations = {
            let inner = self.owner.inner.lock();
            if inner.purged {
                return Err(EFAULT);
            }
            inner.invalidations
        };
        // May sleep and lock the folio: no spinlock held here.
        let page = Self::acquire(obj, index)?;
        if let Some(folio) = page.folio().filter(|_| !b.readonly) {
            // The device may write to it from now on, behind the page
            // cache's back: make sure it is written back before reclaim.
            // (An exporter's pages are the exporter's to keep.)
            folio.lock().mark_dirty();
        }
        let (first, nr, pfn) = (page.first(), page.nr_pages(), page.pfn());
        if nr > MAX_FOLIO_PAGES || first % nr != 0 || first + nr > self.pages {
            // `Residency` relies on this: shmem's folios are at most
            // PMD-sized and naturally aligned in the file.
            kernel::lockdep::warn(c_str!("softgpu: a folio larger than a PMD, or unaligned"));
            return Err(EINVAL);
        }
        // The residency table, allocated on the first fault after creation
        // or after the shrinker took the folios: not under the spinlock.
        let mut slots = None;
        let mut inner = loop {
            let inner = self.owner.inner.lock();
            if inner.purged {
                // Purged while we acquired the folio: truncation has taken
                // it out of the file; dropping `page` drops our reference.
                return Err(EFAULT);
            }
            if !inner.resident.slots.is_empty() || slots.is_some() {
                break inner;
            }
            drop(inner);
            slots = Some(Residency::alloc_slots(self.pages)?);
        };
        if inner.resident.slots.is_empty() {
            if let Some(s) = slots.take() {
                inner.resident.slots = s;
            }
        }
        if inner.invalidations != invalidations {
            // The file was truncated or punched after we got the folio,
            // which may have left it: map nothing, the caller tries again.
            drop(inner);
            drop(page);
            drop(slots);
            return Ok(());
        }
        // If the folio is resident already, the reference just taken is
        // spare, and dropped after the locks.
        let spare = match inner.resident.insert(page) {
            Ok(()) => {
                self.owner.held_add(nr);
                None
            }
            Err(page) => Some(page),
        };
        if inner.resident.resident(first).map(|r| r.page.pfn()) != Some(pfn) {
            // Another folio at this index is resident: cannot happen, as
            // release removes a folio before migration replaces it.
            drop(inner);
            kernel::lockdep::warn(c_str!("softgpu: two resident folios at one index"));
            return Err(EINVAL);
        }
        let mut pt = pt.lock();
        let mut set = 0;
        for i in 0..nr {
            if let Some(va) = b.va_of(first + i) {
                // Object memory is the device's own: atomics work on it.
                let perm = if b.readonly { Perm::Read } else { Perm::Atomic };
                if pt.set(va, Pte::system(pfn + i, perm)) {
                    set += 1;
                }
            }
        }
        drop(pt);
        inner.resident.add_ptes(first, set);
        drop(inner);
        drop(spare);
        drop(slots);
        if for_job {
            self.owner.gpu_faults.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Marks the object busy until `fence` signals, in its reservation
    /// object, where migration and the shrinker look (and fdinfo's
    /// `drm-active-*`, and PRIME importers): a job was submitted on a VM
    /// where the object is bound, writable or not (`Some(write)`), or the
    /// object was bound in a VM where that job is still queued or running
    /// (`None`: the job submitted no access to it, but may reach a pinned
    /// object or an import, which binding maps at once, a bookkeeping
    /// fence).
    pub(crate) fn set_busy(obj: &GemObject, fence: &Fence, write: Option<bool>) -> Result {
        let usage = match write {
            Some(true) => ResvUsage::Write,
            Some(false) => ResvUsage::Read,
            None => ResvUsage::Bookkeep,
        };
        obj.resv().add_fence(fence, usage)?;
        if let Some(t) = obj.ttm() {
            // Where TTM looks before it moves or evicts the object.
            t.resv().add_fence(fence, usage)?;
        }
        Ok(())
    }

    /// Marks the object as being submitted to: an `EXEC` is about to make
    /// its pages resident for a job whose fence is not yet in the
    /// reservation object. Until [`Self::end_submission`], which comes
    /// after that fence was added, release and the shrinker refuse the
    /// object's folios at once (without waiting: there is no fence to
    /// wait for yet, and the submission itself may be the allocation that
    /// entered compaction), so that no page the job will use can leave
    /// between its being made resident and the object becoming busy.
    /// Truncation and hole punching still take them (see
    /// [`gemfs::Owner::invalidate`]): the job then fails at that page.
    pub(crate) fn begin_submission(&self) {
        if let Backing::Ttm(t) = &self.backing {
            // Nor do TTM's moves and evictions take its memory.
            crate::tbo::begin_submission(t);
        }
        self.owner.inner.lock().submissions += 1;
    }

    /// Ends what [`Self::begin_submission`] began.
    pub(crate) fn end_submission(&self) {
        let mut inner = self.owner.inner.lock();
        inner.submissions = inner.submissions.saturating_sub(1);
        drop(inner);
        if let Backing::Ttm(t) = &self.backing {
            crate::tbo::end_submission(t);
        }
    }

    /// Sets the userspace madvise state; returns whether the contents are
    /// retained. A purged object stays purged.
    pub(crate) fn madvise(&self, madv: u32) -> bool {
        let mut inner = self.owner.inner.lock();
        if inner.purged {
            return false;
        }
        let pages = self.pages;
        let purgeable = &self.owner.objects.purgeable_pages;
        match (inner.madv, madv) {
            (uapi::SOFTGPU_MADV_WILLNEED, uapi::SOFTGPU_MADV_DONTNEED) => {
                purgeable.fetch_add(pages, Ordering::Relaxed);
            }
            (uapi::SOFTGPU_MADV_DONTNEED, uapi::SOFTGPU_MADV_WILLNEED) => {
                purgeable.fetch_sub(pages, Ordering::Relaxed);
            }
            _ => {}
        }
        inner.madv = madv;
        true
    }

    /// What the shrinker does to an object (see `objects.rs`); returns the
    /// pages released from the device (given back to reclaim, not freed)
    /// and the pages purged (freed).
    pub(crate) fn shrink(&self, obj: &GemObject, purge: bool) -> (usize, usize) {
        if self.is_import() {
            // Not ours: the exporter's memory, pinned while attached.
            return (0, 0);
        }
        let mut inner = self.owner.inner.lock();
        if self.owner.in_use(&inner) {
            // A job may be using it.
            return (0, 0);
        }
        if purge
            && inner.madv == uapi::SOFTGPU_MADV_DONTNEED
            && !inner.purged
            && inner.mappings.iter().next().is_none()
        {
            // From here on, binds and GPU faults fail with EFAULT.
            inner.purged = true;
            self.owner
                .objects
                .purgeable_pages
                .fetch_sub(self.pages, Ordering::Relaxed);
            // Unbound, so nothing is resident.
            drop(inner);
            let Some(file) = obj.backing_file() else {
                return (0, 0);
            };
            let cached = file.mapping().nr_pages();
            if shmem::truncate_range(file, 0, -1).is_err() {
                kernel::lockdep::warn(c_str!("softgpu: cannot purge a shmem object"));
                return (0, 0);
            }
            return (0, cached);
        }
        if !self.owner.gemfs || inner.resident.folios == 0 {
            return (0, 0);
        }
        // Every resident folio goes, as migration's release takes one: its
        // entries cleared in every VM, then its hold dropped (under the
        // lock: putting a hold does not sleep). A PMD's worth of pages at a
        // time, yielding between (an object may be GiBs), and stopping if a
        // job was submitted meanwhile.
        let (mut pages, mut folios) = (0, 0);
        let mut at = 0;
        loop {
            let piece_last = (at + MAX_FOLIO_PAGES - 1).min(self.pages - 1);
            while let Some((head, nr)) = inner.resident.next(at, piece_last) {
                at = head + nr;
                let cleared = BoOwner::unmap_folio(&inner, head, nr);
                if let Some(r) = inner.resident.take(head) {
                    if r.ptes != cleared {
                        kernel::lockdep::warn(c_str!(
                            "softgpu: a shrunk folio's entries were miscounted"
                        ));
                    }
                    self.owner.held_sub(nr);
                    pages += nr;
                    folios += 1;
                    drop(r);
                }
            }
            at = piece_last + 1;
            if at >= self.pages || inner.resident.folios == 0 {
                break;
            }
            drop(inner);
            cond_resched();
            inner = self.owner.inner.lock();
            if self.owner.in_use(&inner) {
                break;
            }
        }
        // An empty table goes too (the next fault allocates one), outside
        // the object lock.
        let table = (inner.resident.folios == 0).then(|| inner.resident.take_all());
        drop(inner);
        drop(table);
        self.owner.released.fetch_add(folios, Ordering::Relaxed);
        (pages, 0)
    }

    pub(crate) fn info(&self) -> BoInfo {
        let inner = self.owner.inner.lock();
        BoInfo {
            resident_pages: inner.resident.ptes,
            released: self.owner.released.load(Ordering::Relaxed),
            refused: self.owner.refused.load(Ordering::Relaxed),
            gpu_faults: self.owner.gpu_faults.load(Ordering::Relaxed),
            purgeable: inner.madv == uapi::SOFTGPU_MADV_DONTNEED && !inner.purged,
            purged: inner.purged,
        }
    }

    /// One line of debugfs `objects` (see [`show_header`]).
    pub(crate) fn show(&self, p: &drm::Printer) {
        let inner = self.owner.inner.lock();
        let (resident, bindings) = (inner.resident.ptes, inner.mappings.values().count());
        let madv = match (inner.purged, inner.madv) {
            (true, _) => "purged",
            (false, uapi::SOFTGPU_MADV_DONTNEED) => "dontneed",
            _ => "willneed",
        };
        drop(inner);
        p.print(format_args!(
            "{:>8} {:>12} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}\n",
            self.id,
            self.pages * PAGE as usize,
            match self.backing {
                Backing::Import(_) => "import",
                Backing::Ttm(_) => "ttm",
                _ if self.pinned => "pinned",
                _ => "gemfs",
            },
            madv,
            resident,
            bindings,
            self.owner.released.load(Ordering::Relaxed),
            self.owner.refused.load(Ordering::Relaxed),
            self.owner.gpu_faults.load(Ordering::Relaxed),
        ));
    }

    /// The backing file; `None` for an import.
    fn file(&self) -> Option<&File> {
        match &self.backing {
            Backing::Gemfs(o) => Some(o.file()),
            Backing::Shmem(f) => Some(f),
            Backing::Import(_) | Backing::Ttm(_) => None,
        }
    }

    /// Pages of the object in memory: in the page cache of its file, or all
    /// of an import's (the exporter keeps them while attached).
    fn pages_in_memory(&self) -> usize {
        self.file().map_or(self.pages, |f| f.mapping().nr_pages())
    }
}

impl Drop for Bo {
    fn drop(&mut self) {
        // Holds go before the gemfs object (`backing`), which must not be
        // destroyed with holds left. No binding is left: each keeps a
        // reference to the GEM object.
        self.owner.objects.remove(self.id);
        let resident = {
            let mut inner = self.owner.inner.lock();
            if inner.madv == uapi::SOFTGPU_MADV_DONTNEED && !inner.purged {
                self.owner
                    .objects
                    .purgeable_pages
                    .fetch_sub(self.pages, Ordering::Relaxed);
            }
            let r = inner.resident.take_all();
            self.owner.held_sub(r.pages);
            r
        };
        // Outside the lock, yielding now and then: an object may have a
        // GiB of holds.
        let mut resident = resident;
        for (i, slot) in resident.slots.iter_mut().enumerate() {
            drop(slot.take());
            if i % MAX_FOLIO_PAGES == MAX_FOLIO_PAGES - 1 {
                cond_resched();
            }
        }
    }
}

impl gem::DriverObject for Bo {
    type Driver = crate::SoftGpu;

    fn status(&self) -> u32 {
        let mut s = 0;
        if self.pages_in_memory() != 0 {
            s |= gem::STATUS_RESIDENT;
        }
        let inner = self.owner.inner.lock();
        if inner.madv == uapi::SOFTGPU_MADV_DONTNEED && !inner.purged {
            s |= gem::STATUS_PURGEABLE;
        }
        s
    }

    fn resident_size(&self) -> usize {
        self.pages_in_memory() * PAGE as usize
    }

    fn ttm_bo(&self) -> Option<&ttm::MmapBo> {
        self.ttm()?.mmap_bo()
    }

    /// fdinfo by region: a TTM object where it is (`tbo::memory_info`),
    /// every other object in system memory.
    fn memory_info(&self) -> Result<gem::MemoryInfo> {
        match self.ttm() {
            Some(tbo) => crate::tbo::memory_info(tbo),
            None => Ok(gem::MemoryInfo {
                region: crate::tbo::REGION_SYSTEM,
                resident: self.resident_size(),
                status: self.status(),
            }),
        }
    }
}

impl gemfs::Owner for BoOwner {
    fn release(
        owner: ArcBorrow<'_, Self>,
        _obj: &ObjectRef,
        folio: &LockedFolio<'_>,
        mode: MigrateMode,
    ) -> Result {
        // Direct compaction calls this from an allocation: let lockdep
        // treat it as reclaim every time, so that the wait below for jobs
        // whose execution allocates, or a lock taken here that is held
        // around an allocation, is reported (Documentation/gpu/softgpu.rst,
        // "Lock order").
        kernel::shrinker::as_reclaim(|| Self::do_release(&owner, folio, mode))
    }

    /// Truncation or a hole punch of the object's file (`MADV_REMOVE` on a
    /// CPU mapping), or memory failure: clears every entry into the folios
    /// overlapping pages `first..=last` and drops them, whatever the jobs
    /// running. Engine accesses happen under the page table lock, so none
    /// touches those folios afterwards: a job that gets there fails with
    /// `EFAULT` (it may not take folios, see `Vm::make_resident`). The next
    /// submission gets the file's folio once the truncation is over (zeros
    /// in a hole, `EINVAL` beyond the end, `EIO` if poisoned).
    fn invalidate(owner: ArcBorrow<'_, Self>, _obj: &ObjectRef, first: usize, last: usize) {
        let mut guard = owner.inner.lock();
        let inner = &mut *guard;
        inner.invalidations += 1;
        let (mut at, mut released, mut miscounted) = (Residency::scan_start(first), 0, false);
        while let Some((head, nr)) = inner.resident.next(at, last) {
            at = head + nr;
            if head + nr <= first {
                continue;
            }
            let Some(res) = inner.resident.take(head) else {
                continue;
            };
            owner.held_sub(nr);
            let mut cleared = 0;
            for m in inner.mappings.values() {
                // SAFETY: a mapping exists only while its binding does, and
                // the VM removes its bindings before it and its page table
                // go away.
                let pt = unsafe { &*m.pt };
                let mut pt = pt.lock();
                for index in head..head + nr {
                    if m.va_of(index).is_some_and(|va| pt.clear(va)) {
                        cleared += 1;
                    }
                }
            }
            miscounted |= res.ptes != cleared;
            // Under the lock, as putting a hold does not sleep.
            drop(res);
            released += 1;
        }
        drop(guard);
        if miscounted {
            kernel::lockdep::warn(c_str!(
                "softgpu: an invalidated folio's entries were miscounted"
            ));
        }
        owner.released.fetch_add(released, Ordering::Relaxed);
    }
}

impl BoOwner {
    fn do_release(owner: &BoOwner, folio: &LockedFolio<'_>, mode: MigrateMode) -> Result {
        let (first, nr, pfn) = (folio.index(), folio.nr_pages(), folio.pfn());
        let ours = |inner: &BoInner| {
            inner
                .resident
                .resident(first)
                .is_some_and(|r| r.page.pfn() == pfn)
        };
        let submitting = {
            let inner = owner.inner.lock();
            if !ours(&inner) {
                // gemfs asks about any folio with extra references: these
                // are someone else's.
                return Err(ENOENT);
            }
            inner.submissions != 0
        };
        if submitting {
            // A job is being submitted, its fence not yet added: its pages
            // must stay. No waiting (nothing to wait for yet; and this may
            // be the submission's own allocation in direct compaction).
            owner.refused.fetch_add(1, Ordering::Relaxed);
            return Err(EBUSY);
        }
        if !owner.idle() {
            // A job that may use the object is queued or running: the
            // device may be accessing this folio right now.
            let done = match (mode, owner.resv()) {
                (MigrateMode::Async, _) | (_, None) => false,
                (_, Some(resv)) => resv.wait_timeout(
                    ResvUsage::Bookkeep,
                    kernel::time::msecs_to_jiffies(RELEASE_WAIT_MS),
                )?,
            };
            if !done {
                owner.refused.fetch_add(1, Ordering::Relaxed);
                return Err(EBUSY);
            }
        }
        let (res, cleared) = {
            let mut inner = owner.inner.lock();
            if owner.in_use(&inner) {
                // A job was submitted while we waited.
                drop(inner);
                owner.refused.fetch_add(1, Ordering::Relaxed);
                return Err(EBUSY);
            }
            if !ours(&inner) {
                // Released meanwhile (unbound, or taken by the shrinker):
                // the references left, if any, are someone else's.
                return Err(ENOENT);
            }
            let Some(res) = inner.resident.take(first) else {
                return Err(ENOENT);
            };
            owner.held_sub(nr);
            (res, Self::unmap_folio(&inner, first, nr))
        };
        if res.ptes != cleared {
            kernel::lockdep::warn(c_str!(
                "softgpu: a released folio's entries were miscounted"
            ));
        }
        // Drops the hold, outside the object lock.
        drop(res);
        owner.released.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
