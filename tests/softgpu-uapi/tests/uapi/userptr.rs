//! USERPTR: the GPU reaching the process's own anonymous memory, mirrored
//! through HMM and an MMU interval notifier, without pinning it. What the
//! GPU and the CPU write each sees; read-only memory stays read-only; a
//! job after munmap faults; fork's copy-on-write leaves the GPU on the
//! parent's pages; move_pages moves bound pages (they are not pinned) and
//! the GPU follows them; bad arguments get their errnos and change nothing;
//! a process may exit with a live userptr. GPU atomics take the page
//! exclusive to the device, and CPU and GPU atomics on one counter lose no
//! update, also across mprotect and fork; GPU writes mark pages dirty.
//! MADV_DONTNEED, MADV_PAGEOUT (swap-out) and KSM merging invalidate the
//! device's entries, and the GPU sees what the CPU sees afterwards.

use std::thread;
use std::time::Duration;

use libc::{EEXIST, EFAULT, EINVAL, ENOENT, EOPNOTSUPP, EPERM};
use softgpu::mm::{self, Pagemap};
use softgpu::*;

use crate::common::*;
use crate::migration::move_all;

pub(crate) const VA: u64 = 0x1_0000_0000;
pub(crate) const RES_VA: u64 = 0x2_0000_0000;
pub(crate) const PAGE_USIZE: usize = PAGE as usize;

/// Anonymous private memory of this process, for userptr bindings: only
/// ever accessed through raw pointers, since the GPU writes to it too.
pub(crate) struct Mem(pub(crate) Anon);

impl Mem {
    pub(crate) fn new(pages: usize) -> Self {
        Self(Anon::new(pages * PAGE_USIZE))
    }

    pub(crate) fn addr(&self) -> u64 {
        self.0.ptr as u64
    }

    pub(crate) fn len(&self) -> u64 {
        self.0.len as u64
    }

    pub(crate) fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.0.len);
        // SAFETY: within our mapping; no Rust reference to it exists, and
        // no job writing to it runs while we do (callers wait for them).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.0.ptr.add(off), data.len()) };
    }

    pub(crate) fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.0.len);
        let mut v = vec![0u8; len];
        // SAFETY: as in write().
        unsafe { std::ptr::copy_nonoverlapping(self.0.ptr.add(off), v.as_mut_ptr(), len) };
        v
    }

    pub(crate) fn read_u64(&self, off: usize) -> u64 {
        u64::from_ne_bytes(self.read(off, 8).try_into().unwrap())
    }

    pub(crate) fn page_addrs(&self) -> Vec<usize> {
        (0..self.0.len / PAGE_USIZE)
            .map(|i| self.0.ptr as usize + i * PAGE_USIZE)
            .collect()
    }

    pub(crate) fn protect(&self, prot: i32) {
        // SAFETY: our own page-aligned mapping.
        let r = unsafe { libc::mprotect(self.0.ptr.cast(), self.0.len, prot) };
        assert_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
    }
}

/// The address range of the mapping named `name` in /proc/self/maps.
pub(crate) fn special_mapping(name: &str) -> (u64, u64) {
    let maps = ok(std::fs::read_to_string("/proc/self/maps"), "reading maps");
    let line = maps
        .lines()
        .find(|l| l.split_whitespace().nth(5) == Some(name))
        .unwrap_or_else(|| panic!("no {name} in /proc/self/maps:\n{maps}"));
    let range = line.split_whitespace().next().unwrap();
    let (a, b) = range.split_once('-').unwrap();
    let hex = |x| u64::from_str_radix(x, 16).unwrap();
    (hex(a), hex(b))
}

/// USERPTR of `[addr, addr + size)` at `va`.
pub(crate) fn userptr(
    dev: &Device,
    addr: u64,
    size: u64,
    va: u64,
    flags: u32,
) -> std::io::Result<()> {
    // SAFETY: the tests bind only `Mem` memory (accessed through raw
    // pointers), or memory that is not mapped or not ours to bind, which
    // the kernel rejects.
    unsafe { dev.userptr(addr, size, va, flags) }
}

/// Binds all of `m` at `va`.
#[track_caller]
pub(crate) fn bind_mem(dev: &Device, m: &Mem, va: u64, flags: u32) {
    ok(
        userptr(dev, m.addr(), m.len(), va, flags),
        &format!(
            "USERPTR of {:#x} bytes at {va:#x}, flags {flags:#x}",
            m.len()
        ),
    );
}

/// A page of memory for job results, bound at `RES_VA`.
pub(crate) fn results(dev: &Device) -> Mem {
    let r = Mem::new(1);
    bind_mem(dev, &r, RES_VA, 0);
    r
}

/// Has the GPU checksum `[va, va + size)` into `res` and returns it.
#[track_caller]
pub(crate) fn gpu_checksum(dev: &Device, res: &Mem, va: u64, size: u64, what: &str) -> u64 {
    run_ok(dev, &[Cmd::checksum(RES_VA, va, size)], what);
    res.read_u64(0)
}

#[test]
fn userptr_gpu_and_cpu_see_each_others_writes() {
    const N: usize = 40;
    let size = (N * PAGE_USIZE) as u64;
    let dev = open();
    let res = results(&dev);
    let m = Mem::new(N);
    let a = pattern(size as usize, 1);
    m.write(0, &a);
    bind_mem(&dev, &m, VA, 0);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM of CPU data"),
        fnv1a64(&a),
        "GPU checksum of what the CPU wrote"
    );
    // The GPU writes; the CPU reads.
    run_ok(&dev, &[Cmd::fill(VA, size, 0x1234_5678)], "FILL");
    assert!(
        m.read(0, size as usize) == filled(size as usize, 0x1234_5678),
        "the CPU does not see the GPU's FILL"
    );
    // Part of it, at an odd offset, through COPY within the userptr.
    let b = pattern(PAGE_USIZE, 2);
    m.write(3 * PAGE_USIZE, &b);
    run_ok(
        &dev,
        &[Cmd::copy(VA + 20 * PAGE + 12, VA + 3 * PAGE, PAGE)],
        "COPY within the userptr",
    );
    assert!(
        m.read(20 * PAGE_USIZE + 12, PAGE_USIZE) == b,
        "the CPU does not see the GPU's COPY"
    );
    // The CPU writes again, to pages the GPU has mapped: it sees them.
    let c = pattern(size as usize, 3);
    m.write(0, &c);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM after CPU writes"),
        fnv1a64(&c),
        "GPU checksum of the CPU's second writes"
    );
    // Unbound: the GPU reaches it no more, and the memory stays as it was.
    expect_errno(dev.unbind(VA, size - PAGE), EINVAL, "VM_UNBIND, wrong size");
    ok(dev.unbind(VA, size), "VM_UNBIND of the userptr");
    assert_unbound(&dev, VA, "after VM_UNBIND");
    expect_errno(dev.unbind(VA, size), ENOENT, "second VM_UNBIND");
    assert!(m.read(0, size as usize) == c, "memory changed by unbind");
}

