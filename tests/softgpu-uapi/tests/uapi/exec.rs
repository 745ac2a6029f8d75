//! What the commands do, seen through CPU mappings of the BOs; faults on
//! unbound and read-only addresses; fences and WAIT.
//!
//! Assumptions beyond the header's words: FILL stores `value` as a
//! little-endian u32 (x86), CHECKSUM stores the hash as a little-endian
//! u64, and fault_addr is the exact GPU address of the first byte the
//! failing command could not access (commands access memory in address
//! order).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use libc::{EFAULT, EINVAL, ETIME};
use softgpu::*;

use crate::common::*;

const VA: u64 = 0x1000_0000;
const VA2: u64 = 0x2000_0000;
const RES_VA: u64 = 0x7000_0000;
/// Never bound in these tests.
const HOLE: u64 = 0x5_0000_0000;
const KINDS: [u32; 2] = [0, SOFTGPU_BO_PINNED];

/// A 1-page BO for CHECKSUM results, bound at RES_VA.
fn results(dev: &Device) -> Mapping {
    let h = create_bound(dev, PAGE, 0, RES_VA);
    map(dev, h, PAGE)
}

/// Asserts two byte strings are equal, naming the first difference.
#[track_caller]
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: first difference at byte {i:#x}: {:#04x}, expected {:#04x}",
            got[i], want[i]
        );
    }
}

#[test]
fn gpu_fill_is_seen_through_the_cpu_mapping() {
    for flags in KINDS {
        let dev = open();
        let size = 8 * PAGE;
        let h = create_bound(&dev, size, flags, VA);
        let m = map(&dev, h, size);
        let (start, len) = (3 * PAGE - 8, PAGE + 16);
        run_ok(
            &dev,
            &[Cmd::fill(VA + start, len, 0xdead_beef)],
            "FILL across pages",
        );
        let mut want = vec![0u8; size as usize];
        want[start as usize..(start + len) as usize]
            .copy_from_slice(&filled(len as usize, 0xdead_beef));
        assert_bytes(
            m.as_slice(),
            &want,
            &format!("BO flags {flags:#x} after FILL"),
        );
        // A later fill of everything replaces it all.
        run_ok(&dev, &[Cmd::fill(VA, size, 0x0102_0304)], "FILL of the BO");
        assert_bytes(
            m.as_slice(),
            &filled(size as usize, 0x0102_0304),
            &format!("BO flags {flags:#x} after the second FILL"),
        );
    }
}

#[test]
fn cpu_writes_are_seen_by_gpu_checksums() {
    for flags in KINDS {
        let dev = open();
        let size = 8 * PAGE;
        let h = create_bound(&dev, size, flags, VA);
        let mut m = map(&dev, h, size);
        let res = results(&dev);
        let mut data = pattern(size as usize, 1);
        m.as_mut_slice().copy_from_slice(&data);
        let ranges = [
            (0, size),
            (3, 10_000),
            (PAGE - 1, 2),
            (5 * PAGE, 1),
            (size - 8, 8),
        ];
        let cmds: Vec<Cmd> = ranges
            .iter()
            .enumerate()
            .map(|(i, &(off, len))| Cmd::checksum(RES_VA + 8 * i as u64, VA + off, len))
            .collect();
        run_ok(&dev, &cmds, "CHECKSUMs");
        for (i, &(off, len)) in ranges.iter().enumerate() {
            let want = fnv1a64(&data[off as usize..(off + len) as usize]);
            assert_eq!(
                res.read_u64(8 * i),
                want,
                "BO flags {flags:#x}: checksum of [{off:#x}, +{len:#x})"
            );
        }
        // A CPU write after the GPU read is seen too.
        data[2 * PAGE as usize + 5] ^= 0xff;
        m.as_mut_slice()[2 * PAGE as usize + 5] = data[2 * PAGE as usize + 5];
        run_ok(&dev, &[Cmd::checksum(RES_VA, VA, size)], "CHECKSUM again");
        assert_eq!(
            res.read_u64(0),
            fnv1a64(&data),
            "BO flags {flags:#x}: checksum after a CPU write"
        );
    }
}

