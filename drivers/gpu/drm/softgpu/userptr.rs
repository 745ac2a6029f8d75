// SPDX-License-Identifier: GPL-2.0

//! Userptr: GPU access to a range of the calling process's memory
//! (anonymous, shared, file-backed, THP, hugetlbfs), mirrored without
//! pinning it.
//!
//! A [`Userptr`] maps `[addr, addr + size)` of the process at a GPU address
//! of a VM. Its device page table entries are filled at submission
//! ([`Userptr::populate`]) from `hmm_range_fault()`, which takes no page
//! reference: an entry is valid only while the CPU maps the same page.
//! The MMU interval notifier over the range clears the entries, under the
//! page table lock, before the CPU page tables change (munmap, mprotect,
//! madvise, copy-on-write after fork, KSM, migration, compaction,
//! swap-out, exit); the next submission populates again.
//!
//! Entries are filled when a job is submitted (`Vm::fault_in_userptrs`),
//! never while it runs: the job runs in its fence's signalling critical
//! section, where faulting memory in (allocating with reclaim, taking the
//! mmap lock) is forbidden. Submission faults the pages in, then commits
//! the job (publishes its fence as the VM's last job) under the page
//! table lock only if no invalidation ran since (`pt::InvalidationSeq`).
//!
//! Locks: the page table spinlock (`Space::pt`) is the notifier's update
//! lock. The engine accesses memory only with it held. The callback, as
//! amdgpu's does, makes a running job never see an entry vanish: under the
//! lock it records the invalidation (`mmu_interval_set_seq()`, and the
//! page table's `InvalidationSeq`, which fails any commit from then on)
//! and takes the VM's last job; it drops the lock, waits for that job's
//! fence, and clears the entries under the lock again. A non-blockable invalidation (the OOM
//! reaper) cannot wait: while a job is pending it returns `false` and
//! changes nothing (the caller tries again later). The wait happens in
//! reclaim (the notifier runs from it), which is why nothing between a
//! fence's publication and its signalling allocates with reclaim.
//! Populating takes the mmap lock and may fault pages in; it must be called
//! without the page table lock (it takes it last) and without locks that
//! reclaim or the callback take.

use crate::delay::usleep;
use crate::dmem::Dmem;
use crate::pt::{PageTable, Perm, Pte, PAGE, VA_END};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::dma_fence::Fence;
use kernel::{
    folio::Folio,
    hmm::{self, Access, Range},
    mm::devmem::Migrated,
    mm::{virt::flags as vm, MmWithUser, PinnedPages},
    mmu_notifier::{Event, IntervalNotifier, Invalidate, InvalidateSeq, NotifierRange, Owner},
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, SpinLock},
    time::Ktime,
    types::ARef,
};

/// What a userptr needs of the GPU address space it is bound in (the VM,
/// `vm.rs`, which sits above this module): the page table it fills, whose
/// lock is its notifier's update lock, and the last job submitted to run
/// through that table, which the notifier waits for before it clears
/// entries.
pub(crate) trait Space: Send + Sync {
    /// The page table.
    fn pt(&self) -> &SpinLock<PageTable>;

    /// The fence of the last job submitted on the address space, if any
    /// (jobs complete in submission order). Called with the page table
    /// locked, under which submissions publish their jobs.
    fn last_job(&self) -> Option<ARef<Fence>>;
}

/// What the notifier's callback needs: where the range is mapped.
#[pin_data]
struct Mirror {
    vm: Arc<dyn Space>,
    /// CPU address of the first page.
    addr: usize,
    /// Size in bytes, a multiple of the page size.
    size: usize,
    /// GPU address of the first page.
    va: u64,
    readonly: bool,
    /// Baseline mode: the pages are pinned, and stay mapped in the device
    /// until unbind, whatever the CPU does (see [`Userptr::new`]).
    pinned: bool,
    /// Identifies the device-exclusive requests of this VM (the owner
    /// passed to `hmm::make_device_exclusive()`), which leave its
    /// mappings valid.
    owner: Owner,
    invalidations: AtomicU64,
    /// Pages taken exclusive for atomics so far.
    exclusive_grants: AtomicU64,
}

