/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * softgpu: a software GPU whose execution is emulated in the kernel but
 * whose memory management is real. See Documentation/gpu/softgpu.rst.
 *
 * Model: each open render node file is one GPU context with its own GPU
 * virtual address space (VM). Buffer objects (BOs) are created with
 * DRM_IOCTL_SOFTGPU_GEM_CREATE, mapped into the VM with VM_BIND and used by
 * command buffers submitted with EXEC. Commands reach memory only through
 * the VM's page table. Every submission completes a dma_fence; WAIT waits
 * for it and reports whether the job succeeded.
 *
 * All structures are naturally aligned with explicit padding, which must
 * be zero; unknown flags are rejected with -EINVAL.
 *
 * PRIME import: another driver's dma-buf is imported with the DRM core's
 * DRM_IOCTL_PRIME_FD_TO_HANDLE alone. The import is a BO without backing
 * file whose pages are the exporter's, kept in place (pinned by the
 * exporter) for as long as the BO lives: a static importer, without
 * move_notify. -EOPNOTSUPP if the buffer's memory has no struct pages (or
 * is not whole pages); -EINVAL for an fd that is not a dma-buf, -EBADF for
 * a closed one. VM_BIND maps all of its pages at once; mmap() through
 * GEM_MMAP_OFFSET maps the dma-buf (dma_buf_mmap()); GEM_MADVISE fails
 * with -EINVAL; GEM_INFO sets SOFTGPU_BO_INFO_IMPORTED.
 *
 * fdinfo (/proc/<pid>/fdinfo/<fd> of the DRM file) reports the memory of
 * the file's objects by region, as Documentation/gpu/drm-usage-stats.rst
 * specifies: drm-total-, drm-shared-, drm-active-, drm-resident- and
 * drm-purgeable-system for system memory, where every object is but a TTM
 * object in VRAM (see %SOFTGPU_BO_VRAM), and the same keys of region vram,
 * while a VRAM device is bound, for the TTM objects in VRAM. A TTM object
 * in system memory is resident for the pages it has there now (none
 * before its first access, none after migration took them back). There
 * is no region "memory".
 */
#ifndef _UAPI_SOFTGPU_DRM_H_
#define _UAPI_SOFTGPU_DRM_H_

#include "drm.h"