#[test]
fn copy_moves_bytes_within_and_across_bos() {
    for flags in KINDS {
        let dev = open();
        let size = 4 * PAGE;
        let a = create_bound(&dev, size, flags, VA);
        let b = create_bound(&dev, size, flags, VA2);
        let mut ma = map(&dev, a, size);
        let mb = map(&dev, b, size);
        let data = pattern(size as usize, 2);
        ma.as_mut_slice().copy_from_slice(&data);
        let (d, s, n) = (5u64, 100u64, 2 * PAGE + 77);
        run_ok(
            &dev,
            &[
                Cmd::copy(VA2 + d, VA + s, n),
                Cmd::copy(VA + 3 * PAGE, VA + 8, 1000),
            ],
            "COPYs",
        );
        let mut want_b = vec![0u8; size as usize];
        want_b[d as usize..(d + n) as usize].copy_from_slice(&data[s as usize..(s + n) as usize]);
        assert_bytes(
            mb.as_slice(),
            &want_b,
            &format!("flags {flags:#x}: COPY across BOs"),
        );
        let mut want_a = data.clone();
        want_a.copy_within(8..1008, 3 * PAGE as usize);
        assert_bytes(
            ma.as_slice(),
            &want_a,
            &format!("flags {flags:#x}: COPY within a BO"),
        );
    }
}

#[test]
fn atomic_add_adds_value_count_times() {
    let dev = open();
    let h = create_bound(&dev, PAGE, 0, VA);
    let mut m = map(&dev, h, PAGE);
    m.write_u64(0, 1000);
    m.write_u64(8, u64::MAX);
    m.write_u64(PAGE as usize - 8, 5);
    run_ok(
        &dev,
        &[
            Cmd::atomic_add(VA, 7, 1000),
            Cmd::atomic_add(VA + 8, 1, 1),
            Cmd::atomic_add(VA + 16, u64::MAX, 3),
            Cmd::atomic_add(VA + PAGE - 8, 2, 1),
        ],
        "ATOMIC_ADDs",
    );
    assert_eq!(m.read_u64(0), 1000 + 7 * 1000, "7 added 1000 times to 1000");
    assert_eq!(m.read_u64(8), 0, "u64::MAX + 1 wraps to 0");
    assert_eq!(m.read_u64(16), u64::MAX - 2, "3 * u64::MAX, wrapping");
    assert_eq!(m.read_u64(24), 0, "the next u64 is untouched");
    assert_eq!(m.read_u64(PAGE as usize - 8), 7, "last u64 of the page");
    // Adds from successive jobs accumulate; waiting for the last job is
    // enough, jobs run in submission order.
    let mut last = 0;
    for _ in 0..10 {
        last = ok(dev.exec(&[Cmd::atomic_add(VA + 24, 1, 5)], 0), "EXEC").0;
    }
    assert_eq!(ok(dev.wait(last, WAIT_NS), "WAIT").0, 0);
    assert_eq!(m.read_u64(24), 50, "10 jobs adding 5");
}

#[test]
fn commands_and_jobs_run_in_order() {
    let dev = open();
    let size = 4 * PAGE;
    let a = create_bound(&dev, size, 0, VA);
    let b = create_bound(&dev, size, 0, VA2);
    let ma = map(&dev, a, size);
    let mb = map(&dev, b, size);
    let res = results(&dev);
    run_ok(
        &dev,
        &[
            Cmd::fill(VA, size, 1),
            Cmd::copy(VA2, VA, size),
            Cmd::fill(VA, size, 2),
            Cmd::checksum(RES_VA, VA2, size),
            Cmd::checksum(RES_VA + 8, VA, size),
        ],
        "one job of five commands",
    );
    assert_eq!(res.read_u64(0), fnv1a64(&filled(size as usize, 1)));
    assert_eq!(res.read_u64(8), fnv1a64(&filled(size as usize, 2)));
    assert_bytes(
        mb.as_slice(),
        &filled(size as usize, 1),
        "copy of the first fill",
    );
    assert_bytes(ma.as_slice(), &filled(size as usize, 2), "second fill");
    // Across jobs: wait for the last one only.
    ok(dev.exec(&[Cmd::fill(VA, size, 3)], 0), "EXEC");
    ok(dev.exec(&[Cmd::copy(VA2, VA, size)], 0), "EXEC");
    let (last, _) = ok(
        dev.exec(&[Cmd::checksum(RES_VA + 16, VA2, size)], 0),
        "EXEC",
    );
    assert_eq!(ok(dev.wait(last, WAIT_NS), "WAIT").0, 0);
    assert_eq!(res.read_u64(16), fnv1a64(&filled(size as usize, 3)));
}

