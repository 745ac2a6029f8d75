// SPDX-License-Identifier: GPL-2.0

//! A DRM file of softgpu: its GPU address space, its jobs, and the ioctls.
//!
//! Every ioctl validates all of its arguments before it changes anything,
//! so a rejected call leaves no trace.

use crate::{
    bo::{Bo, GemObject},
    engine::{Cmd, EngineStats, JobInfo, JobMemory},
    vm::{Entry, Vm, PAGE, VA_END},
    SoftGpu,
};
use kernel::{
    dma_fence::SyncFileFd,
    drm::{self, file::File},
    new_spinlock,
    prelude::*,
    sync::{Arc, SpinLock},
    uaccess::UserSlice,
    uapi,
};

type Device = drm::Device<SoftGpu>;
type DrmFile = File<SoftFile>;

/// WAIT answers for this many of a file's most recent jobs.
const TRACKED_JOBS: usize = 1024;
/// Submissions of one EXEC that userptr invalidations may cancel before
/// it gives up with `EAGAIN` (see `Vm::commit`).
const EXEC_ATTEMPTS: u32 = 8;

/// `ETIME`, which 6.12's `kernel::error::code` lacks.
fn etime() -> Error {
    Error::from_errno(-(kernel::bindings::ETIME as i32))
}

/// Per-file state.
#[pin_data(PinnedDrop)]
pub(crate) struct SoftFile {
    pub(crate) vm: Arc<Vm>,
    pub(crate) stats: Arc<EngineStats>,
    /// The most recent jobs, oldest first, as a ring.
    #[pin]
    jobs: SpinLock<JobRing>,
}

struct JobRing {
    slots: KVec<Option<Arc<JobInfo>>>,
    next: usize,
}

impl drm::file::DriverFile for SoftFile {
    type Driver = SoftGpu;

    fn open(_dev: &Device) -> Result<Pin<KBox<Self>>> {
        let mut slots = KVec::with_capacity(TRACKED_JOBS, GFP_KERNEL)?;
        for _ in 0..TRACKED_JOBS {
            slots.push(None, GFP_KERNEL)?;
        }
        KBox::pin_init(
            try_pin_init!(Self {
                vm: Vm::new()?,
                stats: Arc::new(
                    EngineStats {
                        busy_ns: core::sync::atomic::AtomicU64::new(0),
                    },
                    GFP_KERNEL
                )?,
                jobs <- new_spinlock!(JobRing { slots, next: 0 }, "softgpu_file_jobs"),
            }),
            GFP_KERNEL,
        )
    }
}

#[pinned_drop]
impl PinnedDrop for SoftFile {
    fn drop(self: Pin<&mut Self>) {
        // Jobs still queued keep the VM alive; they fault from now on.
        self.vm.teardown();
    }
}

fn lookup(file: &DrmFile, handle: u32) -> Result<ARef<GemObject>> {
    GemObject::lookup_handle(file, handle)
}

use kernel::types::ARef;

fn page_aligned(v: u64) -> bool {
    v % PAGE == 0
}

impl SoftFile {
    /// DRM_IOCTL_SOFTGPU_GEM_CREATE
    pub(crate) fn gem_create(
        dev: &Device,
        args: &mut uapi::drm_softgpu_gem_create,
        file: &DrmFile,
    ) -> Result<u32> {
        let ttm_flags = uapi::SOFTGPU_BO_VRAM | uapi::SOFTGPU_BO_SYSTEM | uapi::SOFTGPU_BO_TTM_POOL;
        let pinned = args.flags & uapi::SOFTGPU_BO_PINNED != 0;
        let ttm = args.flags & ttm_flags != 0;
        if args.flags & !(uapi::SOFTGPU_BO_PINNED | ttm_flags) != 0
            || args.size == 0
            || !page_aligned(args.size)
            || args.size > VA_END
            || (ttm && pinned)
        {
            return Err(EINVAL);
        }
        let size = usize::try_from(args.size).map_err(|_| EINVAL)?;
        let obj = if ttm {
            // Discrete mode: `EINVAL` for the pool flag alone, `ENODEV`
            // without a VRAM device.
            let placement = crate::tbo::placement(args.flags)?;
            let pool = args.flags & uapi::SOFTGPU_BO_TTM_POOL != 0;
            Bo::create_ttm(dev, size, &placement, pool)?
        } else {
            Bo::create(dev, size, pinned)?
        };
        args.handle = obj.create_handle(file)?;
        Ok(0)
    }

