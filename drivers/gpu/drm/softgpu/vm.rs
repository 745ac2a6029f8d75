// SPDX-License-Identifier: GPL-2.0

//! The GPU virtual address space of one DRM file: bindings of buffer
//! objects, and the device page table the engine translates through.
//!
//! The page table is `pt.rs`'s; the VM owns one and hands it to what
//! fills it. A leaf entry exists only while the object holds the folio it
//! points to (see `bo.rs`); entries are filled when a job that accesses
//! them is submitted ([`Vm::make_resident`]) and cleared by unbind and by
//! gemfs's release-for-migration.
//!
//! A binding maps either part of a buffer object ([`Binding`]) or, as a
//! userptr ([`Userptr`]), a range of a process's anonymous memory, whose
//! entries are filled through HMM and cleared by its MMU notifier. Objects
//! and userptrs know the page table, not the VM: this module sits above
//! them (Documentation/gpu/softgpu.rst, "Structure").
//!
//! Locks: `bindings` (mutex) -> mmap lock -> object state (spinlock) ->
//! `pt` (spinlock) -> `last_job` (spinlock) (Documentation/gpu/softgpu.rst,
//! "Lock order"). Submission takes `bindings` and may lock folios under
//! it, and faults userptr pages in under it (taking the mmap lock of the
//! userptr's process); the engine takes only `pt`; gemfs's release
//! callback, which runs with a folio locked, and the userptr's notifier
//! callback take only the spinlocks (the callback waits for the VM's last
//! job with none held).

use crate::bo::{Binding, Bo, GemObject};
use crate::dmem::Dmem;
use crate::pt::{PageTable, Perm};
// The address space the ioctls check their arguments against.
pub(crate) use crate::pt::{PAGE, VA_END};
use crate::userptr::{self, Userptr};
use kernel::{
    dma_fence::Fence,
    mm::devmem::Migrated,
    new_mutex, new_spinlock,
    prelude::*,
    rbtree::{RBTree, RBTreeNode, RBTreeNodeReservation},
    sync::{Arc, Mutex, SpinLock},
    task::cond_resched,
    types::ARef,
};

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
                b.obj.remove_mapping(&vm.pt, &b);
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