impl Mirror {
    fn va_of(&self, addr: usize) -> u64 {
        self.va + (addr - self.addr) as u64
    }

    /// Clears the entries of the pages of `[start, end)` (clamped to the
    /// userptr) from `pt`, which flushes the TLB.
    fn clear(&self, pt: &mut PageTable, start: usize, end: usize) {
        let mut a = start.max(self.addr) & !(PAGE_SIZE - 1);
        let end = end.min(self.addr + self.size);
        while a < end {
            pt.clear(self.va_of(a));
            a += PAGE_SIZE;
        }
    }
}

impl Invalidate for Mirror {
    fn invalidate(&self, range: &NotifierRange, seq: InvalidateSeq<'_>) -> bool {
        if range.event() == Event::Exclusive && range.owner() == self.owner {
            // Our own device-exclusive request: the pages stay ours.
            return true;
        }
        let mut pt = self.vm.pt().lock();
        if self.pinned {
            // The entries stay until unbind, whatever the CPU does.
            seq.set_seq();
            drop(pt);
            self.invalidations.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        // The last job submitted on the VM, if it is still pending: jobs
        // complete in order, so once it signals no job can reach the
        // entries. Under `pt`, which commits take to publish a job.
        let pending = self.vm.last_job();
        let pending = pending.filter(|f| !f.is_signaled());
        let Some(fence) = pending else {
            // Nothing runs: clear at once (a spinlock, so fine for
            // non-blockable invalidations too).
            seq.set_seq();
            pt.invalidation_seq.bump();
            self.clear(&mut pt, range.start(), range.end());
            drop(pt);
            self.invalidations.fetch_add(1, Ordering::Relaxed);
            return true;
        };
        if !range.blockable() {
            // Cannot wait for the job: refuse, changing nothing (the OOM
            // reaper tries again later).
            return false;
        }
        seq.set_seq();
        // From here until the entries are cleared no commit succeeds, so no
        // job published after `fence` can rely on them.
        pt.invalidation_seq.begin();
        drop(pt);
        wait_for_job(&fence);
        let mut pt = self.vm.pt().lock();
        self.clear(&mut pt, range.start(), range.end());
        pt.invalidation_seq.end();
        drop(pt);
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Waits for a job's fence, for as long as it takes (as amdgpu's notifier
/// does): the engine signals every fence, and nothing on its way there
/// waits for reclaim or for the locks an invalidation may be called with
/// (the signalling section, which lockdep checks).
fn wait_for_job(fence: &Fence) {
    // Uninterruptible: only errors for an interrupted wait.
    let _ = fence.wait_timeout(kernel::task::MAX_SCHEDULE_TIMEOUT as usize);
}

/// A range of the process's memory mapped into a GPU address space.
pub(crate) struct Userptr {
    notifier: Pin<KBox<IntervalNotifier<Mirror>>>,
    /// The pins of the baseline mode; dropped (unpinned) after the
    /// notifier, once `drop` has cleared the entries.
    _pins: Option<PinnedPages>,
}

impl Userptr {
    /// Mirrors `[addr, addr + size)` of the calling process at `va` of
    /// `vm`, read-only for the GPU if `readonly`.
    ///
    /// With `pinned`, the baseline mode that i915 implements: every page is
    /// pinned now (`pin_user_pages_fast(FOLL_LONGTERM)`, faulting it in,
    /// for writing unless `readonly`) and mapped into the device until the
    /// binding goes. Nothing can migrate or reclaim the pages meanwhile;
    /// the notifier only bumps its sequence, as i915's does (i915 then
    /// re-pins on its next submission, which softgpu does not model), so
    /// after munmap or copy-on-write the GPU still reaches the pinned
    /// pages, not what the CPU maps.
    ///
    /// Every page must be in a mapping of the caller that HMM can mirror
    /// (see [`check_mappings`]), writable unless `readonly`. `EINVAL` for
    /// an unaligned, empty or overflowing range, or one outside the GPU
    /// address space; `EFAULT` if part of it is not mapped (kernel
    /// addresses never are); `EOPNOTSUPP` for a `VM_IO`, `VM_PFNMAP` or
    /// `VM_MIXEDMAP` mapping; `EPERM` for memory that is not writable
    /// while `readonly` is not set.
    pub(crate) fn new<V: Space + 'static>(
        vm: &Arc<V>,
        va: u64,
        addr: usize,
        size: usize,
        readonly: bool,
        pinned: bool,
    ) -> Result<Self> {
        let aligned = |x: u64| x % PAGE == 0;
        if size == 0 || !aligned(va) || !aligned(addr as u64) || !aligned(size as u64) {
            return Err(EINVAL);
        }
        let end = addr.checked_add(size).ok_or(EINVAL)?;
        if !va.checked_add(size as u64).is_some_and(|e| e <= VA_END) {
            return Err(EINVAL);
        }
        let mm = MmWithUser::current().ok_or(EFAULT)?;
        check_mappings(&mm, addr, end, readonly)?;
        PageTable::reserve(vm.pt(), va, va + size as u64)?;
        // The VM's address identifies its exclusive requests.
        let owner = Owner::from_ref(&**vm);
        let space: Arc<dyn Space> = vm.clone();
        let notifier = KBox::pin_init(
            IntervalNotifier::new(
                &mm,
                addr,
                size,
                pin_init!(Mirror {
                    vm: space,
                    addr,
                    size,
                    va,
                    readonly,
                    pinned,
                    owner,
                    invalidations: AtomicU64::new(0),
                    exclusive_grants: AtomicU64::new(0),
                }),
            ),
            GFP_KERNEL,
        )?;
        if !pinned {
            return Ok(Self {
                notifier,
                _pins: None,
            });
        }
        let pins = PinnedPages::pin_current(addr, size, !readonly)?;
        // Pinned memory is the device's until unbind: atomics too.
        let perm = if readonly { Perm::Read } else { Perm::Atomic };
        let mut pt = vm.pt().lock();
        for i in 0..pins.len() {
            if let Some(pfn) = pins.pfn(i) {
                pt.set(va + (i * PAGE_SIZE) as u64, Pte::system(pfn, perm));
            }
        }
        drop(pt);
        Ok(Self {
            notifier,
            _pins: Some(pins),
        })
    }

    /// The GPU address the range is mapped at.
    pub(crate) fn va(&self) -> u64 {
        self.notifier.va
    }

    /// Its size in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.notifier.size as u64
    }

    /// How many invalidations cleared (part of) the range so far.
    #[cfg(CONFIG_DRM_SOFTGPU_KUNIT_TEST)]
    pub(crate) fn invalidations(&self) -> u64 {
        self.notifier.invalidations.load(Ordering::Relaxed)
    }

    /// Maps the pages of `[va, va + len)` (GPU addresses, within the
    /// userptr) into the device page table, faulting them in, for writing
    /// if `write`: a page is mapped writable only if the CPU maps it
    /// writable (so copy-on-write is broken before the GPU writes), and the
    /// engine faults again to write through an entry that is not.
    ///
    /// With `dmem`, pages that migrated into the device's VRAM (`dmem.rs`)
    /// stay there and are mapped as VRAM entries: the fault reports them
    /// rather than migrating them back (their owner is `dmem`'s). The CPU
    /// cannot reach such a page without first migrating it back, which
    /// invalidates the entry: the device has it to itself, atomics
    /// included. A read-only one (shared with a child after `fork()`)
    /// that a write needs is faulted back to system memory instead, which
    /// breaks copy-on-write as the CPU's write fault does.
    ///
    /// `EFAULT` for a write to a read-only userptr, for a range outside it,
    /// or for memory no longer mapped (the job fails rather than reach a
    /// stale page); `EPERM` for memory that is no longer writable; `EBUSY`
    /// if invalidations kept colliding for `hmm::DEFAULT_TIMEOUT_MS`.
    pub(crate) fn populate(&self, va: u64, len: u64, write: bool, dmem: Option<&Dmem>) -> Result {
        let m = &**self.notifier;
        // Pinned: every entry exists from the start, with all the access
        // the binding allows.
        if (write && m.readonly) || m.pinned {
            return Err(EFAULT);
        }
        let first = va & !(PAGE - 1);
        let last = va.checked_add(len).ok_or(EFAULT)?;
        if len == 0 || first < m.va || last > m.va + m.size as u64 {
            return Err(EFAULT);
        }
        let start = m.addr + (first - m.va) as usize;
        let end = m.addr + (last.next_multiple_of(PAGE) - m.va) as usize;
        let access = if write { Access::Write } else { Access::Read };
        // A write to a read-only page in VRAM: fault it back (see above).
        let mut dmem = dmem;
        for _ in 0..2 {
            if self.populate_range(start, end, access, write, dmem)? {
                return Ok(());
            }
            dmem = None;
        }
        Err(EFAULT)
    }

    /// [`Userptr::populate`]'s fault and mapping of `[start, end)` (CPU
    /// addresses). Returns `false`, mapping nothing, if `write` and a page
    /// is in `dmem`'s VRAM read-only.
    fn populate_range(
        &self,
        start: usize,
        end: usize,
        access: Access,
        write: bool,
        dmem: Option<&Dmem>,
    ) -> Result<bool> {
        let m = &**self.notifier;
        let mut range = Range::new(&self.notifier, start, end, access)?;
        if let Some(d) = dmem {
            range.set_dev_private_owner(d.owner());
        }
        let mut pt = range.fault_locked(hmm::DEFAULT_TIMEOUT_MS, || m.vm.pt().lock())?;
        let in_vram = |pfn: usize| dmem.and_then(|d| d.vram_offset(pfn));
        if write
            && range
                .pfns()
                .iter()
                .any(|p| p.pfn().and_then(in_vram).is_some() && !p.is_writable())
        {
            return Ok(false);
        }
        // In the critical section: the entries stay valid until the next
        // invalidation, which needs `pt`.
        for (i, p) in range.pfns().iter().enumerate() {
            let Some(pfn) = p.pfn() else {
                return Err(EFAULT);
            };
            let writable = !m.readonly && p.is_writable();
            if let Some(offset) = in_vram(pfn) {
                // Ours, in VRAM: the CPU takes it back only through an
                // invalidation, which needs `pt` (see `populate`).
                let perm = if writable { Perm::Atomic } else { Perm::Read };
                pt.set(m.va_of(start + i * PAGE_SIZE), Pte::vram(offset, perm));
                continue;
            }
            if writable {
                // The device may write from now on, behind the CPU page
                // table's dirty bit: without this, a folio that is clean in
                // the swap cache would be dropped by reclaim rather than
                // written out.
                // SAFETY: In the critical section: `fault_locked` returned
                // with `pt` held and the sequence checked.
                unsafe { p.mark_dirty() };
            }
            let perm = if writable { Perm::Write } else { Perm::Read };
            pt.set(m.va_of(start + i * PAGE_SIZE), Pte::system(pfn, perm));
        }
        Ok(true)
    }

    /// Migrates the pages of `[va, va + len)` (GPU addresses within the
    /// userptr) into `dmem`'s VRAM (`to_vram`) or back to system memory
    /// (`USERPTR_MIGRATE`). The migration's invalidation clears the
    /// range's entries after the VM's pending jobs; the next submission
    /// maps the pages where they are then. Pages that cannot move (pinned
    /// by someone, locked, no room in VRAM) stay: see the counts.
    ///
    /// `EINVAL` for a range not page aligned, empty, or not within the
    /// userptr, and for a pinned (baseline) userptr; `ESRCH` once the
    /// process has exited; `EFAULT` if part of the range is no longer
    /// mapped; `EOPNOTSUPP` if part of it is not private anonymous memory
    /// (shared, file-backed, hugetlbfs: 6.12 migrates only private
    /// anonymous pages to device private memory). Nothing moves then.
    pub(crate) fn migrate(
        &self,
        va: u64,
        len: u64,
        to_vram: bool,
        dmem: &Dmem,
    ) -> Result<Migrated> {
        let m = &**self.notifier;
        let end_va = va.checked_add(len).ok_or(EINVAL)?;
        if m.pinned
            || len == 0
            || va % PAGE != 0
            || len % PAGE != 0
            || va < m.va
            || end_va > m.va + m.size as u64
        {
            return Err(EINVAL);
        }
        let start = m.addr + (va - m.va) as usize;
        let end = start + len as usize;
        let mm = self.notifier.mm().mmget_not_zero().ok_or(ESRCH)?;
        let mmap = mm.mmap_read_lock();
        // Everything checked before anything moves.
        let mut a = start;
        while a < end {
            let vma = mmap.vma_lookup(a).ok_or(EFAULT)?;
            if !vma.is_anonymous() || vma.is_shared() || vma.is_hugetlb() {
                return Err(EOPNOTSUPP);
            }
            a = vma.end();
        }
        let mut done = Migrated::default();
        let mut a = start;
        while a < end {
            let vma = mmap.vma_lookup(a).ok_or(EFAULT)?;
            let e = end.min(vma.end());
            done += if to_vram {
                dmem.migrate_to_vram(vma, a, e)?
            } else {
                dmem.migrate_to_system(vma, a, e)?
            };
            a = e;
        }
        Ok(done)
    }

    /// Takes the page at `va` (a GPU address within the userptr) exclusive
    /// to the device (`make_device_exclusive_range()`, which faults it in
    /// writable first), maps it for atomics and calls
    /// `commit(page table, folio, offset of va)` under the page table lock
    /// with the page still locked: the CPU cannot take it back before the
    /// commit (the submission publishing its job, after which the CPU's
    /// invalidation waits for the job), which guarantees the device
    /// progress however hard the CPU contends for the page. An error of
    /// `commit` is returned; the entry stays. The CPU page table then points to a
    /// special entry, and the first CPU access takes the page back through
    /// an invalidation, which clears the entry.
    ///
    /// The notifier ignores the invalidation this causes (its owner is the
    /// VM), so it does not collide with itself; any other invalidation
    /// before the entry is set starts again, for up to
    /// `hmm::DEFAULT_TIMEOUT_MS`, then `EBUSY` (also if the page stays
    /// locked by someone else). Only private anonymous memory can be made
    /// exclusive in 6.12 (a private file mapping's page is, once the write
    /// fault has copied it): `EOPNOTSUPP` at once for shmem, page cache
    /// and hugetlbfs pages. A page of a large anonymous folio (THP) is
    /// split out of it first (see [`hmm::prepare_device_exclusive`]).
    /// `EFAULT` for a read-only userptr, an address outside it, memory no
    /// longer mapped or a process that has exited.
    pub(crate) fn make_exclusive(
        &self,
        va: u64,
        commit: &mut dyn FnMut(&mut PageTable, &Folio, usize) -> Result,
    ) -> Result {
        let m = &**self.notifier;
        if m.readonly || m.pinned || va < m.va || va >= m.va + m.size as u64 {
            return Err(EFAULT);
        }
        let offset = (va % PAGE) as usize;
        let va = va & !(PAGE - 1);
        let start = m.addr + (va - m.va) as usize;
        let mm = self.notifier.mm().mmget_not_zero().ok_or(EFAULT)?;
        let started = Ktime::ktime_get();
        loop {
            if (Ktime::ktime_get() - started).to_ms() >= i64::from(hmm::DEFAULT_TIMEOUT_MS) {
                return Err(EBUSY);
            }
            let mmap = mm.mmap_read_lock();
            // Fail at once on memory that 6.12 cannot make exclusive
            // (`EOPNOTSUPP`), and split a large anonymous folio first.
            // This faults the page in writable, which also takes back an
            // exclusive entry that an earlier attempt left behind: both
            // invalidate the range, so they come before `read_begin()`,
            // else every retry would collide with the previous attempt.
            // (`read_begin()` may wait for a running invalidation under the
            // mmap read lock: no invalidation waits for that lock once
            // started; those that need it take it before they start.)
            match hmm::prepare_device_exclusive(&mmap, start) {
                Ok(()) => {}
                Err(e) if e == EAGAIN => {
                    drop(mmap);
                    usleep(50);
                    continue;
                }
                Err(e) => return Err(if e == EPERM { EFAULT } else { e }),
            }
            let seq = self.notifier.read_begin();
            let exclusive = hmm::make_device_exclusive(&mmap, start, start + PAGE_SIZE, m.owner)
                .map_err(|e| if e == EPERM { EFAULT } else { e })?;
            let Some(folio) = exclusive.locked_folio(0) else {
                // Locked by someone else just now (or not possible): let
                // them finish.
                drop(exclusive);
                drop(mmap);
                usleep(50);
                continue;
            };
            // Lock order: mmap lock -> folio lock -> `pt`.
            let mut pt = m.vm.pt().lock();
            if self.notifier.read_retry(seq) {
                continue;
            }
            // The device writes it from now on (see `populate`).
            folio.mark_dirty();
            pt.set(va, Pte::system(folio.pfn(), Perm::Atomic));
            m.exclusive_grants.fetch_add(1, Ordering::Relaxed);
            // The page is the folio's first (see `ExclusivePages::folio`).
            let done = commit(&mut pt, &folio, offset);
            // Dropping the guards: `pt`, then the folio lock and reference
            // (the CPU may take the page back from then on, through the
            // notifier, which needs `pt`), then the mmap lock.
            return done;
        }
    }
}

impl Drop for Userptr {
    fn drop(&mut self) {
        // Clear the entries before removing the notifier (dropping the
        // field): once it is gone, nothing would clear them before the
        // pages are freed. Nothing populates meanwhile: that needs `&self`.
        let m = &**self.notifier;
        let mut pt = m.vm.pt().lock();
        m.clear(&mut pt, m.addr, m.addr + m.size);
    }
}

/// Checks that `[addr, end)` is mapped in `mm` by memory that HMM can
/// mirror, writable unless `readonly`: any mapping of pages with a
/// `struct page` that the CPU page tables map normally (anonymous, shared
/// anonymous, file-backed shared or private, THP, hugetlbfs), but not
/// `VM_IO`, `VM_PFNMAP` or `VM_MIXEDMAP` ones (device memory, raw page
/// frames), which `hmm_range_fault()` refuses (`EOPNOTSUPP`).
fn check_mappings(mm: &MmWithUser, addr: usize, end: usize, readonly: bool) -> Result {
    let mmap = mm.mmap_read_lock();
    let mut a = addr;
    while a < end {
        let vma = mmap.vma_lookup(a).ok_or(EFAULT)?;
        if vma.flags() & (vm::IO | vm::PFNMAP | vm::MIXEDMAP) != 0 {
            return Err(EOPNOTSUPP);
        }
        if !readonly && !vma.is_writable() {
            return Err(EPERM);
        }
        a = vma.end();
    }
    Ok(())
}

#[cfg(CONFIG_DRM_SOFTGPU_KUNIT_TEST)]
#[kernel::kunit::kunit_tests(softgpu_userptr)]
mod tests {
    use super::*;
    // The tests bind userptrs in the address space that binds them in the
    // driver: a VM.
    use crate::{pt::Target, vm::Vm, vram::Slot};
    use kernel::{
        mm::testing::{self, PROT_READ, PROT_WRITE},
        uaccess::UserSlice,
    };

