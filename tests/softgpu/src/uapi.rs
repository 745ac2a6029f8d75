//! Rust mirror of include/uapi/drm/softgpu_drm.h and of the parts of the
//! DRM core uAPI (include/uapi/drm/drm.h) that the tests use.
//!
//! Every structure is `#[repr(C)]` with the fields, in order, of its C
//! counterpart. The sizes and offsets asserted at the bottom of this file
//! were printed on the host by this program, built against the real headers
//! (`gcc -D__user= -I<dir with drm/drm.h, drm/drm_mode.h and
//! drm/softgpu_drm.h> -I<that dir>/drm`):
//!
//! ```c
//! #include <fcntl.h>
//! #include <stdio.h>
//! #include <stddef.h>
//! #include <drm/drm.h>
//! #include <drm/softgpu_drm.h>
//! #define S(t) printf("%s size %zu\n", #t, sizeof(struct t))
//! #define O(t, f) printf("  %s.%s @ %zu\n", #t, #f, offsetof(struct t, f))
//! #define I(x) printf("%s 0x%08lx\n", #x, (unsigned long)(x))
//! int main(void)
//! {
//!     S(drm_softgpu_gem_create); O(drm_softgpu_gem_create, handle); // ...
//!     I(DRM_IOCTL_SOFTGPU_GEM_CREATE); // ... every struct, field, ioctl
//!     return 0;
//! }
//! ```

use core::mem::{offset_of, size_of};
use libc::{c_char, c_int, c_ulong};

// ---------------------------------------------------------------------------
// ioctl numbers, computed like the kernel's _IOC/_IOW/_IOWR (asm-generic).

/// `_IOC_WRITE`: userspace writes the argument (the kernel copies it in).
pub const IOC_WRITE: u32 = 1;
/// `_IOC_READ`: userspace reads the argument (the kernel copies it out).
pub const IOC_READ: u32 = 2;

const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;

/// `_IOC(dir, type, nr, size)`.
pub const fn ioc(dir: u32, ty: u8, nr: u32, size: usize) -> c_ulong {
    assert!(nr < 256 && size < (1 << 14) && dir < 4);
    ((dir << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)) as c_ulong
}

/// `_IOC_DIR(req)`.
pub const fn ioc_dir(req: c_ulong) -> u32 {
    ((req >> IOC_DIRSHIFT) & 3) as u32
}

/// `_IOC_TYPE(req)`.
pub const fn ioc_type(req: c_ulong) -> u8 {
    ((req >> IOC_TYPESHIFT) & 0xff) as u8
}

/// `_IOC_NR(req)`.
pub const fn ioc_nr(req: c_ulong) -> u32 {
    ((req >> IOC_NRSHIFT) & 0xff) as u32
}

/// `_IOC_SIZE(req)`.
pub const fn ioc_size(req: c_ulong) -> usize {
    ((req >> IOC_SIZESHIFT) & 0x3fff) as usize
}

/// `DRM_IOCTL_BASE`.
pub const DRM_IOCTL_BASE: u8 = b'd';
/// `DRM_COMMAND_BASE`: first driver-private ioctl number.
pub const DRM_COMMAND_BASE: u32 = 0x40;
/// `DRM_COMMAND_END`.
pub const DRM_COMMAND_END: u32 = 0xa0;

/// `DRM_IOW(nr, T)`.
pub const fn drm_iow<T>(nr: u32) -> c_ulong {
    ioc(IOC_WRITE, DRM_IOCTL_BASE, nr, size_of::<T>())
}

/// `DRM_IOWR(nr, T)`.
pub const fn drm_iowr<T>(nr: u32) -> c_ulong {
    ioc(IOC_READ | IOC_WRITE, DRM_IOCTL_BASE, nr, size_of::<T>())
}

// ---------------------------------------------------------------------------
// DRM core (drm.h).

