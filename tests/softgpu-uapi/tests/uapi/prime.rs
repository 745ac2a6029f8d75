//! PRIME import of another driver's dma-buf: vgem's dumb buffers, exported
//! from vgem's card node and imported into softgpu. The GPU reaches the
//! exporter's pages through its page table, the CPU through the dma-buf's
//! own mapping (and softgpu's, which forwards to it), and the import keeps
//! the buffer alive after vgem lets go of it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use libc::{EBADF, EINVAL};
use softgpu::*;

use crate::common::*;

const VA: u64 = 0x3_0000_0000;
const BO_VA: u64 = 0x4_0000_0000;
const RES_VA: u64 = 0x5_0000_0000;

/// vgem's primary node: no vgem is a failure, never a skip.
#[track_caller]
fn open_vgem() -> Device {
    Device::open_card("vgem").unwrap_or_else(|e| panic!("opening vgem's card node: {e}"))
}

/// A vgem dumb buffer of `pages` pages, exported: (vgem handle, dma-buf).
#[track_caller]
fn vgem_buffer(vgem: &Device, pages: u32) -> (u32, OwnedFd) {
    // 1024 pixels of 32 bits: one page per row.
    let (h, size) = ok(vgem.create_dumb(1024, pages, 32), "vgem MODE_CREATE_DUMB");
    assert_eq!(size, u64::from(pages) * PAGE, "vgem dumb buffer size");
    let fd = ok(vgem.prime_export(h), "vgem PRIME_HANDLE_TO_FD");
    (h, fd)
}

/// The CPU mapping of a whole dma-buf.
#[track_caller]
fn map_dmabuf(fd: &OwnedFd, size: u64) -> Mapping {
    ok(
        Mapping::map_fd(fd.as_fd(), 0, size as usize),
        "mmap of the dma-buf",
    )
}

