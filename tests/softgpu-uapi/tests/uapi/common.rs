//! Helpers shared by the test modules.

use std::fmt::Debug;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use softgpu::{Cmd, Device, Mapping};

pub const PAGE: u64 = 4096;
pub const MIB: u64 = 1 << 20;
/// Pages in a pageblock, the unit of the page allocator's mobility
/// grouping and of compaction (x86-64: a PMD's worth).
pub const PAGEBLOCK_PAGES: u64 = 512;
/// madvise(2): fault every page of the range in, writable (Linux 5.14).
pub const MADV_POPULATE_WRITE: i32 = 23;

/// Long enough for any job of these tests, even on an emulated CPU with a
/// debug kernel; a job that takes longer is a failure.
pub const WAIT_NS: i64 = Device::RUN_TIMEOUT_NS;

/// Opens the softgpu render node: no softgpu is a failure, never a skip.
#[track_caller]
pub fn open() -> Device {
    Device::open().unwrap_or_else(|e| panic!("opening the softgpu render node: {e}"))
}

pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EINVAL => "EINVAL",
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::EFAULT => "EFAULT",
        libc::ETIME => "ETIME",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::ENOSPC => "ENOSPC",
        libc::ENOTTY => "ENOTTY",
        libc::ENODEV => "ENODEV",
        libc::EPERM => "EPERM",
        libc::ECANCELED => "ECANCELED",
        libc::EIO => "EIO",
        _ => return format!("errno {e}"),
    };
    format!("{name} ({e})")
}

/// Asserts that `r` failed with exactly `errno`.
#[track_caller]
pub fn expect_errno<T: Debug>(r: io::Result<T>, errno: i32, what: &str) {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => {}
        Err(e) => panic!(
            "{what}: expected {}, got {} ({e})",
            errno_name(errno),
            e.raw_os_error()
                .map_or_else(|| "a non-errno error".to_string(), errno_name)
        ),
        Ok(v) => panic!(
            "{what}: expected {}, but it succeeded: {v:?}",
            errno_name(errno)
        ),
    }
}

/// Unwraps `r`, naming the operation and the errno on failure.
#[track_caller]
pub fn ok<T>(r: io::Result<T>, what: &str) -> T {
    r.unwrap_or_else(|e| {
        panic!(
            "{what}: failed with {} ({e})",
            e.raw_os_error()
                .map_or_else(|| "a non-errno error".to_string(), errno_name)
        )
    })
}

/// A new BO.
#[track_caller]
pub fn create(dev: &Device, size: u64, flags: u32) -> u32 {
    let h = ok(
        dev.create_bo(size, flags),
        &format!("GEM_CREATE size {size:#x} flags {flags:#x}"),
    );
    assert_ne!(h, 0, "GEM handles are never 0");
    h
}

/// A new BO bound in full at `va`, read-write.
#[track_caller]
pub fn create_bound(dev: &Device, size: u64, flags: u32, va: u64) -> u32 {
    let h = create(dev, size, flags);
    ok(
        dev.bind(h, va, 0, size, 0),
        &format!("VM_BIND of the whole BO ({size:#x} bytes) at {va:#x}"),
    );
    h
}

/// A CPU mapping of the whole BO.
#[track_caller]
pub fn map(dev: &Device, handle: u32, size: u64) -> Mapping {
    ok(
        dev.mmap_bo(handle, size as usize),
        &format!("mmap of BO {handle} ({size:#x} bytes)"),
    )
}

/// Runs a job and returns (status, fault_addr).
#[track_caller]
pub fn run(dev: &Device, cmds: &[Cmd], what: &str) -> (i32, u64) {
    let (seqno, _) = ok(dev.exec(cmds, 0), &format!("EXEC of {what}"));
    ok(dev.wait(seqno, WAIT_NS), &format!("WAIT for {what}"))
}

/// Runs a job that must succeed.
#[track_caller]
pub fn run_ok(dev: &Device, cmds: &[Cmd], what: &str) {
    let (status, fault) = run(dev, cmds, what);
    assert_eq!(
        status,
        0,
        "{what}: job failed with {} (fault_addr {fault:#x})",
        errno_name(-status)
    );
}

