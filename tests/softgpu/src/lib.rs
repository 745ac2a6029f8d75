//! Userspace side of the softgpu DRM render driver
//! (include/uapi/drm/softgpu_drm.h): a safe wrapper of its uAPI for the
//! guest tests, plus the memory-management probes they use (pagemap,
//! move_pages, vmstat) in [`mm`].
//!
//! Every failure is an [`io::Error`] carrying the errno the kernel
//! returned, so tests can check it with `raw_os_error()`.

pub mod mm;
pub mod uapi;

pub use uapi::*;

use std::ffi::c_void;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use libc::c_ulong;

/// The DRM driver name softgpu registers.
pub const DRIVER_NAME: &str = "softgpu";

/// The error for an errno value.
pub fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

/// One open softgpu render node: one DRM file, hence one GPU context with
/// its own handles and GPU VM. Closed on drop.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    path: PathBuf,
}

impl Device {
    /// Opens the first `/dev/dri/renderD*` (in minor order) whose driver,
    /// per DRM_IOCTL_VERSION, is softgpu. `NotFound` if there is none.
    pub fn open() -> io::Result<Self> {
        Self::open_first("renderD", DRIVER_NAME)
    }

    /// Opens the first `/dev/dri/<prefix>N` (in minor order) whose driver,
    /// per DRM_IOCTL_VERSION, is `driver`. `NotFound` if there is none.
    fn open_first(prefix: &str, driver: &str) -> io::Result<Self> {
        let mut nodes: Vec<(u32, PathBuf)> = fs::read_dir("/dev/dri")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/dri: {e}")))?
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let minor = name.strip_prefix(prefix)?.parse().ok()?;
                Some((minor, e.path()))
            })
            .collect();
        nodes.sort();
        let mut seen = Vec::new();
        for (_, path) in nodes {
            match Self::open_path(&path).and_then(|d| Ok((d.driver_name()?, d))) {
                Ok((name, dev)) if name == driver => return Ok(dev),
                Ok((name, _)) => seen.push(format!("{}: {name}", path.display())),
                Err(e) => seen.push(format!("{}: {e}", path.display())),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no {driver} {prefix} node; {prefix} nodes: {seen:?}"),
        ))
    }

    /// Opens a DRM device node, whatever its driver.
    pub fn open_path(path: &Path) -> io::Result<Self> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Self {
            fd: f.into(),
            path: path.to_owned(),
        })
    }

    /// Opens the first `/dev/dri/card*` (in minor order) whose driver, per
    /// DRM_IOCTL_VERSION, is `driver` (another driver's primary node, say
    /// vgem's, for PRIME tests). `NotFound` if there is none.
    pub fn open_card(driver: &str) -> io::Result<Self> {
        Self::open_first("card", driver)
    }

    /// DRM_IOCTL_MODE_CREATE_DUMB (DRM core, on a primary node of a
    /// driver with dumb buffers, such as vgem): a `width` x `height` buffer
    /// of `bpp` bits per pixel. Returns its handle and size in bytes.
    pub fn create_dumb(&self, width: u32, height: u32, bpp: u32) -> io::Result<(u32, u64)> {
        let mut a = DrmModeCreateDumb {
            width,
            height,
            bpp,
            ..Default::default()
        };
        // SAFETY: the kernel reads and writes exactly this struct, whose
        // size the request encodes; it has no pointers.
        unsafe { self.ioctl_raw(DRM_IOCTL_MODE_CREATE_DUMB, &mut a) }?;
        Ok((a.handle, a.size))
    }

    /// The device node this file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The driver name reported by DRM_IOCTL_VERSION.
    pub fn driver_name(&self) -> io::Result<String> {
        let mut name = vec![0u8; 64];
        loop {
            let mut v = DrmVersion {
                name_len: name.len(),
                name: name.as_mut_ptr().cast(),
                ..Default::default()
            };
            // SAFETY: the kernel writes the struct (ours, of the size the
            // ioctl number says) and at most name_len bytes to name; date
            // and desc are null with length 0, so nothing is written there.
            unsafe { self.ioctl_raw(DRM_IOCTL_VERSION, &mut v) }?;
            if v.name_len <= name.len() {
                name.truncate(v.name_len);
                return Ok(String::from_utf8_lossy(&name).into_owned());
            }
            name = vec![0u8; v.name_len];
        }
    }

    /// Issues an ioctl on this file, retrying on EINTR.
    ///
    /// # Safety
    ///
    /// `arg` is passed to the kernel as is: it must be valid for whatever
    /// the kernel reads and writes for `req` (at least `_IOC_SIZE(req)`
    /// bytes if the kernel copies the argument out), including memory
    /// reached through pointers inside it. Invalid pointers are fine only
    /// where the kernel merely reads (it then fails with EFAULT).
    pub unsafe fn ioctl_raw<T>(&self, req: c_ulong, arg: *mut T) -> io::Result<()> {
        loop {
            // SAFETY: per this function's contract.
            let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), req, arg) };
            if r >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    /// Issues ioctl `req` with `arg`, a uAPI structure used as is (also with
    /// invalid contents, for tests). Refused locally (`InvalidInput`, no
    /// errno) unless `req` is a DRM driver-private command (softgpu's, or an
    /// unknown one), GEM_CLOSE or a PRIME ioctl, with `_IOC_SIZE(req)` at
    /// most the size of `T`: for those the kernel never copies out more than
    /// `_IOC_SIZE(req)` bytes nor writes through pointers.
    pub fn ioctl<T: UapiArg>(&self, req: c_ulong, arg: &mut T) -> io::Result<()> {
        let nr = ioc_nr(req);
        let known_core = matches!(
            req,
            DRM_IOCTL_GEM_CLOSE | DRM_IOCTL_PRIME_HANDLE_TO_FD | DRM_IOCTL_PRIME_FD_TO_HANDLE
        );
        let driver = (DRM_COMMAND_BASE..DRM_COMMAND_END).contains(&nr);
        if ioc_type(req) != DRM_IOCTL_BASE
            || !(known_core || driver)
            || ioc_size(req) > std::mem::size_of::<T>()
        {
            return Err(invalid("ioctl: request not allowed with this argument"));
        }
        // SAFETY: checked above: the kernel copies out at most
        // _IOC_SIZE(req) bytes, which fit in *arg, and the structures
        // allowed by UapiArg carry no pointer the kernel writes through
        // (EXEC's cmds is only read).
        unsafe { self.ioctl_raw(req, arg) }
    }

    /// GEM_CREATE: a new BO of `size` bytes; `flags` is 0 (gemfs) or
    /// [`SOFTGPU_BO_PINNED`]. Returns its handle.
    pub fn create_bo(&self, size: u64, flags: u32) -> io::Result<u32> {
        let mut a = GemCreate {
            size,
            flags,
            handle: 0,
        };
        self.ioctl(DRM_IOCTL_SOFTGPU_GEM_CREATE, &mut a)?;
        Ok(a.handle)
    }

    /// GEM_MOVE: moves a TTM object to `placement` (`SOFTGPU_BO_VRAM`
    /// and/or `SOFTGPU_BO_SYSTEM`).
    pub fn move_bo(&self, handle: u32, placement: u32) -> io::Result<()> {
        self.ioctl(
            DRM_IOCTL_SOFTGPU_GEM_MOVE,
            &mut GemMove { handle, placement },
        )
    }

    /// USERPTR_MIGRATE: migrates `[gpu_va, gpu_va + size)` of a userptr
    /// binding to `placement` (`SOFTGPU_BO_VRAM` or `SOFTGPU_BO_SYSTEM`).
    /// Returns the pages that could move and the pages that did.
    pub fn migrate_userptr(
        &self,
        gpu_va: u64,
        size: u64,
        placement: u32,
    ) -> io::Result<(u64, u64)> {
        let mut a = UserptrMigrate {
            gpu_va,
            size,
            placement,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_SOFTGPU_USERPTR_MIGRATE, &mut a)?;
        Ok((a.candidates, a.migrated))
    }

    /// GEM_CLOSE (DRM core): drops the handle.
    pub fn close_bo(&self, handle: u32) -> io::Result<()> {
        self.ioctl(DRM_IOCTL_GEM_CLOSE, &mut DrmGemClose { handle, pad: 0 })
    }

    /// GEM_MMAP_OFFSET: the fake offset to mmap the BO at.
    pub fn mmap_offset(&self, handle: u32) -> io::Result<u64> {
        let mut a = GemMmapOffset {
            handle,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_SOFTGPU_GEM_MMAP_OFFSET, &mut a)?;
        Ok(a.offset)
    }

    /// Maps the first `size` bytes of a BO, shared, readable and writable.
    pub fn mmap_bo(&self, handle: u32, size: usize) -> io::Result<Mapping> {
        let offset = self.mmap_offset(handle)?;
        self.mmap_at(offset, size)
    }

    /// mmap() of this file at `offset`, shared and read-write.
    pub fn mmap_at(&self, offset: u64, size: usize) -> io::Result<Mapping> {
        Mapping::map_fd(self.fd.as_fd(), offset, size)
    }
}

