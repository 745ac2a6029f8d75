//! USERPTR of memory other than private anonymous pages: shared anonymous
//! (shmem), MAP_SHARED and MAP_PRIVATE of tmpfs and gemfs files, anonymous
//! transparent huge pages and hugetlbfs pages. The GPU and the CPU (also
//! another process, and read()/write() on the file) see each other's data;
//! truncation and hole punching take the pages out of the GPU page table
//! (the GPU reads the new contents, or faults beyond EOF); a THP stays a
//! THP while the GPU uses it and moves with move_pages(); GPU atomics on
//! memory 6.12 cannot make device-exclusive fail at once with -EOPNOTSUPP,
//! and on a THP split it and work.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libc::{EFAULT, EOPNOTSUPP, EPERM};
use softgpu::mm::{self, Pagemap};
use softgpu::*;

use crate::common::*;
use crate::migration::{check_thp, compact_memory, move_all, require_two_nodes};

const VA: u64 = 0x1_0000_0000;
const RES_VA: u64 = 0x2_0000_0000;
const PAGE_USIZE: usize = PAGE as usize;
const THP_SIZE: usize = 2 << 20;
/// /proc/kpageflags: a hugetlbfs page.
const KPF_HUGE: u32 = 17;

/// A mapping made by the test, accessed only through raw pointers (the GPU
/// writes to it too), unmapped on drop.
struct Region {
    ptr: *mut u8,
    len: usize,
    /// Whether dropping it unmaps it (not for a view into another).
    owned: bool,
}

impl Region {
    /// `mmap(NULL, len, prot, flags, fd, 0)`.
    #[track_caller]
    fn map(len: usize, prot: i32, flags: i32, fd: i32) -> Self {
        // SAFETY: a new mapping chosen by the kernel; checked below.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap of {len:#x} bytes, flags {flags:#x}: {}",
            std::io::Error::last_os_error()
        );
        Self {
            ptr: p.cast(),
            len,
            owned: true,
        }
    }

    fn addr(&self) -> u64 {
        self.ptr as u64
    }

    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len);
        // SAFETY: within our mapping; no Rust reference to it exists, and
        // no job writing to it runs while we do (callers wait for them).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) };
    }

    fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len);
        let mut v = vec![0u8; len];
        // SAFETY: as in write().
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), v.as_mut_ptr(), len) };
        v
    }

    fn read_u64(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.read(off, 8).try_into().unwrap())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: our own mapping, not used after this.
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

/// USERPTR of `[addr, addr + size)` at `va`.
fn userptr(dev: &Device, addr: u64, size: u64, va: u64, flags: u32) -> std::io::Result<()> {
    // SAFETY: the tests bind only `Region` memory, accessed through raw
    // pointers.
    unsafe { dev.userptr(addr, size, va, flags) }
}

#[track_caller]
fn bind(dev: &Device, r: &Region, va: u64, flags: u32, what: &str) {
    ok(
        userptr(dev, r.addr(), r.len as u64, va, flags),
        &format!("USERPTR of {what}, flags {flags:#x}"),
    );
}