/// Runs a job that must fail with -EFAULT at `addr`.
#[track_caller]
pub fn run_fault_at(dev: &Device, cmds: &[Cmd], addr: u64, what: &str) {
    let (status, fault) = run(dev, cmds, what);
    assert_eq!(
        status,
        -libc::EFAULT,
        "{what}: job status should be -EFAULT, is {status} ({})",
        if status == 0 {
            "success".to_string()
        } else {
            errno_name(-status)
        }
    );
    assert_eq!(fault, addr, "{what}: fault_addr");
}

/// A write by the GPU at `va` (8-aligned) that changes nothing: an
/// ATOMIC_ADD of 0.
pub fn probe_write(va: u64) -> Cmd {
    Cmd::atomic_add(va, 0, 1)
}

/// Asserts that nothing is bound (writable) at `va` in `dev`'s VM: a GPU
/// write there faults at `va`.
#[track_caller]
pub fn assert_unbound(dev: &Device, va: u64, what: &str) {
    run_fault_at(
        dev,
        &[probe_write(va)],
        va,
        &format!("{what}: GPU write at {va:#x}, which must be unbound"),
    );
}

/// Asserts that `va` is bound writable in `dev`'s VM.
#[track_caller]
pub fn assert_writable(dev: &Device, va: u64, what: &str) {
    run_ok(
        dev,
        &[probe_write(va)],
        &format!("{what}: GPU write at {va:#x}, which must be bound"),
    );
}

/// A deterministic byte pattern.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// An anonymous private mapping, unmapped on drop (for bad user pointers,
/// and memory pressure).
pub struct Anon {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Anon {
    pub fn new(len: usize) -> Self {
        Self::map(len, 0)
    }

    /// With every page allocated at once (`MAP_POPULATE`): memory pressure.
    pub fn populated(len: usize) -> Self {
        Self::map(len, libc::MAP_POPULATE)
    }

    fn map(len: usize, flags: i32) -> Self {
        // SAFETY: a fresh anonymous mapping; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap of {len} bytes: {}",
            io::Error::last_os_error()
        );
        Self { ptr: p.cast(), len }
    }

    /// madvise(2) `advice` on `[off, off + len)`.
    #[track_caller]
    pub fn advise(&self, off: usize, len: usize, advice: i32) {
        assert!(off + len <= self.len);
        // SAFETY: advice on a page-aligned range of our own mapping; none
        // of the advice the tests give unmaps it.
        let r = unsafe { libc::madvise(self.ptr.add(off).cast(), len, advice) };
        assert_eq!(
            r,
            0,
            "madvise({advice}) of {len} bytes at {off:#x}: {}",
            io::Error::last_os_error()
        );
    }

    /// The address of each page.
    pub fn page_addrs(&self) -> Vec<usize> {
        (0..self.len / PAGE as usize)
            .map(|i| self.ptr as usize + i * PAGE as usize)
            .collect()
    }