#[test]
fn unbound_addresses_fault_with_their_address() {
    let dev = open();
    let size = 2 * PAGE;
    let h = create_bound(&dev, size, 0, VA);
    let m = map(&dev, h, size);
    let res = results(&dev);
    let cases = [
        (Cmd::fill(HOLE, 16, 1), HOLE, "FILL of an unbound range"),
        (
            Cmd::fill(HOLE + 12, 8, 1),
            HOLE + 12,
            "FILL at an unaligned unbound address",
        ),
        (
            Cmd::fill(VA + PAGE, 2 * PAGE, 1),
            VA + size,
            "FILL running off the end of a binding",
        ),
        (
            Cmd::copy(VA, HOLE + 8, 8),
            HOLE + 8,
            "COPY from an unbound source",
        ),
        (
            Cmd::copy(HOLE, VA, 8),
            HOLE,
            "COPY to an unbound destination",
        ),
        (
            Cmd::checksum(RES_VA, HOLE, 8),
            HOLE,
            "CHECKSUM of an unbound range",
        ),
        (
            Cmd::checksum(HOLE, VA, 8),
            HOLE,
            "CHECKSUM to an unbound destination",
        ),
        (
            Cmd::atomic_add(HOLE + 8, 1, 1),
            HOLE + 8,
            "ATOMIC_ADD at an unbound address",
        ),
        (Cmd::fill(0, 4, 1), 0, "FILL at GPU address 0"),
        (
            Cmd::fill(SOFTGPU_VA_END - 8, 8, 1),
            SOFTGPU_VA_END - 8,
            "FILL at the top of the VA space",
        ),
    ];
    for (cmd, addr, what) in cases {
        run_fault_at(&dev, &[cmd], addr, what);
    }
    assert!(
        m.as_slice()[..PAGE as usize].iter().all(|&b| b == 0),
        "the faulting jobs wrote the first page"
    );
    assert_eq!(res.read_u64(0), 0, "the faulting CHECKSUM stored a result");
    // A fault stops the job: earlier commands ran, later ones did not.
    run_fault_at(
        &dev,
        &[
            Cmd::fill(VA, 4, 0x11),
            Cmd::fill(HOLE, 4, 0x22),
            Cmd::fill(VA + 8, 4, 0x33),
        ],
        HOLE,
        "fill, faulting fill, fill",
    );
    assert_eq!(m.read_u32(0), 0x11, "the command before the fault ran");
    assert_eq!(m.read_u32(8), 0, "the command after the fault did not run");
    // The engine goes on.
    run_ok(
        &dev,
        &[Cmd::fill(VA + 8, 4, 0x44)],
        "a job after the faults",
    );
    assert_eq!(m.read_u32(8), 0x44);
}

