// SPDX-License-Identifier: GPL-2.0

//! The GPU virtual address space of one DRM file: bindings of buffer
//! objects, and the device page table the engine translates through.
//!
//! The page table has three levels of 512 entries over a 39-bit address
//! space, like a small x86 one. A leaf entry exists only while the object
//! holds the folio it points to (see `bo.rs`); entries are filled when a
//! job that accesses them is submitted ([`Vm::make_resident`]) and cleared
//! by unbind and by gemfs's release-for-migration. A modelled TLB caches
//! translations and is flushed whenever an entry is cleared.
//!
//! A binding maps either part of a buffer object or, as a userptr
//! ([`Userptr`]), a range of a process's anonymous memory, whose entries
//! are filled through HMM and cleared by its MMU notifier.
//!
//! Locks: `bindings` (mutex) -> mmap lock -> object state (spinlock) ->
//! `pt` (spinlock) (Documentation/gpu/softgpu.rst, "Lock order").
//! Submission takes `bindings` and may lock folios under it; the engine's
//! userptr fault path takes it and the mmap lock of the userptr's process;
//! gemfs's release callback, which runs with a folio locked, and the
//! userptr's notifier callback take only the spinlocks.

use crate::bo::{Bo, GemObject};
use crate::userptr::Userptr;
use kernel::{
    dma_fence::Fence,
    folio::Folio,
    new_mutex, new_spinlock,
    prelude::*,
    rbtree::{RBTree, RBTreeNode, RBTreeNodeReservation},
    sync::{Arc, Mutex, SpinLock},
    task::cond_resched,
    types::ARef,
    uapi,
};

/// GPU page size.
pub(crate) const PAGE: u64 = uapi::SOFTGPU_PAGE_SIZE as u64;
/// End of the GPU virtual address space.
pub(crate) const VA_END: u64 = 1 << uapi::SOFTGPU_VA_BITS;
const ENTRIES: usize = 512;
const TLB_ENTRIES: usize = 8;

/// What the engine may do through a page table entry; each level allows
/// the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Perm {
    Read,
    Write,
    /// Atomic read-modify-write. Always allowed on writable object memory
    /// (the device's own); on userptr memory only while the device holds
    /// the page exclusive (`make_device_exclusive_range()`), as a device
    /// whose atomics do not work across the bus to system memory must.
    Atomic,
}

/// A present leaf entry, packed like a hardware one: the page frame number
/// from bit 12 up, permission bits below. Never zero (`PRESENT`), so that
/// `Option<Pte>` is eight bytes and a leaf table of 512 entries fills
/// exactly one page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pte(core::num::NonZeroU64);

impl Pte {
    const PRESENT: u64 = 1 << 0;
    const WRITE: u64 = 1 << 1;
    const ATOMIC: u64 = 1 << 2;
    const PFN_SHIFT: u32 = 12;

    /// An entry for page frame `pfn`, allowing `perm`.
    pub(crate) fn new(pfn: usize, perm: Perm) -> Self {
        let bits = match perm {
            Perm::Read => 0,
            Perm::Write => Self::WRITE,
            Perm::Atomic => Self::WRITE | Self::ATOMIC,
        };
        let raw = ((pfn as u64) << Self::PFN_SHIFT) | bits | Self::PRESENT;
        // `PRESENT` is set.
        Self(core::num::NonZeroU64::new(raw).unwrap_or(core::num::NonZeroU64::MIN))
    }

    /// The page frame number.
    pub(crate) fn pfn(self) -> usize {
        (self.0.get() >> Self::PFN_SHIFT) as usize
    }

    /// Whether the entry allows `perm`.
    pub(crate) fn allows(self, perm: Perm) -> bool {
        let raw = self.0.get();
        match perm {
            Perm::Read => true,
            Perm::Write => raw & Self::WRITE != 0,
            Perm::Atomic => raw & Self::ATOMIC != 0,
        }
    }
}

// One page per leaf table (see `Pte`).
const _: () = assert!(core::mem::size_of::<Leaf>() == 4096);

type Leaf = [Option<Pte>; ENTRIES];
type Mid = [Option<KBox<Leaf>>; ENTRIES];
type Top = [Option<KBox<Mid>>; ENTRIES];

