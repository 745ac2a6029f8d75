//! The softgpu DRM driver's uAPI (include/uapi/drm/softgpu_drm.h),
//! exercised from userspace as root in the guest. One test binary; every
//! test opens its own DRM file(s), and a missing device is a failure.
//!
//! - `ioctls`: each ioctl with valid and invalid arguments, and that a
//!   rejected call changes nothing.
//! - `madvise`: GEM_MADVISE.
//! - `exec`: what the commands do, faults, read-only bindings, fences and
//!   WAIT.
//! - `files`: isolation between DRM files, PRIME, closing or killing with
//!   jobs in flight.
//! - `migration`: moving BO pages between NUMA nodes while the GPU uses
//!   them (gemfs BOs) or not (pinned BOs); 2 MiB folios moved whole.
//! - `offline`: memory offlining of a block holding GPU-held gemfs BO pages.
//! - `preempt`: a job over a GiB while a CPU goes offline and online: the
//!   engine yields to `stop_machine()`.
//! - `reclaim`: what the shrinker reports to reclaim.
//! - `scale`: 25 000 BOs, and 1 GiB of BOs.
//! - `shrinker`: purging DONTNEED BOs, giving idle gemfs BOs back to
//!   reclaim, and what reclaim may not take.
//! - `userptr`: USERPTR bindings of anonymous memory, mirrored without pins.
//! - `prime`: PRIME import of another driver's (vgem's) dma-bufs.
//! - `userptr_kinds`: USERPTR of shared anonymous, tmpfs and gemfs file,
//!   THP and hugetlbfs memory.
//! - `faultinject`: an allocation failure injected at each allocation site
//!   of create, bind, exec, userptr and migration in turn.
//! - `isolation`: fake offsets, zeroed new objects, stale mappings,
//!   `/proc/<pid>/mem` and `ptrace` on mappings, exit with everything in
//!   flight: what IGT checks of every driver's objects.
//! - `truncate`: hole punching (`MADV_REMOVE`) of GPU-held gemfs BO pages
//!   while jobs use them.
//! - `bench`: a smoke run of the benchmark suite.
//! - `vram`: discrete mode's VRAM, a PCI BAR (or its absence with VRAM=0).
//! - `ttm`: discrete mode's TTM objects: placement flags, moves, CPU
//!   mappings that follow them, VRAM overcommit.
//! - `dmem`: device private memory: userptr pages migrated into VRAM
//!   (USERPTR_MIGRATE) and back, by request, CPU fault or VRAM pressure,
//!   across fork, mprotect, munmap and MADV_DONTNEED.
//! - `novram`: integrated mode (VRAM=0): what discrete mode adds is
//!   `ENODEV`.
//!
//! `ttm` and `dmem` need the VRAM device, `novram` its absence: the runner
//! skips them in the other configuration (scripts/run-vm.sh sets
//! `runner.skip=`) and reports them as skipped; each asserts its
//! configuration, so a test run in the wrong one fails rather than passing
//! without testing anything. `make test` boots both configurations.

mod bench;
mod common;
mod dmem;
mod exec;
mod faultinject;
mod files;
mod ioctls;
mod isolation;
mod madvise;
mod migration;
mod novram;
mod offline;
mod preempt;
mod prime;
mod reclaim;
mod scale;
mod shrinker;
mod truncate;
mod ttm;
mod userptr;
mod userptr_kinds;
mod vram;
