// SPDX-License-Identifier: GPL-2.0

//! The command engine: one in-order queue of jobs for the whole device,
//! executed by a work item. Commands reach memory only through the job's
//! VM page table. The pages of buffer objects a job accesses were made
//! resident when it was submitted (`Vm::make_resident`): a missing entry
//! there is a GPU page fault that fails the job (`EFAULT`, or the error
//! met at submission), as resolving it would allocate in the fence's
//! signalling critical section. Userptr pages were faulted in at
//! submission too (`Vm::fault_in_userptrs`), and their MMU notifier waits
//! for the VM's last job before it clears an entry: a missing userptr
//! entry (the binding went) fails the job likewise, never through HMM.
//!
//! Jobs can run for long (a command may fill, copy or checksum a GiB), and
//! the kernels this runs on may not preempt kernel code
//! (`CONFIG_PREEMPT_NONE`): the engine yields with `cond_resched()` after
//! every page and between jobs, never with a lock held, so that other tasks,
//! RCU grace periods and `stop_machine()` (CPU hotplug, NUMA balancing's
//! `migrate_swap()`) get the CPU.
//!
//! The same queue runs TTM's copies: a move of a discrete-mode object
//! between VRAM and system memory is a copy job ([`Engine::submit_copy`],
//! `kernel::drm::ttm::CopyJob`) with a fence of the engine's copy context,
//! queued behind every job before it. Jobs of both kinds run in the order
//! they were queued (a ticket each), so a job that uses an object's new
//! place, made resident after the move, runs after the copy into it.

use crate::pt::{Page, Perm, PAGE, VA_END};
use crate::vm::{Fault, Vm};
use crate::vram::Slot;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    c_str,
    dma_fence::canceled,
    dma_fence::{Fence, FenceContext, PendingFence, SignallingSection},
    drm::ttm,
    impl_has_work, new_mutex, new_spinlock, new_work,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::{Arc, Mutex, SpinLock, UniqueArc},
    task::cond_resched,
    time::Ktime,
    types::ARef,
    uapi,
    workqueue::{self, Work, WorkItem},
};

/// A validated command.
#[derive(Clone, Copy)]
pub(crate) enum Cmd {
    Fill { dst: u64, size: u64, value: u32 },
    Copy { dst: u64, src: u64, size: u64 },
    AtomicAdd { dst: u64, value: u64, times: u64 },
    Checksum { dst: u64, src: u64, size: u64 },
    Busy { us: u64 },
}

/// Most additions one ATOMIC_ADD command may do.
const MAX_ATOMIC_TIMES: u64 = 1 << 20;
/// Most additions done under one hold of the page table lock: the MMU
/// notifier's callback and gemfs's release wait for that lock, and the
/// engine yields between batches.
const ATOMIC_BATCH: u64 = 4096;
/// Longest BUSY command, in microseconds.
const MAX_BUSY_US: u64 = 1_000_000;

fn range_ok(a: u64, size: u64) -> bool {
    a.checked_add(size).is_some_and(|e| e <= VA_END)
}

impl Cmd {
    /// Validates a command as userspace gave it: `EINVAL` if malformed.
    pub(crate) fn from_uapi(c: &uapi::drm_softgpu_cmd) -> Result<Self> {
        if c.flags != 0 {
            return Err(EINVAL);
        }
        let cmd = match c.op {
            uapi::SOFTGPU_CMD_FILL if c.size % 4 == 0 && c.value <= u32::MAX as u64 => Cmd::Fill {
                dst: c.dst,
                size: c.size,
                value: c.value as u32,
            },
            uapi::SOFTGPU_CMD_COPY
                if c.src.checked_add(c.size).is_some_and(|e| e <= c.dst)
                    || c.dst.checked_add(c.size).is_some_and(|e| e <= c.src) =>
            {
                Cmd::Copy {
                    dst: c.dst,
                    src: c.src,
                    size: c.size,
                }
            }
            uapi::SOFTGPU_CMD_ATOMIC_ADD if c.dst % 8 == 0 && c.size <= MAX_ATOMIC_TIMES => {
                Cmd::AtomicAdd {
                    dst: c.dst,
                    value: c.value,
                    times: c.size,
                }
            }
            uapi::SOFTGPU_CMD_CHECKSUM if c.dst % 8 == 0 => Cmd::Checksum {
                dst: c.dst,
                src: c.src,
                size: c.size,
            },
            uapi::SOFTGPU_CMD_BUSY if c.value <= MAX_BUSY_US => Cmd::Busy { us: c.value },
            _ => return Err(EINVAL),
        };
        let ok = match cmd {
            Cmd::Fill { dst, size, .. } => range_ok(dst, size),
            Cmd::Copy { dst, src, size } => range_ok(dst, size) && range_ok(src, size),
            Cmd::Checksum { dst, src, size } => range_ok(dst, 8) && range_ok(src, size),
            Cmd::AtomicAdd { dst, .. } => range_ok(dst, 8),
            Cmd::Busy { .. } => true,
        };
        if ok {
            Ok(cmd)
        } else {
            Err(EINVAL)
        }
    }
}