#[test]
fn userptr_readonly_gpu_write_faults_with_the_address() {
    const N: usize = 4;
    let size = (N * PAGE_USIZE) as u64;
    let dev = open();
    let res = results(&dev);
    let m = Mem::new(N);
    let a = pattern(size as usize, 4);
    m.write(0, &a);
    m.protect(libc::PROT_READ);
    // Read-only memory: only a read-only userptr.
    expect_errno(
        userptr(&dev, m.addr(), size, VA, 0),
        EPERM,
        "writable USERPTR of read-only memory",
    );
    assert_unbound(&dev, VA, "after the rejected USERPTR");
    bind_mem(&dev, &m, VA, SOFTGPU_USERPTR_READONLY);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM of read-only memory"),
        fnv1a64(&a),
        "GPU read of read-only memory"
    );
    let at = VA + 2 * PAGE + 8;
    run_fault_at(
        &dev,
        &[Cmd::fill(at, 16, 7)],
        at,
        "FILL through a read-only userptr",
    );
    run_fault_at(&dev, &[probe_write(VA)], VA, "ATOMIC_ADD, read-only");
    assert!(m.read(0, size as usize) == a, "read-only memory changed");
    ok(dev.unbind(VA, size), "VM_UNBIND");

    // Writable memory bound read-only: read-only for the GPU all the same.
    let w = Mem::new(N);
    w.write(0, &a);
    bind_mem(&dev, &w, VA, SOFTGPU_USERPTR_READONLY);
    run_fault_at(
        &dev,
        &[Cmd::copy(VA + PAGE, VA, 8)],
        VA + PAGE,
        "COPY into a read-only userptr of writable memory",
    );
    assert!(w.read(0, size as usize) == a, "memory changed");
    // mprotect of a writable userptr: GPU writes fault from then on.
    let x = Mem::new(N);
    bind_mem(&dev, &x, VA + size, 0);
    run_ok(&dev, &[Cmd::fill(VA + size, size, 9)], "FILL, writable");
    x.protect(libc::PROT_READ);
    run_fault_at(
        &dev,
        &[Cmd::fill(VA + size + PAGE, 4, 10)],
        VA + size + PAGE,
        "FILL after mprotect(PROT_READ)",
    );
    assert_eq!(
        gpu_checksum(&dev, &res, VA + size, size, "CHECKSUM after mprotect"),
        fnv1a64(&filled(size as usize, 9)),
        "GPU read after mprotect(PROT_READ)"
    );
}

#[test]
fn userptr_munmap_then_job_faults() {
    const N: usize = 8;
    let size = (N * PAGE_USIZE) as u64;
    let dev = open();
    let res = results(&dev);
    let m = Mem::new(N);
    bind_mem(&dev, &m, VA, 0);
    // Every page in the GPU page table.
    run_ok(&dev, &[Cmd::fill(VA, size, 0xaaaa_aaaa)], "FILL of all");
    // SAFETY: unmapping two pages of our own mapping, which nothing
    // references (Anon's drop unmaps the whole range again, harmlessly).
    let r = unsafe { libc::munmap(m.0.ptr.add(2 * PAGE_USIZE).cast(), 2 * PAGE_USIZE) };
    assert_eq!(r, 0, "munmap: {}", std::io::Error::last_os_error());
    // A job touching the hole faults there, and never reaches the pages
    // that were there.
    run_fault_at(
        &dev,
        &[Cmd::checksum(RES_VA, VA, size)],
        VA + 2 * PAGE,
        "CHECKSUM across the munmapped pages",
    );
    run_fault_at(
        &dev,
        &[Cmd::fill(VA + 3 * PAGE + 4, 4, 1)],
        VA + 3 * PAGE + 4,
        "FILL of a munmapped page",
    );
    // The rest is still mirrored.
    run_ok(
        &dev,
        &[Cmd::fill(VA + PAGE, PAGE, 0x5555_5555)],
        "FILL page 1",
    );
    assert!(m.read(PAGE_USIZE, PAGE_USIZE) == filled(PAGE_USIZE, 0x5555_5555));
    assert_eq!(
        gpu_checksum(&dev, &res, VA + 4 * PAGE, 4 * PAGE, "CHECKSUM of 4..8"),
        fnv1a64(&filled(4 * PAGE_USIZE, 0xaaaa_aaaa)),
    );
    ok(dev.unbind(VA, size), "VM_UNBIND with a hole");
}