#[test]
fn writes_through_a_read_only_binding_fault() {
    let dev = open();
    let size = 2 * PAGE;
    let h = create(&dev, size, 0);
    ok(dev.bind(h, VA, 0, size, 0), "VM_BIND read-write");
    let ro = VA2;
    ok(
        dev.bind(h, ro, 0, size, SOFTGPU_BIND_READONLY),
        "VM_BIND read-only",
    );
    let mut m = map(&dev, h, size);
    let res = results(&dev);
    let data = pattern(size as usize, 3);
    m.as_mut_slice().copy_from_slice(&data);
    let cases = [
        (Cmd::fill(ro, 16, 1), ro, "FILL"),
        (Cmd::atomic_add(ro + 8, 1, 1), ro + 8, "ATOMIC_ADD"),
        (Cmd::copy(ro + PAGE, VA, 8), ro + PAGE, "COPY to it"),
        (Cmd::checksum(ro, VA, 8), ro, "CHECKSUM to it"),
    ];
    for (cmd, addr, what) in cases {
        run_fault_at(
            &dev,
            &[cmd],
            addr,
            &format!("{what} through a read-only binding"),
        );
    }
    assert_bytes(m.as_slice(), &data, "BO after the refused writes");
    // Reading through it is fine.
    run_ok(
        &dev,
        &[
            Cmd::copy(VA + PAGE, ro, 64),
            Cmd::checksum(RES_VA, ro, PAGE),
        ],
        "COPY and CHECKSUM from a read-only binding",
    );
    let mut want = data.clone();
    want.copy_within(0..64, PAGE as usize);
    assert_bytes(
        m.as_slice(),
        &want,
        "BO after the COPY from the read-only binding",
    );
    assert_eq!(res.read_u64(0), fnv1a64(&want[..PAGE as usize]));
}

#[test]
fn bo_offsets_and_aliased_bindings() {
    let dev = open();
    let size = 4 * PAGE;
    let h = create(&dev, size, 0);
    ok(dev.bind(h, VA, 2 * PAGE, PAGE, 0), "VM_BIND of page 2");
    ok(dev.bind(h, VA2, 0, size, 0), "VM_BIND of the whole BO");
    assert_eq!(ok(dev.info(h), "GEM_INFO").bindings, 2);
    let m = map(&dev, h, size);
    let res = results(&dev);
    run_ok(
        &dev,
        &[
            Cmd::fill(VA, PAGE, 0x5a5a_5a5a),
            Cmd::checksum(RES_VA, VA2 + 2 * PAGE, PAGE),
            Cmd::checksum(RES_VA + 8, VA2, 2 * PAGE),
        ],
        "FILL through one binding, CHECKSUM through the other",
    );
    let mut want = vec![0u8; size as usize];
    want[2 * PAGE as usize..3 * PAGE as usize].copy_from_slice(&filled(PAGE as usize, 0x5a5a_5a5a));
    assert_bytes(
        m.as_slice(),
        &want,
        "BO after FILL through the page-2 binding",
    );
    assert_eq!(
        res.read_u64(0),
        fnv1a64(&want[2 * PAGE as usize..3 * PAGE as usize])
    );
    assert_eq!(res.read_u64(8), fnv1a64(&want[..2 * PAGE as usize]));
    assert_unbound(&dev, VA + PAGE, "after the one-page binding");
}

/// gemfs BOs: pages enter the GPU page table when the GPU touches them
/// and leave it on unbind.
#[test]
fn resident_pages_follow_gpu_touches() {
    let dev = open();
    let n = 8;
    let h = create_bound(&dev, n * PAGE, 0, VA);
    let info = ok(dev.info(h), "GEM_INFO");
    assert_eq!(info.resident_pages, 0, "after bind: {info:?}");
    run_ok(
        &dev,
        &[probe_write(VA), probe_write(VA + 5 * PAGE + 8)],
        "writes to pages 0 and 5",
    );
    let info = ok(dev.info(h), "GEM_INFO");
    // Exactly 2 with small folios; a fault may map a whole large folio.
    assert!(
        (2..=n).contains(&info.resident_pages),
        "after touching 2 pages: {info:?}"
    );
    run_ok(&dev, &[Cmd::fill(VA, n * PAGE, 9)], "FILL of the BO");
    let info = ok(dev.info(h), "GEM_INFO");
    assert_eq!(info.resident_pages, n, "after touching all: {info:?}");
    ok(dev.unbind(VA, n * PAGE), "VM_UNBIND");
    let info = ok(dev.info(h), "GEM_INFO");
    assert_eq!(info.resident_pages, 0, "after unbind: {info:?}");
}