#if defined(__cplusplus)
extern "C" {
#endif

#define DRM_SOFTGPU_GEM_CREATE		0x00
#define DRM_SOFTGPU_GEM_MMAP_OFFSET	0x01
#define DRM_SOFTGPU_GEM_INFO		0x02
#define DRM_SOFTGPU_GEM_MADVISE		0x03
#define DRM_SOFTGPU_VM_BIND		0x04
#define DRM_SOFTGPU_VM_UNBIND		0x05
#define DRM_SOFTGPU_EXEC		0x06
#define DRM_SOFTGPU_WAIT		0x07
#define DRM_SOFTGPU_USERPTR		0x08
#define DRM_SOFTGPU_GEM_MOVE		0x09
#define DRM_SOFTGPU_USERPTR_MIGRATE	0x0a

/* The GPU virtual address space: 39 bits, 4 KiB pages, from 0. */
#define SOFTGPU_VA_BITS			39
#define SOFTGPU_PAGE_SIZE		4096ULL

/*
 * Backed by a plain shmem file whose pages stay pinned for as long as the
 * object is bound, allocated without __GFP_MOVABLE: what today's drivers do
 * (drm_gem_shmem, i915). The default is gemfs: pages are held only while
 * present in the GPU page table, and migration asks the driver for them.
 */
#define SOFTGPU_BO_PINNED		0x1

/*
 * Discrete mode (a VRAM device is bound): the object is a TTM buffer
 * object, in VRAM or in system memory, moved by TTM. %SOFTGPU_BO_VRAM: in
 * VRAM, evicting idle objects to system memory to make room (-ENOMEM only
 * when nothing can be evicted: TTM's errno for no room, as amdgpu's uAPI
 * reports it; -E2BIG above the VRAM's size);
 * %SOFTGPU_BO_SYSTEM: in system memory; both: a preference, VRAM if there
 * is room without evicting, else system memory. In system memory its pages
 * are folios of a gemfs file, which migration can move, or with
 * %SOFTGPU_BO_TTM_POOL (the baseline, as amdgpu's) pages of TTM's page
 * pool, which it cannot. CPU mappings are faulted in from wherever the
 * object is (VRAM through the BAR, write-combined; or its system pages),
 * and unmapped before every move; moves are CPU copies. Not with
 * %SOFTGPU_BO_PINNED (-EINVAL); without a VRAM device, -ENODEV. A TTM
 * object cannot be bound into the GPU VM yet: VM_BIND returns
 * -EOPNOTSUPP, as GEM_MADVISE does.
 */
#define SOFTGPU_BO_VRAM			0x2
#define SOFTGPU_BO_SYSTEM		0x4
#define SOFTGPU_BO_TTM_POOL		0x8

/**
 * struct drm_softgpu_gem_create - create a buffer object
 *
 * Returns -EINVAL for a zero size, one that is not a multiple of
 * %SOFTGPU_PAGE_SIZE or above 1 << %SOFTGPU_VA_BITS, or unknown flags;
 * -ENOMEM or -ENOSPC when memory or the backing mount is exhausted.
 */
struct drm_softgpu_gem_create {
	/** @size: in bytes, a multiple of %SOFTGPU_PAGE_SIZE. */
	__u64 size;
	/** @flags: %SOFTGPU_BO_PINNED, or placement flags, or 0. */
	__u32 flags;
	/** @handle: out, the new GEM handle. */
	__u32 handle;
};

/**
 * struct drm_softgpu_gem_mmap_offset - fake offset for mmap() of a BO
 *
 * The CPU mapping maps the BO's backing file itself: its pages are normal,
 * rmap-visible file pages (never VM_PFNMAP), so migration can unmap them.
 * A TTM object's mapping is TTM's instead (VM_PFNMAP, faulted in page by
 * page from VRAM or system memory, see %SOFTGPU_BO_VRAM); it must be shared
 * (MAP_SHARED), and ptrace access to it while in VRAM is -EIO.
 */
struct drm_softgpu_gem_mmap_offset {
	/** @handle: the BO. */
	__u32 handle;
	/** @pad: must be zero. */
	__u32 pad;
	/** @offset: out, pass to mmap() on the same file. */
	__u64 offset;
};

/* drm_softgpu_gem_info.flags (out) */
#define SOFTGPU_BO_INFO_PINNED		0x1
#define SOFTGPU_BO_INFO_PURGEABLE	0x2
#define SOFTGPU_BO_INFO_PURGED		0x4
/* Imported from another driver's dma-buf (see "PRIME import" above). */
#define SOFTGPU_BO_INFO_IMPORTED	0x8
/* A TTM object (discrete mode); in VRAM now; with TTM's page pool. */
#define SOFTGPU_BO_INFO_TTM		0x10
#define SOFTGPU_BO_INFO_VRAM		0x20
#define SOFTGPU_BO_INFO_TTM_POOL	0x40

/**
 * struct drm_softgpu_gem_info - what the driver knows of a BO
 *
 * Counters are since creation.
 */
struct drm_softgpu_gem_info {
	/** @handle: the BO. */
	__u32 handle;
	/** @flags: out, SOFTGPU_BO_INFO_*. */
	__u32 flags;
	/** @size: out, in bytes. */
	__u64 size;
	/** @bindings: out, number of VM bindings of the BO in this file. */
	__u64 bindings;
	/**
	 * @resident_pages: out, pages present in GPU page tables (held); for
	 * a TTM object, its pages in memory: all in VRAM, those its system
	 * memory has taken (populated) otherwise.
	 */
	__u64 resident_pages;
	/**
	 * @released: out, folios given back to migration or to the shrinker
	 * (gemfs only).
	 */
	__u64 released;
	/** @refused: out, release requests refused as busy (gemfs only). */
	__u64 refused;
	/**
	 * @gpu_faults: out, how many times EXEC made pages of the BO resident
	 * for a job (a job never faults a BO's pages in while it runs: they
	 * are made resident at EXEC, before its fence exists).
	 */
	__u64 gpu_faults;
	/**
	 * @evictions: out, times the driver evicted the BO from VRAM to
	 * system memory to make room for another (TTM objects only; moves
	 * asked for by %DRM_IOCTL_SOFTGPU_GEM_MOVE do not count).
	 */
	__u64 evictions;
};

/**
 * struct drm_softgpu_gem_move - move a TTM object to a placement
 *
 * @placement is %SOFTGPU_BO_VRAM, %SOFTGPU_BO_SYSTEM or both, as at
 * GEM_CREATE (ttm_bo_validate(); nothing moves if the object is in one of
 * them already). The CPU mappings are unmapped first and fault the pages
 * in again from the new place. -EINVAL for other flags, a non-zero @pad or
 * an object that is not a TTM object; -ENOMEM if VRAM has no room even
 * after evicting (objects a job is using are not evicted); -EBUSY while an
 * EXEC is making the object's pages resident for its job; on error the
 * object stays where it was. A move waits for the jobs using the object.
 */
struct drm_softgpu_gem_move {
	/** @handle: the BO. */
	__u32 handle;
	/** @placement: %SOFTGPU_BO_VRAM and/or %SOFTGPU_BO_SYSTEM. */
	__u32 placement;
};

#define SOFTGPU_MADV_WILLNEED		0
#define SOFTGPU_MADV_DONTNEED		1

/**
 * struct drm_softgpu_gem_madvise - mark a BO's contents (not) needed
 *
 * An idle DONTNEED object that is not bound may be purged by the shrinker
 * under memory pressure: its pages are dropped (from memory and swap). A
 * purged object stays purged: @retained is 0 from then on, whatever @madv,
 * VM_BIND of it fails with -EFAULT, and CPU mappings of it read zeros.
 * Binding a DONTNEED object keeps it from being purged while it is bound.
 */
struct drm_softgpu_gem_madvise {
	/** @handle: the BO. */
	__u32 handle;
	/** @madv: SOFTGPU_MADV_*. */
	__u32 madv;
	/** @retained: out, 0 if the BO has been purged, else 1. */
	__u32 retained;
	/** @pad: must be zero. */
	__u32 pad;
};

/* The GPU may only read through this binding. */
#define SOFTGPU_BIND_READONLY		0x1

/**
 * struct drm_softgpu_vm_bind - map BO pages at a GPU virtual address
 *
 * Maps [@bo_offset, @bo_offset + @size) of the BO at [@gpu_va, @gpu_va +
 * @size). All three page aligned, @size non-zero, the range inside the BO
 * and the VA space. Returns -EINVAL for those and -EEXIST if the range
 * overlaps an existing binding, -EFAULT if the BO has been purged (see
 * drm_softgpu_gem_madvise). Pages are faulted into the GPU page table
 * when the GPU first touches them.
 *
 * A binding keeps its BO alive: after DRM_IOCTL_GEM_CLOSE of the BO's
 * handle (its last one), the binding stays, jobs through it keep reading
 * and writing the BO's memory, and VM_UNBIND removes it as before (the BO
 * is freed then, or when the file is closed).
 */
struct drm_softgpu_vm_bind {
	/** @handle: the BO. */
	__u32 handle;
	/** @flags: SOFTGPU_BIND_*. */
	__u32 flags;
	/** @gpu_va: GPU virtual address. */
	__u64 gpu_va;
	/** @bo_offset: offset in the BO. */
	__u64 bo_offset;
	/** @size: bytes to map. */
	__u64 size;
};

/**
 * struct drm_softgpu_vm_unbind - remove the binding that starts at @gpu_va
 *
 * @size must equal the binding's size: -ENOENT if no binding starts at
 * @gpu_va, -EINVAL if the size differs. Jobs already submitted that touch
 * the range afterwards fault (their status is -EFAULT).
 */
struct drm_softgpu_vm_unbind {
	/** @gpu_va: start of the binding. */
	__u64 gpu_va;
	/** @size: its size. */
	__u64 size;
};

/*
 * Commands. Addresses are GPU virtual addresses; every access goes through
 * the VM's page table. A command that touches an unbound address, or writes
 * through a read-only binding, fails the job with -EFAULT and stops it.
 */
/* Store the 32-bit @value over [@dst, @dst + @size); @size % 4 == 0. */
#define SOFTGPU_CMD_FILL		1
/* Copy @size bytes from @src to @dst; the ranges must not overlap. */
#define SOFTGPU_CMD_COPY		2
/*
 * Add @value to the 64-bit integer at @dst (8-byte aligned), @size times
 * (at most 2^20). Each addition is atomic on its own: the CPU's and other
 * jobs' atomics on the same integer may come between them, and a job that
 * fails midway (the binding went) has done some of them.
 */
#define SOFTGPU_CMD_ATOMIC_ADD		3
/* Store at @dst (8-byte aligned) the 64-bit FNV-1a hash of [@src, +@size). */
#define SOFTGPU_CMD_CHECKSUM		4
/* Keep the engine busy for @value microseconds (at most 1 second). */
#define SOFTGPU_CMD_BUSY		5

/**
 * struct drm_softgpu_cmd - one command of a command buffer
 */
struct drm_softgpu_cmd {
	/** @op: SOFTGPU_CMD_*. */
	__u32 op;
	/** @flags: must be zero. */
	__u32 flags;
	/** @dst: destination GPU address. */
	__u64 dst;
	/** @src: source GPU address. */
	__u64 src;
	/** @size: bytes, or a count for ATOMIC_ADD. */
	__u64 size;
	/** @value: operand. */
	__u64 value;
};

/* Create a sync_file for the job's fence and return it in @fence_fd. */
#define SOFTGPU_EXEC_FENCE_OUT		0x1

/* At most this many commands per submission. */
#define SOFTGPU_MAX_CMDS		4096

/**
 * struct drm_softgpu_exec - submit a command buffer to the engine
 *
 * The commands are copied and validated (ops, flags, alignment, sizes) at
 * submission; -EINVAL rejects the whole buffer, which then never runs.
 * -EAGAIN if invalidations of userptr memory the job uses kept colliding
 * with the submission (see struct drm_softgpu_userptr): nothing was
 * submitted, and the call may be repeated.
 * Jobs of all files run in submission order on the one engine.
 */
struct drm_softgpu_exec {
	/** @cmds: user pointer to an array of struct drm_softgpu_cmd. */
	__u64 cmds;
	/** @num_cmds: 1 to %SOFTGPU_MAX_CMDS. */
	__u32 num_cmds;
	/** @flags: SOFTGPU_EXEC_*. */
	__u32 flags;
	/** @seqno: out, the job's sequence number, for WAIT. */
	__u64 seqno;
	/** @fence_fd: out, sync_file fd if %SOFTGPU_EXEC_FENCE_OUT, else -1. */
	__s32 fence_fd;
	/** @pad: must be zero. */
	__u32 pad;
};

/**
 * struct drm_softgpu_wait - wait for a job of this file
 *
 * Returns 0 once the job is done (its outcome in @status), -ETIME if it is
 * not done within @timeout_ns (0 polls), -EINVAL for a seqno this file
 * never submitted or that is no longer tracked (the last 1024 are).
 */
struct drm_softgpu_wait {
	/** @seqno: from EXEC. */
	__u64 seqno;
	/** @timeout_ns: relative timeout. */
	__s64 timeout_ns;
	/** @status: out, 0 if the job succeeded, else a negative errno. */
	__s32 status;
	/** @pad: must be zero. */
	__u32 pad;
	/** @fault_addr: out, the GPU address that faulted, if -EFAULT. */
	__u64 fault_addr;
};

/* The GPU may only read through this userptr binding. */
#define SOFTGPU_USERPTR_READONLY	0x1
/*
 * Baseline mode, as today's drivers (i915) do it: pin every page now with
 * pin_user_pages(FOLL_LONGTERM) and keep it mapped in the GPU until the
 * binding goes. The pages can then be neither migrated nor reclaimed, and
 * the GPU keeps reaching them even after the CPU maps other pages there
 * (munmap, fork's copy-on-write). For benchmarks against mirroring.
 */
#define SOFTGPU_USERPTR_PINNED		0x2

/**
 * struct drm_softgpu_userptr - map the caller's memory at a GPU address
 *
 * Maps [@addr, @addr + @size) of the calling process's memory at
 * [@gpu_va, @gpu_va + @size) of this file's VM: private or shared
 * anonymous memory (transparent huge pages included), MAP_SHARED or
 * MAP_PRIVATE mappings of files (tmpfs, gemfs, other file systems) and
 * hugetlbfs memory. The pages are not pinned: the device mirrors the CPU
 * page tables through an MMU interval notifier and HMM, 4 KiB page by
 * 4 KiB page also for huge pages. EXEC faults in the pages its job
 * accesses (for writing where it writes, breaking copy-on-write: the
 * GPU's writes to a MAP_PRIVATE file mapping never reach the file, as the
 * CPU's do not); whatever changes the CPU mapping (munmap, mprotect,
 * madvise, fork, migration, swap-out, writeback, truncation or hole
 * punching of the file) first waits for this file's pending jobs, then
 * removes the page from the GPU page table, so a job sees the memory as
 * it was when it was submitted, and the next EXEC faults it in again: a
 * job touching a page that is no longer mapped (or is beyond the end of
 * its file), or no longer writable for a write, fails with -EFAULT at
 * that address. VM_UNBIND does not wait: a pending job then faults. GPU writes to a shared
 * mapping land in the file and are written back as the CPU's are. Remove
 * the binding with DRM_IOCTL_SOFTGPU_VM_UNBIND; closing the file removes
 * it too. It stays valid after the process has exited, but every access
 * then faults.
 *
 * %SOFTGPU_CMD_ATOMIC_ADD on userptr memory first takes the page exclusive
 * to the device (as a GPU whose atomics do not work across the bus must):
 * until the CPU next touches it, the CPU page table holds a special entry
 * (/proc/pid/pagemap shows it as swapped), and that CPU access takes the
 * page back. CPU and GPU atomics on the same memory lose no update. Only
 * private anonymous pages can be taken exclusive (those of a MAP_PRIVATE
 * file mapping once the atomic's write fault has copied them); a page of
 * a transparent huge page is first split out of it. On shared anonymous,
 * MAP_SHARED file and hugetlbfs memory the job fails at once with
 * -EOPNOTSUPP at that address, and the memory is unchanged.
 *
 * Returns -EINVAL for unknown flags, non-zero @pad, a zero @size, an
 * unaligned @addr, @size or @gpu_va, a CPU range that wraps around, a GPU
 * range that leaves the GPU VA space; -EEXIST if the GPU range
 * overlaps an existing binding; -EFAULT if part of the CPU range is not
 * mapped (kernel addresses never are); -EOPNOTSUPP if part of it is a
 * mapping that HMM cannot mirror (VM_IO, VM_PFNMAP or VM_MIXEDMAP: device
 * memory and raw page frame mappings, such as [vvar]); -EPERM if part of
 * it is not writable while %SOFTGPU_USERPTR_READONLY is not set. Nothing
 * changes on error.
 */
struct drm_softgpu_userptr {
	/** @addr: CPU address of the first byte, page aligned. */
	__u64 addr;
	/** @size: bytes to map, a multiple of %SOFTGPU_PAGE_SIZE. */
	__u64 size;
	/** @gpu_va: GPU virtual address, page aligned. */
	__u64 gpu_va;
	/** @flags: SOFTGPU_USERPTR_*. */
	__u32 flags;
	/** @pad: must be zero. */
	__u32 pad;
};

/**
 * struct drm_softgpu_userptr_migrate - move userptr memory into VRAM or back
 *
 * Migrates the pages of [@gpu_va, @gpu_va + @size), which must lie within
 * one userptr binding (DRM_IOCTL_SOFTGPU_USERPTR) of this file's VM, into
 * the device's VRAM (@placement %SOFTGPU_BO_VRAM) or back to system memory
 * (%SOFTGPU_BO_SYSTEM), as HMM's migrate_vma does: the pages become device
 * private memory, the CPU page tables hold device private swap entries for
 * them (/proc/pid/pagemap shows them as swapped), and a CPU access faults
 * the page back into a fresh system page. GPU jobs reach migrated pages in
 * VRAM: each migration first waits for this file's pending jobs and
 * removes the range from the GPU page table, and the next EXEC maps the
 * pages where they are. Atomics on a page in VRAM need no exclusive access
 * (the CPU cannot touch it without migrating it back first).
 *
 * Only private anonymous memory migrates; pages that cannot move now
 * (pinned or locked by someone, or no room in VRAM: migration uses free
 * VRAM and does not evict objects) stay where they are. @candidates says
 * how many pages of the range could move, @migrated how many did. When an
 * object needs the VRAM (GEM_CREATE, GEM_MOVE), migrated pages are moved
 * back to system memory to make room, ahead of evicting objects; so are
 * all of them when the device goes.
 *
 * Returns -EINVAL for a @placement other than exactly one of the two, a
 * non-zero @pad, a range that is empty, not page aligned or not within
 * one userptr binding, or a pinned (%SOFTGPU_USERPTR_PINNED) binding;
 * -ENOENT if no userptr is bound at @gpu_va; -ENODEV without a VRAM
 * device; -ESRCH once the process that bound it has exited; -EFAULT if
 * part of the range is no longer mapped; -EOPNOTSUPP if part of it is
 * shared anonymous, file-backed or hugetlbfs memory. Nothing moves on
 * error.
 */
struct drm_softgpu_userptr_migrate {
	/** @gpu_va: first GPU address, page aligned, in a userptr binding. */
	__u64 gpu_va;
	/** @size: bytes, a multiple of %SOFTGPU_PAGE_SIZE. */
	__u64 size;
	/** @placement: %SOFTGPU_BO_VRAM or %SOFTGPU_BO_SYSTEM. */
	__u32 placement;
	/** @pad: must be zero. */
	__u32 pad;
	/** @candidates: out: pages of the range that could move. */
	__u64 candidates;
	/** @migrated: out: pages that moved. */
	__u64 migrated;
};

#define DRM_IOCTL_SOFTGPU_GEM_CREATE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SOFTGPU_GEM_CREATE, struct drm_softgpu_gem_create)
#define DRM_IOCTL_SOFTGPU_GEM_MMAP_OFFSET \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SOFTGPU_GEM_MMAP_OFFSET, struct drm_softgpu_gem_mmap_offset)
#define DRM_IOCTL_SOFTGPU_GEM_INFO \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SOFTGPU_GEM_INFO, struct drm_softgpu_gem_info)
#define DRM_IOCTL_SOFTGPU_GEM_MADVISE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SOFTGPU_GEM_MADVISE, struct drm_softgpu_gem_madvise)
#define DRM_IOCTL_SOFTGPU_VM_BIND \
	DRM_IOW(DRM_COMMAND_BASE + DRM_SOFTGPU_VM_BIND, struct drm_softgpu_vm_bind)
#define DRM_IOCTL_SOFTGPU_VM_UNBIND \
	DRM_IOW(DRM_COMMAND_BASE + DRM_SOFTGPU_VM_UNBIND, struct drm_softgpu_vm_unbind)
#define DRM_IOCTL_SOFTGPU_EXEC \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SOFTGPU_EXEC, struct drm_softgpu_exec)
#define DRM_IOCTL_SOFTGPU_WAIT \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SOFTGPU_WAIT, struct drm_softgpu_wait)
#define DRM_IOCTL_SOFTGPU_USERPTR \
	DRM_IOW(DRM_COMMAND_BASE + DRM_SOFTGPU_USERPTR, struct drm_softgpu_userptr)
#define DRM_IOCTL_SOFTGPU_GEM_MOVE \
	DRM_IOW(DRM_COMMAND_BASE + DRM_SOFTGPU_GEM_MOVE, struct drm_softgpu_gem_move)
#define DRM_IOCTL_SOFTGPU_USERPTR_MIGRATE \
	DRM_IOWR(DRM_COMMAND_BASE + DRM_SOFTGPU_USERPTR_MIGRATE, \
		 struct drm_softgpu_userptr_migrate)

#if defined(__cplusplus)
}
#endif

#endif /* _UAPI_SOFTGPU_DRM_H_ */