#[test]
fn userptr_fork_cow_gpu_keeps_the_parents_pages() {
    const N: usize = 4;
    let size = (N * PAGE_USIZE) as u64;
    let dev = open();
    let res = results(&dev);
    let m = Mem::new(N);
    let a = pattern(size as usize, 5);
    let c = pattern(size as usize, 6);
    m.write(0, &a);
    bind_mem(&dev, &m, VA, 0);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM before fork"),
        fnv1a64(&a)
    );
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: the child only reads the pipe, compares and writes memory
    // (no allocation: `a` and `c` exist already) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into `b`: the parent's go-ahead.
        let code = if unsafe { libc::read(rd, b.as_mut_ptr().cast(), 1) } != 1 {
            2
        } else if !child_mem_eq(&m, &a) {
            // The parent's GPU write after fork reached the child's pages.
            3
        } else {
            // SAFETY: as in Mem::write; the child's own copy.
            unsafe { std::ptr::copy_nonoverlapping(c.as_ptr(), m.0.ptr, c.len()) };
            if child_mem_eq(&m, &c) {
                0
            } else {
                4
            }
        };
        // SAFETY: ends the child without running the harness on.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: the child's end, ours to close.
    unsafe { libc::close(rd) };
    // The parent's pages are write-protected for COW now; the GPU writes
    // break COW in the parent, as a CPU write would.
    run_ok(&dev, &[Cmd::fill(VA, size, 0x0bad_cafe)], "FILL after fork");
    let v = filled(size as usize, 0x0bad_cafe);
    assert!(m.read(0, size as usize) == v, "parent misses the GPU FILL");
    // SAFETY: writing one byte from our buffer to our pipe.
    assert_eq!(unsafe { libc::write(wr, b"g".as_ptr().cast(), 1) }, 1);
    // SAFETY: our end.
    unsafe { libc::close(wr) };
    let mut st = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child: status {st:#x} (exit 3: it saw the parent's GPU write, 4: its \
         own writes did not stick)"
    );
    // The child's writes stayed in the child.
    assert!(
        m.read(0, size as usize) == v,
        "parent sees the child's writes"
    );
    // The parent writes (maybe breaking COW again): the GPU sees that.
    let b = pattern(size as usize, 7);
    m.write(0, &b);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM after the child"),
        fnv1a64(&b),
        "GPU does not see the parent's writes after fork"
    );
    // Fork again, and the child writes while the parent's GPU reads.
    let end = in_child(Duration::from_secs(120), || {
        m.write(0, &c);
        Ok(())
    });
    assert_child_ok(end);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM after a second child"),
        fnv1a64(&b),
        "GPU sees a child's writes"
    );
}

/// `m` equals `want`, without allocating (for a forked child).
pub(crate) fn child_mem_eq(m: &Mem, want: &[u8]) -> bool {
    // SAFETY: our mapping, `want.len()` bytes of it, no job writing to it.
    let have = unsafe { std::slice::from_raw_parts(m.0.ptr, want.len()) };
    have == want
}

#[test]
fn userptr_pages_move_to_the_other_numa_node_while_bound() {
    let nodes = ok(mm::online_nodes(), "reading the online NUMA nodes");
    assert_eq!(nodes, [0, 1], "the guest must have NUMA nodes 0 and 1");
    const N: usize = 32;
    let size = (N * PAGE_USIZE) as u64;
    let dev = open();
    let res = results(&dev);
    let m = Mem::new(N);
    let mut a = pattern(size as usize, 8);
    m.write(0, &a);
    bind_mem(&dev, &m, VA, 0);
    // Pages in the GPU page table, the first ones writable. (A plain
    // write: an atomic would take the page exclusive, which pagemap shows
    // as not present.)
    run_ok(&dev, &[Cmd::fill(VA, 8, 0x1234_5678)], "GPU write");
    a[..4].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    a[4..8].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM before moving"),
        fnv1a64(&a)
    );
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let addrs = m.page_addrs();
    let locate = |what: &str| -> (Vec<i32>, Vec<u64>) {
        let nodes = ok(mm::page_nodes(&addrs), "move_pages query");
        let pfns = ok(pm.pfns(&addrs), "reading /proc/self/pagemap");
        for (i, (n, p)) in nodes.iter().zip(&pfns).enumerate() {
            assert!(*n >= 0 && p.is_some(), "{what}: page {i} not present");
        }
        (nodes, pfns.into_iter().map(Option::unwrap).collect())
    };
    let (before_nodes, before_pfns) = locate("before move_pages");
    let targets: Vec<i32> = before_nodes.iter().map(|&n| 1 - n).collect();
    // Nothing pins the pages: they move, at most after a few transient
    // failures (e.g. a page still on a per-CPU LRU list).
    if let Err(e) = move_all(&addrs, &targets, 10) {
        panic!("bound userptr pages did not move (pinned?): {e}");
    }
    let (after_nodes, after_pfns) = locate("after move_pages");
    for i in 0..N {
        assert_eq!(after_nodes[i], targets[i], "page {i} is not on its target");
        assert_ne!(after_pfns[i], before_pfns[i], "page {i} kept its PFN");
    }
    // The GPU sees the same data, now in the new pages...
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM after moving"),
        fnv1a64(&a),
        "GPU checksum after the pages moved"
    );
    // ...and writes to the new pages, which the CPU sees.
    run_ok(
        &dev,
        &[Cmd::fill(VA, size, 0x7777_0001)],
        "FILL after moving",
    );
    assert!(
        m.read(0, size as usize) == filled(size as usize, 0x7777_0001),
        "the CPU does not see the GPU's FILL after the move"
    );
    let (_, final_pfns) = locate("after the GPU jobs");
    assert_eq!(final_pfns, after_pfns, "the GPU's jobs moved the pages");
    // And back, while bound, once more.
    let back = ok(mm::move_pages(&addrs, &before_nodes), "move_pages back");
    let moved_back = (0..N).filter(|&i| back.moved(i, before_nodes[i])).count();
    assert!(moved_back > 0, "no page moved back: {back:?}");
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM after moving back"),
        fnv1a64(&filled(size as usize, 0x7777_0001)),
    );
}