/// `struct drm_version`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DrmVersion {
    pub version_major: c_int,
    pub version_minor: c_int,
    pub version_patchlevel: c_int,
    pub name_len: usize,
    pub name: *mut c_char,
    pub date_len: usize,
    pub date: *mut c_char,
    pub desc_len: usize,
    pub desc: *mut c_char,
}

impl Default for DrmVersion {
    fn default() -> Self {
        Self {
            version_major: 0,
            version_minor: 0,
            version_patchlevel: 0,
            name_len: 0,
            name: core::ptr::null_mut(),
            date_len: 0,
            date: core::ptr::null_mut(),
            desc_len: 0,
            desc: core::ptr::null_mut(),
        }
    }
}

/// `struct drm_gem_close`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrmGemClose {
    pub handle: u32,
    pub pad: u32,
}

/// `struct drm_prime_handle`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrmPrimeHandle {
    pub handle: u32,
    /// `DRM_CLOEXEC | DRM_RDWR` for HANDLE_TO_FD.
    pub flags: u32,
    pub fd: i32,
}

/// `DRM_CLOEXEC` (= `O_CLOEXEC`).
pub const DRM_CLOEXEC: u32 = libc::O_CLOEXEC as u32;
/// `DRM_RDWR` (= `O_RDWR`).
pub const DRM_RDWR: u32 = libc::O_RDWR as u32;

pub const DRM_IOCTL_VERSION: c_ulong = drm_iowr::<DrmVersion>(0x00);
pub const DRM_IOCTL_GEM_CLOSE: c_ulong = drm_iow::<DrmGemClose>(0x09);
pub const DRM_IOCTL_PRIME_HANDLE_TO_FD: c_ulong = drm_iowr::<DrmPrimeHandle>(0x2d);
pub const DRM_IOCTL_PRIME_FD_TO_HANDLE: c_ulong = drm_iowr::<DrmPrimeHandle>(0x2e);

/// `struct drm_mode_create_dumb` (drm_mode.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DrmModeCreateDumb {
    pub height: u32,
    pub width: u32,
    pub bpp: u32,
    pub flags: u32,
    /// Out.
    pub handle: u32,
    /// Out.
    pub pitch: u32,
    /// Out.
    pub size: u64,
}

pub const DRM_IOCTL_MODE_CREATE_DUMB: c_ulong = drm_iowr::<DrmModeCreateDumb>(0xb2);

// ---------------------------------------------------------------------------
// dma-buf (linux/dma-buf.h).

/// `struct dma_buf_sync`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DmaBufSync {
    pub flags: u64,
}

pub const DMA_BUF_SYNC_READ: u64 = 1 << 0;
pub const DMA_BUF_SYNC_WRITE: u64 = 2;
pub const DMA_BUF_SYNC_RW: u64 = DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE;
pub const DMA_BUF_SYNC_START: u64 = 0 << 2;
pub const DMA_BUF_SYNC_END: u64 = 1 << 2;

/// `DMA_BUF_IOCTL_SYNC`: `_IOW(DMA_BUF_BASE, 0, struct dma_buf_sync)`.
pub const DMA_BUF_IOCTL_SYNC: c_ulong = ioc(IOC_WRITE, b'b', 0, size_of::<DmaBufSync>());

// ---------------------------------------------------------------------------
// softgpu (softgpu_drm.h).

pub const DRM_SOFTGPU_GEM_CREATE: u32 = 0x00;
pub const DRM_SOFTGPU_GEM_MMAP_OFFSET: u32 = 0x01;
pub const DRM_SOFTGPU_GEM_INFO: u32 = 0x02;
pub const DRM_SOFTGPU_GEM_MADVISE: u32 = 0x03;
pub const DRM_SOFTGPU_VM_BIND: u32 = 0x04;
pub const DRM_SOFTGPU_VM_UNBIND: u32 = 0x05;
pub const DRM_SOFTGPU_EXEC: u32 = 0x06;
pub const DRM_SOFTGPU_WAIT: u32 = 0x07;
pub const DRM_SOFTGPU_USERPTR: u32 = 0x08;
pub const DRM_SOFTGPU_GEM_MOVE: u32 = 0x09;
pub const DRM_SOFTGPU_USERPTR_MIGRATE: u32 = 0x0a;
/// Number of softgpu ioctls: driver numbers from this one on are unknown.
pub const DRM_SOFTGPU_NUM_IOCTLS: u32 = 0x0b;