/// A job's buffer object pages are made resident when it is submitted, not
/// when it runs: it runs in its fence's signalling critical section, where
/// taking a folio from gemfs (which may allocate with reclaim) is not
/// allowed. Right after EXEC, with the job queued behind a BUSY one, every
/// page of its ranges is resident; its access to an unbound address, which
/// nothing could make resident, fails it there once it runs.
#[test]
fn exec_makes_a_jobs_pages_resident_before_it_runs() {
    let dev = open();
    let n = 16;
    let h = create_bound(&dev, n * PAGE, 0, VA);
    let m = map(&dev, h, n * PAGE);
    assert_eq!(ok(dev.info(h), "GEM_INFO").resident_pages, 0, "after bind");
    let start = Instant::now();
    let (busy, _) = ok(dev.exec(&busy_job(), 0), "EXEC of BUSY");
    let (seqno, _) = ok(
        dev.exec(
            &[
                Cmd::fill(VA + 2 * PAGE, 4 * PAGE, 0x5a5a_5a5a),
                Cmd::atomic_add(VA + 9 * PAGE, 1, 3),
                Cmd::fill(HOLE, 4, 1),
                Cmd::fill(VA + 12 * PAGE, 4, 2),
            ],
            0,
        ),
        "EXEC of FILL, ATOMIC_ADD, FILL of an unbound address, FILL",
    );
    let info = ok(dev.info(h), "GEM_INFO");
    let still_busy = dev.wait(busy, 0);
    assert_early(start.elapsed(), "GEM_INFO after EXEC");
    expect_errno(still_busy, ETIME, "WAIT for the BUSY job ahead");
    // Pages 2 to 5, 9 and 12 (each in its own small folio; a large folio
    // would make all of its pages resident): before the job ran.
    assert!(
        (6..=n).contains(&info.resident_pages),
        "right after EXEC, with the job queued: {info:?}"
    );
    let (status, fault) = ok(dev.wait(seqno, WAIT_NS), "WAIT");
    assert_eq!(
        (status, fault),
        (-EFAULT, HOLE),
        "the job's FILL of an unbound address"
    );
    let words = |page: u64| m.read_u32((page * PAGE) as usize);
    assert_eq!(
        (2..6).map(words).collect::<Vec<_>>(),
        [0x5a5a_5a5a; 4],
        "the FILL before the fault"
    );
    assert_eq!(
        m.read_u64((9 * PAGE) as usize),
        3,
        "the ATOMIC_ADD before the fault"
    );
    assert_eq!(words(12), 0, "the FILL after the fault ran");
    let after = ok(dev.info(h), "GEM_INFO");
    assert_eq!(
        after.resident_pages, info.resident_pages,
        "the job made pages resident while it ran: {info:?} -> {after:?}"
    );
}

/// A job that keeps the engine busy for `BUSY_MS`.
const BUSY_MS: u64 = 400;
fn busy_job() -> [Cmd; 2] {
    [Cmd::busy(BUSY_MS * 500), Cmd::busy(BUSY_MS * 500)]
}

/// Asserts that `at` (time since submission) is early enough to observe
/// the busy job still running.
#[track_caller]
fn assert_early(at: Duration, what: &str) {
    assert!(
        at < Duration::from_millis(BUSY_MS),
        "{what} came {at:?} after submitting a {BUSY_MS} ms job: too late to see it running"
    );
}