impl Mapping {
    /// mmap() of any file (a dma-buf, say) at `offset`, shared and
    /// read-write.
    pub fn map_fd(fd: BorrowedFd<'_>, offset: u64, size: usize) -> io::Result<Mapping> {
        let off = libc::off_t::try_from(offset).map_err(|_| errno(libc::EINVAL))?;
        // SAFETY: a fresh mapping chosen by the kernel; it overlaps nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(p.cast()).expect("mmap returned NULL"),
            len: size,
        })
    }
}

impl Device {
    /// GEM_INFO.
    pub fn info(&self, handle: u32) -> io::Result<GemInfo> {
        let mut a = GemInfo {
            handle,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_SOFTGPU_GEM_INFO, &mut a)?;
        Ok(a)
    }

    /// GEM_MADVISE: returns `retained` (false if the BO was purged).
    pub fn madvise(&self, handle: u32, madv: u32) -> io::Result<bool> {
        let mut a = GemMadvise {
            handle,
            madv,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_SOFTGPU_GEM_MADVISE, &mut a)?;
        Ok(a.retained != 0)
    }

    /// VM_BIND: maps `[bo_offset, +size)` of the BO at `gpu_va`.
    pub fn bind(
        &self,
        handle: u32,
        gpu_va: u64,
        bo_offset: u64,
        size: u64,
        flags: u32,
    ) -> io::Result<()> {
        let mut a = VmBind {
            handle,
            flags,
            gpu_va,
            bo_offset,
            size,
        };
        self.ioctl(DRM_IOCTL_SOFTGPU_VM_BIND, &mut a)
    }