    /// Makes `[off, off + len)` inaccessible.
    pub fn protect_none(&self, off: usize, len: usize) {
        assert!(off + len <= self.len);
        // SAFETY: a page-aligned range of our own mapping.
        let r = unsafe { libc::mprotect(self.ptr.add(off).cast(), len, libc::PROT_NONE) };
        assert_eq!(r, 0, "mprotect: {}", io::Error::last_os_error());
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The GPU's FNV-1a checksum of `[va, va + size)`, computed by a CHECKSUM
/// job into a one-page result BO bound at `res_va` for the job only.
#[track_caller]
pub fn gpu_checksum(dev: &Device, va: u64, size: u64, res_va: u64) -> u64 {
    let r = create_bound(dev, PAGE, 0, res_va);
    let res = map(dev, r, PAGE);
    run_ok(dev, &[Cmd::checksum(res_va, va, size)], "CHECKSUM");
    let sum = res.read_u64(0);
    drop(res);
    ok(dev.unbind(res_va, PAGE), "VM_UNBIND of the result BO");
    ok(dev.close_bo(r), "GEM_CLOSE of the result BO");
    sum
}

/// How many objects the device has: the lines of debugfs `objects` after
/// its header.
pub fn object_count(dev: &Device) -> usize {
    let path = debugfs_path(dev, "objects");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .count()
        .checked_sub(1)
        .expect("objects has no header")
}

/// Mounts tracefs at /sys/kernel/tracing unless it is there already.
pub fn mount_tracefs() {
    if std::path::Path::new("/sys/kernel/tracing/events").exists() {
        return;
    }
    // SAFETY: plain NUL-terminated strings; mounting tracefs where the
    // kernel made its mount point.
    let r = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            c"/sys/kernel/tracing".as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "mounting tracefs: {}", io::Error::last_os_error());
}

/// A file of the device's debugfs directory (`/sys/kernel/debug/dri/<minor>/`).
pub fn debugfs_path(dev: &Device, name: &str) -> String {
    let node = dev
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let minor = node
        .strip_prefix("renderD")
        .unwrap_or_else(|| panic!("{node} is not a render node"));
    format!("/sys/kernel/debug/dri/{minor}/{name}")
}

/// How a forked child ended.
#[derive(Debug)]
pub enum ChildEnd {
    /// Exited with this code; the message it reported, if any.
    Exited(i32, String),
    /// Killed by this signal.
    Signalled(i32),
    /// Still running at the deadline (then killed).
    Hung(Duration),
}

/// Runs `f` in a forked child and waits for it, at most `timeout`. The
/// child reports a failure through a pipe and exits 1; a child that does
/// not end in time is killed.
pub fn in_child(timeout: Duration, f: impl FnOnce() -> Result<(), String>) -> ChildEnd {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds are fresh and ours.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs `f` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(rd);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let msg = match r {
            Ok(Ok(())) => None,
            Ok(Err(m)) => Some(m),
            Err(p) => Some(
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "child panicked".to_string()),
            ),
        };
        let code = match msg {
            None => 0,
            Some(m) => {
                // SAFETY: writing our own buffer to our own pipe.
                unsafe { libc::write(wr.as_raw_fd(), m.as_ptr().cast(), m.len()) };
                1
            }
        };
        // SAFETY: ends the child without running the test harness on.
        unsafe { libc::_exit(code) };
    }
    drop(wr);
    let start = Instant::now();
    let status = loop {
        let mut st = 0;
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            break st;
        }
        assert_eq!(r, 0, "waitpid: {}", std::io::Error::last_os_error());
        if start.elapsed() > timeout {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return ChildEnd::Hung(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if libc::WIFSIGNALED(status) {
        return ChildEnd::Signalled(libc::WTERMSIG(status));
    }
    let mut msg = String::new();
    let _ = std::fs::File::from(rd).read_to_string(&mut msg);
    ChildEnd::Exited(libc::WEXITSTATUS(status), msg)
}

#[track_caller]
pub fn assert_child_ok(end: ChildEnd) {
    match end {
        ChildEnd::Exited(0, _) => {}
        ChildEnd::Exited(code, msg) => panic!("child failed (exit code {code}): {msg}"),
        ChildEnd::Signalled(sig) => panic!("child killed by signal {sig}"),
        ChildEnd::Hung(t) => panic!("child still running after {t:?}: hung (killed it)"),
    }
}

/// Sets the flag when dropped, also while unwinding.
pub struct StopOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A /proc/sys (or other sysfs-like) setting changed for the life of the
/// value, restored when dropped, also when a test fails.
pub struct Setting {
    path: &'static str,
    old: String,
}

impl Setting {
    #[track_caller]
    pub fn set(path: &'static str, value: &str) -> Self {
        let old = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {path}: {e}"))
            .trim()
            .to_string();
        std::fs::write(path, value).unwrap_or_else(|e| panic!("writing {value:?} to {path}: {e}"));
        Self { path, old }
    }
}

impl Drop for Setting {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, &self.old);
    }
}

/// The calling thread runs on CPU `cpu` only, for the life of the value
/// (then again wherever it could run before).
pub struct OnCpu(libc::cpu_set_t);

impl OnCpu {
    #[track_caller]
    pub fn new(cpu: usize) -> Self {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `old` is a cpu_set_t of `size` bytes; 0 is this thread.
        let r = unsafe { libc::sched_getaffinity(0, size, &mut old) };
        assert_eq!(r, 0, "sched_getaffinity: {}", io::Error::last_os_error());
        // SAFETY: as above.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid cpu_set_t; CPU_SET ignores a CPU number
        // beyond its size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        // SAFETY: `set` is a cpu_set_t of `size` bytes; 0 is this thread.
        let r = unsafe { libc::sched_setaffinity(0, size, &set) };
        assert_eq!(
            r,
            0,
            "sched_setaffinity to CPU {cpu}: {}",
            io::Error::last_os_error()
        );
        Self(old)
    }
}

impl Drop for OnCpu {
    fn drop(&mut self) {
        // SAFETY: restoring the set sched_getaffinity gave us.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
    }
}