#[test]
fn fence_out_sync_file_signals_when_the_job_is_done() {
    let dev = open();
    let h = create_bound(&dev, PAGE, 0, VA);
    let m = map(&dev, h, PAGE);
    let start = Instant::now();
    let (busy, fence) = ok(
        dev.exec(&busy_job(), SOFTGPU_EXEC_FENCE_OUT),
        "EXEC of BUSY with FENCE_OUT",
    );
    let fence = fence.expect("FENCE_OUT gives a fence fd");
    // A job queued behind it, with its own fence.
    let (next, fence2) = ok(
        dev.exec(&[Cmd::fill(VA, 4, 0x77)], SOFTGPU_EXEC_FENCE_OUT),
        "EXEC of FILL with FENCE_OUT",
    );
    let fence2 = fence2.expect("FENCE_OUT gives a fence fd");
    let early = ok(poll_in(fence.as_fd(), 0), "poll");
    let early2 = ok(poll_in(fence2.as_fd(), 0), "poll");
    assert_early(start.elapsed(), "polling the fences");
    assert!(!early, "the BUSY job's fence is readable while it runs");
    assert!(
        !early2,
        "the fence of the job queued behind BUSY is readable"
    );
    assert!(
        ok(poll_in(fence.as_fd(), 60_000), "poll"),
        "BUSY fence never signalled"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(BUSY_MS),
        "BUSY {BUSY_MS} ms done after {:?}",
        start.elapsed()
    );
    assert!(
        ok(poll_in(fence2.as_fd(), 60_000), "poll"),
        "FILL fence never signalled"
    );
    assert_eq!(ok(dev.wait(busy, 0), "WAIT after the fence").0, 0);
    assert_eq!(ok(dev.wait(next, 0), "WAIT after the fence").0, 0);
    assert_eq!(m.read_u32(0), 0x77);
    // A failing job's fence signals too.
    let (bad, fence3) = ok(
        dev.exec(&[probe_write(HOLE)], SOFTGPU_EXEC_FENCE_OUT),
        "EXEC of a faulting job with FENCE_OUT",
    );
    let fence3 = fence3.expect("FENCE_OUT gives a fence fd");
    assert!(
        ok(poll_in(fence3.as_fd(), 60_000), "poll"),
        "faulting job's fence never signalled"
    );
    assert_eq!(ok(dev.wait(bad, 0), "WAIT").0, -EFAULT);
}

#[test]
fn wait_with_zero_timeout_on_a_busy_job_is_etime() {
    let dev = open();
    let start = Instant::now();
    let (seqno, _) = ok(dev.exec(&busy_job(), 0), "EXEC of BUSY");
    let polled = dev.wait(seqno, 0);
    assert_early(start.elapsed(), "WAIT with timeout 0");
    expect_errno(polled, ETIME, "WAIT with timeout 0 on a running BUSY job");
    match dev.wait(seqno, 1_000_000) {
        Err(e) if e.raw_os_error() == Some(ETIME) => {}
        Ok((0, _)) if start.elapsed() >= Duration::from_millis(BUSY_MS) => {}
        r => panic!(
            "WAIT with a 1 ms timeout on a running BUSY job, {:?} after submission: {r:?}",
            start.elapsed()
        ),
    }
    let (status, _) = ok(dev.wait(seqno, WAIT_NS), "WAIT for the BUSY job");
    assert_eq!(status, 0);
    assert!(
        start.elapsed() >= Duration::from_millis(BUSY_MS),
        "BUSY {BUSY_MS} ms finished after {:?}",
        start.elapsed()
    );
    assert_eq!(
        ok(dev.wait(seqno, 0), "WAIT with timeout 0 on a done job").0,
        0
    );
}

#[test]
fn wait_is_repeatable() {
    let dev = open();
    create_bound(&dev, PAGE, 0, VA);
    let (good, _) = ok(dev.exec(&[probe_write(VA)], 0), "EXEC");
    let (bad, _) = ok(dev.exec(&[probe_write(HOLE + 8)], 0), "EXEC");
    for i in 0..3 {
        assert_eq!(ok(dev.wait(good, WAIT_NS), "WAIT").0, 0, "wait {i}");
        assert_eq!(
            ok(dev.wait(bad, WAIT_NS), "WAIT"),
            (-EFAULT, HOLE + 8),
            "wait {i}"
        );
    }
}