/// A page of anonymous memory for job results, bound at `RES_VA`.
fn results(dev: &Device) -> Region {
    let r = Region::map(
        PAGE_USIZE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    bind(dev, &r, RES_VA, 0, "the results page");
    r
}

#[track_caller]
fn checksum(dev: &Device, res: &Region, va: u64, size: u64, what: &str) -> u64 {
    run_ok(dev, &[Cmd::checksum(RES_VA, va, size)], what);
    res.read_u64(0)
}

/// Runs a job that must fail with `-errno` at `addr`, and returns how long
/// it took.
#[track_caller]
fn run_fails_at(dev: &Device, cmds: &[Cmd], errno: i32, addr: u64, what: &str) -> Duration {
    let t = Instant::now();
    let (status, fault) = run(dev, cmds, what);
    let took = t.elapsed();
    assert_eq!(
        status,
        -errno,
        "{what}: job status {status}, not -{}",
        errno_name(errno)
    );
    assert_eq!(fault, addr, "{what}: fault_addr");
    took
}

/// A GPU atomic on memory that cannot be made device-exclusive fails at
/// once with -EOPNOTSUPP (not with -EBUSY after HMM's 1 s timeout), and
/// changes nothing.
#[track_caller]
fn atomic_not_supported(dev: &Device, r: &Region, va: u64, what: &str) {
    let before = r.read(0, r.len);
    let took = run_fails_at(
        dev,
        &[Cmd::atomic_add(va + 8, 1, 1)],
        EOPNOTSUPP,
        va + 8,
        &format!("ATOMIC_ADD on {what}"),
    );
    assert!(
        took < Duration::from_millis(900),
        "ATOMIC_ADD on {what} took {took:?} to fail: not at once"
    );
    assert!(
        r.read(0, r.len) == before,
        "{what} changed by a failed atomic"
    );
}

/// A file system mounted on a fresh directory, unmounted on drop.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    #[track_caller]
    fn new(fstype: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/userptr-{fstype}-{}",
            N.fetch_add(1, Ordering::Relaxed)
        ));
        ok(std::fs::create_dir_all(&dir), "mkdir for the mount");
        let src = CString::new(fstype).unwrap();
        let target = CString::new(dir.to_str().unwrap()).unwrap();
        // SAFETY: valid C strings for the call; no data.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                src.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            r,
            0,
            "mount -t {fstype} {dir:?}: {}",
            std::io::Error::last_os_error()
        );
        Self { dir }
    }

    #[track_caller]
    fn file(&self, name: &str, data: &[u8]) -> File {
        let f = ok(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(self.dir.join(name)),
            "creating a file",
        );
        ok(f.write_all_at(data, 0), "writing the file");
        f
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let target = CString::new(self.dir.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; every file of the mount is closed and
        // unmapped by now (they were dropped before).
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[track_caller]
fn pread(f: &File, off: usize, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ok(f.read_exact_at(&mut v, off as u64), "pread");
    v
}

#[track_caller]
fn set_len(f: &File, len: usize) {
    ok(f.set_len(len as u64), "ftruncate");
}

#[track_caller]
fn punch_hole(f: &File, off: usize, len: usize) {
    // SAFETY: a plain syscall on our descriptor.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as i64,
            len as i64,
        )
    };
    assert_eq!(
        r,
        0,
        "fallocate(PUNCH_HOLE): {}",
        std::io::Error::last_os_error()
    );
}

/// Shared anonymous memory (MAP_SHARED | MAP_ANONYMOUS, shmem): the GPU
/// and the CPU see each other's writes, also a child's, written through
/// the mapping it shares; GPU atomics are refused at once.
#[test]
fn userptr_shared_anonymous_memory() {
    const N: usize = 16;
    let size = N * PAGE_USIZE;
    let dev = open();
    let res = results(&dev);
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let m = Region::map(size, rw, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1);
    let a = pattern(size, 21);
    m.write(0, &a);
    bind(&dev, &m, VA, 0, "shared anonymous memory");
    assert_eq!(
        checksum(&dev, &res, VA, size as u64, "CHECKSUM of shmem"),
        fnv1a64(&a)
    );
    run_ok(&dev, &[Cmd::fill(VA, 4 * PAGE, 0x5151_0001)], "FILL");
    assert!(m.read(0, 4 * PAGE_USIZE) == filled(4 * PAGE_USIZE, 0x5151_0001));
    // Another process writes through the same shared mapping, to pages the
    // GPU has mapped: the GPU sees it.
    let b = pattern(size, 22);
    let child = in_child(Duration::from_secs(60), || {
        // SAFETY: the shared mapping, inherited; no job runs meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), m.ptr, size) };
        Ok(())
    });
    assert_child_ok(child);
    assert_eq!(
        checksum(
            &dev,
            &res,
            VA,
            size as u64,
            "CHECKSUM after the child's writes"
        ),
        fnv1a64(&b),
        "the GPU does not see what another process wrote"
    );
    atomic_not_supported(&dev, &m, VA, "shared anonymous memory");
    // Read-only shared memory: read-only bindings only.
    let ro = Region::map(
        PAGE_USIZE,
        libc::PROT_READ,
        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
        -1,
    );
    expect_errno(
        userptr(&dev, ro.addr(), PAGE, VA + 64 * PAGE, 0),
        EPERM,
        "writable USERPTR of read-only shared memory",
    );
    ok(dev.unbind(VA, size as u64), "VM_UNBIND");
}