#[test]
fn userptr_bad_input_errnos_change_nothing() {
    let dev = open();
    let m = Mem::new(4);
    let (addr, len) = (m.addr(), m.len());
    let bad = |a: u64, s: u64, va: u64, flags: u32, errno: i32, what: &str| {
        expect_errno(userptr(&dev, a, s, va, flags), errno, what);
    };
    // Malformed: EINVAL.
    bad(addr + 1, len, VA, 0, EINVAL, "unaligned addr");
    bad(addr + 8, PAGE, VA, 0, EINVAL, "unaligned addr (8)");
    bad(addr, len - 1, VA, 0, EINVAL, "unaligned size");
    bad(addr, 0, VA, 0, EINVAL, "zero size");
    bad(addr, len, VA + 4, 0, EINVAL, "unaligned gpu_va");
    bad(addr, len, VA, 0x4, EINVAL, "unknown flag");
    bad(addr, len, VA, u32::MAX, EINVAL, "all flags");
    bad(
        addr,
        len,
        SOFTGPU_VA_END - PAGE,
        0,
        EINVAL,
        "past the VA end",
    );
    bad(
        addr,
        len,
        u64::MAX - PAGE + 1,
        0,
        EINVAL,
        "gpu_va + size wraps",
    );
    bad(
        u64::MAX - PAGE + 1,
        2 * PAGE,
        VA,
        0,
        EINVAL,
        "addr + size wraps",
    );
    let mut a = Userptr {
        addr,
        size: len,
        gpu_va: VA,
        flags: 0,
        pad: 1,
    };
    // SAFETY: the kernel only copies in the argument, and rejects it.
    let r = unsafe { dev.ioctl_raw(DRM_IOCTL_SOFTGPU_USERPTR, &mut a) };
    expect_errno(r, EINVAL, "non-zero pad");
    // Not mapped: EFAULT. Far from where mmap() places things, so that
    // no other test's mapping appears around it meanwhile.
    const FAR: u64 = 0x1000_0000_0000;
    // SAFETY: a new mapping at an address where nothing is mapped (else
    // MAP_FIXED_NOREPLACE fails, checked below).
    let far = unsafe {
        libc::mmap(
            FAR as *mut libc::c_void,
            4 * PAGE_USIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    assert_eq!(far as u64, FAR, "mmap at {FAR:#x}");
    ok(
        userptr(&dev, FAR, 4 * PAGE, VA, 0),
        "USERPTR of the far mapping",
    );
    ok(dev.unbind(VA, 4 * PAGE), "VM_UNBIND of it");
    bad(FAR, 5 * PAGE, VA, 0, EFAULT, "past the end of a mapping");
    bad(
        FAR - PAGE,
        2 * PAGE,
        VA,
        0,
        EFAULT,
        "before the start of a mapping",
    );
    bad(FAR + 64 * PAGE, 2 * PAGE, VA, 0, EFAULT, "unmapped memory");
    // SAFETY: unmapping what we mapped above.
    unsafe { libc::munmap(far, 4 * PAGE_USIZE) };
    bad(FAR, PAGE, VA, 0, EFAULT, "memory unmapped after a USERPTR");
    bad(0, PAGE, VA, 0, EFAULT, "address 0");
    bad(0xffff_8880_0000_0000, PAGE, VA, 0, EFAULT, "kernel address");
    bad(0xffff_ffff_8100_0000, PAGE, VA, 0, EFAULT, "kernel text");
    // Memory that HMM cannot mirror: the vDSO's data pages ([vvar], a
    // VM_PFNMAP | VM_IO mapping), also read-only: EOPNOTSUPP.
    let (vvar, vvar_end) = special_mapping("[vvar]");
    for flags in [0, SOFTGPU_USERPTR_READONLY] {
        bad(
            vvar,
            vvar_end - vvar,
            VA,
            flags,
            EOPNOTSUPP,
            &format!("[vvar] (VM_PFNMAP), flags {flags:#x}"),
        );
        // Also when only its last page follows mirrorable memory.
        bad(
            vvar_end - PAGE,
            PAGE,
            VA,
            flags,
            EOPNOTSUPP,
            &format!("last page of [vvar], flags {flags:#x}"),
        );
    }
    // Not writable: EPERM.
    let ro = Mem::new(2);
    ro.protect(libc::PROT_READ);
    bad(
        ro.addr(),
        2 * PAGE,
        VA,
        0,
        EPERM,
        "writable userptr of read-only memory",
    );
    let none = Mem::new(2);
    none.protect(libc::PROT_NONE);
    bad(none.addr(), 2 * PAGE, VA, 0, EPERM, "PROT_NONE memory");
    // Nothing was bound by any of those.
    assert_unbound(&dev, VA, "after the rejected USERPTRs");
    // Overlaps: EEXIST, with userptrs and BOs alike.
    let h = create(&dev, 2 * PAGE, 0);
    bind_mem(&dev, &m, VA, 0);
    bad(addr, len, VA, 0, EEXIST, "the same range again");
    bad(
        addr,
        PAGE,
        VA + 3 * PAGE,
        0,
        EEXIST,
        "overlapping the last page",
    );
    bad(
        addr,
        2 * PAGE,
        VA - PAGE,
        0,
        EEXIST,
        "overlapping the first page",
    );
    expect_errno(
        dev.bind(h, VA + PAGE, 0, PAGE, 0),
        EEXIST,
        "VM_BIND of a BO over a userptr",
    );
    ok(dev.bind(h, VA + len, 0, 2 * PAGE, 0), "VM_BIND next to it");
    bad(
        addr,
        PAGE,
        VA + len + PAGE,
        0,
        EEXIST,
        "USERPTR over a BO binding",
    );
    // The binding that exists works, and is the only one.
    run_ok(&dev, &[Cmd::fill(VA, len, 0x4242_4242)], "FILL");
    assert!(m.read(0, len as usize) == filled(len as usize, 0x4242_4242));
    assert_unbound(&dev, VA - PAGE, "below the userptr");
    ok(dev.unbind(VA, len), "VM_UNBIND");
    assert_unbound(&dev, VA, "after VM_UNBIND");
    assert_writable(&dev, VA + len, "the BO binding next to it");
}

/// How the child of `userptr_process_exit_with_a_live_binding` leaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ExitHow {
    /// Exits with its jobs done.
    Idle,
    /// Exits with jobs still queued.
    Queued,
    /// Killed by SIGKILL with jobs still queued.
    Killed,
}

/// The child process: binds its memory, runs a job on it, queues more as
/// `how` says and leaves without unbinding or closing anything.
fn exit_with_a_live_binding(how: ExitHow) -> Result<(), String> {
    let dev = open();
    let m = Mem::new(8);
    m.write(0, &pattern(8 * PAGE_USIZE, 9));
    bind_mem(&dev, &m, VA, 0);
    run_ok(&dev, &[Cmd::fill(VA, 8 * PAGE, 3)], "FILL in the child");
    if how != ExitHow::Idle {
        // Jobs still queued when the process goes: the first busy, then
        // ones touching the userptr after the address space is gone.
        for i in 0..4 {
            ok(
                dev.exec(&[Cmd::busy(100_000), Cmd::fill(VA, 8 * PAGE, i)], 0),
                "EXEC in the child",
            );
        }
    }
    if how == ExitHow::Killed {
        // SAFETY: kills this (child) process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    Ok(())
}

/// A process may exit (or be killed) with a live userptr binding and jobs
/// queued on it; the device works on afterwards.
#[test]
fn userptr_process_exit_with_a_live_binding() {
    for how in [ExitHow::Idle, ExitHow::Queued, ExitHow::Killed] {
        // A forked child, which leaves with _exit(): nothing of ours is
        // torn down before the kernel does it at exit.
        let end = in_child(Duration::from_secs(60), || exit_with_a_live_binding(how));
        match (how, end) {
            (ExitHow::Killed, ChildEnd::Signalled(libc::SIGKILL)) => {}
            (ExitHow::Killed, end) => panic!("{how:?}: child not killed by SIGKILL: {end:?}"),
            (_, end) => assert_child_ok(end),
        }
    }
    // Let the orphaned jobs run out, then the device still works.
    thread::sleep(Duration::from_millis(600));
    let dev = open();
    let res = results(&dev);
    let m = Mem::new(2);
    m.write(0, &pattern(2 * PAGE_USIZE, 10));
    bind_mem(&dev, &m, VA, 0);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, 2 * PAGE, "CHECKSUM after the children"),
        fnv1a64(&pattern(2 * PAGE_USIZE, 10))
    );
}