    /// VM_UNBIND: removes the binding of `size` bytes that starts at `gpu_va`.
    pub fn unbind(&self, gpu_va: u64, size: u64) -> io::Result<()> {
        self.ioctl(DRM_IOCTL_SOFTGPU_VM_UNBIND, &mut VmUnbind { gpu_va, size })
    }

    /// USERPTR: maps `[addr, addr + size)` of this process's memory at
    /// `gpu_va`; `flags` are [`SOFTGPU_USERPTR_READONLY`] and
    /// [`SOFTGPU_USERPTR_PINNED`]. Remove it with [`Device::unbind`].
    ///
    /// # Safety
    ///
    /// Unless the binding is read-only, GPU jobs may write to that memory
    /// behind the compiler's back until it is unbound (or unmapped): it
    /// must not be memory that Rust references while such jobs run (use a
    /// raw mapping, accessed through raw pointers).
    pub unsafe fn userptr(&self, addr: u64, size: u64, gpu_va: u64, flags: u32) -> io::Result<()> {
        let mut a = Userptr {
            addr,
            size,
            gpu_va,
            flags,
            pad: 0,
        };
        // SAFETY: the kernel copies in the argument (DRM_IOW, of its size)
        // and copies nothing out; the memory it maps for the GPU is the
        // caller's responsibility (see above).
        unsafe { self.ioctl_raw(DRM_IOCTL_SOFTGPU_USERPTR, &mut a) }
    }

    /// EXEC: submits `cmds`. Returns the seqno and, with
    /// [`SOFTGPU_EXEC_FENCE_OUT`] in `flags`, the job's sync_file.
    pub fn exec(&self, cmds: &[Cmd], flags: u32) -> io::Result<(u64, Option<OwnedFd>)> {
        let mut a = Exec {
            cmds: cmds.as_ptr() as u64,
            num_cmds: u32::try_from(cmds.len()).map_err(|_| errno(libc::EINVAL))?,
            flags,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_SOFTGPU_EXEC, &mut a)?;
        if flags & SOFTGPU_EXEC_FENCE_OUT == 0 {
            return Ok((a.seqno, None));
        }
        if a.fence_fd < 0 {
            return Err(io::Error::other(format!(
                "EXEC with FENCE_OUT succeeded but fence_fd = {}",
                a.fence_fd
            )));
        }
        // SAFETY: the kernel just installed this fd for us; nobody else
        // owns it.
        Ok((a.seqno, Some(unsafe { OwnedFd::from_raw_fd(a.fence_fd) })))
    }

    /// WAIT: `Ok((status, fault_addr))` once job `seqno` is done; status is
    /// 0 or a negative errno. ETIME if not done within `timeout_ns`.
    pub fn wait(&self, seqno: u64, timeout_ns: i64) -> io::Result<(i32, u64)> {
        let mut a = Wait {
            seqno,
            timeout_ns,
            ..Default::default()
        };
        self.ioctl(DRM_IOCTL_SOFTGPU_WAIT, &mut a)?;
        Ok((a.status, a.fault_addr))
    }