/// MAP_SHARED of a file on `fstype`: what the GPU writes lands in the file
/// (pread), what write(2) and another process's mapping write, the GPU
/// reads; ftruncate and hole punching while bound take the pages out of
/// the GPU page table: the GPU reads the new contents (zeros), faults
/// beyond EOF, and refaults what is still mapped.
fn shared_file(fstype: &str) {
    const N: usize = 16;
    let size = N * PAGE_USIZE;
    let dev = open();
    let res = results(&dev);
    let mnt = Mount::new(fstype);
    let a = pattern(size, 31);
    let f = mnt.file("shared", &a);
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let m = Region::map(size, rw, libc::MAP_SHARED, f.as_raw_fd());
    bind(&dev, &m, VA, 0, &format!("MAP_SHARED {fstype} file"));
    assert_eq!(
        checksum(&dev, &res, VA, size as u64, "CHECKSUM of the file"),
        fnv1a64(&a)
    );
    // GPU writes land in the file.
    run_ok(&dev, &[Cmd::fill(VA + PAGE, 2 * PAGE, 0x6161_0002)], "FILL");
    let mut want = a.clone();
    want[PAGE_USIZE..3 * PAGE_USIZE].copy_from_slice(&filled(2 * PAGE_USIZE, 0x6161_0002));
    assert!(
        pread(&f, 0, size) == want,
        "pread does not show the GPU's FILL"
    );
    // write(2) to pages the GPU has mapped: the GPU sees it.
    let b = pattern(PAGE_USIZE, 32);
    ok(f.write_all_at(&b, 2 * PAGE), "pwrite");
    want[2 * PAGE_USIZE..3 * PAGE_USIZE].copy_from_slice(&b);
    assert_eq!(
        checksum(&dev, &res, VA, size as u64, "CHECKSUM after pwrite"),
        fnv1a64(&want),
        "the GPU does not see pwrite()"
    );
    // Another process's own shared mapping of the file.
    let c = pattern(PAGE_USIZE, 33);
    let child = in_child(Duration::from_secs(60), || {
        let theirs = Region::map(size, rw, libc::MAP_SHARED, f.as_raw_fd());
        theirs.write(3 * PAGE_USIZE, &c);
        Ok(())
    });
    assert_child_ok(child);
    want[3 * PAGE_USIZE..4 * PAGE_USIZE].copy_from_slice(&c);
    assert_eq!(
        checksum(
            &dev,
            &res,
            VA,
            size as u64,
            "CHECKSUM after the child's writes"
        ),
        fnv1a64(&want),
        "the GPU does not see another process's writes"
    );

    // Punch a hole in pages 4-5, mapped in the GPU: it reads zeros after.
    punch_hole(&f, 4 * PAGE_USIZE, 2 * PAGE_USIZE);
    want[4 * PAGE_USIZE..6 * PAGE_USIZE].fill(0);
    assert_eq!(
        checksum(&dev, &res, VA, size as u64, "CHECKSUM after PUNCH_HOLE"),
        fnv1a64(&want),
        "the GPU reads stale pages after fallocate(PUNCH_HOLE)"
    );
    // And writes there land in the new pages of the file.
    run_ok(
        &dev,
        &[Cmd::fill(VA + 4 * PAGE, 8, 0x6161_0004)],
        "FILL of the hole",
    );
    want[4 * PAGE_USIZE..4 * PAGE_USIZE + 8].copy_from_slice(&filled(8, 0x6161_0004));
    assert!(pread(&f, 0, size) == want, "GPU write to a refilled hole");

    // Truncate to 8 pages while bound and mapped in the GPU.
    set_len(&f, 8 * PAGE_USIZE);
    let at = VA + 10 * PAGE + 16;
    run_fails_at(&dev, &[Cmd::fill(at, 8, 1)], EFAULT, at, "FILL beyond EOF");
    run_fails_at(
        &dev,
        &[Cmd::checksum(RES_VA, VA + 8 * PAGE, PAGE)],
        EFAULT,
        VA + 8 * PAGE,
        "CHECKSUM beyond EOF",
    );
    // What is left is still there, refaulted.
    assert_eq!(
        checksum(&dev, &res, VA, 8 * PAGE, "CHECKSUM within EOF"),
        fnv1a64(&want[..8 * PAGE_USIZE])
    );
    // Extended again: the truncated part reads zeros, not the old pages.
    set_len(&f, size);
    want[8 * PAGE_USIZE..].fill(0);
    assert_eq!(
        checksum(&dev, &res, VA, size as u64, "CHECKSUM after extending"),
        fnv1a64(&want),
        "the GPU reads stale pages after ftruncate"
    );
    atomic_not_supported(&dev, &m, VA, &format!("a MAP_SHARED {fstype} file"));
    ok(dev.unbind(VA, size as u64), "VM_UNBIND");
    assert!(pread(&f, 0, size) == want, "file contents after unbind");
}