pub(crate) const PM_PRESENT: u64 = 1 << 63;
pub(crate) const PM_SWAP: u64 = 1 << 62;

/// The pagemap entry of the page at `addr`: present, or a swap-type entry
/// (which is what a device-exclusive entry looks like to pagemap).
#[track_caller]
pub(crate) fn pagemap_state(pm: &Pagemap, addr: usize) -> (bool, bool) {
    let e = ok(pm.entry(addr), "reading pagemap");
    (e & PM_PRESENT != 0, e & PM_SWAP != 0)
}

/// The counter word at offset 0 of `m`, as an atomic the CPU shares with
/// the GPU.
pub(crate) fn counter(m: &Mem) -> &std::sync::atomic::AtomicU64 {
    // SAFETY: page-aligned (so 8-aligned) memory of our mapping, which
    // lives as long as `m`; the GPU accesses it atomically too.
    unsafe { std::sync::atomic::AtomicU64::from_ptr(m.0.ptr.cast()) }
}

/// A GPU atomic on userptr memory takes the page exclusive to the device
/// (the CPU page table gets a special, non-present entry); the next CPU
/// access takes it back, and both see every update. Plain GPU writes leave
/// the CPU mapping alone.
#[test]
fn userptr_gpu_atomic_takes_the_page_exclusive_until_the_cpu_touches_it() {
    use std::sync::atomic::Ordering::SeqCst;
    let dev = open();
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let m = Mem::new(2);
    let c = counter(&m);
    c.store(5, SeqCst);
    m.write(PAGE_USIZE, &[1; 8]);
    bind_mem(&dev, &m, VA, 0);
    let addr = m.addr() as usize;

    run_ok(&dev, &[Cmd::fill(VA + PAGE, 8, 2)], "FILL of page 1");
    assert_eq!(
        pagemap_state(&pm, addr + PAGE_USIZE),
        (true, false),
        "a plain GPU write left the CPU mapping"
    );

    run_ok(&dev, &[Cmd::atomic_add(VA, 3, 2)], "ATOMIC_ADD");
    assert_eq!(
        pagemap_state(&pm, addr),
        (false, true),
        "after a GPU atomic the CPU should map a device-exclusive entry"
    );
    // The CPU's read takes the page back.
    assert_eq!(c.load(SeqCst), 11);
    assert_eq!(pagemap_state(&pm, addr), (true, false), "CPU took it back");
    c.fetch_add(100, SeqCst);
    // And the GPU takes it again, seeing the CPU's update.
    run_ok(&dev, &[Cmd::atomic_add(VA, 1, 1)], "second ATOMIC_ADD");
    assert_eq!(pagemap_state(&pm, addr), (false, true));
    assert_eq!(c.load(SeqCst), 112);
    // A plain GPU read of the page does not need it exclusive, and goes on
    // after the CPU took it back.
    let res = results(&dev);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, 8, "CHECKSUM of the counter"),
        fnv1a64(&112u64.to_ne_bytes())
    );
}

/// The CPU and the GPU increment the same counter at once: the page goes
/// back and forth between them, and no increment is lost.
#[test]
fn userptr_cpu_and_gpu_atomics_lose_no_update() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    const JOBS: u64 = 16;
    const CMDS: u64 = 32;
    const TIMES: u64 = 8;
    let dev = open();
    let m = Mem::new(1);
    let c = counter(&m);
    c.store(0, SeqCst);
    bind_mem(&dev, &m, VA, 0);
    let stop = AtomicBool::new(false);
    let cpu_adds = thread::scope(|s| {
        let cpu = s.spawn(|| {
            let mut n = 0u64;
            loop {
                let last = stop.load(SeqCst);
                c.fetch_add(1, SeqCst);
                n += 1;
                if last {
                    // One more after the GPU was done: it must find the
                    // page taken back from the device too.
                    break n;
                }
            }
        });
        // Stops the CPU thread also if an assertion below fails (the scope
        // waits for it before the panic goes on).
        let _stop = StopOnDrop(&stop);
        let cmds = vec![Cmd::atomic_add(VA, 1, TIMES); CMDS as usize];
        let seqnos: Vec<u64> = (0..JOBS)
            .map(|_| ok(dev.exec(&cmds, 0), "EXEC of ATOMIC_ADDs").0)
            .collect();
        for s in seqnos {
            let (status, fault) = ok(dev.wait(s, WAIT_NS), "WAIT");
            assert_eq!(status, 0, "ATOMIC_ADD job failed (fault {fault:#x})");
        }
        stop.store(true, SeqCst);
        cpu.join().expect("CPU incrementing thread")
    });
    let gpu_adds = JOBS * CMDS * TIMES;
    assert_eq!(
        c.load(SeqCst),
        cpu_adds + gpu_adds,
        "{cpu_adds} CPU and {gpu_adds} GPU increments"
    );
}