    const VA: u64 = 0x4000_0000;

    /// Maps `pages` pages of anonymous memory, each filled with its index.
    fn user_pages(pages: usize, prot: u32) -> Result<usize> {
        let addr = testing::vm_mmap_anon(pages * PAGE_SIZE, prot)?;
        if prot & PROT_WRITE != 0 {
            for i in 0..pages {
                let word = (i as u64).to_ne_bytes();
                UserSlice::new(addr + i * PAGE_SIZE, 8)
                    .writer()
                    .write_slice(&word)?;
            }
        }
        Ok(addr)
    }

    /// The first word of the page the device maps at `va`, if any.
    /// Read as the engine reads: through the page table.
    fn gpu_read(vm: &Vm, va: u64) -> Option<(u64, bool)> {
        // No VRAM device: userptr entries map system pages.
        let no_vram = Slot::new().ok()?;
        let mut pt = vm.pt.lock();
        let pte = pt.lookup(va)?;
        assert!(matches!(pte.target(), Target::System(_)));
        let writable = pte.allows(Perm::Write);
        let mut word = [0u8; 8];
        pt.access(va, Perm::Read, &no_vram, |page| page.read(0, &mut word))?
            .ok()?;
        Some((u64::from_ne_bytes(word), writable))
    }

    #[test]
    fn populate_and_invalidate() -> Result {
        let addr = user_pages(4, PROT_READ | PROT_WRITE)?;
        let vm = Vm::new()?;
        let u = Userptr::new(&vm, VA, addr, 4 * PAGE_SIZE, false, false)?;
        assert_eq!((u.va(), u.size()), (VA, 4 * PAGE));
        assert_eq!(gpu_read(&vm, VA), None);

        u.populate(VA, 4 * PAGE, false, None)?;
        for i in 0..4u64 {
            assert_eq!(gpu_read(&vm, VA + i * PAGE), Some((i, true)));
        }

        // munmap() clears the entry before the page goes.
        let before = u.invalidations();
        testing::vm_munmap(addr + 2 * PAGE_SIZE, PAGE_SIZE)?;
        assert!(u.invalidations() > before);
        assert_eq!(gpu_read(&vm, VA + 2 * PAGE), None);
        assert_eq!(gpu_read(&vm, VA + 3 * PAGE), Some((3, true)));
        // Faulting the hole fails instead of mapping a stale page.
        assert_eq!(u.populate(VA + 2 * PAGE, 1, true, None), Err(EFAULT));
        // Outside the userptr.
        assert_eq!(u.populate(VA + 4 * PAGE, 1, false, None), Err(EFAULT));

        drop(u);
        assert_eq!(gpu_read(&vm, VA), None);
        Ok(())
    }