impl Cmd {
    /// The memory the command accesses: up to two ranges (GPU address,
    /// size in bytes) and the access to each.
    pub(crate) fn accesses(&self) -> [Option<(u64, u64, Perm)>; 2] {
        match *self {
            Cmd::Fill { dst, size, .. } => [Some((dst, size, Perm::Write)), None],
            Cmd::Copy { dst, src, size } => [
                Some((src, size, Perm::Read)),
                Some((dst, size, Perm::Write)),
            ],
            // One access even for a count of 0 (see `run_cmd`).
            Cmd::AtomicAdd { dst, .. } => [Some((dst, 8, Perm::Atomic)), None],
            Cmd::Checksum { dst, src, size } => {
                [Some((src, size, Perm::Read)), Some((dst, 8, Perm::Write))]
            }
            Cmd::Busy { .. } => [None, None],
        }
    }
}

/// What a job's submitter can see of it.
pub(crate) struct JobInfo {
    pub(crate) fence: ARef<Fence>,
    pub(crate) fault_addr: AtomicU64,
}

/// Per-file engine accounting, for fdinfo's `drm-engine-render`.
pub(crate) struct EngineStats {
    pub(crate) busy_ns: AtomicU64,
}

/// What a submission found of a job's memory (see `Vm::make_resident`).
pub(crate) struct JobMemory {
    /// The first page that could not be made resident, and why.
    pub(crate) unresolved: Option<Fault>,
}

struct Job {
    vm: Arc<Vm>,
    /// The device's VRAM, which VRAM entries of the VM point into.
    vram: Arc<Slot>,
    cmds: KVec<Cmd>,
    memory: JobMemory,
    cancelled: bool,
    fence: PendingFence,
    info: Arc<JobInfo>,
    stats: Arc<EngineStats>,
}

/// What the queue holds.
enum Queued {
    /// A job of a VM (`EXEC`).
    Job(Job),
    /// A TTM move's copy.
    Copy(ttm::CopyJob),
}

/// The engine's queue: what is to run, by ticket, in ticket order.
struct Queue {
    work: RBTree<u64, Queued>,
    /// The next ticket.
    next: u64,
}

impl Queue {
    /// Adds `node`'s entry with the next ticket.
    fn push(&mut self, node: RBTreeNodeReservation<u64, Queued>, entry: Queued) {
        let ticket = self.next;
        self.next += 1;
        self.work.insert(node.into_node(ticket, entry));
    }
}

/// The device's engine.
#[pin_data]
pub(crate) struct Engine {
    #[pin]
    work: Work<Engine>,
    #[pin]
    queue: SpinLock<Queue>,
    /// Serialises fence creation and queueing of jobs, so their seqnos
    /// enter the queue in order. `EXEC` holds it while it adds the job's
    /// fence to its objects' reservation objects (`prepare`).
    #[pin]
    submit: Mutex<()>,
    fences: FenceContext,
    /// The same for copy jobs: taken in TTM's move callback, with the
    /// object (and, evicting, others) reserved, so never around waiting
    /// for a reservation, as `submit` is.
    #[pin]
    copy_submit: Mutex<()>,
    copy_fences: FenceContext,
    pub(crate) jobs_done: AtomicU64,
    /// Copy jobs queued, begun, and the pages they copied.
    pub(crate) copies_queued: AtomicU64,
    pub(crate) copies_done: AtomicU64,
    pub(crate) copy_pages: AtomicU64,
    /// A page of bounce buffer for the commands, allocated once: job
    /// execution must not allocate (see [`Engine::execute`]). Only the
    /// work item, which does not run twice at once, takes it.
    #[pin]
    buf: Mutex<KVec<u8>>,
    /// The device's VRAM, if it has any (`vram.rs`).
    vram: Arc<Slot>,
}