/// Exclusive access and mprotect: once the memory is read-only, a GPU
/// atomic faults (exclusive access needs write access) and changes
/// nothing; reads still work.
#[test]
fn userptr_exclusive_access_and_mprotect() {
    use std::sync::atomic::Ordering::SeqCst;
    let dev = open();
    let m = Mem::new(1);
    let c = counter(&m);
    c.store(40, SeqCst);
    bind_mem(&dev, &m, VA, 0);
    run_ok(&dev, &[Cmd::atomic_add(VA, 2, 1)], "ATOMIC_ADD");
    m.protect(libc::PROT_READ);
    run_fault_at(
        &dev,
        &[Cmd::atomic_add(VA, 1, 1)],
        VA,
        "ATOMIC_ADD after mprotect(PROT_READ)",
    );
    assert_eq!(c.load(SeqCst), 42);
    let res = results(&dev);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, 8, "CHECKSUM after mprotect"),
        fnv1a64(&42u64.to_ne_bytes())
    );
    m.protect(libc::PROT_READ | libc::PROT_WRITE);
    run_ok(
        &dev,
        &[Cmd::atomic_add(VA, 8, 1)],
        "ATOMIC_ADD, writable again",
    );
    assert_eq!(c.load(SeqCst), 50);
}

/// Exclusive access and fork: the child gets the value as of the fork,
/// and its writes stay its own; the parent's GPU atomics after fork break
/// copy-on-write in the parent and land in the parent's page only.
#[test]
fn userptr_exclusive_access_and_fork_cow() {
    use std::sync::atomic::Ordering::SeqCst;
    let dev = open();
    let m = Mem::new(1);
    let c = counter(&m);
    c.store(5, SeqCst);
    bind_mem(&dev, &m, VA, 0);
    run_ok(&dev, &[Cmd::atomic_add(VA, 1, 1)], "ATOMIC_ADD before fork");
    let end = in_child(Duration::from_secs(120), || {
        let seen = c.load(SeqCst);
        if seen != 6 {
            return Err(format!("child sees {seen}, not 6"));
        }
        c.store(1000, SeqCst);
        Ok(())
    });
    assert_child_ok(end);
    run_ok(&dev, &[Cmd::atomic_add(VA, 10, 1)], "ATOMIC_ADD after fork");
    assert_eq!(c.load(SeqCst), 16, "parent's counter");
    let res = results(&dev);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, 8, "CHECKSUM after fork"),
        fnv1a64(&16u64.to_ne_bytes())
    );
}

/// A GPU write through a userptr marks the page dirty: the device writes
/// behind the CPU page table's dirty bit, and a page the kernel believes
/// clean (say, one read back from swap whose swap copy is kept) would be
/// dropped by reclaim instead of written out, losing what the GPU wrote.
#[test]
fn userptr_gpu_writes_mark_the_pages_dirty() {
    const KPF_DIRTY: u64 = 1 << mm::KPF_DIRTY;
    let dev = open();
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let m = Mem::new(2);
    // Written by the CPU: dirty in its page table entry, not (yet) in the
    // folio's flags, which is what /proc/kpageflags shows.
    m.write(0, &[1; 8]);
    m.write(PAGE_USIZE, &[1; 8]);
    let addr = m.addr() as usize;
    let pfn = |a| ok(pm.pfn(a), "reading pagemap").unwrap_or_else(|| panic!("no page at {a:#x}"));
    let flags = |a| ok(mm::kpageflags(&[pfn(a)]), "reading /proc/kpageflags")[0];
    assert_eq!(
        flags(addr) & KPF_DIRTY,
        0,
        "precondition: a freshly written anonymous folio is not marked dirty"
    );
    bind_mem(&dev, &m, VA, SOFTGPU_USERPTR_READONLY);
    let res = results(&dev);
    gpu_checksum(&dev, &res, VA, 2 * PAGE, "CHECKSUM");
    assert_eq!(flags(addr) & KPF_DIRTY, 0, "a GPU read dirtied the page");
    ok(dev.unbind(VA, 2 * PAGE), "VM_UNBIND");

    bind_mem(&dev, &m, VA, 0);
    run_ok(&dev, &[Cmd::fill(VA, 8, 2)], "FILL of page 0");
    assert_ne!(flags(addr) & KPF_DIRTY, 0, "GPU write: page 0 not dirty");
    run_ok(
        &dev,
        &[Cmd::atomic_add(VA + PAGE, 1, 1)],
        "ATOMIC_ADD on page 1",
    );
    // The atomic took page 1 exclusive (pagemap shows no PFN): look it up
    // after the CPU takes it back.
    assert_eq!(m.read_u64(PAGE_USIZE), u64::from_ne_bytes([1; 8]) + 1);
    assert_ne!(
        flags(addr + PAGE_USIZE) & KPF_DIRTY,
        0,
        "GPU atomic: page 1 not dirty"
    );
}

/// The baseline (`SOFTGPU_USERPTR_PINNED`, as i915 does it): the pages are
/// pinned while bound, so move_pages cannot move a single one (shown, not
/// assumed), and they move once unbound. Both modes see the same data.
#[test]
fn userptr_pinned_baseline_pages_do_not_move_until_unbound() {
    let nodes = ok(mm::online_nodes(), "reading the online NUMA nodes");
    assert_eq!(nodes, [0, 1], "the guest must have NUMA nodes 0 and 1");
    const N: usize = 16;
    let size = (N * PAGE_USIZE) as u64;
    let dev = open();
    let res = results(&dev);
    let m = Mem::new(N);
    let a = pattern(size as usize, 12);
    m.write(0, &a);
    expect_errno(
        userptr(&dev, m.addr(), size, VA, 0x4),
        EINVAL,
        "USERPTR with an unknown flag",
    );
    bind_mem(&dev, &m, VA, SOFTGPU_USERPTR_PINNED);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM, pinned"),
        fnv1a64(&a)
    );
    run_ok(&dev, &[Cmd::atomic_add(VA, 1, 1)], "ATOMIC_ADD, pinned");
    let mut want = a.clone();
    let w = u64::from_ne_bytes(want[..8].try_into().unwrap()).wrapping_add(1);
    want[..8].copy_from_slice(&w.to_ne_bytes());
    assert!(
        m.read(0, size as usize) == want,
        "CPU view of the GPU's add"
    );

    let addrs = m.page_addrs();
    let before = ok(mm::page_nodes(&addrs), "move_pages query");
    let targets: Vec<i32> = before.iter().map(|&n| 1 - n).collect();
    for _ in 0..3 {
        let out = ok(mm::move_pages(&addrs, &targets), "move_pages");
        let moved = (0..N).filter(|&i| out.moved(i, targets[i])).count();
        assert_eq!(moved, 0, "pinned userptr pages moved: {out:?}");
    }
    assert_eq!(ok(mm::page_nodes(&addrs), "move_pages query"), before);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM after move_pages"),
        fnv1a64(&want)
    );

    ok(dev.unbind(VA, size), "VM_UNBIND of the pinned userptr");
    if let Err(e) = move_all(&addrs, &targets, 10) {
        panic!("unbound userptr pages still do not move: {e}");
    }
    assert!(m.read(0, size as usize) == want, "contents after the move");
}