    /// DRM_IOCTL_SOFTGPU_GEM_MMAP_OFFSET
    pub(crate) fn gem_mmap_offset(
        _dev: &Device,
        args: &mut uapi::drm_softgpu_gem_mmap_offset,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.pad != 0 {
            return Err(EINVAL);
        }
        args.offset = lookup(file, args.handle)?.mmap_offset()?;
        Ok(0)
    }

    /// DRM_IOCTL_SOFTGPU_GEM_INFO
    pub(crate) fn gem_info(
        _dev: &Device,
        args: &mut uapi::drm_softgpu_gem_info,
        file: &DrmFile,
    ) -> Result<u32> {
        let obj = lookup(file, args.handle)?;
        let info = obj.info();
        args.flags = 0;
        if obj.pinned {
            args.flags |= uapi::SOFTGPU_BO_INFO_PINNED;
        }
        if info.purgeable {
            args.flags |= uapi::SOFTGPU_BO_INFO_PURGEABLE;
        }
        if info.purged {
            args.flags |= uapi::SOFTGPU_BO_INFO_PURGED;
        }
        if obj.is_import() {
            args.flags |= uapi::SOFTGPU_BO_INFO_IMPORTED;
        }
        args.size = obj.size() as u64;
        args.bindings = file.inner().vm.bindings_of(&obj);
        args.resident_pages = info.resident_pages;
        args.released = info.released;
        args.refused = info.refused;
        args.gpu_faults = info.gpu_faults;
        args.evictions = 0;
        if let Some(tbo) = obj.ttm() {
            args.evictions = tbo.evictions.load(core::sync::atomic::Ordering::Relaxed);
            let (vram, resident) = crate::tbo::info(tbo)?;
            args.flags |= uapi::SOFTGPU_BO_INFO_TTM;
            if vram {
                args.flags |= uapi::SOFTGPU_BO_INFO_VRAM;
            }
            if tbo.pool {
                args.flags |= uapi::SOFTGPU_BO_INFO_TTM_POOL;
            }
            args.resident_pages = resident;
            (args.released, args.refused) = crate::tbo::release_counts(tbo);
        }
        Ok(0)
    }

    /// DRM_IOCTL_SOFTGPU_GEM_MADVISE
    pub(crate) fn gem_madvise(
        _dev: &Device,
        args: &mut uapi::drm_softgpu_gem_madvise,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.pad != 0
            || (args.madv != uapi::SOFTGPU_MADV_WILLNEED
                && args.madv != uapi::SOFTGPU_MADV_DONTNEED)
        {
            return Err(EINVAL);
        }
        let obj = lookup(file, args.handle)?;
        if obj.is_import() {
            // The exporter's memory: not ours to purge.
            return Err(EINVAL);
        }
        if obj.ttm().is_some() {
            // Not for TTM objects yet.
            return Err(EOPNOTSUPP);
        }
        args.retained = obj.madvise(args.madv).into();
        Ok(0)
    }

    /// DRM_IOCTL_SOFTGPU_VM_BIND
    pub(crate) fn vm_bind(
        _dev: &Device,
        args: &mut uapi::drm_softgpu_vm_bind,
        file: &DrmFile,
    ) -> Result<u32> {
        let end = args.gpu_va.checked_add(args.size).ok_or(EINVAL)?;
        let bo_end = args.bo_offset.checked_add(args.size).ok_or(EINVAL)?;
        if args.flags & !uapi::SOFTGPU_BIND_READONLY != 0
            || args.size == 0
            || !page_aligned(args.gpu_va | args.bo_offset | args.size)
            || end > VA_END
        {
            return Err(EINVAL);
        }
        let obj = lookup(file, args.handle)?;
        if bo_end > obj.size() as u64 {
            return Err(EINVAL);
        }
        let readonly = args.flags & uapi::SOFTGPU_BIND_READONLY != 0;
        file.inner()
            .vm
            .bind(obj, args.gpu_va, args.bo_offset, args.size, readonly)?;
        Ok(0)
    }