#[test]
fn unbind_makes_queued_jobs_fault() {
    let dev = open();
    let h = create_bound(&dev, PAGE, 0, VA);
    let m = map(&dev, h, PAGE);
    let (seqno, _) = ok(
        dev.exec(&[Cmd::busy(300_000), Cmd::fill(VA, PAGE, 0x99)], 0),
        "EXEC of BUSY then FILL",
    );
    ok(dev.unbind(VA, PAGE), "VM_UNBIND with the job in flight");
    let (status, fault) = ok(dev.wait(seqno, WAIT_NS), "WAIT");
    assert_eq!(
        (status, fault),
        (-EFAULT, VA),
        "a job touching a range unbound after submission faults"
    );
    assert!(
        m.as_slice().iter().all(|&b| b == 0),
        "the unbound BO was written"
    );
}

/// Either outcome is allowed, but the kernel must handle ranges that leave
/// the VA space or wrap around cleanly: -EINVAL at submission or a job
/// failing with -EFAULT.
#[test]
fn ranges_leaving_the_va_space_fail_cleanly() {
    let dev = open();
    let top = SOFTGPU_VA_END - PAGE;
    create_bound(&dev, PAGE, 0, top);
    results(&dev);
    let wrap: u64 = !7;
    let cases = [
        (
            Cmd::fill(SOFTGPU_VA_END - 8, 16, 1),
            "FILL across the end of the VA space",
        ),
        (
            Cmd::fill(SOFTGPU_VA_END, 4, 1),
            "FILL at the end of the VA space",
        ),
        (Cmd::fill(wrap, 8, 1), "FILL at the top of u64"),
        (Cmd::fill(top, !3, 1), "FILL whose size wraps"),
        (Cmd::copy(top, wrap, 16), "COPY from a wrapping source"),
        (Cmd::copy(wrap, top, 16), "COPY to a wrapping destination"),
        (
            Cmd::checksum(RES_VA, top, u64::MAX),
            "CHECKSUM whose size wraps",
        ),
        (Cmd::atomic_add(wrap, 1, 1), "ATOMIC_ADD at the top of u64"),
    ];
    for (cmd, what) in cases {
        match dev.exec(&[cmd], 0) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(EINVAL), "{what}: EXEC failed: {e}"),
            Ok((seqno, _)) => {
                let (status, fault) = ok(dev.wait(seqno, WAIT_NS), what);
                assert_eq!(status, -EFAULT, "{what}: status (fault_addr {fault:#x})");
                assert!(fault >= top, "{what}: fault_addr {fault:#x}");
            }
        }
    }
    assert_writable(&dev, top, "the top page, after the failures");
}

/// A binding keeps its BO alive (softgpu_drm.h, drm_softgpu_vm_bind):
/// after GEM_CLOSE of its only handle, jobs through the binding still
/// reach the BO's memory, both ways, and VM_UNBIND then removes the
/// binding as usual.
#[test]
fn closing_a_bound_bo_is_safe() {
    for flags in KINDS {
        let size = 2 * PAGE;
        let dev = open();
        let h = create_bound(&dev, size, flags, VA);
        // The CPU mapping keeps the backing file, not the GEM object.
        let mut m = map(&dev, h, size);
        run_ok(&dev, &[Cmd::fill(VA, size, 1)], "FILL");
        ok(dev.close_bo(h), "GEM_CLOSE of a bound BO");
        expect_errno(dev.info(h), libc::ENOENT, "GEM_INFO of the closed handle");
        run_ok(&dev, &[Cmd::fill(VA, size, 2)], "FILL after GEM_CLOSE");
        assert!(
            m.as_slice() == &filled(size as usize, 2)[..],
            "flags {flags:#x}: the GPU's FILL after GEM_CLOSE missed the BO's memory"
        );
        let data = pattern(size as usize, 14);
        m.as_mut_slice().copy_from_slice(&data);
        assert_eq!(
            gpu_checksum(&dev, VA, size, RES_VA),
            fnv1a64(&data),
            "flags {flags:#x}: GPU checksum of the CPU's writes after GEM_CLOSE"
        );
        ok(dev.unbind(VA, size), "VM_UNBIND of the closed BO's binding");
        assert_unbound(&dev, VA, "after unbinding the closed BO");
    }
}