/// Reads the dma-buf's CPU mapping between SYNC_START and SYNC_END (which
/// waits for the GPU's fences on the buffer).
#[track_caller]
fn read_dmabuf(fd: &OwnedFd, m: &Mapping) -> Vec<u8> {
    ok(
        dma_buf_sync(fd.as_fd(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ),
        "DMA_BUF_IOCTL_SYNC start read",
    );
    let v = m.as_slice().to_vec();
    ok(
        dma_buf_sync(fd.as_fd(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ),
        "DMA_BUF_IOCTL_SYNC end read",
    );
    v
}

/// Writes `data` through the dma-buf's CPU mapping, between SYNC_START and
/// SYNC_END.
#[track_caller]
fn write_dmabuf(fd: &OwnedFd, m: &mut Mapping, data: &[u8]) {
    ok(
        dma_buf_sync(fd.as_fd(), DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE),
        "DMA_BUF_IOCTL_SYNC start write",
    );
    m.as_mut_slice()[..data.len()].copy_from_slice(data);
    ok(
        dma_buf_sync(fd.as_fd(), DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE),
        "DMA_BUF_IOCTL_SYNC end write",
    );
}

/// The lines of debugfs `objects` for imported objects.
fn debugfs_imports(dev: &Device) -> Vec<String> {
    let path = debugfs_path(dev, "objects");
    let text = ok(std::fs::read_to_string(&path), &format!("reading {path}"));
    text.lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("import"))
        .map(str::to_string)
        .collect()
}

#[test]
fn prime_import_of_a_vgem_buffer_is_filled_by_the_gpu() {
    const PAGES: u32 = 16;
    let size = u64::from(PAGES) * PAGE;
    let vgem = open_vgem();
    let dev = open();
    let (_vh, fd) = vgem_buffer(&vgem, PAGES);
    let before = debugfs_imports(&dev).len();
    let h = ok(
        dev.prime_import(&fd),
        "softgpu PRIME_FD_TO_HANDLE of vgem's buffer",
    );
    let info = ok(dev.info(h), "GEM_INFO of the import");
    assert_eq!(info.size, size, "imported object size");
    assert_eq!(
        info.flags, SOFTGPU_BO_INFO_IMPORTED,
        "GEM_INFO flags of an import"
    );
    ok(dev.bind(h, VA, 0, size, 0), "VM_BIND of the import");
    let info = ok(dev.info(h), "GEM_INFO of the bound import");
    assert_eq!(info.bindings, 1, "bindings of the import");
    assert_eq!(
        info.resident_pages,
        u64::from(PAGES),
        "an import's pages are mapped at bind"
    );
    let lines = debugfs_imports(&dev);
    assert_eq!(lines.len(), before + 1, "debugfs objects: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().nth(1) == Some(&size.to_string())),
        "no import of {size} bytes in debugfs objects: {lines:?}"
    );
    // Not ours to purge.
    expect_errno(
        dev.madvise(h, SOFTGPU_MADV_DONTNEED),
        EINVAL,
        "GEM_MADVISE of an import",
    );

    run_ok(
        &dev,
        &[Cmd::fill(VA, size, 0x5eed_f00d)],
        "GPU fill of the import",
    );
    // What the GPU wrote is in the exporter's pages.
    let m = map_dmabuf(&fd, size);
    assert_eq!(
        read_dmabuf(&fd, &m),
        filled(size as usize, 0x5eed_f00d),
        "the dma-buf's CPU mapping after a GPU fill"
    );
    // softgpu's own CPU mapping of the import is the dma-buf's.
    let g = map(&dev, h, size);
    assert_eq!(
        g.as_slice(),
        filled(size as usize, 0x5eed_f00d).as_slice(),
        "softgpu's CPU mapping of the import"
    );
    // An atomic on the exporter's memory.
    run_ok(
        &dev,
        &[Cmd::atomic_add(VA + 8, 5, 3)],
        "GPU atomic on the import",
    );
    let v = read_dmabuf(&fd, &m);
    let want = 0x5eed_f00d_5eed_f00du64 + 15;
    assert_eq!(
        u64::from_le_bytes(v[8..16].try_into().unwrap()),
        want,
        "the atomic's result through the dma-buf"
    );
    drop(g);
    ok(dev.unbind(VA, size), "VM_UNBIND of the import");
    assert_eq!(ok(dev.info(h), "GEM_INFO").resident_pages, 0, "unbound");
    ok(dev.close_bo(h), "GEM_CLOSE of the import");
    assert_eq!(
        debugfs_imports(&dev).len(),
        before,
        "the import is freed once its handle is closed"
    );
}

#[test]
fn prime_import_cpu_writes_through_the_dma_buf_reach_the_gpu() {
    const PAGES: u32 = 8;
    let size = u64::from(PAGES) * PAGE;
    let vgem = open_vgem();
    let dev = open();
    let (_vh, fd) = vgem_buffer(&vgem, PAGES);
    let mut m = map_dmabuf(&fd, size);
    let data = pattern(size as usize, 41);
    write_dmabuf(&fd, &mut m, &data);
    let h = ok(dev.prime_import(&fd), "PRIME import");
    ok(
        dev.bind(h, VA, 0, size, SOFTGPU_BIND_READONLY),
        "read-only VM_BIND",
    );
    assert_eq!(
        gpu_checksum(&dev, VA, size, RES_VA),
        fnv1a64(&data),
        "GPU checksum of CPU-written dma-buf contents"
    );
    // Read-only binding: the GPU may not write the exporter's memory.
    run_fault_at(
        &dev,
        &[Cmd::fill(VA, PAGE, 1)],
        VA,
        "a write through a read-only import binding",
    );
    // New CPU writes, seen by the next job.
    let data2 = pattern(size as usize, 42);
    write_dmabuf(&fd, &mut m, &data2);
    assert_eq!(
        gpu_checksum(&dev, VA, size, RES_VA),
        fnv1a64(&data2),
        "GPU checksum after new CPU writes"
    );
}

#[test]
fn prime_import_copies_to_and_from_a_softgpu_bo() {
    const PAGES: u32 = 8;
    let size = u64::from(PAGES) * PAGE;
    let vgem = open_vgem();
    let dev = open();
    let (_vh, fd) = vgem_buffer(&vgem, PAGES);
    let h = ok(dev.prime_import(&fd), "PRIME import");
    ok(dev.bind(h, VA, 0, size, 0), "VM_BIND of the import");
    let bo = create_bound(&dev, size, 0, BO_VA);
    let mut b = map(&dev, bo, size);
    let data = pattern(size as usize, 7);
    b.as_mut_slice().copy_from_slice(&data);
    // softgpu BO -> import, at an offset that straddles pages.
    run_ok(
        &dev,
        &[Cmd::copy(VA + 100, BO_VA, size - 100)],
        "GPU copy BO -> import",
    );
    let m = map_dmabuf(&fd, size);
    let got = read_dmabuf(&fd, &m);
    assert_eq!(
        &got[100..],
        &data[..size as usize - 100],
        "copied into the import"
    );
    // import -> softgpu BO.
    let mut m = m;
    let data2 = pattern(size as usize, 8);
    write_dmabuf(&fd, &mut m, &data2);
    run_ok(&dev, &[Cmd::copy(BO_VA, VA, size)], "GPU copy import -> BO");
    assert_eq!(b.as_slice(), data2.as_slice(), "copied from the import");
}

#[test]
fn prime_import_of_the_same_dma_buf_gives_the_same_object() {
    let vgem = open_vgem();
    let dev = open();
    let (_vh, fd) = vgem_buffer(&vgem, 4);
    let h = ok(dev.prime_import(&fd), "first PRIME import");
    let h2 = ok(dev.prime_import(&fd), "second PRIME import");
    assert_eq!(h, h2, "importing one dma-buf twice in a file");
    // Another fd of the same buffer.
    let dup = ok(fd.try_clone(), "dup");
    assert_eq!(
        ok(dev.prime_import(&dup), "import of a dup"),
        h,
        "import of a dup'd fd"
    );
    // Exporting the import gives the exporter's dma-buf back.
    let back = ok(dev.prime_export(h), "PRIME export of the import");
    let ino = |f: &OwnedFd| {
        // SAFETY: fstat writes into the zeroed struct only.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and struct.
        assert_eq!(unsafe { libc::fstat(f.as_raw_fd(), &mut st) }, 0, "fstat");
        (st.st_dev, st.st_ino)
    };
    assert_eq!(
        ino(&back),
        ino(&fd),
        "re-export of an import is the original dma-buf"
    );
    // A second softgpu file gets its own handle on the same memory.
    let other = open();
    let h3 = ok(other.prime_import(&fd), "import in a second file");
    ok(dev.bind(h, VA, 0, 4 * PAGE, 0), "bind in the first file");
    ok(
        other.bind(h3, VA, 0, 4 * PAGE, 0),
        "bind in the second file",
    );
    run_ok(
        &dev,
        &[Cmd::fill(VA, 4 * PAGE, 0xabcd)],
        "fill in the first file",
    );
    assert_eq!(
        gpu_checksum(&other, VA, 4 * PAGE, RES_VA),
        fnv1a64(&filled(4 * PAGE as usize, 0xabcd)),
        "the second file's GPU sees the first one's writes"
    );
}

#[test]
fn prime_import_of_bad_fds_fails_cleanly() {
    let dev = open();
    // Not a dma-buf: the DRM node itself, and a pipe.
    expect_errno(
        dev.prime_import_raw(dev.as_raw_fd()),
        EINVAL,
        "PRIME import of a DRM file",
    );
    let mut p = [0; 2];
    // SAFETY: a valid array of two fds.
    assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0, "pipe");
    expect_errno(dev.prime_import_raw(p[0]), EINVAL, "PRIME import of a pipe");
    // SAFETY: our own fds.
    unsafe {
        libc::close(p[0]);
        libc::close(p[1]);
    }
    // A closed fd (and one never opened).
    let vgem = open_vgem();
    let (_vh, fd) = vgem_buffer(&vgem, 1);
    let raw = fd.as_raw_fd();
    drop(fd);
    expect_errno(
        dev.prime_import_raw(raw),
        EBADF,
        "PRIME import of a closed fd",
    );
    expect_errno(dev.prime_import_raw(-1), EBADF, "PRIME import of fd -1");
    // Nothing changed: this fresh file has no handle yet, so its first
    // object gets handle 1.
    assert_eq!(
        create(&dev, PAGE, 0),
        1,
        "first handle after failed imports"
    );
}