    #[test]
    fn read_only() -> Result {
        let addr = user_pages(2, PROT_READ)?;
        let vm = Vm::new()?;
        assert_eq!(
            Userptr::new(&vm, VA, addr, 2 * PAGE_SIZE, false, false).err(),
            Some(EPERM)
        );
        let u = Userptr::new(&vm, VA, addr, 2 * PAGE_SIZE, true, false)?;
        assert_eq!(u.populate(VA, 1, true, None), Err(EFAULT));
        u.populate(VA, 2 * PAGE, false, None)?;
        // Never written: the zero page, mapped read-only.
        assert_eq!(gpu_read(&vm, VA + PAGE), Some((0, false)));
        Ok(())
    }

    #[test]
    fn exclusive_for_atomics() -> Result {
        let addr = user_pages(1, PROT_READ | PROT_WRITE)?;
        let vm = Vm::new()?;
        let u = Userptr::new(&vm, VA, addr, PAGE_SIZE, false, false)?;
        u.populate(VA, PAGE, true, None)?;
        let pte = vm.pt.lock().lookup(VA).ok_or(EINVAL)?;
        assert!(pte.allows(Perm::Write) && !pte.allows(Perm::Atomic));

        let mut seen = None;
        u.make_exclusive(VA + 8, &mut |_, folio, off| {
            let mut word = [0u8; 8];
            folio.read(off, &mut word)?;
            seen = Some((off, u64::from_ne_bytes(word)));
            Ok(())
        })?;
        // Page 0 holds its index, 0, at offset 0; offset 8 is zero too.
        assert_eq!(seen, Some((8, 0)));
        let pte = vm.pt.lock().lookup(VA).ok_or(EINVAL)?;
        assert!(pte.allows(Perm::Atomic));
        assert_eq!(u.notifier.exclusive_grants.load(Ordering::Relaxed), 1);
        // Our own exclusive request did not clear the entry: it is there.
        assert_eq!(gpu_read(&vm, VA), Some((0, true)));

        // The CPU takes the page back, which clears the entry.
        let before = u.invalidations();
        let mut word = [0u8; 8];
        UserSlice::new(addr, 8).reader().read_slice(&mut word)?;
        assert!(u.invalidations() > before);
        assert_eq!(gpu_read(&vm, VA), None);

        // Outside the userptr; a read-only one.
        let mut nothing = |_: &mut PageTable, _: &Folio, _: usize| Ok(());
        assert_eq!(u.make_exclusive(VA + PAGE, &mut nothing), Err(EFAULT));
        let ro = Userptr::new(&vm, VA + PAGE, addr, PAGE_SIZE, true, false)?;
        assert_eq!(ro.make_exclusive(VA + PAGE, &mut nothing), Err(EFAULT));
        Ok(())
    }