impl_has_work! {
    impl HasWork<Self> for Engine { self.work }
}

impl Engine {
    pub(crate) fn new(vram: Arc<Slot>) -> Result<Arc<Self>> {
        let buf = KVec::from_elem(0u8, PAGE as usize, GFP_KERNEL)?;
        let fences = FenceContext::new(c_str!("softgpu"), c_str!("softgpu-engine"))?;
        let copy_fences = FenceContext::new(c_str!("softgpu"), c_str!("softgpu-copy"))?;
        let queue = Queue {
            work: RBTree::new(),
            next: 0,
        };
        Arc::pin_init(
            pin_init!(Self {
                work <- new_work!("softgpu_engine"),
                queue <- new_spinlock!(queue, "softgpu_engine_queue"),
                submit <- new_mutex!((), "softgpu_engine_submit"),
                fences,
                copy_submit <- new_mutex!((), "softgpu_engine_copy_submit"),
                copy_fences,
                jobs_done: AtomicU64::new(0),
                copies_queued: AtomicU64::new(0),
                copies_done: AtomicU64::new(0),
                copy_pages: AtomicU64::new(0),
                buf <- new_mutex!(buf, "softgpu_engine_buf"),
                vram,
            }),
            GFP_KERNEL,
        )
    }

    /// Queues `cmds` on `vm`. `prepare` runs once the job's fence exists,
    /// before the job can run: it publishes the job to the VM's userptr
    /// notifiers, marks objects busy and records the job for its file. If
    /// it fails, the job is cancelled (its fence signals `ECANCELED`, in
    /// order), `cmds` left to the caller, and the error returned.
    pub(crate) fn submit(
        self: &Arc<Self>,
        vm: Arc<Vm>,
        cmds: &mut KVec<Cmd>,
        memory: JobMemory,
        stats: Arc<EngineStats>,
        prepare: impl FnOnce(&Arc<JobInfo>) -> Result,
    ) -> Result<Arc<JobInfo>> {
        let guard = self.submit.lock();
        // Allocated before the fence: once a fence exists, its job must
        // reach the queue so that fences signal in order.
        let reservation = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let info = UniqueArc::new_uninit(GFP_KERNEL)?;
        let fence = self.fences.new_fence()?;
        let info: Arc<JobInfo> = info
            .write(JobInfo {
                fence: fence.fence().clone(),
                fault_addr: AtomicU64::new(0),
            })
            .into();
        let res = prepare(&info);
        let job = Job {
            vm,
            vram: self.vram.clone(),
            cmds: if res.is_ok() {
                core::mem::take(cmds)
            } else {
                KVec::new()
            },
            memory,
            cancelled: res.is_err(),
            fence,
            info: info.clone(),
            stats,
        };
        self.queue.lock().push(reservation, Queued::Job(job));
        drop(guard);
        // Fails only if already queued: then it will see this job.
        let _ = workqueue::system_unbound().enqueue(self.clone());
        res.map(|()| info)
    }

    /// Queues the copy of a TTM move (`tbo.rs`) behind everything queued
    /// so far: the jobs that used the object's old memory are done (TTM's
    /// move waits for them), and those that will use the new are queued
    /// after it. On failure (no memory) the copy is dropped, and the CPU
    /// does it.
    pub(crate) fn submit_copy(self: &Arc<Self>, copy: ttm::MoveCopy<'_>) -> Result {
        let guard = self.copy_submit.lock();
        // Allocated before the fence, as in `submit`.
        let reservation = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let fence = self.copy_fences.new_fence()?;
        let job = copy.into_job(fence);
        self.copies_queued.fetch_add(1, Ordering::Relaxed);
        self.queue.lock().push(reservation, Queued::Copy(job));
        drop(guard);
        let _ = workqueue::system_unbound().enqueue(self.clone());
        Ok(())
    }