/// `SOFTGPU_VA_BITS`: the GPU VA space is [0, 1 << 39).
pub const SOFTGPU_VA_BITS: u32 = 39;
/// End of the GPU VA space (exclusive).
pub const SOFTGPU_VA_END: u64 = 1 << SOFTGPU_VA_BITS;
/// `SOFTGPU_PAGE_SIZE`.
pub const SOFTGPU_PAGE_SIZE: u64 = 4096;

/// `SOFTGPU_BO_PINNED`: plain shmem, pages pinned while bound.
pub const SOFTGPU_BO_PINNED: u32 = 1 << 0;
/// `SOFTGPU_BO_VRAM`: a TTM object (discrete mode) in VRAM.
pub const SOFTGPU_BO_VRAM: u32 = 1 << 1;
/// `SOFTGPU_BO_SYSTEM`: a TTM object in system memory (with VRAM: a
/// preference, VRAM if there is room without evicting).
pub const SOFTGPU_BO_SYSTEM: u32 = 1 << 2;
/// `SOFTGPU_BO_TTM_POOL`: the baseline, system pages from TTM's pool.
pub const SOFTGPU_BO_TTM_POOL: u32 = 1 << 3;

/// `struct drm_softgpu_gem_create`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GemCreate {
    pub size: u64,
    pub flags: u32,
    pub handle: u32,
}

/// `struct drm_softgpu_gem_mmap_offset`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GemMmapOffset {
    pub handle: u32,
    pub pad: u32,
    pub offset: u64,
}

pub const SOFTGPU_BO_INFO_PINNED: u32 = 1 << 0;
pub const SOFTGPU_BO_INFO_PURGEABLE: u32 = 1 << 1;
pub const SOFTGPU_BO_INFO_PURGED: u32 = 1 << 2;
pub const SOFTGPU_BO_INFO_IMPORTED: u32 = 1 << 3;
pub const SOFTGPU_BO_INFO_TTM: u32 = 1 << 4;
pub const SOFTGPU_BO_INFO_VRAM: u32 = 1 << 5;
pub const SOFTGPU_BO_INFO_TTM_POOL: u32 = 1 << 6;

/// `struct drm_softgpu_gem_info`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GemInfo {
    pub handle: u32,
    /// `SOFTGPU_BO_INFO_*`.
    pub flags: u32,
    pub size: u64,
    /// VM bindings of the BO in this file.
    pub bindings: u64,
    /// Pages present in GPU page tables (held).
    pub resident_pages: u64,
    /// Folios given back to migration (gemfs only).
    pub released: u64,
    /// Release requests refused as busy (gemfs only).
    pub refused: u64,
    /// GPU page faults on the BO that re-validated.
    pub gpu_faults: u64,
    /// Evictions from VRAM to make room (TTM objects only).
    pub evictions: u64,
}

pub const SOFTGPU_MADV_WILLNEED: u32 = 0;
pub const SOFTGPU_MADV_DONTNEED: u32 = 1;

/// `struct drm_softgpu_gem_madvise`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GemMadvise {
    pub handle: u32,
    pub madv: u32,
    pub retained: u32,
    pub pad: u32,
}

/// `SOFTGPU_BIND_READONLY`.
pub const SOFTGPU_BIND_READONLY: u32 = 1 << 0;

/// `struct drm_softgpu_vm_bind`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VmBind {
    pub handle: u32,
    pub flags: u32,
    pub gpu_va: u64,
    pub bo_offset: u64,
    pub size: u64,
}

/// `struct drm_softgpu_vm_unbind`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VmUnbind {
    pub gpu_va: u64,
    pub size: u64,
}