    /// EXEC then WAIT (up to [`Device::RUN_TIMEOUT_NS`]).
    pub fn run(&self, cmds: &[Cmd]) -> io::Result<(i32, u64)> {
        let (seqno, _) = self.exec(cmds, 0)?;
        self.wait(seqno, Self::RUN_TIMEOUT_NS)
    }

    /// How long [`Device::run`] waits: generous, the guest may be emulated.
    pub const RUN_TIMEOUT_NS: i64 = 120_000_000_000;

    /// PRIME_HANDLE_TO_FD (DRM core): a dma-buf fd for the BO.
    pub fn prime_export(&self, handle: u32) -> io::Result<OwnedFd> {
        let mut a = DrmPrimeHandle {
            handle,
            flags: DRM_CLOEXEC | DRM_RDWR,
            fd: -1,
        };
        self.ioctl(DRM_IOCTL_PRIME_HANDLE_TO_FD, &mut a)?;
        if a.fd < 0 {
            return Err(io::Error::other("PRIME_HANDLE_TO_FD returned no fd"));
        }
        // SAFETY: a new fd installed for us by the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(a.fd) })
    }

    /// PRIME_FD_TO_HANDLE (DRM core): a handle in this file for a dma-buf.
    pub fn prime_import(&self, fd: &impl AsFd) -> io::Result<u32> {
        self.prime_import_raw(fd.as_fd().as_raw_fd())
    }