/// `madvise()` on pages `first..first + n` of `m`.
#[track_caller]
fn madvise_pages(m: &Mem, first: usize, n: usize, advice: i32, what: &str) {
    // SAFETY: a range of our own mapping; the kernel only changes what
    // backs it.
    let r = unsafe {
        libc::madvise(
            m.0.ptr.add(first * PAGE_USIZE).cast(),
            n * PAGE_USIZE,
            advice,
        )
    };
    assert_eq!(r, 0, "{what}: {}", std::io::Error::last_os_error());
}

#[test]
fn userptr_madvise_dontneed_and_pageout_invalidate_the_gpu_mapping() {
    const N: usize = 8;
    let size = (N * PAGE_USIZE) as u64;
    let dev = open();
    let res = results(&dev);
    let m = Mem::new(N);
    let a = pattern(size as usize, 7);
    m.write(0, &a);
    bind_mem(&dev, &m, VA, 0);
    // Every page in the device page table.
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM before madvise"),
        fnv1a64(&a)
    );

    // MADV_DONTNEED drops pages 0 and 1: the CPU reads zeros there, and the
    // GPU must too, not the freed pages its entries pointed to.
    madvise_pages(&m, 0, 2, libc::MADV_DONTNEED, "MADV_DONTNEED");
    assert_eq!(
        gpu_checksum(&dev, &res, VA, 2 * PAGE, "CHECKSUM of dropped pages"),
        fnv1a64(&vec![0u8; 2 * PAGE_USIZE]),
        "the GPU still reads what MADV_DONTNEED dropped"
    );
    run_ok(
        &dev,
        &[Cmd::fill(VA, PAGE, 0x0f0f_0f0f)],
        "FILL of a dropped page",
    );
    assert!(
        m.read(0, PAGE_USIZE) == filled(PAGE_USIZE, 0x0f0f_0f0f),
        "the CPU does not see the GPU's write to the page that replaced a dropped one"
    );

    // MADV_PAGEOUT reclaims pages 2..N: the device holds no reference to
    // them, so they go to swap, and the next GPU access faults them back.
    let pm = ok(Pagemap::open(), "opening pagemap");
    let entry = |i: usize| ok(pm.entry(m.addr() as usize + i * PAGE_USIZE), "pagemap");
    madvise_pages(&m, 2, N - 2, libc::MADV_PAGEOUT, "MADV_PAGEOUT");
    let swapped: Vec<usize> = (2..N).filter(|&i| entry(i) & PM_SWAP != 0).collect();
    assert!(
        !swapped.is_empty(),
        "MADV_PAGEOUT swapped out none of the {} mirrored pages",
        N - 2
    );
    assert_eq!(
        gpu_checksum(
            &dev,
            &res,
            VA + 2 * PAGE,
            size - 2 * PAGE,
            "CHECKSUM of swapped pages"
        ),
        fnv1a64(&a[2 * PAGE_USIZE..]),
        "the GPU read wrong data from pages that were swapped out"
    );
    for i in swapped {
        assert!(
            entry(i) & PM_PRESENT != 0,
            "page {i} is not back in memory after the GPU read it"
        );
    }
    ok(dev.unbind(VA, size), "VM_UNBIND");
}