pub const SOFTGPU_CMD_FILL: u32 = 1;
pub const SOFTGPU_CMD_COPY: u32 = 2;
pub const SOFTGPU_CMD_ATOMIC_ADD: u32 = 3;
pub const SOFTGPU_CMD_CHECKSUM: u32 = 4;
pub const SOFTGPU_CMD_BUSY: u32 = 5;

/// Longest `SOFTGPU_CMD_BUSY`, in microseconds ("at most 1 second").
pub const SOFTGPU_BUSY_MAX_US: u64 = 1_000_000;

/// `struct drm_softgpu_cmd`. Build one with [`Cmd::fill`] and friends.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cmd {
    pub op: u32,
    pub flags: u32,
    pub dst: u64,
    pub src: u64,
    pub size: u64,
    pub value: u64,
}

/// `SOFTGPU_EXEC_FENCE_OUT`.
pub const SOFTGPU_EXEC_FENCE_OUT: u32 = 1 << 0;
/// `SOFTGPU_MAX_CMDS`.
pub const SOFTGPU_MAX_CMDS: usize = 4096;

/// `struct drm_softgpu_exec`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exec {
    /// User pointer to `num_cmds` [`Cmd`]s.
    pub cmds: u64,
    pub num_cmds: u32,
    pub flags: u32,
    pub seqno: u64,
    pub fence_fd: i32,
    pub pad: u32,
}

/// How many of a file's most recent seqnos WAIT still knows.
pub const SOFTGPU_TRACKED_SEQNOS: usize = 1024;

/// `struct drm_softgpu_wait`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub seqno: u64,
    pub timeout_ns: i64,
    pub status: i32,
    pub pad: u32,
    pub fault_addr: u64,
}

/// `SOFTGPU_USERPTR_READONLY`.
pub const SOFTGPU_USERPTR_READONLY: u32 = 1 << 0;
/// `SOFTGPU_USERPTR_PINNED`: the baseline mode, pages pinned while bound.
pub const SOFTGPU_USERPTR_PINNED: u32 = 1 << 1;

/// `struct drm_softgpu_userptr`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Userptr {
    /// CPU address of the first byte, page aligned.
    pub addr: u64,
    pub size: u64,
    pub gpu_va: u64,
    /// `SOFTGPU_USERPTR_*`.
    pub flags: u32,
    pub pad: u32,
}

pub const DRM_IOCTL_SOFTGPU_GEM_CREATE: c_ulong =
    drm_iowr::<GemCreate>(DRM_COMMAND_BASE + DRM_SOFTGPU_GEM_CREATE);
pub const DRM_IOCTL_SOFTGPU_GEM_MMAP_OFFSET: c_ulong =
    drm_iowr::<GemMmapOffset>(DRM_COMMAND_BASE + DRM_SOFTGPU_GEM_MMAP_OFFSET);
pub const DRM_IOCTL_SOFTGPU_GEM_INFO: c_ulong =
    drm_iowr::<GemInfo>(DRM_COMMAND_BASE + DRM_SOFTGPU_GEM_INFO);
pub const DRM_IOCTL_SOFTGPU_GEM_MADVISE: c_ulong =
    drm_iowr::<GemMadvise>(DRM_COMMAND_BASE + DRM_SOFTGPU_GEM_MADVISE);
pub const DRM_IOCTL_SOFTGPU_VM_BIND: c_ulong =
    drm_iow::<VmBind>(DRM_COMMAND_BASE + DRM_SOFTGPU_VM_BIND);
pub const DRM_IOCTL_SOFTGPU_VM_UNBIND: c_ulong =
    drm_iow::<VmUnbind>(DRM_COMMAND_BASE + DRM_SOFTGPU_VM_UNBIND);
