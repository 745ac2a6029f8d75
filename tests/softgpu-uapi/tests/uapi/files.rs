//! Several DRM files: handles, VMs, mmap offsets and seqnos are per file;
//! PRIME shares BOs between them; closing a file or dying with jobs in
//! flight does not hang.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use libc::{EBADF, EFAULT, EINVAL, ENOENT};
use softgpu::*;

use crate::common::*;

const VA: u64 = 0x1_0000_0000;
const RES_VA: u64 = 0x2_0000_0000;

#[test]
fn handles_are_per_file() {
    let a = open();
    let b = open();
    let h = create(&a, 2 * PAGE, 0);
    // b has no BO at all, so no handle of b can collide with h.
    expect_errno(b.info(h), ENOENT, "GEM_INFO in B of A's handle");
    expect_errno(b.mmap_offset(h), ENOENT, "MMAP_OFFSET in B of A's handle");
    expect_errno(
        b.bind(h, VA, 0, PAGE, 0),
        ENOENT,
        "VM_BIND in B of A's handle",
    );
    expect_errno(
        b.madvise(h, SOFTGPU_MADV_DONTNEED),
        ENOENT,
        "MADVISE in B of A's handle",
    );
    expect_errno(b.prime_export(h), ENOENT, "PRIME export in B of A's handle");
    expect_errno(b.close_bo(h), EINVAL, "GEM_CLOSE in B of A's handle");
    let info = ok(a.info(h), "GEM_INFO in A");
    assert_eq!(
        (info.size, info.bindings, info.flags),
        (2 * PAGE, 0, 0),
        "{info:?}"
    );
    assert_unbound(&b, VA, "B's VM after B's failed bind");
}

#[test]
fn gpu_vms_are_per_file() {
    let a = open();
    let b = open();
    let size = 2 * PAGE;
    let ha = create_bound(&a, size, 0, VA);
    let ma = map(&a, ha, size);
    // B has nothing at A's VA.
    run_fault_at(
        &b,
        &[Cmd::fill(VA, 8, 0xbbbb_bbbb)],
        VA,
        "job in B at A's VA",
    );
    run_fault_at(
        &b,
        &[Cmd::checksum(VA + 8, VA + PAGE, 8)],
        VA + PAGE,
        "CHECKSUM in B of A's VA",
    );
    assert!(
        ma.as_slice().iter().all(|&x| x == 0),
        "B's job wrote A's BO"
    );
    // B may bind its own BO at the same VA; each file's jobs see their own.
    let hb = create(&b, size, 0);
    ok(
        b.bind(hb, VA, 0, size, 0),
        "VM_BIND in B at A's VA (no EEXIST)",
    );
    let mb = map(&b, hb, size);
    run_ok(&b, &[Cmd::fill(VA, size, 0xbbbb_bbbb)], "FILL in B");
    run_ok(&a, &[Cmd::fill(VA, 8, 0xaaaa_aaaa)], "FILL in A");
    assert!(
        ma.as_slice()[8..].iter().all(|&x| x == 0),
        "B's FILL reached A's BO"
    );
    assert_eq!(ma.read_u32(0), 0xaaaa_aaaa);
    assert_eq!(mb.read_u32(0), 0xbbbb_bbbb, "A's FILL reached B's BO");
    assert_eq!(ok(a.info(ha), "GEM_INFO").bindings, 1);
    assert_eq!(ok(b.info(hb), "GEM_INFO").bindings, 1);
    // Unbinding in A leaves B's binding alone.
    ok(a.unbind(VA, size), "VM_UNBIND in A");
    assert_unbound(&a, VA, "A after unbind");
    assert_writable(&b, VA, "B after A's unbind");
}

#[test]
fn mmap_offsets_are_per_file() {
    let a = open();
    let b = open();
    let h = create(&a, PAGE, 0);
    let off = ok(a.mmap_offset(h), "MMAP_OFFSET");
    let r = b.mmap_at(off, PAGE as usize);
    assert!(r.is_err(), "B mapped A's BO through A's fake offset");
    map(&a, h, PAGE);
}

#[test]
fn seqnos_are_per_file() {
    let a = open();
    let b = open();
    create_bound(&a, PAGE, 0, VA);
    let (seqno, _) = ok(a.exec(&[Cmd::busy(1000)], 0), "EXEC in A");
    expect_errno(
        b.wait(seqno, WAIT_NS),
        EINVAL,
        "WAIT in B (which submitted nothing) for A's seqno",
    );
    assert_eq!(ok(a.wait(seqno, WAIT_NS), "WAIT in A").0, 0);
}