    /// DRM_IOCTL_SOFTGPU_GEM_MOVE
    pub(crate) fn gem_move(
        dev: &Device,
        args: &mut uapi::drm_softgpu_gem_move,
        file: &DrmFile,
    ) -> Result<u32> {
        let known = uapi::SOFTGPU_BO_VRAM | uapi::SOFTGPU_BO_SYSTEM;
        if args.placement & !known != 0 {
            return Err(EINVAL);
        }
        let obj = lookup(file, args.handle)?;
        let tbo = obj.ttm().ok_or(EINVAL)?;
        crate::tbo::move_to(dev, tbo, args.placement)?;
        Ok(0)
    }

    /// DRM_IOCTL_SOFTGPU_VM_UNBIND
    pub(crate) fn vm_unbind(
        _dev: &Device,
        args: &mut uapi::drm_softgpu_vm_unbind,
        file: &DrmFile,
    ) -> Result<u32> {
        file.inner().vm.unbind(args.gpu_va, args.size)?;
        Ok(0)
    }

    /// DRM_IOCTL_SOFTGPU_USERPTR
    pub(crate) fn userptr(
        _dev: &Device,
        args: &mut uapi::drm_softgpu_userptr,
        file: &DrmFile,
    ) -> Result<u32> {
        let va_end = args.gpu_va.checked_add(args.size).ok_or(EINVAL)?;
        let known = uapi::SOFTGPU_USERPTR_READONLY | uapi::SOFTGPU_USERPTR_PINNED;
        if args.flags & !known != 0
            || args.pad != 0
            || args.size == 0
            || !page_aligned(args.gpu_va | args.addr | args.size)
            || va_end > VA_END
            || args.addr.checked_add(args.size).is_none()
        {
            return Err(EINVAL);
        }
        let addr = usize::try_from(args.addr).map_err(|_| EINVAL)?;
        let size = usize::try_from(args.size).map_err(|_| EINVAL)?;
        let readonly = args.flags & uapi::SOFTGPU_USERPTR_READONLY != 0;
        let pinned = args.flags & uapi::SOFTGPU_USERPTR_PINNED != 0;
        file.inner()
            .vm
            .bind_userptr(args.gpu_va, addr, size, readonly, pinned)?;
        Ok(0)
    }

    /// DRM_IOCTL_SOFTGPU_USERPTR_MIGRATE
    pub(crate) fn userptr_migrate(
        dev: &Device,
        args: &mut uapi::drm_softgpu_userptr_migrate,
        file: &DrmFile,
    ) -> Result<u32> {
        let to_vram = match args.placement {
            uapi::SOFTGPU_BO_VRAM => true,
            uapi::SOFTGPU_BO_SYSTEM => false,
            _ => return Err(EINVAL),
        };
        if args.pad != 0 {
            return Err(EINVAL);
        }
        let dmem = dev.data().vram.dmem().ok_or(ENODEV)?;
        let done = file
            .inner()
            .vm
            .migrate_userptr(args.gpu_va, args.size, to_vram, &dmem)?;
        // Chunks left without pages go back to VRAM's allocator.
        dmem.trim();
        args.candidates = done.collected as u64;
        args.migrated = done.moved as u64;
        Ok(0)
    }

