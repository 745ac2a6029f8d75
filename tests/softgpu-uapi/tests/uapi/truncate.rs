//! Hole punching of a gemfs BO's pages while the GPU holds and uses them.
//!
//! A BO's CPU mapping is its gemfs file, so `madvise(MADV_REMOVE)` on the
//! mapping punches a hole in the file (`fallocate(FALLOC_FL_PUNCH_HOLE)`).
//! gemfs asks softgpu to drop the folios of the hole from the GPU page
//! table first (Documentation/filesystems/gemfs.rst, "Truncation, hole
//! punching and memory failure"): afterwards the GPU and the CPU see the
//! same memory, zeros in the hole, and what the GPU writes there reaches the
//! CPU. Were the GPU to keep the punched folios, it would go on reading the
//! old data and writing where the CPU never looks.

use softgpu::*;

use crate::common::*;

const VA: u64 = 0x6000_0000;
const RES_VA: u64 = 0x6800_0000;
const PAGES: u64 = 16;
/// The hole: pages 4 to 9.
const HOLE: std::ops::Range<u64> = 4..10;

fn remove(m: &Mapping, pages: std::ops::Range<u64>) {
    let off = (pages.start * PAGE) as usize;
    let len = ((pages.end - pages.start) * PAGE) as usize;
    // SAFETY: advice on a page-aligned range of a mapping we own.
    let r = unsafe { libc::madvise((m.addr() + off) as *mut _, len, libc::MADV_REMOVE) };
    assert_eq!(
        r,
        0,
        "madvise(MADV_REMOVE) of pages {pages:?}: {}",
        std::io::Error::last_os_error()
    );
}

/// Asserts that the CPU sees byte `inside` in the hole and `outside` in the
/// rest of the BO.
#[track_caller]
fn assert_cpu_sees(m: &Mapping, inside: u8, outside: u8, what: &str) {
    for (i, page) in m.as_slice().chunks(PAGE as usize).enumerate() {
        let want = if HOLE.contains(&(i as u64)) {
            inside
        } else {
            outside
        };
        if let Some(at) = page.iter().position(|&b| b != want) {
            panic!(
                "{what}: CPU reads {:#04x} at page {i} offset {at}, expected {want:#04x}",
                page[at]
            );
        }
    }
}

#[test]
fn madv_remove_of_gpu_held_pages_reaches_the_gpu() {
    let dev = open();
    let size = PAGES * PAGE;
    let bo = create_bound(&dev, size, 0, VA);
    let m = map(&dev, bo, size);
    // Every page resident for the GPU: held by the device.
    run_ok(&dev, &[Cmd::fill(VA, size, 0x1111_1111)], "FILL of the BO");
    assert_cpu_sees(&m, 0x11, 0x11, "after the GPU's fill");
    let before = ok(dev.info(bo), "GEM_INFO").released;

    // A job that writes into the hole after the CPU punched it: the punch
    // happens while the job is queued (busy first), after EXEC made the
    // hole's pages resident for it. The punch takes them from the GPU all
    // the same, and the job, which may not get new folios while it runs
    // (that would allocate in its fence's signalling section), fails at the
    // first address of the hole, having written nothing there: the CPU sees
    // the zeros of the hole, not the job's writes to the old folios. If
    // this process was descheduled for the whole busy time (a loaded host),
    // the punch came too late: try again.
    let hole_va = VA + HOLE.start * PAGE;
    let hole_len = (HOLE.end - HOLE.start) * PAGE;
    let mut punched_while_busy = false;
    for _ in 0..5 {
        let (seqno, _) = ok(
            dev.exec(
                &[
                    Cmd::busy(300_000),
                    Cmd::fill(hole_va, hole_len, 0x2222_2222),
                ],
                0,
            ),
            "EXEC of busy + FILL of the hole",
        );
        remove(&m, HOLE);
        // Polls: -ETIME while the job still runs.
        punched_while_busy = dev.wait(seqno, 0).is_err();
        let (status, fault) = ok(dev.wait(seqno, WAIT_NS), "WAIT for busy + FILL");
        if punched_while_busy {
            assert_eq!(
                (status, fault),
                (-libc::EFAULT, hole_va),
                "busy + FILL of a hole punched while the job was queued"
            );
            break;
        }
        run_ok(&dev, &[Cmd::fill(VA, size, 0x1111_1111)], "FILL of the BO");
    }
    assert!(
        punched_while_busy,
        "five times, the job was over before madvise returned"
    );
    let released = ok(dev.info(bo), "GEM_INFO").released;
    assert!(
        released >= before + HOLE.end - HOLE.start,
        "the punch released {} folios from the GPU, expected at least {}",
        released - before,
        HOLE.end - HOLE.start
    );
    assert_cpu_sees(
        &m,
        0x00,
        0x11,
        "after MADV_REMOVE under a queued FILL of the hole",
    );
    // The next job gets the hole's new folios at EXEC: its writes reach
    // the CPU.
    run_ok(
        &dev,
        &[Cmd::fill(hole_va, hole_len, 0x2222_2222)],
        "FILL of the hole",
    );
    assert_cpu_sees(&m, 0x22, 0x11, "after the GPU's fill of the punched hole");

    // Punched again while the GPU holds the hole's new folios, idle: both
    // sides now read zeros there, and the rest is untouched.
    remove(&m, HOLE);
    assert_cpu_sees(&m, 0x00, 0x11, "after the second MADV_REMOVE");
    let zeros = fnv1a64(&vec![0u8; hole_len as usize]);
    assert_eq!(
        gpu_checksum(&dev, hole_va, hole_len, RES_VA),
        zeros,
        "the GPU's checksum of the hole is not that of zeros: it still sees the punched folios"
    );
    let rest = fnv1a64(&vec![0x11u8; (HOLE.start * PAGE) as usize]);
    assert_eq!(
        gpu_checksum(&dev, VA, HOLE.start * PAGE, RES_VA),
        rest,
        "the GPU's checksum of the pages before the hole"
    );
    drop(m);
    ok(dev.unbind(VA, size), "VM_UNBIND");
    ok(dev.close_bo(bo), "GEM_CLOSE");
}