#[test]
fn userptr_shared_tmpfs_file() {
    shared_file("tmpfs");
}

#[test]
fn userptr_shared_gemfs_file() {
    shared_file("gemfs");
}

/// MAP_PRIVATE of a tmpfs file: the GPU reads the file; its writes break
/// copy-on-write as the CPU's do, so they land in the process's copy and
/// never in the file; a GPU atomic then works (the copy is anonymous).
/// Read-only private mappings bind read-only only.
#[test]
fn userptr_private_tmpfs_file() {
    const N: usize = 8;
    let size = N * PAGE_USIZE;
    let dev = open();
    let res = results(&dev);
    let mnt = Mount::new("tmpfs");
    let a = pattern(size, 41);
    let f = mnt.file("private", &a);
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let m = Region::map(size, rw, libc::MAP_PRIVATE, f.as_raw_fd());
    bind(&dev, &m, VA, 0, "MAP_PRIVATE tmpfs file");
    assert_eq!(
        checksum(
            &dev,
            &res,
            VA,
            size as u64,
            "CHECKSUM of the private mapping"
        ),
        fnv1a64(&a)
    );
    // The file changes under a page nobody wrote privately: the GPU sees
    // the new contents (it maps the page cache page until copy-on-write).
    let b = pattern(PAGE_USIZE, 42);
    ok(f.write_all_at(&b, 0), "pwrite");
    let mut want = a.clone();
    want[..PAGE_USIZE].copy_from_slice(&b);
    assert_eq!(
        checksum(&dev, &res, VA, size as u64, "CHECKSUM after pwrite"),
        fnv1a64(&want)
    );
    run_ok(&dev, &[Cmd::fill(VA, 2 * PAGE, 0x7171_0001)], "FILL");
    assert!(
        pread(&f, 0, size) == want,
        "a GPU write to a private mapping reached the file"
    );
    want[..2 * PAGE_USIZE].copy_from_slice(&filled(2 * PAGE_USIZE, 0x7171_0001));
    assert!(
        m.read(0, size) == want,
        "the CPU does not see the GPU's FILL"
    );
    // An atomic: the page becomes anonymous first, so it works.
    run_ok(&dev, &[Cmd::atomic_add(VA + 5 * PAGE, 7, 2)], "ATOMIC_ADD");
    let w = u64::from_ne_bytes(want[5 * PAGE_USIZE..5 * PAGE_USIZE + 8].try_into().unwrap());
    assert_eq!(m.read_u64(5 * PAGE_USIZE), w.wrapping_add(14));
    assert!(pread(&f, 5 * PAGE_USIZE, 8) == a[5 * PAGE_USIZE..5 * PAGE_USIZE + 8]);
    ok(dev.unbind(VA, size as u64), "VM_UNBIND");

    // Read-only mappings: a read-only private one, a read-only file shared.
    let ro = Region::map(size, libc::PROT_READ, libc::MAP_PRIVATE, f.as_raw_fd());
    let rofile = ok(File::open(mnt.dir.join("private")), "opening read-only");
    let ros = Region::map(size, libc::PROT_READ, libc::MAP_SHARED, rofile.as_raw_fd());
    for (r, what) in [
        (&ro, "read-only MAP_PRIVATE"),
        (&ros, "read-only file MAP_SHARED"),
    ] {
        expect_errno(userptr(&dev, r.addr(), size as u64, VA, 0), EPERM, what);
        bind(&dev, r, VA, SOFTGPU_USERPTR_READONLY, what);
        let cur = pread(&f, 0, size);
        assert_eq!(checksum(&dev, &res, VA, size as u64, what), fnv1a64(&cur));
        let at = VA + PAGE;
        run_fails_at(&dev, &[Cmd::fill(at, 8, 1)], EFAULT, at, what);
        assert!(pread(&f, 0, size) == cur, "{what}: the file changed");
        ok(dev.unbind(VA, size as u64), "VM_UNBIND");
    }
}

