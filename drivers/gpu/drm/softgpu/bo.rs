// SPDX-License-Identifier: GPL-2.0

//! Buffer objects: GEM objects backed by gemfs (or, in baseline mode, by a
//! plain shmem file that stays pinned while bound).
//!
//! An object holds a folio only while at least one device page table entry
//! points into it ("resident"). With gemfs, the folio is taken with a gemfs
//! hold, and migration asks for it back through [`BoOwner::release`]: if no
//! job that may use the object is running, the entries are cleared (the
//! modelled TLB flushed with them) and the hold dropped; the next GPU
//! access faults and takes the new folio. In baseline (pinned) mode the
//! folio is an ordinary page reference, which migration cannot move.
//!
//! An object imported from another driver's dma-buf (PRIME) has neither:
//! its pages are the exporter's, listed by the mapping of the DRM core's
//! attachment, which pins them for as long as the object lives (a static
//! import, see `Bo::import`). Its page table entries point at them without
//! taking references; gemfs, migration and the shrinker never see it.

use crate::{
    objects::Objects,
    vm::{Binding, Perm, Pte, Vm, PAGE},
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    c_str,
    dma_fence::Fence,
    drm::{self, gem},
    folio::{Folio, LockedFolio},
    fs::File,
    gemfs::{self, Hold, ObjectRef},
    mm::migrate::MigrateMode,
    new_spinlock,
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
    shmem,
    sync::{Arc, ArcBorrow, SpinLock},
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
    first: usize,
    ptes: u64,
}

/// Where an object is bound; keyed by (VM address, GPU address).
struct Mapping {
    vm: *const Vm,
    va: u64,
    bo_offset: u64,
    size: u64,
}

// SAFETY: `vm` is only compared and dereferenced while the binding that
// holds an `Arc<Vm>` exists (a mapping is removed with its binding).
unsafe impl Send for Mapping {}

impl Mapping {
    fn va_of(&self, index: usize) -> Option<u64> {
        crate::vm::va_of(self.va, self.bo_offset, self.size, index)
    }
}

/// State shared by the GEM object and gemfs's owner callbacks.
struct BoInner {
    /// Resident folios by the index of their last page.
    resident: RBTree<usize, Resident>,
    mappings: RBTree<(usize, u64), Mapping>,
    /// The fence of the last job that may use the object.
    last_use: Option<ARef<Fence>>,
    madv: u32,
    /// The shrinker dropped the contents of this `DONTNEED` object.
    purged: bool,
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
    released: AtomicU64,
    refused: AtomicU64,
    gpu_faults: AtomicU64,
}

impl BoOwner {
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

    /// Clears every page table entry into the object and takes all its
    /// resident folios out, for the caller to drop outside the lock.
    fn unmap_all(&self, inner: &mut BoInner) -> RBTree<usize, Resident> {
        for m in inner.mappings.values() {
            // SAFETY: a mapping exists only while its binding does, and the
            // VM removes its bindings before it goes away.
            let vm = unsafe { &*m.vm };
            let mut pt = vm.pt.lock();
            let first = (m.bo_offset / PAGE) as usize;
            for index in first..first + (m.size / PAGE) as usize {
                if let Some(va) = m.va_of(index) {
                    pt.clear(va);
                }
            }
        }
        let gone = core::mem::take(&mut inner.resident);
        self.held_sub(gone.values().map(|r| r.page.nr_pages()).sum());
        gone
    }
}