    /// Shared anonymous memory (shmem folios): mirrored and dirtied like
    /// anonymous memory, invalidated on munmap; atomics refused at once.
    #[test]
    fn shared_anonymous() -> Result {
        let addr = testing::vm_mmap_shared_anon(2 * PAGE_SIZE, PROT_READ | PROT_WRITE)?;
        UserSlice::new(addr + PAGE_SIZE, 8)
            .writer()
            .write_slice(&7u64.to_ne_bytes())?;
        let vm = Vm::new()?;
        let u = Userptr::new(&vm, VA, addr, 2 * PAGE_SIZE, false, false)?;
        u.populate(VA, 2 * PAGE, true, None)?;
        assert_eq!(gpu_read(&vm, VA), Some((0, true)));
        assert_eq!(gpu_read(&vm, VA + PAGE), Some((7, true)));
        let mut nothing = |_: &mut PageTable, _: &Folio, _: usize| Ok(());
        let t = Ktime::ktime_get();
        assert_eq!(u.make_exclusive(VA, &mut nothing), Err(EOPNOTSUPP));
        // At once, not after the HMM timeout.
        assert!((Ktime::ktime_get() - t).to_ms() < i64::from(hmm::DEFAULT_TIMEOUT_MS));
        assert_eq!(u.notifier.exclusive_grants.load(Ordering::Relaxed), 0);
        // Still mapped (the refusal changed nothing).
        assert_eq!(gpu_read(&vm, VA + PAGE), Some((7, true)));
        testing::vm_munmap(addr, 2 * PAGE_SIZE)?;
        assert_eq!(gpu_read(&vm, VA + PAGE), None);
        assert_eq!(u.populate(VA, PAGE, false, None), Err(EFAULT));
        Ok(())
    }

    #[test]
    fn bad_input() -> Result {
        let addr = user_pages(2, PROT_READ | PROT_WRITE)?;
        let vm = Vm::new()?;
        let len = 2 * PAGE_SIZE;
        let new = |va, addr, size| Userptr::new(&vm, va, addr, size, false, false).err();
        assert_eq!(new(VA, addr + 1, len), Some(EINVAL));
        assert_eq!(new(VA, addr, len - 1), Some(EINVAL));
        assert_eq!(new(VA, addr, 0), Some(EINVAL));
        assert_eq!(new(VA + 1, addr, len), Some(EINVAL));
        assert_eq!(new(VA_END - PAGE, addr, len), Some(EINVAL));
        assert_eq!(new(VA, usize::MAX - PAGE_SIZE + 1, len), Some(EINVAL));
        // Past the mapping, and a kernel address.
        assert_eq!(new(VA, addr, len + PAGE_SIZE), Some(EFAULT));
        let kernel_addr = core::ptr::from_ref(&vm) as usize & !(PAGE_SIZE - 1);
        assert_eq!(new(VA, kernel_addr, PAGE_SIZE), Some(EFAULT));
        Ok(())
    }
}