    /// Runs a copy job: its fence's signalling critical section, as a
    /// job's (`CopyJob::run` allocates nothing and takes no lock).
    fn execute_copy(&self, copy: ttm::CopyJob) {
        let section = SignallingSection::begin();
        // Counted before the fence signals: whoever waited for it sees the
        // job counted.
        self.copies_done.fetch_add(1, Ordering::Relaxed);
        self.copy_pages
            .fetch_add(copy.pages() as u64, Ordering::Relaxed);
        copy.run();
        drop(section);
    }

    /// debugfs `engine`: jobs run, copy jobs queued and run, pages copied.
    pub(crate) fn show(&self, p: &kernel::drm::Printer) {
        p.print(format_args!(
            "jobs_done: {}\ncopies_queued: {}\ncopies_done: {}\ncopy_pages: {}\n",
            self.jobs_done.load(Ordering::Relaxed),
            self.copies_queued.load(Ordering::Relaxed),
            self.copies_done.load(Ordering::Relaxed),
            self.copy_pages.load(Ordering::Relaxed),
        ));
    }

    /// Runs `job` and signals its fence, with the bounce buffer `buf`.
    ///
    /// This is the fence's signalling critical section: reclaim may wait
    /// for the fence (gemfs's release, in direct compaction), so nothing
    /// here may allocate with reclaim or take a lock held around such an
    /// allocation, and lockdep is told so. Buffer object pages were made
    /// resident at submission, and userptr pages faulted in then (their
    /// notifier waits for this job before it clears an entry), so a
    /// missing entry fails the job: nothing here faults memory in
    /// (Documentation/gpu/softgpu.rst, "Fences and reclaim").
    fn execute(&self, job: Job, buf: &mut [u8]) {
        let section = SignallingSection::begin();
        let start = Ktime::ktime_get();
        let mut result = if job.cancelled {
            Err(canceled())
        } else {
            Ok(())
        };
        if result.is_ok() {
            for cmd in job.cmds.iter() {
                if let Err(f) = run_cmd(&job, cmd, buf) {
                    job.info.fault_addr.store(f.addr, Ordering::Relaxed);
                    result = Err(f.err);
                    break;
                }
            }
        }
        let ns = (Ktime::ktime_get() - start).to_ns();
        job.stats.busy_ns.fetch_add(ns as u64, Ordering::Relaxed);
        self.jobs_done.fetch_add(1, Ordering::Relaxed);
        let Job { fence, vm, .. } = job;
        fence.signal(result);
        drop(section);
        // The job's VM reference may be the last (the file closed): its
        // teardown may sleep and allocate, outside the section.
        drop(vm);
    }
}

impl WorkItem for Engine {
    type Pointer = Arc<Engine>;

    fn run(this: Arc<Engine>) {
        let mut buf = this.buf.lock();
        loop {
            let next = {
                let mut q = this.queue.lock();
                let Some(c) = q.work.cursor_front() else {
                    break;
                };
                let (_, node) = c.remove_current();
                node.to_key_value().1
            };
            match next {
                Queued::Job(job) => this.execute(job, buf.as_mut_slice()),
                Queued::Copy(copy) => this.execute_copy(copy),
            }
            // Jobs may be queued back to back for long: a scheduling point
            // between them too.
            cond_resched();
        }
    }
}

fn fault_at(addr: u64, err: Error) -> Fault {
    Fault { addr, err }
}

impl Job {
    /// The fault a missing or insufficient entry at `va` is: the error met
    /// when the submission tried to make its page resident or fault it in,
    /// or `EFAULT` (unbound, read-only, or the page was taken since:
    /// unbind, truncation or a hole punch).
    fn unresolved(&self, va: u64) -> Fault {
        match self.memory.unresolved {
            Some(f) if f.addr / PAGE == va / PAGE => fault_at(va, f.err),
            _ => fault_at(va, EFAULT),
        }
    }
}