enum Backing {
    Gemfs(gemfs::Object<BoOwner>),
    Shmem(ARef<File>),
    /// Imported: the page frame number of each page of the dma-buf.
    Import(KVec<usize>),
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
                        resident: RBTree::new(),
                        mappings: RBTree::new(),
                        last_use: None,
                        madv: uapi::SOFTGPU_MADV_WILLNEED,
                        purged: false,
                    },
                    "softgpu_bo"
                ),
                objects: dev.data().objects.clone(),
                gemfs,
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
            return Err(kernel::dma_buf::eopnotsupp());
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
        objects.insert(id, &obj)?;
        Ok(obj)
    }

    /// Whether the object was imported from another driver's dma-buf.
    pub(crate) fn is_import(&self) -> bool {
        matches!(self.backing, Backing::Import(_))
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
        }
    }

    /// Records that `vm` maps the object at `va`.
    pub(crate) fn add_mapping(&self, vm: &Vm, va: u64, bo_offset: u64, size: u64) -> Result {
        let m = Mapping {
            vm: core::ptr::from_ref(vm),
            va,
            bo_offset,
            size,
        };
        let key = (core::ptr::from_ref(vm) as usize, va);
        // Allocated here: the object lock is a spinlock (gemfs's release,
        // which takes it, may not sleep).
        let node = RBTreeNode::new(key, m, GFP_KERNEL)?;
        let mut inner = self.owner.inner.lock();
        if inner.purged {
            return Err(EFAULT);
        }
        inner.mappings.insert(node);
        Ok(())
    }

    /// Forgets binding `b` of `vm`: clears its page table entries and drops
    /// the folios no entry points into any more.
    pub(crate) fn remove_mapping(&self, vm: &Vm, b: &Binding) {
        let mut dropped = KVec::new();
        let mapping;
        {
            let mut inner = self.owner.inner.lock();
            mapping = inner
                .mappings
                .remove_node(&(core::ptr::from_ref(vm) as usize, b.va));
            let mut pt = vm.pt.lock();
            let first = (b.bo_offset / PAGE) as usize;
            let last = first + (b.size / PAGE) as usize - 1;
            let mut cursor = inner.resident.cursor_lower_bound(&first);
            while let Some(mut c) = cursor {
                let (_, r) = c.current_mut();
                if r.first > last {
                    break;
                }
                let nr = r.page.nr_pages();
                for index in r.first.max(first)..(r.first + nr).min(last + 1) {
                    if let Some(va) = b.va_of(index) {
                        if pt.clear(va) {
                            r.ptes -= 1;
                        }
                    }
                }
                if r.ptes == 0 {
                    let (next, node) = c.remove_current();
                    self.owner.held_sub(nr);
                    // Dropped outside the locks; if the vector cannot grow,
                    // `push` drops it right here, which is fine too:
                    // putting a hold does not sleep.
                    let _ = dropped.push(node, GFP_ATOMIC);
                    cursor = next;
                } else {
                    cursor = c.move_next();
                }
            }
        }
        drop(dropped);
        drop(mapping);
    }

    /// Makes page `index`'s folio resident and maps its pages of binding
    /// `b` in `vm`. Called with `vm`'s bindings locked, so `b` stays.
    pub(crate) fn populate(
        &self,
        vm: &Vm,
        b: &Binding,
        index: usize,
        job: Option<&ARef<Fence>>,
    ) -> Result {
        let obj = &*b.obj;
        if self.owner.inner.lock().purged {
            return Err(EFAULT);
        }
        // May sleep and lock the folio: no spinlock held here.
        let page = Self::acquire(obj, index)?;
        if let Some(folio) = page.folio().filter(|_| !b.readonly) {
            // The device may write to it from now on, behind the page
            // cache's back: make sure it is written back before reclaim.
            // (An exporter's pages are the exporter's to keep.)
            folio.lock().mark_dirty();
        }
        let (first, nr, pfn) = (page.first(), page.nr_pages(), page.pfn());
        let node = RBTreeNode::new(
            first + nr - 1,
            Resident {
                page,
                first,
                ptes: 0,
            },
            GFP_KERNEL,
        )?;
        let mut inner = self.owner.inner.lock();
        if inner.purged {
            // Purged while we acquired the folio: truncation has taken it
            // out of the file; dropping `node` drops our reference.
            drop(inner);
            drop(node);
            return Err(EFAULT);
        }
        if let Some(j) = job {
            inner.last_use = Some(j.clone());
        }
        let key = first + nr - 1;
        // If the folio is resident already, `node` (with the reference just
        // taken) is spare and dropped after the locks.
        let spare = if inner.resident.get(&key).is_none() {
            self.owner.held_add(nr);
            inner.resident.insert(node)
        } else {
            Some(node)
        };
        let Some(r) = inner.resident.get_mut(&key) else {
            return Err(EINVAL);
        };
        if r.page.pfn() != pfn {
            // Another folio at this index is resident: cannot happen, as
            // release removes a folio before migration replaces it.
            drop(inner);
            kernel::lockdep::warn(c_str!("softgpu: two resident folios at one index"));
            return Err(EINVAL);
        }
        let mut pt = vm.pt.lock();
        for i in 0..nr {
            if let Some(va) = b.va_of(first + i) {
                // Object memory is the device's own: atomics work on it.
                let perm = if b.readonly { Perm::Read } else { Perm::Atomic };
                let pte = Pte::new(pfn + i, perm);
                if pt.set(va, pte) {
                    r.ptes += 1;
                }
            }
        }
        drop(pt);
        drop(inner);
        if job.is_some() {
            self.owner.gpu_faults.fetch_add(1, Ordering::Relaxed);
        }
        drop(spare);
        Ok(())
    }

    /// Marks the object busy until `fence` signals (a job was submitted
    /// on a VM where it is bound, writable or not): for migration and the
    /// shrinker here, for fdinfo's `drm-active-*` and PRIME importers in
    /// the object's reservation object.
    pub(crate) fn set_busy(&self, obj: &GemObject, fence: &ARef<Fence>, write: bool) -> Result {
        obj.add_fence(fence, write)?;
        self.owner.inner.lock().last_use = Some(fence.clone());
        Ok(())
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
    /// pages released from the device and the pages purged.
    pub(crate) fn shrink(&self, obj: &GemObject, purge: bool) -> (usize, usize) {
        let mut inner = self.owner.inner.lock();
        if inner.last_use.as_ref().is_some_and(|f| !f.is_signaled()) {
            // A job may be using it.
            return (0, 0);
        }
        if self.is_import() {
            // Not ours: the exporter's memory, pinned while attached.
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
        if !self.owner.gemfs || inner.resident.iter().next().is_none() {
            return (0, 0);
        }
        let gone = self.owner.unmap_all(&mut inner);
        drop(inner);
        let pages = gone.values().map(|r| r.page.nr_pages()).sum();
        let folios = gone.values().count() as u64;
        // Drops the holds, outside the object lock.
        drop(gone);
        self.owner.released.fetch_add(folios, Ordering::Relaxed);
        (pages, 0)
    }

    pub(crate) fn info(&self) -> BoInfo {
        let inner = self.owner.inner.lock();
        BoInfo {
            resident_pages: inner.resident.values().map(|r| r.ptes).sum(),
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
        let (resident, bindings) = (
            inner.resident.values().map(|r| r.ptes).sum::<u64>(),
            inner.mappings.values().count(),
        );
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
            Backing::Import(_) => None,
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
            let r = core::mem::take(&mut inner.resident);
            self.owner
                .held_sub(r.values().map(|r| r.page.nr_pages()).sum());
            r
        };
        drop(resident);
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
}

impl gemfs::Owner for BoOwner {
    fn release(
        owner: ArcBorrow<'_, Self>,
        _obj: &ObjectRef,
        folio: &LockedFolio<'_>,
        mode: MigrateMode,
    ) -> Result {
        let (first, nr, pfn) = (folio.index(), folio.nr_pages(), folio.pfn());
        let ours = |inner: &BoInner| {
            inner
                .resident
                .get(&(first + nr - 1))
                .is_some_and(|r| r.page.pfn() == pfn)
        };
        let busy = {
            let inner = owner.inner.lock();
            if !ours(&inner) {
                // gemfs asks about any folio with extra references: these
                // are someone else's.
                return Err(ENOENT);
            }
            inner.last_use.clone()
        };
        if let Some(fence) = busy.filter(|f| !f.is_signaled()) {
            // A job that may use the object is running: the device may be
            // accessing this folio right now.
            let done = match mode {
                MigrateMode::Async => false,
                _ => fence.wait_timeout(kernel::time::msecs_to_jiffies(RELEASE_WAIT_MS))?,
            };
            if !done {
                owner.refused.fetch_add(1, Ordering::Relaxed);
                return Err(EBUSY);
            }
        }
        let res = {
            let mut inner = owner.inner.lock();
            if inner.last_use.as_ref().is_some_and(|f| !f.is_signaled()) {
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
            let Some(mut res) = inner.resident.remove(&(first + nr - 1)) else {
                return Err(ENOENT);
            };
            owner.held_sub(nr);
            for m in inner.mappings.values() {
                // SAFETY: a mapping exists only while its binding does, and
                // the VM removes its bindings before it goes away.
                let vm = unsafe { &*m.vm };
                let mut pt = vm.pt.lock();
                for index in first..first + nr {
                    if let Some(va) = m.va_of(index) {
                        if pt.clear(va) {
                            res.ptes -= 1;
                        }
                    }
                }
            }
            res
        };
        if res.ptes != 0 {
            kernel::lockdep::warn(c_str!("softgpu: released folio still mapped"));
        }
        // Drops the hold, outside the object lock.
        drop(res);
        owner.released.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
