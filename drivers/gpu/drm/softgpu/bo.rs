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

use crate::vm::{Binding, Pte, Vm, PAGE};
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
}

impl PageRef {
    fn folio(&self) -> &Folio {
        match self {
            PageRef::Held(h) => h.folio(),
            PageRef::Pinned(f) => f,
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
}

/// The owner of an object's memory: what gemfs calls back into.
#[pin_data]
pub(crate) struct BoOwner {
    #[pin]
    inner: SpinLock<BoInner>,
    released: AtomicU64,
    refused: AtomicU64,
    gpu_faults: AtomicU64,
}

enum Backing {
    Gemfs(gemfs::Object<BoOwner>),
    Shmem,
}

/// softgpu's GEM object data.
pub(crate) struct Bo {
    pub(crate) pinned: bool,
    owner: Arc<BoOwner>,
    backing: Backing,
}

/// Outcome counters of an object, for `GEM_INFO`.
pub(crate) struct BoInfo {
    pub(crate) resident_pages: u64,
    pub(crate) released: u64,
    pub(crate) refused: u64,
    pub(crate) gpu_faults: u64,
    pub(crate) purgeable: bool,
}

impl Bo {
    /// Creates an object of `size` bytes on `dev`.
    pub(crate) fn create(
        dev: &drm::Device<crate::SoftGpu>,
        size: usize,
        pinned: bool,
    ) -> Result<ARef<GemObject>> {
        let owner = Arc::pin_init(
            pin_init!(BoOwner {
                inner <- new_spinlock!(
                    BoInner {
                        resident: RBTree::new(),
                        mappings: RBTree::new(),
                        last_use: None,
                        madv: 0,
                    },
                    "softgpu_bo"
                ),
                released: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                gpu_faults: AtomicU64::new(0),
            }),
            GFP_KERNEL,
        )?;
        let len = i64::try_from(size).map_err(|_| EINVAL)?;
        let norsv = kernel::bindings::VM_NORESERVE as usize;
        let (file, backing): (ARef<File>, _) = if pinned {
            let f = shmem::file_setup_internal(c_str!("softgpu-pinned"), len, norsv)?;
            // What drm_gem_shmem does for pages it keeps pinned.
            f.mapping().set_gfp_unmovable();
            (f, Backing::Shmem)
        } else {
            let o = dev
                .data()
                .mount
                .create_object(c_str!("softgpu"), size, owner.clone())?;
            (o.file().into(), Backing::Gemfs(o))
        };
        GemObject::new(
            dev,
            size,
            file,
            Bo {
                pinned,
                owner,
                backing,
            },
        )
    }

    /// Takes a reference to the folio of page `index` for the device.
    fn acquire(obj: &GemObject, index: usize) -> Result<PageRef> {
        match &obj.backing {
            Backing::Gemfs(o) => Ok(PageRef::Held(o.get_folio(index)?)),
            Backing::Shmem => Ok(PageRef::Pinned(shmem::read_folio(
                obj.backing_file().mapping(),
                index,
            )?)),
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
        self.owner.inner.lock().mappings.insert(node);
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
                let nr = r.page.folio().nr_pages();
                for index in r.first.max(first)..(r.first + nr).min(last + 1) {
                    if let Some(va) = b.va_of(index) {
                        if pt.clear(va) {
                            r.ptes -= 1;
                        }
                    }
                }
                if r.ptes == 0 {
                    let (next, node) = c.remove_current();
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
        // May sleep and lock the folio: no spinlock held here.
        let page = Self::acquire(obj, index)?;
        let folio = page.folio();
        if !b.readonly {
            // The device may write to it from now on, behind the page
            // cache's back: make sure it is written back before reclaim.
            folio.lock().mark_dirty();
        }
        let (first, nr, pfn) = (folio.index(), folio.nr_pages(), folio.pfn());
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
        if let Some(j) = job {
            inner.last_use = Some(j.clone());
        }
        let key = first + nr - 1;
        // If the folio is resident already, `node` (with the reference just
        // taken) is spare and dropped after the locks.
        let spare = if inner.resident.get(&key).is_none() {
            inner.resident.insert(node)
        } else {
            Some(node)
        };
        let Some(r) = inner.resident.get_mut(&key) else {
            return Err(EINVAL);
        };
        if r.page.folio().pfn() != pfn {
            // Another folio at this index is resident: cannot happen, as
            // release removes a folio before migration replaces it.
            drop(inner);
            kernel::lockdep::warn(c_str!("softgpu: two resident folios at one index"));
            return Err(EINVAL);
        }
        let mut pt = vm.pt.lock();
        for i in 0..nr {
            if let Some(va) = b.va_of(first + i) {
                let pte = Pte {
                    pfn: pfn + i,
                    writable: !b.readonly,
                };
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
    /// on a VM where it is bound).
    pub(crate) fn set_busy(&self, fence: &ARef<Fence>) {
        self.owner.inner.lock().last_use = Some(fence.clone());
    }

    /// Sets the userspace madvise state; returns whether the contents are
    /// retained (objects are never purged yet: always).
    pub(crate) fn madvise(&self, madv: u32) -> bool {
        self.owner.inner.lock().madv = madv;
        true
    }

    pub(crate) fn info(&self) -> BoInfo {
        let inner = self.owner.inner.lock();
        BoInfo {
            resident_pages: inner.resident.values().map(|r| r.ptes).sum(),
            released: self.owner.released.load(Ordering::Relaxed),
            refused: self.owner.refused.load(Ordering::Relaxed),
            gpu_faults: self.owner.gpu_faults.load(Ordering::Relaxed),
            purgeable: inner.madv == kernel::uapi::SOFTGPU_MADV_DONTNEED,
        }
    }

    fn resident_bytes(&self) -> usize {
        let inner = self.owner.inner.lock();
        inner.resident.values().map(|r| r.page.folio().size()).sum()
    }
}

impl Drop for Bo {
    fn drop(&mut self) {
        // Holds go before the gemfs object (`backing`), which must not be
        // destroyed with holds left. No binding is left: each keeps a
        // reference to the GEM object.
        let resident = core::mem::take(&mut self.owner.inner.lock().resident);
        drop(resident);
    }
}

impl gem::DriverObject for Bo {
    type Driver = crate::SoftGpu;

    fn status(&self) -> u32 {
        let inner = self.owner.inner.lock();
        let mut s = 0;
        if inner.resident.iter().next().is_some() {
            s |= gem::STATUS_RESIDENT;
        }
        if inner.madv == kernel::uapi::SOFTGPU_MADV_DONTNEED {
            s |= gem::STATUS_PURGEABLE;
        }
        s
    }

    fn resident_size(&self) -> usize {
        self.resident_bytes()
    }
}

impl gemfs::Owner for BoOwner {
    fn release(
        owner: ArcBorrow<'_, Self>,
        _obj: &ObjectRef,
        folio: &LockedFolio<'_>,
        mode: MigrateMode,
    ) -> Result {
        let busy = owner.inner.lock().last_use.clone();
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
        let (first, nr) = (folio.index(), folio.nr_pages());
        let res = {
            let mut inner = owner.inner.lock();
            if inner.last_use.as_ref().is_some_and(|f| !f.is_signaled()) {
                // A job was submitted while we waited.
                drop(inner);
                owner.refused.fetch_add(1, Ordering::Relaxed);
                return Err(EBUSY);
            }
            let Some(mut res) = inner.resident.remove(&(first + nr - 1)) else {
                // Held, but by none of our entries: not ours to give.
                return Err(EBUSY);
            };
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