/// How many pages submission faults in at once in a userptr, if they are
/// all mapped by the CPU (else one at a time).
const USERPTR_FAULT_PAGES: u64 = 512;
/// Fault-in passes over a submission's userptr ranges while invalidations
/// (some caused by the passes themselves: copy-on-write, a zero page made
/// writable) collide with them.
const USERPTR_PASSES: usize = 3;
/// Most userptr pages a commit checks one by one, under the page table
/// lock, after an invalidation collided with the submission.
const USERPTR_CHECK_PAGES: u64 = 8192;

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
    /// `bindings` and `pt` (jobs complete in submission order: once it
    /// signals, every job of the VM has). An object bound while it is
    /// pending may be used by it: [`Vm::bind`] marks the object busy for
    /// it. A userptr's notifier waits for it before clearing entries.
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
        obj.add_mapping(&self.pt, va, bo_offset, size)?;
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
                            &self.pt,
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

    /// `USERPTR_MIGRATE`: migrates `[va, va + size)`, which must lie within
    /// one userptr binding, into `dmem`'s VRAM or back to system memory
    /// ([`Userptr::migrate`]). `ENOENT` if no userptr is bound at `va`,
    /// `EINVAL` if the range leaves it; the rest as `Userptr::migrate`
    /// says. Under `bindings`, so the binding stays meanwhile.
    pub(crate) fn migrate_userptr(
        &self,
        va: u64,
        size: u64,
        to_vram: bool,
        dmem: &Dmem,
    ) -> Result<Migrated> {
        let mut bindings = self.bindings.lock();
        let Some(Entry::Userptr(u)) = entry_at(&mut bindings, va).and_then(|at| bindings.get(&at))
        else {
            return Err(ENOENT);
        };
        u.migrate(va, size, to_vram, dmem)
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
    /// ([`Submission::unresolved`]). The pages of userptr ranges are
    /// faulted in ([`Vm::fault_in_userptrs`]); the caller then publishes
    /// the job with [`Vm::commit`] (Documentation/gpu/softgpu.rst, "Fences
    /// and reclaim"). Fails only if the submission's own bookkeeping cannot
    /// be allocated (`ENOMEM`), or on a signal while a page was being made
    /// resident (`ERESTARTSYS`/`EINTR`, for the ioctl to be restarted).
    ///
    /// `dmem` is the device's private memory, if it has VRAM: userptr pages
    /// migrated there are mapped where they are.
    pub(crate) fn make_resident(
        self: &Arc<Self>,
        ranges: &[(u64, u64, Perm)],
        dmem: Option<&Dmem>,
    ) -> Result<Submission> {
        let mut sub = Submission {
            objects: KVec::new(),
            userptrs: KVec::new(),
            exclusive: KVec::new(),
            userptr_failed: false,
            userptr_snapshot: 0,
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
                        sub.userptrs.push((a, seg_end - a, perm), GFP_KERNEL)?;
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
                        if let Err(err) = b.obj.populate(&self.pt, b, index, true) {
                            // A signal (TTM's populate waits
                            // interruptibly, e.g. for a swapped-out
                            // object): the ioctl is restarted with
                            // nothing submitted, not a job fault.
                            if err == ERESTARTSYS || err == EINTR {
                                return Err(err);
                            }
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
        if !sub.userptrs.is_empty() {
            self.fault_in_userptrs(&mut bindings, &mut sub, dmem)?;
        }
        Ok(sub)
    }

    /// Faults in, before a job is submitted, the pages of its userptr
    /// ranges (`sub.userptrs`) that the device page table does not map
    /// with the access needed: through HMM (`hmm_range_fault()` under the
    /// mmap lock, [`Userptr::populate`]) for reads and writes, and taking
    /// the page device-exclusive for atomics ([`Userptr::make_exclusive`]).
    /// A page that cannot be faulted in is recorded like a buffer object
    /// page that cannot be made resident: the job fails there.
    ///
    /// Passes over the ranges again while an invalidation collided with a
    /// pass (up to [`USERPTR_PASSES`]), and records in `sub` the
    /// invalidation sequence the last pass started at, for
    /// [`Vm::commit`].
    fn fault_in_userptrs(
        &self,
        bindings: &mut RBTree<u64, Entry>,
        sub: &mut Submission,
        dmem: Option<&Dmem>,
    ) -> Result {
        for _ in 0..USERPTR_PASSES {
            let snapshot = self.pt.lock().invalidation_seq.read();
            sub.userptr_snapshot = snapshot;
            sub.exclusive = KVec::new();
            sub.userptr_failed = false;
            for i in 0..sub.userptrs.len() {
                let (start, size, perm) = sub.userptrs[i];
                let Some(Entry::Userptr(u)) =
                    entry_at(bindings, start).and_then(|at| bindings.get(&at))
                else {
                    continue;
                };
                let end = start + size;
                let mut a = start & !(PAGE - 1);
                while a < end {
                    let present = self.pt.lock().lookup(a).is_some_and(|p| p.allows(perm));
                    let mut next = a + PAGE;
                    let res = if present {
                        Ok(())
                    } else if perm == Perm::Atomic {
                        // A page in VRAM is the device's for atomics as it
                        // is (see `Userptr::populate`); any other is taken
                        // exclusive.
                        let in_vram = dmem.is_some()
                            && u.populate(a, PAGE, true, dmem).is_ok()
                            && self.pt.lock().lookup(a).is_some_and(|p| p.allows(perm));
                        if in_vram {
                            Ok(())
                        } else {
                            u.make_exclusive(a, &mut |_, _, _| Ok(()))
                        }
                    } else {
                        // A few pages ahead; if part of them is not mapped,
                        // just this one.
                        let write = perm == Perm::Write;
                        let ahead = (a + USERPTR_FAULT_PAGES * PAGE)
                            .min(end.next_multiple_of(PAGE))
                            .min(u.va() + u.size());
                        match u.populate(a, ahead - a, write, dmem) {
                            Ok(()) => {
                                next = ahead;
                                Ok(())
                            }
                            Err(_) => u.populate(a, PAGE, write, dmem),
                        }
                    };
                    match res {
                        Ok(()) if perm == Perm::Atomic => {
                            if !sub.exclusive.contains(&a) {
                                sub.exclusive.push(a, GFP_KERNEL)?;
                            }
                        }
                        Ok(()) => {}
                        Err(e) => {
                            // A page not writable for a write fails the job
                            // like a read-only binding does: with EFAULT.
                            let err = if e == EPERM { EFAULT } else { e };
                            sub.userptr_failed = true;
                            if sub.unresolved.is_none() {
                                sub.unresolved = Some(Fault { addr: a, err });
                            }
                        }
                    }
                    a = next;
                    cond_resched();
                }
            }
            if self.pt.lock().invalidation_seq.unchanged(snapshot) {
                break;
            }
        }
        Ok(())
    }

    /// Waits, for up to a second, until no invalidation of the VM's
    /// userptrs is running: such an invalidation waits for the VM's last
    /// job, then clears its entries. For a submission that collided with
    /// one, before it tries again.
    pub(crate) fn wait_userptr_invalidations(&self) {
        let last = self.last_job.lock().clone();
        if let Some(f) = last {
            let _ = f.wait_timeout(kernel::time::msecs_to_jiffies(1000) as usize);
        }
        // Then the invalidation takes the page table lock to clear.
        for _ in 0..1000 {
            if self.pt.lock().invalidation_seq.idle() {
                return;
            }
            crate::delay::usleep(100);
        }
    }

    /// Publishes a job whose memory `sub` faulted in: calls `publish`
    /// (which makes the job's fence the VM's last job) under the page
    /// table lock, if every userptr entry the job needs is still there and
    /// no invalidation is running, so that any invalidation from then on
    /// waits for the job before it clears an entry (see `userptr.rs`).
    ///
    /// The check is the VM's invalidation sequence, unchanged since the
    /// last fault-in pass began; else, with no invalidation running, the
    /// entries themselves (for up to [`USERPTR_CHECK_PAGES`] pages). If an
    /// atomic's page was taken back by the CPU meanwhile, it is taken
    /// exclusive again and the commit done with the page still locked, so
    /// the CPU cannot take it back in between (a CPU hammering the page
    /// cannot starve the submission). If the fault-in of a page failed,
    /// the job will fail at a fault anyway: no check.
    ///
    /// `EAGAIN` if an invalidation collided: the caller cancels the job
    /// (nothing published it) and may submit again.
    pub(crate) fn commit(
        &self,
        bindings: &mut RBTree<u64, Entry>,
        sub: &Submission,
        publish: &mut dyn FnMut(),
    ) -> Result {
        let valid = |pt: &mut PageTable| {
            sub.userptrs.is_empty()
                || sub.userptr_failed
                || pt.invalidation_seq.unchanged(sub.userptr_snapshot)
                || (pt.invalidation_seq.idle() && all_present(pt, &sub.userptrs))
        };
        let mut pt = self.pt.lock();
        if valid(&mut pt) {
            publish();
            return Ok(());
        }
        // Taken back by the CPU? The first atomic page missing its entry.
        let Some(&page) = sub
            .exclusive
            .iter()
            .find(|&&p| !pt.lookup(p).is_some_and(|e| e.allows(Perm::Atomic)))
        else {
            return Err(EAGAIN);
        };
        drop(pt);
        let Some(Entry::Userptr(u)) = entry_at(bindings, page).and_then(|at| bindings.get(&at))
        else {
            return Err(EAGAIN);
        };
        let mut publish = Some(publish);
        let res = u.make_exclusive(page, &mut |pt, _, _| {
            if !valid(pt) {
                return Err(EAGAIN);
            }
            if let Some(p) = publish.take() {
                p();
            }
            Ok(())
        });
        match res {
            Ok(()) => Ok(()),
            Err(_) => Err(EAGAIN),
        }
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
    fn reserve_tables(&self, va: u64, end: u64) -> Result {
        PageTable::reserve(&self.pt, va, end)
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
}

impl userptr::Space for Vm {
    fn pt(&self) -> &SpinLock<PageTable> {
        &self.pt
    }

    fn last_job(&self) -> Option<ARef<Fence>> {
        self.last_job.lock().clone()
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

/// Whether `pt` maps every page of `ranges` with its access, checking at
/// most [`USERPTR_CHECK_PAGES`] pages (`false` beyond).
fn all_present(pt: &mut PageTable, ranges: &[(u64, u64, Perm)]) -> bool {
    let mut checked = 0;
    for &(start, size, perm) in ranges {
        let mut a = start & !(PAGE - 1);
        while a < start + size {
            checked += 1;
            if checked > USERPTR_CHECK_PAGES || !pt.lookup(a).is_some_and(|p| p.allows(perm)) {
                return false;
            }
            a += PAGE;
        }
    }
    true
}

/// What [`Vm::make_resident`] did for a job about to be submitted.
pub(crate) struct Submission {
    /// The objects whose pages were made resident, each marked as being
    /// submitted to until this is dropped.
    objects: KVec<ARef<GemObject>>,
    /// The userptr parts of the job's ranges (GPU address, size, access).
    userptrs: KVec<(u64, u64, Perm)>,
    /// The userptr pages taken exclusive for atomics.
    exclusive: KVec<u64>,
    /// Whether faulting in a userptr page failed (the job will fault).
    userptr_failed: bool,
    /// The VM's userptr invalidation sequence when the last fault-in pass
    /// began (see [`Vm::commit`]).
    userptr_snapshot: u64,
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