fn indexes(va: u64) -> (usize, usize, usize) {
    let i = |shift: u64| ((va >> shift) as usize) % ENTRIES;
    (i(30), i(21), i(12))
}

/// Allocates a table whose entries are all `None`.
fn new_table<T>() -> Result<KBox<[Option<T>; ENTRIES]>> {
    let mut b = KBox::<[Option<T>; ENTRIES]>::new_uninit(GFP_KERNEL)?;
    let p = b.as_mut_ptr().cast::<Option<T>>();
    for i in 0..ENTRIES {
        // SAFETY: `p` points to `ENTRIES` uninitialised entries.
        unsafe { p.add(i).write(None) };
    }
    // SAFETY: every entry was written above.
    Ok(unsafe { b.assume_init() })
}

/// The device page table and its modelled TLB.
pub(crate) struct PageTable {
    top: KBox<Top>,
    tlb: [Option<(u64, Pte)>; TLB_ENTRIES],
    pub(crate) tlb_flushes: u64,
    pub(crate) present: u64,
}

impl PageTable {
    fn new() -> Result<Self> {
        Ok(Self {
            top: new_table()?,
            tlb: [None; TLB_ENTRIES],
            tlb_flushes: 0,
            present: 0,
        })
    }

    fn leaf(&self, va: u64) -> Option<&Leaf> {
        let (t, m, _) = indexes(va);
        self.top[t].as_ref()?[m].as_deref()
    }

    fn leaf_mut(&mut self, va: u64) -> Option<&mut Leaf> {
        let (t, m, _) = indexes(va);
        self.top[t].as_mut()?[m].as_deref_mut()
    }

    /// Translates `va`, through the TLB.
    pub(crate) fn lookup(&mut self, va: u64) -> Option<Pte> {
        let vpn = va / PAGE;
        let slot = (vpn as usize) % TLB_ENTRIES;
        if let Some((v, pte)) = self.tlb[slot] {
            if v == vpn {
                return Some(pte);
            }
        }
        let pte = self.leaf(va)?[indexes(va).2]?;
        self.tlb[slot] = Some((vpn, pte));
        Some(pte)
    }

    /// Sets the entry of `va`; the tables must have been reserved. Returns
    /// whether it was not present before. Flushes the TLB if it replaces a
    /// different entry.
    pub(crate) fn set(&mut self, va: u64, pte: Pte) -> bool {
        let Some(leaf) = self.leaf_mut(va) else {
            return false;
        };
        let e = &mut leaf[indexes(va).2];
        let old = e.replace(pte);
        match old {
            None => self.present += 1,
            // A changed translation (e.g. a userptr page made writable, or
            // exclusive for atomics): the TLB may cache the old one.
            Some(o) if o != pte => {
                self.tlb = [None; TLB_ENTRIES];
                self.tlb_flushes += 1;
            }
            Some(_) => {}
        }
        old.is_none()
    }

    /// Clears the entry of `va` and flushes the TLB. Returns whether it was
    /// present.
    pub(crate) fn clear(&mut self, va: u64) -> bool {
        let Some(leaf) = self.leaf_mut(va) else {
            return false;
        };
        let was = leaf[indexes(va).2].take().is_some();
        if was {
            self.present -= 1;
            self.tlb = [None; TLB_ENTRIES];
            self.tlb_flushes += 1;
        }
        was
    }

    /// The first 2 MiB region of `[va, end)` without a leaf table, if any.
    fn first_missing(&self, va: u64, end: u64) -> Option<u64> {
        let mut a = va & !(ENTRIES as u64 * PAGE - 1);
        while a < end {
            if self.leaf(a).is_none() {
                return Some(a);
            }
            a += ENTRIES as u64 * PAGE;
        }
        None
    }