/// 2 MiB of anonymous memory, 2 MiB aligned, MADV_HUGEPAGE, written, and
/// checked to be one THP (compacting once if the first try is not).
fn thp_region(pm: &Pagemap) -> (Region, Region) {
    for attempt in 0..2 {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let outer = Region::map(
            2 * THP_SIZE,
            rw,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
        );
        let start = (outer.ptr as usize).next_multiple_of(THP_SIZE);
        // A view of the aligned part; `outer` unmaps it all.
        let r = Region {
            ptr: start as *mut u8,
            len: THP_SIZE,
            owned: false,
        };
        // SAFETY: within our mapping.
        let ret = unsafe { libc::madvise(r.ptr.cast(), THP_SIZE, libc::MADV_HUGEPAGE) };
        assert_eq!(ret, 0, "madvise(MADV_HUGEPAGE)");
        r.write(0, &pattern(THP_SIZE, 51));
        let addrs: Vec<usize> = (0..THP_SIZE / PAGE_USIZE)
            .map(|i| start + i * PAGE_USIZE)
            .collect();
        let pfns: Vec<u64> = ok(pm.pfns(&addrs), "pagemap")
            .into_iter()
            .map(|p| p.expect("a written page is present"))
            .collect();
        match check_thp(&pfns) {
            Ok(()) => return (outer, r),
            Err(e) if attempt == 1 => panic!("no THP even after compaction: {e}"),
            Err(_) => compact_memory(),
        }
    }
    unreachable!()
}

fn thp_pfns(pm: &Pagemap, r: &Region) -> Vec<u64> {
    let addrs: Vec<usize> = (0..r.len / PAGE_USIZE)
        .map(|i| r.ptr as usize + i * PAGE_USIZE)
        .collect();
    ok(pm.pfns(&addrs), "pagemap")
        .into_iter()
        .map(|p| p.expect("page not present"))
        .collect()
}