    /// DRM_IOCTL_SOFTGPU_EXEC
    pub(crate) fn exec(
        dev: &Device,
        args: &mut uapi::drm_softgpu_exec,
        file: &DrmFile,
    ) -> Result<u32> {
        let n = args.num_cmds as usize;
        if args.flags & !uapi::SOFTGPU_EXEC_FENCE_OUT != 0
            || args.pad != 0
            || n == 0
            || n > uapi::SOFTGPU_MAX_CMDS as usize
        {
            return Err(EINVAL);
        }
        let sz = core::mem::size_of::<uapi::drm_softgpu_cmd>();
        let mut raw = KVec::<u8>::with_capacity(n * sz, GFP_KERNEL)?;
        UserSlice::new(args.cmds as usize, n * sz)
            .reader()
            .read_all(&mut raw, GFP_KERNEL)?;
        let mut cmds = KVec::with_capacity(n, GFP_KERNEL)?;
        for chunk in raw.as_slice().chunks_exact(sz) {
            let src = chunk.as_ptr().cast::<uapi::drm_softgpu_cmd>();
            // SAFETY: `chunk` has the size of the plain-integer uAPI struct;
            // `read_unaligned` copes with the byte buffer's alignment.
            let c = unsafe { core::ptr::read_unaligned(src) };
            cmds.push(Cmd::from_uapi(&c)?, GFP_KERNEL)?;
        }
        let me = file.inner();
        let fence_out = args.flags & uapi::SOFTGPU_EXEC_FENCE_OUT != 0;
        let mut sync_fd = None;
        let vm = me.vm.clone();
        // The job may not resolve faults while it runs (its fence's
        // signalling section forbids allocating): make every page its
        // commands access resident, and fault its userptr pages in, now,
        // before the fence exists.
        let mut ranges = KVec::with_capacity(2 * cmds.len(), GFP_KERNEL)?;
        for r in cmds.iter().flat_map(Cmd::accesses).flatten() {
            ranges.push(r, GFP_KERNEL)?;
        }
        // Userptr pages migrated into VRAM are mapped there.
        let dmem = dev.data().vram.dmem();
        let mut attempt = 0;
        let info = loop {
            let submission = vm.make_resident(&ranges, dmem.as_deref())?;
            let memory = JobMemory {
                unresolved: submission.unresolved,
            };
            let mut collided = false;
            // The commands go to the job only if it is published.
            let info =
                dev.data()
                    .engine
                    .submit(vm.clone(), &mut cmds, memory, me.stats.clone(), |info| {
                        let mut bindings = me.vm.bindings.lock();
                        // Publishes the job to the VM's userptr notifiers, if
                        // no invalidation collided with the faults above (see
                        // `Vm::commit`). Objects bound later, while the job is
                        // pending, are marked busy for it by `Vm::bind`.
                        let mut publish = || {
                            *me.vm.last_job.lock() = Some(info.fence.clone());
                        };
                        if let Err(e) = me.vm.commit(&mut bindings, &submission, &mut publish) {
                            collided = true;
                            return Err(e);
                        }
                        // Objects bound in this VM may be used by the job: they
                        // are busy for migration until it is done.
                        for b in bindings.values().filter_map(Entry::as_bo) {
                            Bo::set_busy(&b.obj, &info.fence, Some(!b.readonly))?;
                        }
                        drop(bindings);
                        if fence_out {
                            sync_fd = Some(SyncFileFd::new(&info.fence)?);
                        }
                        let mut ring = me.jobs.lock();
                        let i = ring.next % TRACKED_JOBS;
                        ring.slots[i] = Some(info.clone());
                        ring.next += 1;
                        Ok(())
                    });
            // The job's fence is in the reservation objects of the objects
            // made resident (or the job was cancelled): release and the
            // shrinker now see them busy, and may stop refusing them for
            // the submission.
            drop(submission);
            attempt += 1;
            if !collided || attempt >= EXEC_ATTEMPTS {
                break info?;
            }
            // An invalidation of a userptr collided with the submission
            // (its fence was cancelled, unpublished): wait for it to end,
            // then fault in again.
            me.vm.wait_userptr_invalidations();
        };
        args.seqno = info.fence.seqno();
        args.fence_fd = -1;
        if let Some(fd) = sync_fd {
            args.fence_fd = fd.fd() as i32;
            fd.install();
        }
        Ok(0)
    }

    /// DRM_IOCTL_SOFTGPU_WAIT
    pub(crate) fn wait(
        _dev: &Device,
        args: &mut uapi::drm_softgpu_wait,
        file: &DrmFile,
    ) -> Result<u32> {
        if args.pad != 0 || args.timeout_ns < 0 {
            return Err(EINVAL);
        }
        let info = {
            let me = file.inner();
            let ring = me.jobs.lock();
            ring.slots
                .iter()
                .flatten()
                .find(|j| j.fence.seqno() == args.seqno)
                .cloned()
                .ok_or(EINVAL)?
        };
        let ns = args.timeout_ns as u64;
        let jiffies = kernel::time::msecs_to_jiffies(
            u32::try_from(ns.div_ceil(1_000_000)).unwrap_or(u32::MAX),
        );
        if !info.fence.wait_interruptible_timeout(jiffies as usize)? {
            return Err(etime());
        }
        args.status = match info.fence.status() {
            Some(Ok(())) => 0,
            Some(Err(e)) => e.to_errno(),
            None => return Err(etime()),
        };
        args.fault_addr = info.fault_addr.load(core::sync::atomic::Ordering::Relaxed);
        Ok(0)
    }
}