pub const DRM_IOCTL_SOFTGPU_EXEC: c_ulong = drm_iowr::<Exec>(DRM_COMMAND_BASE + DRM_SOFTGPU_EXEC);
pub const DRM_IOCTL_SOFTGPU_WAIT: c_ulong = drm_iowr::<Wait>(DRM_COMMAND_BASE + DRM_SOFTGPU_WAIT);
pub const DRM_IOCTL_SOFTGPU_USERPTR: c_ulong =
    drm_iow::<Userptr>(DRM_COMMAND_BASE + DRM_SOFTGPU_USERPTR);
pub const DRM_IOCTL_SOFTGPU_GEM_MOVE: c_ulong =
    drm_iow::<GemMove>(DRM_COMMAND_BASE + DRM_SOFTGPU_GEM_MOVE);

/// `struct drm_softgpu_gem_move`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GemMove {
    pub handle: u32,
    /// `SOFTGPU_BO_VRAM` and/or `SOFTGPU_BO_SYSTEM`.
    pub placement: u32,
}

pub const DRM_IOCTL_SOFTGPU_USERPTR_MIGRATE: c_ulong =
    drm_iowr::<UserptrMigrate>(DRM_COMMAND_BASE + DRM_SOFTGPU_USERPTR_MIGRATE);

/// `struct drm_softgpu_userptr_migrate`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UserptrMigrate {
    pub gpu_va: u64,
    pub size: u64,
    /// `SOFTGPU_BO_VRAM` or `SOFTGPU_BO_SYSTEM`.
    pub placement: u32,
    pub pad: u32,
    /// Out: pages of the range that could move.
    pub candidates: u64,
    /// Out: pages that moved.
    pub migrated: u64,
}

/// Every softgpu ioctl, for tests that go through all of them.
pub const SOFTGPU_IOCTLS: [(&str, c_ulong); 11] = [
    ("GEM_CREATE", DRM_IOCTL_SOFTGPU_GEM_CREATE),
    ("GEM_MMAP_OFFSET", DRM_IOCTL_SOFTGPU_GEM_MMAP_OFFSET),
    ("GEM_INFO", DRM_IOCTL_SOFTGPU_GEM_INFO),
    ("GEM_MADVISE", DRM_IOCTL_SOFTGPU_GEM_MADVISE),
    ("VM_BIND", DRM_IOCTL_SOFTGPU_VM_BIND),
    ("VM_UNBIND", DRM_IOCTL_SOFTGPU_VM_UNBIND),
    ("EXEC", DRM_IOCTL_SOFTGPU_EXEC),
    ("WAIT", DRM_IOCTL_SOFTGPU_WAIT),
    ("USERPTR", DRM_IOCTL_SOFTGPU_USERPTR),
    ("GEM_MOVE", DRM_IOCTL_SOFTGPU_GEM_MOVE),
    ("USERPTR_MIGRATE", DRM_IOCTL_SOFTGPU_USERPTR_MIGRATE),
];

/// The uAPI structures that [`crate::Device::ioctl`] may pass: plain data,
/// no pointer through which the kernel writes. Not [`Userptr`], through
/// which the GPU writes: see [`crate::Device::userptr`].
pub trait UapiArg: sealed::Sealed + Copy {}

mod sealed {
    pub trait Sealed {}
}

macro_rules! uapi_arg {
    ($($t:ty),*) => {
        $(impl sealed::Sealed for $t {} impl UapiArg for $t {})*
    };
}
uapi_arg!(
    GemCreate,
    GemMmapOffset,
    GemInfo,
    GemMadvise,
    VmBind,
    VmUnbind,
    Exec,
    Wait,
    GemMove,
    UserptrMigrate,
    DrmGemClose,
    DrmPrimeHandle
);
/// Raw bytes, for ioctl numbers of any size (e.g. unknown commands).
impl sealed::Sealed for [u8; 64] {}
impl UapiArg for [u8; 64] {}

// ---------------------------------------------------------------------------
// Layout, checked against the C headers (numbers from the program above).

macro_rules! layout {
    ($t:ty, $size:expr, { $($f:ident @ $off:expr),* $(,)? }) => {
        const _: () = assert!(size_of::<$t>() == $size);
        $(const _: () = assert!(offset_of!($t, $f) == $off);)*
    };
}