    /// PRIME_FD_TO_HANDLE with any fd number (tests pass bad ones).
    pub fn prime_import_raw(&self, fd: RawFd) -> io::Result<u32> {
        let mut a = DrmPrimeHandle {
            handle: 0,
            flags: 0,
            fd,
        };
        self.ioctl(DRM_IOCTL_PRIME_FD_TO_HANDLE, &mut a)?;
        Ok(a.handle)
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A shared CPU mapping of a BO; unmapped on drop (the BO stays alive as
/// long as the mapping does, even past its handle and file).
///
/// The memory is shared with the GPU: do not hold a slice from
/// [`Mapping::as_slice`]/[`Mapping::as_mut_slice`] while a job that writes
/// the BO is in flight (wait for it first); use the volatile accessors for
/// racy peeks.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, usable from any thread; the
// methods' borrows keep Rust-side accesses data-race free.
unsafe impl Send for Mapping {}
// SAFETY: as above; &self methods only read.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Start address of the mapping.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (it never is).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address of each 4 KiB page of the mapping.
    pub fn page_addrs(&self) -> Vec<usize> {
        (0..self.len.div_ceil(4096))
            .map(|i| self.addr() + i * 4096)
            .collect()
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` readable bytes mapped for the lifetime of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The mapped bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` writable bytes, borrowed exclusively through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn check(&self, off: usize, size: usize) {
        assert!(
            off.is_multiple_of(size) && off + size <= self.len,
            "access of {size} bytes at {off:#x} in a mapping of {:#x}",
            self.len
        );
    }

    /// Volatile read of the u32 at byte offset `off` (4-aligned).
    pub fn read_u32(&self, off: usize) -> u32 {
        self.check(off, 4);
        // SAFETY: in bounds and aligned (checked), mapped readable.
        unsafe { self.ptr.as_ptr().add(off).cast::<u32>().read_volatile() }
    }

    /// Volatile read of the u64 at byte offset `off` (8-aligned).
    pub fn read_u64(&self, off: usize) -> u64 {
        self.check(off, 8);
        // SAFETY: in bounds and aligned (checked), mapped readable.
        unsafe { self.ptr.as_ptr().add(off).cast::<u64>().read_volatile() }
    }

    /// Volatile write of the u64 at byte offset `off` (8-aligned).
    pub fn write_u64(&mut self, off: usize, v: u64) {
        self.check(off, 8);
        // SAFETY: in bounds and aligned (checked), mapped writable.
        unsafe { self.ptr.as_ptr().add(off).cast::<u64>().write_volatile(v) }
    }

    /// Volatile write of one byte per page, faulting every page in.
    pub fn touch_pages(&mut self, value: u8) {
        for off in (0..self.len).step_by(4096) {
            // SAFETY: in bounds, mapped writable.
            unsafe { self.ptr.as_ptr().add(off).write_volatile(value) }
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what mmap_at mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

impl Cmd {
    /// FILL: the 32-bit `value` over `[dst, dst + size)`; `size % 4 == 0`.
    pub fn fill(dst: u64, size: u64, value: u32) -> Self {
        Self {
            op: SOFTGPU_CMD_FILL,
            dst,
            size,
            value: value.into(),
            ..Default::default()
        }
    }

    /// COPY: `size` bytes from `src` to `dst` (not overlapping).
    pub fn copy(dst: u64, src: u64, size: u64) -> Self {
        Self {
            op: SOFTGPU_CMD_COPY,
            dst,
            src,
            size,
            ..Default::default()
        }
    }

    /// ATOMIC_ADD: adds `value` to the u64 at `dst` (8-aligned), `count`
    /// times.
    pub fn atomic_add(dst: u64, value: u64, count: u64) -> Self {
        Self {
            op: SOFTGPU_CMD_ATOMIC_ADD,
            dst,
            size: count,
            value,
            ..Default::default()
        }
    }

    /// CHECKSUM: stores at `dst` (8-aligned) the FNV-1a 64 of
    /// `[src, src + size)`.
    pub fn checksum(dst: u64, src: u64, size: u64) -> Self {
        Self {
            op: SOFTGPU_CMD_CHECKSUM,
            dst,
            src,
            size,
            ..Default::default()
        }
    }

    /// BUSY: keeps the engine busy for `us` microseconds (at most 1 s).
    pub fn busy(us: u64) -> Self {
        Self {
            op: SOFTGPU_CMD_BUSY,
            value: us,
            ..Default::default()
        }
    }
}

/// FNV-1a 64 offset basis.
pub const FNV1A64_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// DMA_BUF_IOCTL_SYNC on dma-buf `fd`: `flags` is `DMA_BUF_SYNC_START` or
/// `DMA_BUF_SYNC_END` with `DMA_BUF_SYNC_READ`, `_WRITE` or `_RW`. START
/// waits for the device work the buffer's fences track.
pub fn dma_buf_sync(fd: BorrowedFd<'_>, flags: u64) -> io::Result<()> {
    let mut a = DmaBufSync { flags };
    loop {
        // SAFETY: the kernel only reads this struct, of the size the
        // request encodes.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), DMA_BUF_IOCTL_SYNC, &mut a) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) && e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
}

/// FNV-1a 64 prime.
pub const FNV1A64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Streaming 64-bit FNV-1a, the hash of SOFTGPU_CMD_CHECKSUM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a64(u64);

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a64 {
    pub fn new() -> Self {
        Self(FNV1A64_OFFSET_BASIS)
    }

    /// Hashes `bytes` after everything hashed so far.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV1A64_PRIME);
        }
        self.0 = h;
        self
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// 64-bit FNV-1a of `bytes` in address order, as SOFTGPU_CMD_CHECKSUM
/// computes it.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    Fnv1a64::new().update(bytes).finish()
}

/// What a FILL of `len` bytes with `value` leaves in memory (x86: little
/// endian).
pub fn filled(len: usize, value: u32) -> Vec<u8> {
    assert!(len.is_multiple_of(4), "FILL sizes are multiples of 4");
    value.to_le_bytes().repeat(len / 4)
}

/// poll() for POLLIN on `fd` for up to `timeout_ms` (0: just look, -1:
/// forever). Whether it became readable.
pub fn poll_in(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r >= 0 {
            return Ok(r == 1 && p.revents & libc::POLLIN != 0);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_reference_vectors() {
        // From the FNV reference test suite (isthe.com/chongo/tech/comp/fnv).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let mut s = Fnv1a64::new();
        s.update(b"foo").update(b"bar");
        assert_eq!(s.finish(), fnv1a64(b"foobar"));
    }

    #[test]
    fn filled_is_little_endian() {
        assert_eq!(filled(8, 0x1122_3344), [0x44, 0x33, 0x22, 0x11].repeat(2));
    }

    #[test]
    fn ioc_fields_round_trip() {
        let r = DRM_IOCTL_SOFTGPU_EXEC;
        assert_eq!(ioc_dir(r), IOC_READ | IOC_WRITE);
        assert_eq!(ioc_type(r), b'd');
        assert_eq!(ioc_nr(r), 0x46);
        assert_eq!(ioc_size(r), 32);
        assert_eq!(ioc_dir(DRM_IOCTL_SOFTGPU_VM_BIND), IOC_WRITE);
    }

    #[test]
    fn cmd_builders_fill_the_right_fields() {
        let c = Cmd::atomic_add(0x1000, 7, 3);
        assert_eq!((c.op, c.dst, c.value, c.size), (3, 0x1000, 7, 3));
        let c = Cmd::fill(8, 16, u32::MAX);
        assert_eq!((c.op, c.value), (SOFTGPU_CMD_FILL, 0xffff_ffff));
        assert_eq!(Cmd::busy(5).value, 5);
    }
}