    /// Adds the tables for `va`: `mid` is used if the middle level is
    /// missing, `leaf` if the leaf is.
    fn add_tables(&mut self, va: u64, mid: &mut Option<KBox<Mid>>, leaf: &mut Option<KBox<Leaf>>) {
        let (t, m, _) = indexes(va);
        if self.top[t].is_none() {
            self.top[t] = mid.take();
        }
        if let Some(mids) = self.top[t].as_mut() {
            if mids[m].is_none() {
                mids[m] = leaf.take();
            }
        }
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
pub(crate) fn va_of(va: u64, bo_offset: u64, size: u64, index: usize) -> Option<u64> {
    let off = (index as u64).checked_mul(PAGE)?;
    (off >= bo_offset && off < bo_offset + size).then(|| va + off - bo_offset)
}

impl Binding {
    /// The GPU address of object page `index`, if this binding maps it.
    pub(crate) fn va_of(&self, index: usize) -> Option<u64> {
        va_of(self.va, self.bo_offset, self.size, index)
    }
}

/// What a VM maps at an address range.
pub(crate) enum Entry {
    /// Part of a buffer object.
    Bo(Binding),
    /// A range of a process's memory.
    Userptr(Userptr),
}

impl Entry {
    /// The first GPU address mapped.
    pub(crate) fn va(&self) -> u64 {
        match self {
            Entry::Bo(b) => b.va,
            Entry::Userptr(u) => u.va(),
        }
    }

    /// The size of the range, in bytes.
    pub(crate) fn size(&self) -> u64 {
        match self {
            Entry::Bo(b) => b.size,
            Entry::Userptr(u) => u.size(),
        }
    }

    /// Whether `va` is in the range.
    fn contains(&self, va: u64) -> bool {
        va >= self.va() && va - self.va() < self.size()
    }

    /// The buffer object binding, if this is one.
    pub(crate) fn as_bo(&self) -> Option<&Binding> {
        match self {
            Entry::Bo(b) => Some(b),
            Entry::Userptr(_) => None,
        }
    }

    /// Undoes the binding: clears its page table entries and, for an
    /// object, drops the pages no entry points into any more; for a
    /// userptr, removes the notifier. Returns the binding's reference to
    /// the object, for the caller to drop once it has unlocked `bindings`:
    /// it may be the last one, and destroying the object waits for
    /// gemfs's callbacks into it, which wait for jobs, whose faults take
    /// `bindings`.
    #[must_use]
    fn remove(self, vm: &Vm) -> Option<ARef<GemObject>> {
        match self {
            Entry::Bo(b) => {
                b.obj.remove_mapping(vm, &b);
                Some(b.obj)
            }
            Entry::Userptr(u) => {
                drop(u);
                None
            }
        }
    }
}

/// Whether `[va, va + size)` overlaps an entry of `bindings`.
fn overlaps(bindings: &mut RBTree<u64, Entry>, va: u64, size: u64) -> bool {
    let end = va + size;
    // The first binding at or above `va` must start at or after `end`,
    // and the one below must end at or before `va`.
    match bindings.cursor_lower_bound(&va) {
        Some(c) => {
            *c.current().0 < end || c.peek_prev().is_some_and(|(_, p)| p.va() + p.size() > va)
        }
        None => bindings
            .cursor_back()
            .is_some_and(|c| c.current().1.va() + c.current().1.size() > va),
    }
}

/// The start of the entry of `bindings` that maps `va`, if any: the last
/// one starting at or below it.
fn entry_at(bindings: &mut RBTree<u64, Entry>, va: u64) -> Option<u64> {
    let start = match bindings.cursor_lower_bound(&va) {
        Some(c) if *c.current().0 == va => va,
        Some(c) => *c.peek_prev()?.0,
        None => *bindings.cursor_back()?.current().0,
    };
    bindings.get(&start)?.contains(va).then_some(start)
}

/// How many pages a userptr fault maps at once, if they are all mapped by
/// the CPU (else just the faulting one).
const USERPTR_FAULT_PAGES: u64 = 16;

/// A GPU virtual address space.
#[pin_data(PinnedDrop)]
pub(crate) struct Vm {
    /// Bindings by start address.
    #[pin]
    pub(crate) bindings: Mutex<RBTree<u64, Entry>>,
    /// The device page table.
    #[pin]
    pub(crate) pt: SpinLock<PageTable>,
    /// The fence of the last job submitted on this VM, set under
    /// `bindings` (jobs complete in submission order: once it signals,
    /// every job of the VM has). An object bound while it is pending may
    /// be used by it: [`Vm::bind`] marks the object busy for it.
    #[pin]
    pub(crate) last_job: SpinLock<Option<ARef<Fence>>>,
}

impl Vm {
    pub(crate) fn new() -> Result<Arc<Self>> {
        let pt = PageTable::new()?;
        Arc::pin_init(
            pin_init!(Self {
                bindings <- new_mutex!(RBTree::new(), "softgpu_vm_bindings"),
                pt <- new_spinlock!(pt, "softgpu_vm_pt"),
                last_job <- new_spinlock!(None, "softgpu_vm_last_job"),
            }),
            GFP_KERNEL,
        )
    }

    /// Maps `[bo_offset, bo_offset + size)` of `obj` at `va`. Arguments
    /// were range-checked by the caller; `EEXIST` on overlap.
    pub(crate) fn bind(
        self: &Arc<Self>,
        obj: ARef<GemObject>,
        va: u64,
        bo_offset: u64,
        size: u64,
        readonly: bool,
    ) -> Result {
        let end = va + size;
        let node = RBTreeNode::new(
            va,
            Entry::Bo(Binding {
                obj: obj.clone(),
                va,
                bo_offset,
                size,
                readonly,
            }),
            GFP_KERNEL,
        )?;
        let mut bindings = self.bindings.lock();
        if overlaps(&mut bindings, va, size) {
            return Err(EEXIST);
        }
        self.reserve_tables(va, end)?;
        // A job queued or running on this VM may fault on the object from
        // now on: it is busy for migration and the shrinker until that job
        // is done, as for the jobs submitted after (see `SoftFile::exec`).
        // Under `bindings`, which the submission holds to record the job.
        let pending = self.last_job.lock().clone();
        if let Some(f) = pending.filter(|f| !f.is_signaled()) {
            Bo::set_busy(&obj, &f, None)?;
        }
        obj.add_mapping(self, va, bo_offset, size)?;
        bindings.insert(node);
        drop(bindings);
        if obj.pinned || obj.is_import() {
            // Today's drivers acquire (pin) every page when binding; an
            // import's pages are in place (pinned by its exporter) for as
            // long as it lives: map them all now.
            let bindings = self.bindings.lock();
            let mut a = va;
            while a < end {
                let present = self.pt.lock().lookup(a).is_some();
                if !present {
                    let populated = match bindings.get(&va).and_then(Entry::as_bo) {
                        Some(b) => b.obj.populate(
                            self,
                            b,
                            ((b.bo_offset + (a - va)) / PAGE) as usize,
                            false,
                        ),
                        // Unbound meanwhile by another thread.
                        None => Ok(()),
                    };
                    if let Err(e) = populated {
                        drop(bindings);
                        let _ = self.unbind(va, size);
                        return Err(e);
                    }
                }
                a += PAGE;
                // A binding may be GiBs: a scheduling point per page (with
                // only the bindings mutex held).
                cond_resched();
            }
        }
        Ok(())
    }

    /// Makes resident and maps, before a job is submitted, every page of
    /// `ranges` (GPU address, size in bytes, access) that is in a buffer
    /// object binding of this VM and allows the access: the job runs in its
    /// fence's signalling critical section, where a missing entry cannot be
    /// resolved (taking a folio from gemfs may allocate with reclaim), and
    /// fails instead. Here, before the fence exists, allocating is fine.
    ///
    /// The objects touched are marked as being submitted to
    /// ([`Bo::begin_submission`]) before their entries are looked at: until
    /// the returned [`Submission`] is dropped, which the caller does once
    /// the job's fence is in their reservation objects, migration's release
    /// and the shrinker refuse to take their folios, so that none leaves
    /// between here and the moment the object is busy.
    ///
    /// Addresses that no binding maps, writes through read-only bindings,
    /// and pages that could not be made resident are left: the job fails
    /// when it gets there, with `EFAULT` or the error recorded here
    /// ([`Submission::unresolved`]). Userptr ranges are recorded, for the
    /// job to fault them in (Documentation/gpu/softgpu.rst, "Fences and
    /// reclaim"). Fails only if the submission's own bookkeeping cannot
    /// be allocated (`ENOMEM`).
    pub(crate) fn make_resident(
        self: &Arc<Self>,
        ranges: &[(u64, u64, Perm)],
    ) -> Result<Submission> {
        let mut sub = Submission {
            objects: KVec::new(),
            userptrs: KVec::new(),
            unresolved: None,
        };
        let mut bindings = self.bindings.lock();
        for &(start, size, perm) in ranges {
            let end = start.saturating_add(size).min(VA_END);
            let mut a = start & !(PAGE - 1);
            while a < end {
                let Some(at) = entry_at(&mut bindings, a) else {
                    // Unbound: on to the next binding, if it starts in the
                    // range.
                    a = match bindings.cursor_lower_bound(&a) {
                        Some(c) => (*c.current().0).min(end),
                        None => end,
                    };
                    continue;
                };
                let Some(entry) = bindings.get(&at) else {
                    break;
                };
                let seg_end = (entry.va() + entry.size()).min(end);
                let b = match entry {
                    Entry::Userptr(_) => {
                        sub.userptrs.push((a, seg_end - a), GFP_KERNEL)?;
                        a = seg_end;
                        continue;
                    }
                    Entry::Bo(b) => b,
                };
                if perm != Perm::Read && b.readonly {
                    // The job fails there.
                    a = seg_end;
                    continue;
                }
                if !sub
                    .objects
                    .iter()
                    .any(|o| core::ptr::eq::<GemObject>(&**o, &*b.obj))
                {
                    sub.objects.push(b.obj.clone(), GFP_KERNEL)?;
                    b.obj.begin_submission();
                }
                while a < seg_end {
                    let index = ((b.bo_offset + (a - b.va)) / PAGE) as usize;
                    // A fault may map nothing if the file was truncated or
                    // punched meanwhile: a few tries.
                    for _ in 0..3 {
                        if self.pt.lock().lookup(a).is_some_and(|pte| pte.allows(perm)) {
                            break;
                        }
                        if let Err(err) = b.obj.populate(self, b, index, true) {
                            if sub.unresolved.is_none() {
                                sub.unresolved = Some(Fault { addr: a, err });
                            }
                            break;
                        }
                    }
                    a += PAGE;
                    // A range may be GiBs: a scheduling point per page
                    // (with only the bindings mutex held).
                    cond_resched();
                }
            }
        }
        Ok(sub)
    }

    /// Mirrors `[addr, addr + size)` of the calling process at `va`,
    /// read-only for the GPU if `readonly`, or pins it if `pinned`: see
    /// [`Userptr::new`] for the errors, and `EEXIST` if the range overlaps
    /// a binding. Arguments were range-checked by the caller.
    pub(crate) fn bind_userptr(
        self: &Arc<Self>,
        va: u64,
        addr: usize,
        size: usize,
        readonly: bool,
        pinned: bool,
    ) -> Result {
        let reservation = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let mut bindings = self.bindings.lock();
        if overlaps(&mut bindings, va, size as u64) {
            return Err(EEXIST);
        }
        // Under `bindings` (which nests outside the mmap lock), so that no
        // other binding can take the range meanwhile.
        let u = Userptr::new(self, va, addr, size, readonly, pinned)?;
        bindings.insert(reservation.into_node(va, Entry::Userptr(u)));
        Ok(())
    }

    /// Allocates the page tables of `[va, end)`, outside the table lock.
    pub(crate) fn reserve_tables(&self, va: u64, end: u64) -> Result {
        loop {
            let Some(missing) = self.pt.lock().first_missing(va, end) else {
                return Ok(());
            };
            let mut mid = Some(new_table()?);
            let mut leaf = Some(new_table()?);
            self.pt.lock().add_tables(missing, &mut mid, &mut leaf);
        }
    }

    /// Removes the binding that starts at `va`, of `size` bytes.
    pub(crate) fn unbind(&self, va: u64, size: u64) -> Result {
        let mut bindings = self.bindings.lock();
        match bindings.get(&va) {
            None => return Err(ENOENT),
            Some(b) if b.size() != size => return Err(EINVAL),
            Some(_) => {}
        }
        let Some(b) = bindings.remove(&va) else {
            return Err(ENOENT);
        };
        let obj = b.remove(self);
        drop(bindings);
        drop(obj);
        Ok(())
    }

    /// Removes every binding: the file is closing. Jobs still running on
    /// this VM fault from now on.
    pub(crate) fn teardown(&self) {
        loop {
            let mut bindings = self.bindings.lock();
            let Some(c) = bindings.cursor_front() else {
                return;
            };
            let (_, node) = c.remove_current();
            let (_, b) = node.to_key_value();
            let obj = b.remove(self);
            // The object reference goes outside the lock (see
            // `Entry::remove`).
            drop(bindings);
            drop(obj);
            // A VM may have many bindings.
            cond_resched();
        }
    }

    /// Number of bindings of `bo` in this VM.
    pub(crate) fn bindings_of(&self, bo: &Bo) -> u64 {
        self.bindings
            .lock()
            .values()
            .filter_map(Entry::as_bo)
            .filter(|b| core::ptr::eq::<Bo>(&**b.obj, bo))
            .count() as u64
    }

    /// Resolves a GPU page fault at `va`, in a userptr, for an access
    /// needing `perm`: maps the pages the CPU maps there through HMM (which
    /// may fault them in under the process's mmap lock), taking no page
    /// reference; for an atomic access it takes the page exclusive to the
    /// device and performs the access itself, with `access` (see
    /// [`Userptr::make_exclusive`]). `EFAULT` if the page is no longer
    /// mapped (or the process has exited), or not writable for a write,
    /// and for any address that is not in a userptr: a buffer object's
    /// pages are made resident before the job runs ([`Vm::make_resident`])
    /// and never while it runs.
    ///
    /// Returns whether `access` was done; if not, the caller looks the
    /// entry up again.
    pub(crate) fn fault_userptr(
        self: &Arc<Self>,
        va: u64,
        perm: Perm,
        access: &mut dyn FnMut(&Folio, usize) -> Result,
    ) -> core::result::Result<bool, Fault> {
        let fault = |err| Fault { addr: va, err };
        let mut bindings = self.bindings.lock();
        let start = entry_at(&mut bindings, va).ok_or(fault(EFAULT))?;
        let Some(Entry::Userptr(u)) = bindings.get(&start) else {
            return Err(fault(EFAULT));
        };
        let page = va & !(PAGE - 1);
        // A page that is not writable for a write fails the job like a
        // read-only binding does: with EFAULT.
        let errno = |e| fault(if e == EPERM { EFAULT } else { e });
        if perm == Perm::Atomic {
            return u.make_exclusive(va, access).map(|()| true).map_err(errno);
        }
        let write = perm == Perm::Write;
        let end = (page + USERPTR_FAULT_PAGES * PAGE).min(u.va() + u.size());
        // Try a few pages ahead; if part of them is not mapped, just the one
        // that faulted.
        if u.populate(page, end - page, write).is_ok() {
            return Ok(false);
        }
        u.populate(page, PAGE, write).map(|()| false).map_err(errno)
    }
}

#[pinned_drop]
impl PinnedDrop for Vm {
    fn drop(self: Pin<&mut Self>) {
        // Objects point back at the VM through their mappings: remove them
        // (normally done already when the file closed).
        self.teardown();
    }
}

/// A GPU page fault that could not be resolved.
#[derive(Clone, Copy)]
pub(crate) struct Fault {
    pub(crate) addr: u64,
    pub(crate) err: Error,
}

/// What [`Vm::make_resident`] did for a job about to be submitted.
pub(crate) struct Submission {
    /// The objects whose pages were made resident, each marked as being
    /// submitted to until this is dropped.
    objects: KVec<ARef<GemObject>>,
    /// The userptr parts of the job's ranges (GPU address, size).
    pub(crate) userptrs: KVec<(u64, u64)>,
    /// The first page that could not be made resident, and why.
    pub(crate) unresolved: Option<Fault>,
}

impl Drop for Submission {
    fn drop(&mut self) {
        for o in self.objects.iter() {
            o.end_submission();
        }
    }
}