#[test]
fn prime_import_in_the_same_file_gives_the_same_handle() {
    let dev = open();
    let h = create(&dev, 2 * PAGE, 0);
    let fd = ok(dev.prime_export(h), "PRIME export");
    let h2 = ok(dev.prime_import(&fd), "PRIME import in the exporting file");
    assert_eq!(h2, h, "DRM maps a re-imported dma-buf back to its handle");
    let fd2 = ok(dev.prime_export(h), "second PRIME export");
    assert_eq!(ok(dev.prime_import(&fd2), "PRIME import"), h);
}

#[test]
fn prime_import_in_another_file_shares_the_bo() {
    let a = open();
    let b = open();
    let size = 4 * PAGE;
    let ha = create_bound(&a, size, 0, VA);
    let mut ma = map(&a, ha, size);
    let data = pattern(size as usize, 5);
    ma.as_mut_slice().copy_from_slice(&data);
    let fd = ok(a.prime_export(ha), "PRIME export in A");
    let hb = ok(b.prime_import(&fd), "PRIME import in B");
    let info = ok(b.info(hb), "GEM_INFO in B of the imported BO");
    assert_eq!(info.size, size, "{info:?}");
    assert_eq!(info.bindings, 0, "bindings counts B's own: {info:?}");
    // B reads A's CPU writes through its own VM and mapping.
    ok(b.bind(hb, VA, 0, size, 0), "VM_BIND of the import in B");
    let rb = create_bound(&b, PAGE, 0, RES_VA);
    let res = map(&b, rb, PAGE);
    run_ok(&b, &[Cmd::checksum(RES_VA, VA, size)], "CHECKSUM in B");
    assert_eq!(res.read_u64(0), fnv1a64(&data), "B's GPU sees A's data");
    let mb = map(&b, hb, size);
    assert!(mb.as_slice() == &data[..], "B's mapping shows A's data");
    // B's GPU writes reach A's mapping.
    run_ok(&b, &[Cmd::fill(VA + PAGE, PAGE, 0x0b0b_0b0b)], "FILL in B");
    assert_eq!(
        ma.read_u32(PAGE as usize),
        0x0b0b_0b0b,
        "A sees B's GPU write"
    );
    // The BO outlives A's handle and A itself.
    let want = ma.as_slice().to_vec();
    drop(ma);
    ok(a.close_bo(ha), "GEM_CLOSE in A");
    drop(a);
    drop(fd);
    run_ok(
        &b,
        &[Cmd::checksum(RES_VA, VA, size)],
        "CHECKSUM in B after A is gone",
    );
    assert_eq!(res.read_u64(0), fnv1a64(&want));
}

#[test]
fn exported_bo_outlives_its_file() {
    let a = open();
    let h = create(&a, PAGE, SOFTGPU_BO_PINNED);
    let mut m = map(&a, h, PAGE);
    m.as_mut_slice()[..4].copy_from_slice(b"prim");
    let fd = ok(a.prime_export(h), "PRIME export");
    drop(m);
    drop(a);
    let b = open();
    let hb = ok(
        b.prime_import(&fd),
        "PRIME import after the exporter closed",
    );
    let info = ok(b.info(hb), "GEM_INFO");
    assert_eq!(info.size, PAGE);
    assert_eq!(info.flags & SOFTGPU_BO_INFO_PINNED, SOFTGPU_BO_INFO_PINNED);
    assert_eq!(&map(&b, hb, PAGE).as_slice()[..4], b"prim");
}

#[test]
fn prime_rejects_bad_arguments() {
    let dev = open();
    for h in [0, 0x00de_ad00, u32::MAX] {
        expect_errno(
            dev.prime_export(h),
            ENOENT,
            &format!("PRIME export of {h:#x}"),
        );
    }
    let h = create(&dev, PAGE, 0);
    let mut a = DrmPrimeHandle {
        handle: h,
        flags: 1 << 30,
        fd: -1,
    };
    expect_errno(
        dev.ioctl(DRM_IOCTL_PRIME_HANDLE_TO_FD, &mut a),
        EINVAL,
        "PRIME export with unknown flags",
    );
    expect_errno(dev.prime_import_raw(-1), EBADF, "PRIME import of fd -1");
    let null = std::fs::File::open("/dev/null").unwrap();
    expect_errno(dev.prime_import(&null), EINVAL, "PRIME import of /dev/null");
    expect_errno(
        dev.prime_import(&dev.as_fd()),
        EINVAL,
        "PRIME import of the DRM file itself",
    );
}

/// After the child: the engine still runs jobs for a new file.
fn assert_engine_alive() {
    let dev = open();
    create_bound(&dev, PAGE, 0, VA);
    run_ok(
        &dev,
        &[Cmd::fill(VA, PAGE, 1)],
        "a job after the child is gone",
    );
}