/// A THP bound as a userptr: HMM reports it page by page; the GPU reads and
/// writes it right, and it stays one THP; move_pages() moves it while
/// bound, contents intact, and the GPU follows. A GPU atomic on a page in
/// the middle of it splits the folio (6.12 can only make small folios
/// device-exclusive), and works.
#[test]
fn userptr_thp() {
    require_two_nodes();
    let _numa = Setting::set("/proc/sys/kernel/numa_balancing", "0");
    let dev = open();
    let res = results(&dev);
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let (_outer, r) = thp_region(&pm);
    let size = THP_SIZE as u64;
    let mut want = pattern(THP_SIZE, 51);
    bind(&dev, &r, VA, 0, "a THP");
    assert_eq!(
        checksum(&dev, &res, VA, size, "CHECKSUM of the THP"),
        fnv1a64(&want)
    );
    // Writes at the start, in the middle, across a page boundary, and at
    // the end.
    let cmds = [
        Cmd::fill(VA, 64, 0x8181_0001),
        Cmd::fill(VA + 300 * PAGE - 32, 64, 0x8181_0002),
        Cmd::copy(VA + size - PAGE, VA + 7 * PAGE, PAGE),
    ];
    run_ok(&dev, &cmds, "FILL and COPY in the THP");
    want[..64].copy_from_slice(&filled(64, 0x8181_0001));
    let mid = 300 * PAGE_USIZE - 32;
    want[mid..mid + 64].copy_from_slice(&filled(64, 0x8181_0002));
    let p7 = want[7 * PAGE_USIZE..8 * PAGE_USIZE].to_vec();
    want[THP_SIZE - PAGE_USIZE..].copy_from_slice(&p7);
    assert!(r.read(0, THP_SIZE) == want, "CPU view of the GPU's writes");
    let before = thp_pfns(&pm, &r);
    if let Err(e) = check_thp(&before) {
        panic!("the GPU's accesses split the THP: {e}");
    }

    // move_pages of the whole THP while bound.
    let addrs: Vec<usize> = (0..THP_SIZE / PAGE_USIZE)
        .map(|i| r.ptr as usize + i * PAGE_USIZE)
        .collect();
    let nodes = ok(mm::page_nodes(&addrs), "move_pages query");
    let targets: Vec<i32> = nodes.iter().map(|&n| 1 - n).collect();
    if let Err(e) = move_all(&addrs, &targets, 10) {
        panic!("the bound THP did not move: {e}");
    }
    let after = thp_pfns(&pm, &r);
    assert!(
        (0..before.len()).all(|i| after[i] != before[i]),
        "a page of the THP kept its PFN"
    );
    assert_eq!(ok(mm::page_nodes(&addrs), "move_pages query"), targets);
    assert_eq!(
        checksum(&dev, &res, VA, size, "CHECKSUM after move_pages"),
        fnv1a64(&want),
        "the GPU reads other data after the THP moved"
    );
    assert!(r.read(0, THP_SIZE) == want, "contents after the move");
    run_ok(
        &dev,
        &[Cmd::fill(VA + 100 * PAGE, 8, 0x8181_0003)],
        "FILL after the move",
    );
    assert_eq!(
        r.read_u64(100 * PAGE_USIZE),
        u64::from_ne_bytes(filled(8, 0x8181_0003).try_into().unwrap())
    );
    want[100 * PAGE_USIZE..100 * PAGE_USIZE + 8].copy_from_slice(&filled(8, 0x8181_0003));

    // A GPU atomic on a page in the middle of the (moved) huge page.
    let off = 200 * PAGE_USIZE + 8;
    let base = u64::from_ne_bytes(want[off..off + 8].try_into().unwrap());
    run_ok(
        &dev,
        &[Cmd::atomic_add(VA + off as u64, 5, 3)],
        "ATOMIC_ADD in the THP",
    );
    let v = base.wrapping_add(15);
    assert_eq!(r.read_u64(off), v, "the GPU's atomic on a THP page");
    want[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    // The CPU read took it back; the page is now a small folio of its own.
    let pfn = thp_pfns(&pm, &r)[200];
    let flags = ok(mm::kpageflags(&[pfn]), "kpageflags")[0];
    assert_eq!(
        flags & ((1 << mm::KPF_THP) | (1 << mm::KPF_COMPOUND_TAIL) | (1 << mm::KPF_COMPOUND_HEAD)),
        0,
        "the page the GPU took exclusive is still part of a large folio ({flags:#x})"
    );
    assert_eq!(
        checksum(&dev, &res, VA, size, "CHECKSUM at the end"),
        fnv1a64(&want)
    );
}

/// Reserves `n` more huge pages for the life of the value, restoring the
/// previous count after; fails (not skips) if the kernel cannot.
fn reserve_huge_pages(n: u64) -> Setting {
    let path = "/proc/sys/vm/nr_hugepages";
    let cur: u64 = std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let free = mm::meminfo_kb("HugePages_Free").expect("HugePages_Free");
    compact_memory();
    let s = Setting::set(path, &(cur + n).to_string());
    let now = mm::meminfo_kb("HugePages_Free").expect("HugePages_Free");
    assert!(
        now >= free + n,
        "could not reserve {n} huge pages: HugePages_Free {free} -> {now}"
    );
    s
}

/// hugetlbfs pages (MAP_HUGETLB, private and shared): the GPU reads and
/// writes them page by page; atomics are refused at once; munmap takes
/// them out of the GPU page table.
#[test]
fn userptr_hugetlb() {
    let _hp = reserve_huge_pages(2);
    let dev = open();
    let res = results(&dev);
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let size = THP_SIZE as u64;
    for (flags, what) in [
        (libc::MAP_PRIVATE, "private hugetlb memory"),
        (libc::MAP_SHARED, "shared hugetlb memory"),
    ] {
        let m = Region::map(
            THP_SIZE,
            rw,
            flags | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
        );
        assert_eq!(m.addr() % THP_SIZE as u64, 0, "{what}: not 2 MiB aligned");
        let mut want = pattern(THP_SIZE, 61);
        m.write(0, &want);
        bind(&dev, &m, VA, 0, what);
        assert_eq!(
            checksum(&dev, &res, VA, size, what),
            fnv1a64(&want),
            "{what}"
        );
        run_ok(
            &dev,
            &[
                Cmd::fill(VA + 511 * PAGE, PAGE, 0x9191_0001),
                Cmd::copy(VA + 3, VA + 256 * PAGE + 5, 100),
            ],
            &format!("FILL and COPY in {what}"),
        );
        want[511 * PAGE_USIZE..].copy_from_slice(&filled(PAGE_USIZE, 0x9191_0001));
        let src = want[256 * PAGE_USIZE + 5..256 * PAGE_USIZE + 105].to_vec();
        want[3..103].copy_from_slice(&src);
        assert!(
            m.read(0, THP_SIZE) == want,
            "{what}: CPU view of the GPU's writes"
        );
        // Exactly 2 MiB of it are one huge page.
        let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
        let p0 = ok(pm.pfn(m.ptr as usize), "pagemap").expect("present");
        let p1 = ok(pm.pfn(m.ptr as usize + 300 * PAGE_USIZE), "pagemap").expect("present");
        assert_eq!(p1, p0 + 300, "{what}: not one huge page");
        let fl = ok(mm::kpageflags(&[p0]), "kpageflags")[0];
        assert_ne!(
            fl & (1 << KPF_HUGE),
            0,
            "{what}: KPF_HUGE not set ({fl:#x})"
        );
        atomic_not_supported(&dev, &m, VA, what);
        drop(m);
        run_fails_at(
            &dev,
            &[Cmd::fill(VA + 8, 8, 1)],
            EFAULT,
            VA + 8,
            &format!("{what} unmapped"),
        );
        ok(dev.unbind(VA, size), "VM_UNBIND");
    }
}