#[test]
fn prime_import_keeps_the_memory_after_vgem_lets_go() {
    const PAGES: u32 = 8;
    let size = u64::from(PAGES) * PAGE;
    let dev = open();
    let data = pattern(size as usize, 99);
    let h = {
        let vgem = open_vgem();
        let (vh, fd) = vgem_buffer(&vgem, PAGES);
        let mut m = map_dmabuf(&fd, size);
        write_dmabuf(&fd, &mut m, &data);
        let h = ok(dev.prime_import(&fd), "PRIME import");
        ok(dev.bind(h, VA, 0, size, 0), "VM_BIND of the import");
        // vgem's handle, the mapping, the dma-buf fd and vgem's file go.
        ok(vgem.close_bo(vh), "vgem GEM_CLOSE");
        drop(m);
        drop(fd);
        drop(vgem);
        h
    };
    assert_eq!(
        gpu_checksum(&dev, VA, size, RES_VA),
        fnv1a64(&data),
        "the GPU reads the import after vgem closed everything"
    );
    run_ok(
        &dev,
        &[Cmd::fill(VA, size, 3)],
        "GPU fill after vgem closed",
    );
    assert_eq!(
        gpu_checksum(&dev, VA, size, RES_VA),
        fnv1a64(&filled(size as usize, 3)),
        "GPU checksum of the fill"
    );
    // softgpu's CPU mapping still reaches the memory.
    let g = map(&dev, h, size);
    assert_eq!(
        g.as_slice(),
        filled(size as usize, 3).as_slice(),
        "CPU view"
    );
}