/// Runs `f` on the page that GPU address `va` translates to (a system page
/// or a VRAM one) and the offset of `va` in it, under the page table lock
/// (so the entry, and the hold or CPU mapping behind it, stay), if the
/// entry allows `perm` ([`crate::pt::PageTable::access`]).
///
/// A missing or insufficient entry fails the access: the page was made
/// resident (a buffer object's) or faulted in (a userptr's) before the job
/// was submitted, if it could be, and getting it now may allocate with
/// reclaim or take the mmap lock, which the signalling section forbids.
fn access(
    job: &Job,
    va: u64,
    perm: Perm,
    f: impl FnOnce(&Page<'_>, usize) -> Result,
) -> core::result::Result<(), Fault> {
    let mut pt = job.vm.pt.lock();
    let off = (va % PAGE) as usize;
    match pt.access(va, perm, &job.vram, |page| f(page, off)) {
        Some(res) => res.map_err(|e| fault_at(va, e)),
        // Missing; or not allowing `perm`: a read-only binding, a userptr
        // page the CPU did not map writable (or exclusive, for an atomic)
        // at submission, or an entry cleared since (unbind).
        None => Err(job.unresolved(va)),
    }
}

/// Calls `f(va, len)` for each page-bounded piece of `[start, start + size)`,
/// yielding the CPU between pieces if another task should run (`f` returns
/// with no lock held).
fn for_each_page(
    start: u64,
    size: u64,
    mut f: impl FnMut(u64, usize) -> core::result::Result<(), Fault>,
) -> core::result::Result<(), Fault> {
    let end = start + size;
    let mut a = start;
    while a < end {
        let n = (PAGE - a % PAGE).min(end - a);
        f(a, n as usize)?;
        a += n;
        cond_resched();
    }
    Ok(())
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn run_cmd(job: &Job, cmd: &Cmd, buf: &mut [u8]) -> core::result::Result<(), Fault> {
    match *cmd {
        Cmd::Fill { dst, size, value } => {
            let pat = value.to_le_bytes();
            for_each_page(dst, size, |va, n| {
                let phase = ((va - dst) % 4) as usize;
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = pat[(phase + i) % 4];
                }
                access(job, va, Perm::Write, |page, off| page.write(off, &buf[..n]))
            })
        }
        Cmd::Copy { dst, src, size } => for_each_page(src, size, |va, n| {
            access(job, va, Perm::Read, |page, off| {
                page.read(off, &mut buf[..n])
            })?;
            // The destination piece may straddle a page: split it.
            let d = dst + (va - src);
            let first = ((PAGE - d % PAGE) as usize).min(n);
            access(job, d, Perm::Write, |page, off| {
                page.write(off, &buf[..first])
            })?;
            if first < n {
                let d2 = d + first as u64;
                access(job, d2, Perm::Write, |page, off| {
                    page.write(off, &buf[first..n])
                })?;
            }
            Ok(())
        }),
        Cmd::AtomicAdd { dst, value, times } => {
            // In batches, each a separate access under the page table lock,
            // yielding between them: the lock is held for a bounded time,
            // and the MMU notifier or an unbind can take the lock in between
            // (a userptr's notifier waits for the job before it clears the
            // entry; an unbind does not, and the next batch then fails).
            // Each addition is a separate atomic operation, so CPU and device
            // additions to the same counter interleave; a job that faults
            // midway has done the batches before the fault.
            // At least one access, as before: a count of 0 still faults.
            let mut left = times;
            loop {
                let n = left.min(ATOMIC_BATCH);
                access(job, dst, Perm::Atomic, |page, off| {
                    page.atomic_add_u64(off, value, n).map(|_| ())
                })?;
                left -= n;
                if left == 0 {
                    return Ok(());
                }
                cond_resched();
            }
        }
        Cmd::Checksum { dst, src, size } => {
            let mut h = FNV_OFFSET;
            for_each_page(src, size, |va, n| {
                access(job, va, Perm::Read, |page, off| {
                    page.read(off, &mut buf[..n])
                })?;
                for b in &buf[..n] {
                    h = (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
                }
                Ok(())
            })?;
            let bytes = h.to_le_bytes();
            access(job, dst, Perm::Write, |page, off| page.write(off, &bytes))
        }
        Cmd::Busy { us } => {
            // The engine is occupied: nothing else runs meanwhile.
            crate::delay::usleep(us);
            Ok(())
        }
    }
}