/// BUSY jobs that take about `n` * 200 ms, each touching `va`.
fn submit_busy_jobs(dev: &Device, va: u64, n: u32) -> Result<Option<OwnedFd>, String> {
    let mut fence = None;
    for i in 0..n {
        let (_, f) = dev
            .exec(
                &[Cmd::busy(200_000), Cmd::fill(va, PAGE, i)],
                SOFTGPU_EXEC_FENCE_OUT,
            )
            .map_err(|e| format!("EXEC of job {i}: {e}"))?;
        fence = f;
    }
    Ok(fence)
}

#[test]
fn closing_the_file_with_jobs_in_flight_does_not_hang() {
    let r = in_child(Duration::from_secs(60), || {
        let dev = Device::open().map_err(|e| format!("open: {e}"))?;
        let h = create_bound(&dev, PAGE, 0, VA);
        let mut m = map(&dev, h, PAGE);
        let fence = submit_busy_jobs(&dev, VA, 6)?.ok_or("no fence")?;
        // Drop the handle, then the whole file, while the jobs run.
        dev.close_bo(h).map_err(|e| format!("GEM_CLOSE: {e}"))?;
        drop(dev);
        // The last job's fence still signals (done or cancelled).
        match poll_in(fence.as_fd(), 30_000) {
            Ok(true) => {}
            Ok(false) => return Err("the fence of a job of a closed file never signalled".into()),
            Err(e) => return Err(format!("poll: {e}")),
        }
        // The CPU mapping keeps the BO alive and usable.
        m.as_mut_slice()[..4].copy_from_slice(b"live");
        if &m.as_slice()[..4] != b"live" {
            return Err("the mapping of a closed file's BO does not hold data".into());
        }
        Ok(())
    });
    assert_child_ok(r);
    assert_engine_alive();
}

#[test]
fn exiting_with_jobs_in_flight_does_not_hang() {
    let r = in_child(Duration::from_secs(60), || {
        let dev = Device::open().map_err(|e| format!("open: {e}"))?;
        let h = create_bound(&dev, 4 * PAGE, SOFTGPU_BO_PINNED, VA);
        let _m = map(&dev, h, 4 * PAGE);
        let g = create_bound(&dev, 4 * PAGE, 0, VA + 4 * PAGE);
        let _n = map(&dev, g, 4 * PAGE);
        submit_busy_jobs(&dev, VA, 3)?;
        submit_busy_jobs(&dev, VA + 4 * PAGE, 3)?;
        // Exit at once: the kernel tears down the file, the mappings and
        // the jobs' references.
        // SAFETY: ends the child process.
        unsafe { libc::_exit(0) }
    });
    assert_child_ok(r);
    assert_engine_alive();
}

#[test]
fn killing_a_waiting_process_does_not_hang() {
    let start = Instant::now();
    let r = in_child(Duration::from_secs(60), || {
        let dev = Device::open().map_err(|e| format!("open: {e}"))?;
        create_bound(&dev, PAGE, 0, VA);
        let (seqno, _) = dev
            .exec(&[Cmd::busy(1_000_000); 8], 0)
            .map_err(|e| format!("EXEC: {e}"))?;
        // Kill ourselves from a thread while blocked in WAIT.
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: signals our own process.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        });
        let r = dev.wait(seqno, WAIT_NS);
        Err(format!("WAIT returned {r:?} instead of the process dying"))
    });
    assert!(
        matches!(r, ChildEnd::Signalled(libc::SIGKILL)),
        "the child should die of SIGKILL while in WAIT: {r:?}"
    );
    // The job runs 8 s: a process killed 300 ms in must be gone well
    // before, i.e. WAIT sleeps interruptibly.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "SIGKILL took {:?} to end a process in WAIT of an 8 s job",
        start.elapsed()
    );
    assert_engine_alive();
}

#[test]
fn a_faulting_job_in_one_file_does_not_disturb_another() {
    let a = open();
    let b = open();
    let ha = create_bound(&a, PAGE, 0, VA);
    let ma = map(&a, ha, PAGE);
    let (sa, _) = ok(
        a.exec(&[Cmd::busy(50_000), Cmd::fill(VA, 4, 1)], 0),
        "EXEC in A",
    );
    let (sb, _) = ok(b.exec(&[probe_write(VA)], 0), "faulting EXEC in B");
    let (sa2, _) = ok(a.exec(&[Cmd::fill(VA + 4, 4, 2)], 0), "EXEC in A");
    assert_eq!(ok(b.wait(sb, WAIT_NS), "WAIT in B"), (-EFAULT, VA));
    assert_eq!(ok(a.wait(sa, WAIT_NS), "WAIT in A").0, 0);
    assert_eq!(ok(a.wait(sa2, WAIT_NS), "WAIT in A").0, 0);
    assert_eq!((ma.read_u32(0), ma.read_u32(4)), (1, 2));
}