#[test]
fn userptr_ksm_merge_invalidates_and_a_gpu_write_unshares() {
    let dev = open();
    let res = results(&dev);
    let m = Mem::new(2);
    let a = pattern(PAGE_USIZE, 9);
    m.write(0, &a);
    m.write(PAGE_USIZE, &a);
    bind_mem(&dev, &m, VA, 0);
    let both = [a.clone(), a.clone()].concat();
    assert_eq!(
        gpu_checksum(&dev, &res, VA, 2 * PAGE, "CHECKSUM before merging"),
        fnv1a64(&both)
    );
    // KSM merges the two identical pages while the GPU maps them: it may
    // only do so because the device holds no reference to them (a pin
    // would make it skip them).
    madvise_pages(&m, 0, 2, libc::MADV_MERGEABLE, "MADV_MERGEABLE");
    let pm = ok(Pagemap::open(), "opening pagemap");
    let pfns = || ok(pm.pfns(&m.page_addrs()), "pagemap");
    {
        let _scan = Setting::set("/sys/kernel/mm/ksm/pages_to_scan", "1000");
        let _sleep = Setting::set("/sys/kernel/mm/ksm/sleep_millisecs", "10");
        let _run = Setting::set("/sys/kernel/mm/ksm/run", "1");
        let start = std::time::Instant::now();
        while !matches!(pfns()[..], [Some(x), Some(y)] if x == y) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "KSM did not merge the two pages in 60 s: {:?}",
                pfns()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
    // KSM write-protected and replaced both pages (an invalidation): the
    // GPU reads the merged page...
    assert_eq!(
        gpu_checksum(&dev, &res, VA, 2 * PAGE, "CHECKSUM after merging"),
        fnv1a64(&both)
    );
    // ... and a GPU write breaks the sharing, as a CPU write would: it must
    // not reach the other page, nor a page KSM freed.
    run_ok(
        &dev,
        &[Cmd::fill(VA, PAGE, 0x3c3c_3c3c)],
        "FILL of a merged page",
    );
    assert!(
        m.read(0, PAGE_USIZE) == filled(PAGE_USIZE, 0x3c3c_3c3c),
        "the CPU does not see the GPU's write to a merged page"
    );
    assert!(
        m.read(PAGE_USIZE, PAGE_USIZE) == a,
        "the GPU's write to one merged page reached the other"
    );
    let after = pfns();
    assert!(
        after[0] != after[1],
        "still one page after the GPU wrote to one of them: {after:?}"
    );
    madvise_pages(&m, 0, 2, libc::MADV_UNMERGEABLE, "MADV_UNMERGEABLE");
    ok(dev.unbind(VA, 2 * PAGE), "VM_UNBIND");
}

/// munmap from another thread while a job that reads the range is queued:
/// the MMU notifier waits for the job (its entries were faulted in at
/// EXEC), so the job sees the data as it was before the munmap, and the
/// munmap returns only once the job is done. Then mprotect toggling from
/// another thread while jobs read the range: every job gets the right
/// checksum or a clean -EFAULT inside the range, never anything else (an
/// EXEC may return EAGAIN, submitting nothing, and is repeated).
#[test]
fn userptr_invalidation_from_another_thread_waits_for_running_jobs() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::time::Instant;
    const N: usize = 8;
    const BUSY_US: u64 = 300_000;
    let size = (N * PAGE_USIZE) as u64;
    let dev = open();
    let res = results(&dev);
    let data = pattern(N * PAGE_USIZE, 13);
    let want = fnv1a64(&data);

    let m = Mem::new(N);
    m.write(0, &data);
    bind_mem(&dev, &m, VA, 0);
    let (seqno, _) = ok(
        dev.exec(&[Cmd::busy(BUSY_US), Cmd::checksum(RES_VA, VA, size)], 0),
        "EXEC of BUSY then CHECKSUM",
    );
    let start = Instant::now();
    let ptr = m.0.ptr as usize;
    let (took, done_at_return) = thread::scope(|s| {
        s.spawn(|| {
            let t = Instant::now();
            // SAFETY: unmapping our own mapping, which nothing references
            // (Anon's drop unmaps the range again, harmlessly).
            let r = unsafe { libc::munmap(ptr as *mut libc::c_void, N * PAGE_USIZE) };
            assert_eq!(r, 0, "munmap: {}", std::io::Error::last_os_error());
            let took = t.elapsed();
            // Done already when munmap returned: a zero-timeout WAIT.
            let done = dev.wait(seqno, 0).is_ok();
            (took, done)
        })
        .join()
        .expect("munmap thread")
    });
    let (status, fault) = ok(dev.wait(seqno, WAIT_NS), "WAIT");
    assert_eq!(
        (status, fault),
        (0, 0),
        "the job must see the pages as before the munmap (fault {fault:#x})"
    );
    assert_eq!(res.read_u64(0), want, "checksum of the pre-munmap data");
    assert!(
        done_at_return,
        "munmap returned after {took:?}, before the job using the pages was done"
    );
    assert!(start.elapsed() < Duration::from_secs(30));
    // The next job faults: the pages are gone.
    run_fault_at(
        &dev,
        &[Cmd::checksum(RES_VA, VA, size)],
        VA,
        "CHECKSUM after munmap",
    );
    ok(dev.unbind(VA, size), "VM_UNBIND of the munmapped range");

    // mprotect back and forth from another thread while jobs run.
    const VA2: u64 = VA + (1 << 30);
    const JOBS: usize = 8;
    const ROUNDS: usize = 12;
    let m2 = Mem::new(N);
    m2.write(0, &data);
    bind_mem(&dev, &m2, VA2, 0);
    let stop = AtomicBool::new(false);
    let toggles = AtomicU64::new(0);
    let eagain = AtomicU64::new(0);
    let (p2, len2) = (m2.0.ptr as usize, m2.0.len);
    let protect = |prot| {
        // SAFETY: our own page-aligned mapping, which outlives the scope.
        let r = unsafe { libc::mprotect(p2 as *mut libc::c_void, len2, prot) };
        assert_eq!(r, 0, "mprotect: {}", std::io::Error::last_os_error());
    };
    let (oks, faults) = thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(SeqCst) {
                protect(libc::PROT_NONE);
                thread::sleep(Duration::from_millis(3));
                protect(libc::PROT_READ);
                thread::sleep(Duration::from_millis(3));
                toggles.fetch_add(1, SeqCst);
            }
        });
        let _stop = StopOnDrop(&stop);
        let (mut oks, mut faults) = (0, 0);
        for _ in 0..ROUNDS {
            for j in 0..JOBS {
                // A slot per job, cleared while no job runs.
                res.write(8 * j, &[0; 8]);
            }
            let seqnos: Vec<u64> = (0..JOBS)
                .map(|j| {
                    let cmds = [
                        Cmd::busy(2_000),
                        Cmd::checksum(RES_VA + 8 * j as u64, VA2, size),
                    ];
                    // EAGAIN: invalidations kept colliding with the
                    // submission, nothing was submitted; try again.
                    loop {
                        match dev.exec(&cmds, 0) {
                            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                                eagain.fetch_add(1, SeqCst);
                            }
                            r => break ok(r, "EXEC of CHECKSUM").0,
                        }
                    }
                })
                .collect();
            for (j, s) in seqnos.into_iter().enumerate() {
                let (status, fault) = ok(dev.wait(s, WAIT_NS), "WAIT");
                match status {
                    0 => {
                        assert_eq!(res.read_u64(8 * j), want, "job {j}: checksum");
                        oks += 1;
                    }
                    s if s == -EFAULT => {
                        assert!(
                            (VA2..VA2 + size).contains(&fault),
                            "job {j}: fault {fault:#x} outside the range"
                        );
                        assert_eq!(res.read_u64(8 * j), 0, "job {j}: wrote despite faulting");
                        faults += 1;
                    }
                    s => panic!("job {j}: status {}", errno_name(-s)),
                }
            }
        }
        (oks, faults)
    });
    m2.protect(libc::PROT_READ | libc::PROT_WRITE);
    assert!(toggles.load(SeqCst) > 0, "no mprotect ran");
    let eagain = eagain.load(SeqCst);
    eprintln!("{oks} jobs succeeded, {faults} faulted, {eagain} EXECs retried after EAGAIN");
    assert!(oks > 0, "no job succeeded ({faults} faulted)");
    assert_eq!(
        gpu_checksum(&dev, &res, VA2, size, "CHECKSUM, writable again"),
        want
    );
}