#[test]
fn prime_import_closing_the_file_with_jobs_in_flight_frees_it() {
    const PAGES: u32 = 4;
    let size = u64::from(PAGES) * PAGE;
    let vgem = open_vgem();
    let (_vh, fd) = vgem_buffer(&vgem, PAGES);
    let before = debugfs_imports(&open()).len();
    let r = in_child(Duration::from_secs(60), || {
        let dev = Device::open().map_err(|e| format!("open: {e}"))?;
        let h = dev
            .prime_import(&fd)
            .map_err(|e| format!("PRIME import: {e}"))?;
        dev.bind(h, VA, 0, size, 0)
            .map_err(|e| format!("VM_BIND: {e}"))?;
        let mut fence = None;
        for i in 0..6 {
            let (_, f) = dev
                .exec(
                    &[Cmd::busy(200_000), Cmd::fill(VA, size, 0x100 + i)],
                    SOFTGPU_EXEC_FENCE_OUT,
                )
                .map_err(|e| format!("EXEC {i}: {e}"))?;
            fence = f;
        }
        let fence = fence.ok_or("no fence")?;
        dev.close_bo(h).map_err(|e| format!("GEM_CLOSE: {e}"))?;
        drop(dev);
        match poll_in(fence.as_fd(), 30_000) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the fence of a job of a closed file never signalled".into()),
            Err(e) => Err(format!("poll: {e}")),
        }
    });
    assert_child_ok(r);
    // The import is gone with the file; the buffer is vgem's again, with
    // whatever the jobs wrote before the file closed (a fill, or zeros).
    assert_eq!(debugfs_imports(&open()).len(), before, "imports left");
    let m = map_dmabuf(&fd, size);
    let v = read_dmabuf(&fd, &m);
    let first = u32::from_le_bytes(v[..4].try_into().unwrap());
    assert!(
        first == 0 || (0x100..0x106).contains(&first),
        "unexpected contents {first:#x}"
    );
    // And the buffer can be imported again.
    let dev = open();
    let h = ok(
        dev.prime_import(&fd),
        "PRIME import after the first file closed",
    );
    ok(dev.bind(h, VA, 0, size, 0), "VM_BIND");
    run_ok(&dev, &[Cmd::fill(VA, size, 9)], "fill");
    assert_eq!(
        read_dmabuf(&fd, &m),
        filled(size as usize, 9),
        "the dma-buf after a fill by a new import"
    );
}