layout!(GemCreate, 16, { size @ 0, flags @ 8, handle @ 12 });
layout!(GemMmapOffset, 16, { handle @ 0, pad @ 4, offset @ 8 });
layout!(GemInfo, 64, {
    handle @ 0, flags @ 4, size @ 8, bindings @ 16, resident_pages @ 24,
    released @ 32, refused @ 40, gpu_faults @ 48, evictions @ 56,
});
layout!(GemMadvise, 16, { handle @ 0, madv @ 4, retained @ 8, pad @ 12 });
layout!(VmBind, 32, { handle @ 0, flags @ 4, gpu_va @ 8, bo_offset @ 16, size @ 24 });
layout!(VmUnbind, 16, { gpu_va @ 0, size @ 8 });
layout!(Cmd, 40, { op @ 0, flags @ 4, dst @ 8, src @ 16, size @ 24, value @ 32 });
layout!(Exec, 32, {
    cmds @ 0, num_cmds @ 8, flags @ 12, seqno @ 16, fence_fd @ 24, pad @ 28,
});
layout!(Wait, 32, { seqno @ 0, timeout_ns @ 8, status @ 16, pad @ 20, fault_addr @ 24 });
layout!(Userptr, 32, { addr @ 0, size @ 8, gpu_va @ 16, flags @ 24, pad @ 28 });
layout!(GemMove, 8, { handle @ 0, placement @ 4 });
layout!(DrmVersion, 64, {
    version_major @ 0, version_minor @ 4, version_patchlevel @ 8, name_len @ 16,
    name @ 24, date_len @ 32, date @ 40, desc_len @ 48, desc @ 56,
});
layout!(DrmGemClose, 8, { handle @ 0, pad @ 4 });
layout!(DrmPrimeHandle, 12, { handle @ 0, flags @ 4, fd @ 8 });
layout!(DrmModeCreateDumb, 32, { height @ 0, width @ 4, bpp @ 8, flags @ 12, handle @ 16, pitch @ 20, size @ 24 });
layout!(DmaBufSync, 8, { flags @ 0 });

const _: () = assert!(DRM_IOCTL_SOFTGPU_GEM_CREATE == 0xc010_6440);
const _: () = assert!(DRM_IOCTL_SOFTGPU_GEM_MMAP_OFFSET == 0xc010_6441);
const _: () = assert!(DRM_IOCTL_SOFTGPU_GEM_INFO == 0xc040_6442);
const _: () = assert!(DRM_IOCTL_SOFTGPU_GEM_MADVISE == 0xc010_6443);
const _: () = assert!(DRM_IOCTL_SOFTGPU_VM_BIND == 0x4020_6444);
const _: () = assert!(DRM_IOCTL_SOFTGPU_VM_UNBIND == 0x4010_6445);
const _: () = assert!(DRM_IOCTL_SOFTGPU_EXEC == 0xc020_6446);
const _: () = assert!(DRM_IOCTL_SOFTGPU_WAIT == 0xc020_6447);
const _: () = assert!(DRM_IOCTL_SOFTGPU_USERPTR == 0x4020_6448);
const _: () = assert!(DRM_IOCTL_SOFTGPU_GEM_MOVE == 0x4008_6449);
const _: () = assert!(DRM_IOCTL_VERSION == 0xc040_6400);
const _: () = assert!(DRM_IOCTL_GEM_CLOSE == 0x4008_6409);
const _: () = assert!(DRM_IOCTL_PRIME_HANDLE_TO_FD == 0xc00c_642d);
const _: () = assert!(DRM_IOCTL_PRIME_FD_TO_HANDLE == 0xc00c_642e);
const _: () = assert!(DRM_IOCTL_MODE_CREATE_DUMB == 0xc020_64b2);
const _: () = assert!(DMA_BUF_IOCTL_SYNC == 0x4008_6200);
const _: () = assert!(DRM_CLOEXEC == 0x0008_0000 && DRM_RDWR == 2);
