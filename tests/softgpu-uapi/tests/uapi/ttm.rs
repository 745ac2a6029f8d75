//! Discrete mode's objects: TTM buffer objects in VRAM (the guest's
//! `ivshmem-plain` BAR, `VRAM=`) or system memory, created with placement
//! flags, moved by GEM_MOVE or evicted by TTM when VRAM is full, and mapped
//! for the CPU through TTM's fault handler: each fault maps the page where
//! the object is at that moment (a BAR page or a system page), and every
//! move unmaps first; and the buddy allocator under TTM's VRAM manager.
//! Every test here needs the VRAM device: a guest without one skips them
//! (with `VRAM=0` placement flags are `ENODEV`: `novram`).

use softgpu::*;

use crate::common::*;
use crate::vram::{allocator_state, debugfs_kv, debugfs_vram, needs_vram, vram_devices};

use std::os::fd::AsRawFd;

use libc::{E2BIG, EINVAL, ENOENT, ENOMEM, EOPNOTSUPP, ETIME};

/// Byte `i` of contents `seed`.
fn pattern(seed: u64, i: usize) -> u8 {
    ((i as u64)
        .wrapping_mul(0x9e37_79b9)
        .wrapping_add(seed.wrapping_mul(0x0100_0193))
        >> 7) as u8
}

fn fill(m: &mut Mapping, seed: u64) {
    for (i, b) in m.as_mut_slice().iter_mut().enumerate() {
        *b = pattern(seed, i);
    }
}

/// The first byte of `m` that is not contents `seed`, if any.
fn first_wrong(m: &Mapping, seed: u64) -> Option<(usize, u8, u8)> {
    m.as_slice()
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern(seed, i))
        .map(|(i, &b)| (i, b, pattern(seed, i)))
}

/// Where the tests below bind objects in the GPU VM.
const VA: u64 = 0x1000_0000;
const SRC_VA: u64 = 0x4000_0000;
const RES_VA: u64 = 0x7000_0000;

/// What the GPU computes over contents (`CHECKSUM`), computed by the CPU.
fn fnv(m: &Mapping) -> u64 {
    fnv1a64(m.as_slice())
}

/// A one-page gemfs object bound at `RES_VA`, where jobs store checksums,
/// and its mapping.
fn result_bo(dev: &Device) -> (u32, Mapping) {
    let h = create_bound(dev, PAGE, 0, RES_VA);
    let m = map(dev, h, PAGE);
    (h, m)
}

/// The checksum the GPU computes of `[va, va + size)`.
#[track_caller]
fn gpu_checksum(dev: &Device, res: &Mapping, va: u64, size: u64, what: &str) -> u64 {
    run_ok(dev, &[Cmd::checksum(RES_VA, va, size)], what);
    res.read_u64(0)
}

/// Lines of debugfs `objects` (one per object, after the header).
pub(crate) fn object_count(dev: &Device) -> usize {
    let path = debugfs_path(dev, "objects");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines().count() - 1
}

/// Whether the object is in VRAM now, by GEM_INFO (and that it is a TTM
/// object).
fn in_vram(dev: &Device, h: u32) -> bool {
    let info = ok(dev.info(h), "GEM_INFO of a TTM object");
    assert_ne!(
        info.flags & SOFTGPU_BO_INFO_TTM,
        0,
        "a TTM object: {info:?}"
    );
    info.flags & SOFTGPU_BO_INFO_VRAM != 0
}

/// VRAM in use, from debugfs `vram`.
fn vram_used(dev: &Device) -> u64 {
    let (text, kv) = debugfs_kv(dev, "vram");
    *kv.get("used")
        .unwrap_or_else(|| panic!("no used: in debugfs vram: {text:?}"))
}

/// VRAM in use once it is `want`, or after ten seconds: a move leaves the
/// object's old VRAM to a TTM ghost object, which TTM frees from a work
/// item once the move's copy job is done, a moment after the object is
/// usable again.
pub(crate) fn vram_used_is(dev: &Device, want: u64) -> u64 {
    let start = std::time::Instant::now();
    loop {
        let used = vram_used(dev);
        if used == want || start.elapsed() > std::time::Duration::from_secs(10) {
            return used;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The VRAM is managed by a buddy allocator over the whole BAR in page
/// chunks, all free while nothing is placed there: debugfs `vram` shows
/// its state, whose free blocks add up to the BAR's size, one block per
/// bit set in the number of pages (the allocator's roots: nothing is
/// split). After an unbind and a bind the new allocator is the same.
#[test]
fn ttm_vram_allocator_covers_the_bar() {
    let want = needs_vram();
    let gpu = open();
    let check = |when: &str| {
        let (text, _) = debugfs_vram(&gpu);
        let (first, orders) = allocator_state(&text);
        let mib = want >> 20;
        let head = format!(
            "chunk_size: {}KiB, total: {mib}MiB, free: {mib}MiB,",
            PAGE >> 10
        );
        assert!(first.starts_with(&head), "{when}: {first:?}, not {head:?}");
        let pages = want / PAGE;
        let top = 63 - pages.leading_zeros();
        assert_eq!(
            orders.iter().map(|&(o, _)| o).collect::<Vec<_>>(),
            (0..=top).rev().collect::<Vec<_>>(),
            "{when}: orders in {text:?}"
        );
        let free: u64 = orders.iter().map(|&(o, b)| (PAGE << o) * b).sum();
        assert_eq!(free, want, "{when}: free blocks in {text:?}");
        let blocks: u64 = orders.iter().map(|&(_, b)| b).sum();
        assert_eq!(blocks, u64::from(pages.count_ones()), "{when}: {text:?}");
    };
    check("after boot");
    let devs = vram_devices();
    assert_eq!(devs.len(), 1, "1af4:1110 devices: {devs:?}");
    let addr = devs[0].file_name().unwrap().to_str().unwrap().to_string();
    let drv = "/sys/bus/pci/drivers/softgpu";
    std::fs::write(format!("{drv}/unbind"), &addr)
        .unwrap_or_else(|e| panic!("unbinding {addr}: {e}"));
    assert_eq!(debugfs_vram(&gpu).0, "none\n", "debugfs vram after unbind");
    std::fs::write(format!("{drv}/bind"), &addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    check("after unbind and bind");
}

/// Placement flags at GEM_CREATE, GEM_INFO's placement, and the errnos of
/// bad input, each leaving everything as it was.
#[test]
fn ttm_create_info_and_bad_input() {
    let vram = needs_vram();
    let dev = open();
    let vram_before = vram_used_is(&dev, 0);
    let cases = [
        (SOFTGPU_BO_VRAM, SOFTGPU_BO_INFO_TTM | SOFTGPU_BO_INFO_VRAM),
        (SOFTGPU_BO_SYSTEM, SOFTGPU_BO_INFO_TTM),
        (
            SOFTGPU_BO_VRAM | SOFTGPU_BO_SYSTEM,
            SOFTGPU_BO_INFO_TTM | SOFTGPU_BO_INFO_VRAM,
        ),
        (
            SOFTGPU_BO_VRAM | SOFTGPU_BO_TTM_POOL,
            SOFTGPU_BO_INFO_TTM | SOFTGPU_BO_INFO_VRAM | SOFTGPU_BO_INFO_TTM_POOL,
        ),
        (
            SOFTGPU_BO_SYSTEM | SOFTGPU_BO_TTM_POOL,
            SOFTGPU_BO_INFO_TTM | SOFTGPU_BO_INFO_TTM_POOL,
        ),
    ];
    let mut in_vram_bytes = 0;
    let mut handles = Vec::new();
    for (flags, want) in cases {
        let h = create(&dev, 2 * MIB, flags);
        let info = ok(dev.info(h), "GEM_INFO");
        assert_eq!(
            info.flags, want,
            "GEM_INFO flags of a TTM object made with {flags:#x}"
        );
        assert_eq!(info.size, 2 * MIB);
        let pages = if want & SOFTGPU_BO_INFO_VRAM != 0 {
            in_vram_bytes += 2 * MIB;
            2 * MIB / PAGE
        } else {
            0
        };
        assert_eq!(
            info.resident_pages, pages,
            "resident pages of a new object ({flags:#x})"
        );
        handles.push(h);
    }
    assert_eq!(
        vram_used_is(&dev, vram_before + in_vram_bytes),
        vram_before + in_vram_bytes,
        "VRAM used"
    );

    // Bad input: errnos, nothing made, nothing moved.
    let objects = object_count(&dev);
    expect_errno(
        dev.create_bo(vram + MIB, SOFTGPU_BO_VRAM),
        E2BIG,
        "a VRAM object larger than the VRAM",
    );
    for flags in [
        SOFTGPU_BO_TTM_POOL,
        SOFTGPU_BO_PINNED | SOFTGPU_BO_VRAM,
        0x10 | SOFTGPU_BO_VRAM,
    ] {
        expect_errno(
            dev.create_bo(MIB, flags),
            EINVAL,
            &format!("GEM_CREATE with flags {flags:#x}"),
        );
    }
    assert_eq!(
        object_count(&dev),
        objects,
        "objects made by failed GEM_CREATEs"
    );
    let h = handles[0];
    for placement in [0, SOFTGPU_BO_TTM_POOL, 0x10, SOFTGPU_BO_VRAM | 0x100] {
        expect_errno(
            dev.move_bo(h, placement),
            EINVAL,
            &format!("GEM_MOVE to {placement:#x}"),
        );
        assert!(in_vram(&dev, h), "the object moved on a failed GEM_MOVE");
    }
    expect_errno(
        dev.move_bo(0xdead, SOFTGPU_BO_SYSTEM),
        ENOENT,
        "GEM_MOVE of no object",
    );
    let plain = create(&dev, PAGE, 0);
    expect_errno(
        dev.move_bo(plain, SOFTGPU_BO_VRAM),
        EINVAL,
        "GEM_MOVE of a gemfs BO",
    );
    expect_errno(
        dev.madvise(h, SOFTGPU_MADV_DONTNEED),
        EOPNOTSUPP,
        "GEM_MADVISE of a TTM object",
    );
    assert!(in_vram(&dev, h));
    // A private (copy-on-write) mapping of a TTM object: refused.
    let offset = ok(dev.mmap_offset(h), "GEM_MMAP_OFFSET");
    // SAFETY: a new mapping chosen by the kernel (refused, it turns out).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            dev.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    assert_eq!(p, libc::MAP_FAILED, "a private mapping of a TTM object");
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(EINVAL));

    for h in handles {
        ok(dev.close_bo(h), "GEM_CLOSE");
    }
    assert_eq!(
        vram_used_is(&dev, vram_before),
        vram_before,
        "VRAM used after closing"
    );
}

/// One mapping while the object moves VRAM -> system -> VRAM, and the CPU
/// writes through it between moves: every byte right every time, and
/// GEM_INFO follows. (The mapping is `VM_PFNMAP`: `/proc/self/pagemap`
/// does not show its page frames.)
#[test]
fn ttm_mapping_follows_moves() {
    needs_vram();
    let dev = open();
    let size = 2 * MIB;
    let h = create(&dev, size, SOFTGPU_BO_VRAM);
    let mut m = ok(dev.mmap_bo(h, size as usize), "mmap of a TTM object");
    assert!(
        m.as_slice().iter().all(|&b| b == 0),
        "a new VRAM object reads zeroes"
    );
    fill(&mut m, 0);
    for round in 0..6u64 {
        ok(
            dev.move_bo(h, SOFTGPU_BO_SYSTEM),
            "GEM_MOVE to system memory",
        );
        assert!(
            !in_vram(&dev, h),
            "round {round}: in VRAM after a move to system"
        );
        assert_eq!(
            first_wrong(&m, 2 * round),
            None,
            "round {round}: in system memory"
        );
        let info = ok(dev.info(h), "GEM_INFO");
        assert_eq!(
            info.resident_pages,
            size / PAGE,
            "round {round}: pages taken in system memory"
        );
        fill(&mut m, 2 * round + 1);
        ok(dev.move_bo(h, SOFTGPU_BO_VRAM), "GEM_MOVE to VRAM");
        assert!(
            in_vram(&dev, h),
            "round {round}: not in VRAM after a move to VRAM"
        );
        assert_eq!(
            first_wrong(&m, 2 * round + 1),
            None,
            "round {round}: back in VRAM"
        );
        fill(&mut m, 2 * round + 2);
        // A move to where it is changes nothing.
        ok(dev.move_bo(h, SOFTGPU_BO_VRAM), "GEM_MOVE to VRAM again");
        assert!(in_vram(&dev, h));
        assert_eq!(
            first_wrong(&m, 2 * round + 2),
            None,
            "round {round}: after a no-op move"
        );
    }
    drop(m);
    ok(dev.close_bo(h), "GEM_CLOSE");
}

/// After an object leaves VRAM, what another object puts where it was is
/// never seen through the first object's mapping: A moves to system
/// memory, B takes the whole VRAM (A's old place included) and writes a
/// marker into every page of it; A's mapping shows A's contents.
#[test]
fn ttm_old_vram_is_not_visible_after_a_move() {
    let vram = needs_vram();
    let dev = open();
    assert_eq!(vram_used_is(&dev, 0), 0, "VRAM in use before the test");
    let size = MIB;
    let a = create(&dev, size, SOFTGPU_BO_VRAM);
    let mut ma = ok(dev.mmap_bo(a, size as usize), "mmap of A");
    fill(&mut ma, 100);
    ok(
        dev.move_bo(a, SOFTGPU_BO_SYSTEM),
        "GEM_MOVE of A to system memory",
    );
    assert_eq!(vram_used_is(&dev, 0), 0);
    let b = create(&dev, vram, SOFTGPU_BO_VRAM);
    assert!(in_vram(&dev, b));
    assert_eq!(vram_used_is(&dev, vram), vram, "B takes the whole VRAM");
    let mut mb = ok(dev.mmap_bo(b, vram as usize), "mmap of B");
    let marker = |p: usize| 0xb0b0_0000_0000_0000u64 | p as u64;
    for p in 0..(vram / PAGE) as usize {
        mb.write_u64(p * PAGE as usize, marker(p));
    }
    assert_eq!(
        first_wrong(&ma, 100),
        None,
        "A's mapping after B wrote all of VRAM"
    );
    assert!(!in_vram(&dev, a));
    for p in 0..(vram / PAGE) as usize {
        assert_eq!(mb.read_u64(p * PAGE as usize), marker(p), "B's page {p}");
    }
    drop((ma, mb));
    ok(dev.close_bo(a), "GEM_CLOSE");
    ok(dev.close_bo(b), "GEM_CLOSE");
    assert_eq!(vram_used_is(&dev, 0), 0);
}

/// Objects totalling twice the VRAM, all made in VRAM: TTM evicts the least
/// recently used to system memory to make room for each, so half of them
/// end up in VRAM and half in system memory, and every object keeps its
/// contents, read back through its mapping wherever it is; the pool
/// baseline the same.
#[test]
fn ttm_vram_overcommit_evicts_to_system() {
    let vram = needs_vram();
    for pool in [0, SOFTGPU_BO_TTM_POOL] {
        let dev = open();
        let used = vram_used_is(&dev, 0);
        assert_eq!(used, 0, "VRAM in use before the test");
        let size = 32 * MIB;
        let n = (2 * vram / size) as usize;
        let mut objs = Vec::new();
        for i in 0..n {
            let h = create(&dev, size, SOFTGPU_BO_VRAM | pool);
            let mut m = ok(dev.mmap_bo(h, size as usize), "mmap");
            // A tag at the start of each page: object and page.
            for p in 0..(size / PAGE) as usize {
                m.write_u64(p * PAGE as usize, (i as u64) << 32 | p as u64);
            }
            objs.push((h, m));
        }
        assert_eq!(
            vram_used_is(&dev, vram),
            vram,
            "VRAM used with twice its size in objects"
        );
        let placed: Vec<bool> = objs.iter().map(|(h, _)| in_vram(&dev, *h)).collect();
        let want: Vec<bool> = (0..n).map(|i| i >= n / 2).collect();
        assert_eq!(
            placed, want,
            "which objects are in VRAM (pool flag {pool:#x})"
        );
        for (i, (_, m)) in objs.iter().enumerate() {
            for p in 0..(size / PAGE) as usize {
                let tag = m.read_u64(p * PAGE as usize);
                assert_eq!(
                    tag,
                    (i as u64) << 32 | p as u64,
                    "object {i} page {p} (pool {pool:#x})"
                );
            }
        }
        // Close all: VRAM is free again.
        for (h, m) in objs {
            drop(m);
            ok(dev.close_bo(h), "GEM_CLOSE");
        }
        assert_eq!(
            vram_used_is(&dev, 0),
            0,
            "VRAM used after closing every object"
        );
    }
}

/// GPU jobs over a TTM object wherever it is: in VRAM (through the BAR), in
/// system memory (gemfs folios, or the pool's pages in baseline mode). The
/// GPU reads what the CPU wrote through the object's mapping, and the CPU
/// reads what a GPU fill and a GPU copy wrote; GEM_INFO counts the pages
/// EXEC mapped, and nothing moves the object.
#[test]
fn ttm_gpu_jobs_reach_the_object_where_it_is() {
    needs_vram();
    let dev = open();
    let (_r, res) = result_bo(&dev);
    let size = MIB;
    let src = create_bound(&dev, size, 0, SRC_VA);
    let mut msrc = map(&dev, src, size);
    fill(&mut msrc, 77);
    for flags in [
        SOFTGPU_BO_VRAM,
        SOFTGPU_BO_SYSTEM,
        SOFTGPU_BO_VRAM | SOFTGPU_BO_TTM_POOL,
        SOFTGPU_BO_SYSTEM | SOFTGPU_BO_TTM_POOL,
    ] {
        let vram = flags & SOFTGPU_BO_VRAM != 0;
        let h = create_bound(&dev, size, flags, VA);
        let mut m = map(&dev, h, size);
        fill(&mut m, u64::from(flags));
        assert_eq!(
            gpu_checksum(&dev, &res, VA, size, "CHECKSUM of a TTM object"),
            fnv(&m),
            "the GPU's checksum of what the CPU wrote ({flags:#x})"
        );
        run_ok(
            &dev,
            &[Cmd::fill(VA, size, 0x5a5a_5a5a)],
            "FILL of a TTM object",
        );
        assert!(
            m.as_slice().iter().all(|&b| b == 0x5a),
            "the CPU reads the GPU's fill ({flags:#x})"
        );
        run_ok(
            &dev,
            &[Cmd::copy(VA, SRC_VA, size)],
            "COPY into a TTM object",
        );
        assert_eq!(
            first_wrong(&m, 77),
            None,
            "the CPU reads the GPU's copy ({flags:#x})"
        );
        let info = ok(dev.info(h), "GEM_INFO");
        assert_eq!(in_vram(&dev, h), vram, "the object moved ({flags:#x})");
        assert!(
            info.gpu_faults >= size / PAGE,
            "EXEC mapped the pages of the object: {info:?}"
        );
        assert_eq!(info.bindings, 1);
        ok(dev.unbind(VA, size), "VM_UNBIND");
        drop(m);
        ok(dev.close_bo(h), "GEM_CLOSE");
    }
    // Unbound: a job there faults.
    run_fault_at(
        &dev,
        &[Cmd::fill(VA, PAGE, 1)],
        VA,
        "FILL where an object was",
    );
}

/// debugfs `engine`: TTM copy jobs queued and begun, and the pages they
/// copied.
fn engine_copies(dev: &Device) -> (u64, u64, u64) {
    let (text, kv) = debugfs_kv(dev, "engine");
    let get = |k: &str| {
        *kv.get(k)
            .unwrap_or_else(|| panic!("no {k}: in debugfs engine: {text:?}"))
    };
    (get("copies_queued"), get("copies_done"), get("copy_pages"))
}

/// The change in [`engine_copies`] since `before`.
fn copies_since(dev: &Device, before: (u64, u64, u64)) -> (u64, u64, u64) {
    let now = engine_copies(dev);
    (now.0 - before.0, now.1 - before.1, now.2 - before.2)
}

/// TTM's moves are the engine's copy jobs: a new object in VRAM is cleared
/// by one, and each GEM_MOVE between VRAM and system memory copies the
/// object by one (debugfs `engine` counts a job and the object's pages
/// each time), in both memories of the system placement (gemfs, pool).
/// A move does not wait for its copy: with the engine busy with a long
/// job of another file, GEM_MOVE returns with its copy queued, not run;
/// the CPU's next access (a fault, which waits for the move's fence) and a
/// GPU job submitted after the move (queued behind the copy) both see the
/// object's contents.
#[test]
fn ttm_moves_are_engine_copy_jobs() {
    needs_vram();
    let dev = open();
    let (_r, res) = result_bo(&dev);
    let size = MIB;
    let pages = size / PAGE;
    // Another file, for the long job that keeps the engine busy: a job
    // is a user of every object bound in its VM (EXEC adds its fence to
    // them all), so one on this file's VM would make the move wait.
    let busy_dev = open();
    // Moves seen to return while the long job ran, their copy not begun.
    let mut seen_queued = 0;
    for pool in [0, SOFTGPU_BO_TTM_POOL] {
        let before = engine_copies(&dev);
        let h = create_bound(&dev, size, SOFTGPU_BO_VRAM | pool, VA);
        let mut m = map(&dev, h, size);
        assert!(
            m.as_slice().iter().all(|&b| b == 0),
            "a new object in VRAM reads zeroes ({pool:#x})"
        );
        assert_eq!(
            copies_since(&dev, before),
            (1, 1, pages),
            "one clear job for a new object in VRAM ({pool:#x})"
        );
        fill(&mut m, 1);
        for (round, (to, vram)) in [
            (SOFTGPU_BO_SYSTEM, false),
            (SOFTGPU_BO_VRAM, true),
            (SOFTGPU_BO_SYSTEM, false),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = round as u64 + 1;
            let before = engine_copies(&dev);
            // The engine is busy for up to four seconds with a job that
            // does not touch the object: the move's copy waits behind it.
            let busy = [Cmd::busy(1_000_000); 4];
            let (busy_seqno, _) = ok(busy_dev.exec(&busy, 0), "EXEC of a long job");
            ok(dev.move_bo(h, to), "GEM_MOVE");
            let queued = copies_since(&dev, before);
            let still_busy = matches!(busy_dev.wait(busy_seqno, 0), Err(e) if e.raw_os_error() == Some(libc::ETIME));
            assert_eq!(
                queued.0, 1,
                "round {round}: GEM_MOVE queued one copy job ({pool:#x})"
            );
            if still_busy {
                seen_queued += 1;
                // Read before the long job's end: the copy cannot have begun.
                assert_eq!(
                    queued.1, 0,
                    "round {round}: the copy ran before the job queued ahead of it ({pool:#x})"
                );
            }
            assert_eq!(
                in_vram(&dev, h),
                vram,
                "round {round}: placement ({pool:#x})"
            );
            // The GPU reads the moved contents: its job runs after the
            // copy. (Before any CPU access, which would wait for the copy.)
            let contents: Vec<u8> = (0..size as usize).map(|i| pattern(seed, i)).collect();
            let want = fnv1a64(&contents);
            assert_eq!(
                gpu_checksum(&dev, &res, VA, size, "CHECKSUM after a move"),
                want,
                "round {round}: the GPU's view after the move to {to:#x} ({pool:#x})"
            );
            assert_eq!(
                first_wrong(&m, seed),
                None,
                "round {round}: the CPU's view after the move to {to:#x} ({pool:#x})"
            );
            assert_eq!(
                copies_since(&dev, before),
                (1, 1, pages),
                "round {round}: one copy job of the object's pages ({pool:#x})"
            );
            ok(
                busy_dev.wait(busy_seqno, Device::RUN_TIMEOUT_NS),
                "WAIT for the long job",
            );
            fill(&mut m, seed + 1);
        }
        drop(m);
        ok(dev.unbind(VA, size), "VM_UNBIND");
        ok(dev.close_bo(h), "GEM_CLOSE");
    }
    // Six moves, each returning within four seconds of its long job's
    // start: if none did, moves wait for their copies.
    assert!(
        seen_queued > 0,
        "no GEM_MOVE returned while the job ahead of its copy still ran"
    );
}

/// One GPU binding while the object moves VRAM -> system -> VRAM, with GPU
/// jobs and CPU writes between the moves: the GPU always reads the object's
/// current contents and its writes land in them, and the CPU's mapping
/// agrees, every round.
#[test]
fn ttm_gpu_mapping_follows_moves() {
    needs_vram();
    let dev = open();
    let (_r, res) = result_bo(&dev);
    let size = 2 * MIB;
    let h = create_bound(&dev, size, SOFTGPU_BO_VRAM, VA);
    let mut m = map(&dev, h, size);
    for round in 0..4u32 {
        for (to, vram) in [(SOFTGPU_BO_SYSTEM, false), (SOFTGPU_BO_VRAM, true)] {
            let v = 0x1000_0000 * (round + 1) + to;
            run_ok(&dev, &[Cmd::fill(VA, size, v)], "FILL before a move");
            ok(dev.move_bo(h, to), "GEM_MOVE");
            assert_eq!(in_vram(&dev, h), vram, "round {round}: placement");
            assert!(
                m.as_slice()
                    .chunks(4)
                    .all(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) == v),
                "round {round}: the CPU reads the fill from before the move"
            );
            let seed = u64::from(v);
            fill(&mut m, seed);
            assert_eq!(
                gpu_checksum(&dev, &res, VA, size, "CHECKSUM after a move"),
                fnv(&m),
                "round {round}: the GPU reads what the CPU wrote after the move to {to:#x}"
            );
        }
    }
    drop(m);
    ok(dev.close_bo(h), "GEM_CLOSE");
}

/// After an object leaves VRAM, moved or evicted, the GPU never reaches its
/// old VRAM through its binding: A is bound and filled by the GPU, moved
/// (then, second time, evicted by B) to system memory; B takes the whole
/// VRAM and writes a marker everywhere; the GPU's checksum of A is that of
/// A's contents. Eviction is counted.
#[test]
fn ttm_gpu_never_sees_old_vram() {
    let vram = needs_vram();
    let dev = open();
    assert_eq!(vram_used_is(&dev, 0), 0, "VRAM in use before the test");
    let (_r, res) = result_bo(&dev);
    let size = MIB;
    for evict in [false, true] {
        let a = create_bound(&dev, size, SOFTGPU_BO_VRAM | SOFTGPU_BO_SYSTEM, VA);
        assert!(in_vram(&dev, a));
        run_ok(&dev, &[Cmd::fill(VA, size, 0xa0a0_a0a0)], "FILL of A");
        if !evict {
            ok(dev.move_bo(a, SOFTGPU_BO_SYSTEM), "GEM_MOVE of A");
        }
        // VRAM only: TTM evicts A (idle) to make room.
        let b = create(&dev, vram, SOFTGPU_BO_VRAM);
        assert!(!in_vram(&dev, a), "A left VRAM (evict: {evict})");
        let info = ok(dev.info(a), "GEM_INFO of A");
        assert_eq!(info.evictions, u64::from(evict), "A's evictions: {info:?}");
        let mut mb = map(&dev, b, vram);
        for p in 0..(vram / PAGE) as usize {
            mb.write_u64(p * PAGE as usize, 0xb0b0_0000_0000_0000 | p as u64);
        }
        let ma = map(&dev, a, size);
        assert!(ma.as_slice().iter().all(|&x| x == 0xa0));
        assert_eq!(
            gpu_checksum(&dev, &res, VA, size, "CHECKSUM of A"),
            fnv(&ma),
            "the GPU's view of A after B wrote all of VRAM (evict: {evict})"
        );
        drop((ma, mb));
        ok(dev.unbind(VA, size), "VM_UNBIND");
        ok(dev.close_bo(a), "GEM_CLOSE");
        ok(dev.close_bo(b), "GEM_CLOSE");
    }
    assert_eq!(vram_used_is(&dev, 0), 0);
}

/// An object a job is using is not evicted: while a long job runs over A
/// (in VRAM), an object that needs all of VRAM cannot be placed (ENOMEM,
/// TTM's errno for no room: nothing else could be evicted), and A stays
/// where it is; once the job is done the same request evicts A. GEM_MOVE of A meanwhile waits for
/// the job, then moves.
#[test]
fn ttm_busy_objects_are_not_evicted() {
    let vram = needs_vram();
    let dev = open();
    assert_eq!(vram_used_is(&dev, 0), 0, "VRAM in use before the test");
    let size = MIB;
    let a = create_bound(&dev, size, SOFTGPU_BO_VRAM | SOFTGPU_BO_SYSTEM, VA);
    // About 8 s of engine time, then a write to A.
    let mut cmds = vec![Cmd::busy(1_000_000); 8];
    cmds.push(Cmd::fill(VA, size, 0x1234_5678));
    let (seqno, _) = ok(dev.exec(&cmds, 0), "EXEC of a long job over A");
    expect_errno(
        dev.create_bo(vram, SOFTGPU_BO_VRAM),
        ENOMEM,
        "a VRAM-only object of all of VRAM while A is busy",
    );
    expect_errno(
        dev.wait(seqno, 0),
        ETIME,
        "the job is still running (else this test proves nothing)",
    );
    assert!(in_vram(&dev, a), "A was evicted under a running job");
    assert_eq!(ok(dev.info(a), "GEM_INFO").evictions, 0);
    // A move waits for the job: A then holds what the job wrote.
    ok(
        dev.move_bo(a, SOFTGPU_BO_SYSTEM),
        "GEM_MOVE of A under its job",
    );
    let (status, _) = ok(dev.wait(seqno, 0), "WAIT after the move");
    assert_eq!(status, 0, "the job over A");
    let ma = map(&dev, a, size);
    assert!(
        ma.as_slice()
            .chunks(4)
            .all(|w| u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) == 0x1234_5678),
        "A holds the job's fill after the move"
    );
    ok(
        dev.move_bo(a, SOFTGPU_BO_VRAM),
        "GEM_MOVE of A back to VRAM",
    );
    let b = create(&dev, vram, SOFTGPU_BO_VRAM);
    assert!(!in_vram(&dev, a), "idle A evicted for B");
    assert_eq!(ok(dev.info(a), "GEM_INFO").evictions, 1);
    drop(ma);
    ok(dev.close_bo(b), "GEM_CLOSE");
    ok(dev.close_bo(a), "GEM_CLOSE");
}

/// CPU faults on several threads, GPU jobs, moves and evictions, all at
/// once on one object: two threads write and read back a tag in each page
/// of their own quarter through mappings of their own (each access may
/// fault the page in from wherever the object is just then), a third has
/// the GPU fill its own half and checks it through its mapping, a fourth
/// moves the object between VRAM and system memory, a fifth makes room in
/// VRAM for an object of all of it (evicting the object if it is idle, or
/// ENOMEM if a job holds it). Every read sees the last value written.
#[test]
fn ttm_cpu_and_gpu_race_moves_and_evictions() {
    let vram = needs_vram();
    let dev = open();
    assert_eq!(vram_used_is(&dev, 0), 0, "VRAM in use before the test");
    let size = 4 * MIB;
    let quarter = size / 4;
    let h = create_bound(&dev, size, SOFTGPU_BO_VRAM | SOFTGPU_BO_SYSTEM, VA);
    let (moves, evictions_made, no_room) = std::thread::scope(|s| {
        for t in 0..2u64 {
            let dev = &dev;
            s.spawn(move || {
                let mut m = map(dev, h, size);
                let base = (t * quarter) as usize;
                for round in 0..40u64 {
                    for p in 0..(quarter / PAGE) as usize {
                        m.write_u64(base + p * PAGE as usize, t << 48 | round << 24 | p as u64);
                    }
                    for p in 0..(quarter / PAGE) as usize {
                        let got = m.read_u64(base + p * PAGE as usize);
                        assert_eq!(
                            got,
                            t << 48 | round << 24 | p as u64,
                            "CPU thread {t}, round {round}, page {p}"
                        );
                    }
                }
            });
        }
        {
            let dev = &dev;
            s.spawn(move || {
                let m = map(dev, h, size);
                let half = size / 2;
                for round in 0..12u32 {
                    let v = 0x6000_0000 | round;
                    run_ok(
                        dev,
                        &[Cmd::fill(VA + half, half, v)],
                        "FILL of the GPU's half",
                    );
                    for p in 0..(half / PAGE) as usize {
                        let at = (half as usize) + p * PAGE as usize;
                        assert_eq!(m.read_u32(at), v, "GPU half, round {round}, page {p}");
                        assert_eq!(m.read_u32(at + PAGE as usize - 4), v);
                    }
                }
            });
        }
        let mover = s.spawn(|| {
            let mut moves = 0;
            for i in 0..24 {
                let to = if i % 2 == 0 {
                    SOFTGPU_BO_SYSTEM
                } else {
                    SOFTGPU_BO_VRAM
                };
                // EBUSY: an EXEC was making the pages resident. ENOMEM, into
                // VRAM: the evictor's object held all of it, reserved by its
                // creation or its close, so not evictable just then; the
                // object must have stayed in system memory. Again, either way.
                loop {
                    match dev.move_bo(h, to) {
                        Ok(()) => break,
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                        Err(e) if e.raw_os_error() == Some(ENOMEM) && to == SOFTGPU_BO_VRAM => {
                            assert!(!in_vram(&dev, h), "in VRAM after a failed move there");
                        }
                        Err(e) => panic!("GEM_MOVE {i}: {e}"),
                    }
                    std::thread::yield_now();
                }
                moves += 1;
            }
            moves
        });
        let evictor = s.spawn(|| {
            let (mut made, mut no_room) = (0, 0);
            for i in 0..8 {
                match dev.create_bo(vram, SOFTGPU_BO_VRAM) {
                    Ok(b) => {
                        made += 1;
                        ok(dev.close_bo(b), "GEM_CLOSE");
                    }
                    Err(e) if e.raw_os_error() == Some(ENOMEM) => no_room += 1,
                    Err(e) => panic!("GEM_CREATE {i} of all of VRAM: {e}"),
                }
            }
            (made, no_room)
        });
        let moves = mover.join().expect("the mover");
        let (made, no_room) = evictor.join().expect("the evictor");
        (moves, made, no_room)
    });
    assert_eq!(moves, 24);
    assert_eq!(evictions_made + no_room, 8);
    let info = ok(dev.info(h), "GEM_INFO");
    // Each object of all of VRAM that was made evicted ours if it was in
    // VRAM; it never evicted it twice for one.
    assert!(info.evictions <= evictions_made, "{info:?}");
    ok(dev.unbind(VA, size), "VM_UNBIND");
    ok(dev.close_bo(h), "GEM_CLOSE");
    assert_eq!(vram_used_is(&dev, 0), 0, "VRAM used after closing");
}

/// A process that exits with moves, CPU faults and GPU jobs on its TTM
/// objects in flight leaves nothing behind: its objects and their VRAM go.
#[test]
fn ttm_process_exit_with_moves_in_flight() {
    needs_vram();
    let dev = open();
    assert_eq!(vram_used_is(&dev, 0), 0, "VRAM in use before the test");
    let objects = object_count(&dev);
    let end = in_child(std::time::Duration::from_secs(300), || {
        let dev = std::sync::Arc::new(open());
        let size = 8 * MIB;
        let handles: Vec<u32> = (0..8)
            .map(|i| {
                create_bound(
                    &dev,
                    size,
                    SOFTGPU_BO_VRAM | SOFTGPU_BO_SYSTEM,
                    VA + i * size,
                )
            })
            .collect();
        let (hs, dev2) = (handles.clone(), dev.clone());
        // Threads the exit kills mid-flight: a mover, and a CPU writer.
        // (Their errors, EBUSY during an EXEC, do not matter here.)
        std::thread::spawn(move || loop {
            for &h in &hs {
                let _ = dev2.move_bo(h, SOFTGPU_BO_SYSTEM);
                let _ = dev2.move_bo(h, SOFTGPU_BO_VRAM);
            }
        });
        let mut maps: Vec<Mapping> = handles.iter().map(|&h| map(&dev, h, size)).collect();
        std::thread::spawn(move || loop {
            for m in maps.iter_mut() {
                m.touch_pages(0x77);
            }
        });
        for i in 0..8u64 {
            dev.exec(&[Cmd::fill(VA + i * size, size, 0x1234)], 0)
                .map_err(|e| format!("EXEC {i}: {e}"))?;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(())
    });
    assert_child_ok(end);
    // The jobs may still run: their objects go once they are done.
    let start = std::time::Instant::now();
    while (vram_used(&dev) != 0 || object_count(&dev) != objects)
        && start.elapsed() < std::time::Duration::from_secs(60)
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        vram_used_is(&dev, 0),
        0,
        "VRAM used after the process exited"
    );
    assert_eq!(object_count(&dev), objects, "objects left by the process");
}

/// Where a TTM object's pages are: its line of debugfs `ttm`.
#[derive(Debug)]
struct TtmPages {
    /// `vram` or `system`.
    place: String,
    /// `gemfs` or `pool`.
    sys: String,
    released: u64,
    refused: u64,
    /// Page frames in system memory (none if it has none now), VRAM page
    /// numbers in VRAM, in the object's page order.
    frames: Vec<u64>,
}

/// The debugfs `ttm` line of the one TTM object of `size` bytes (a size no
/// other object of the device has).
fn ttm_pages(dev: &Device, size: u64) -> TtmPages {
    let path = debugfs_path(dev, "ttm");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["id", "size", "place", "sys", "released", "refused", "pages"],
        "debugfs ttm header"
    );
    let size = size.to_string();
    let found: Vec<Vec<&str>> = lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.get(1) == Some(&size.as_str()))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "objects of {size} bytes in debugfs ttm: {text}"
    );
    let f = &found[0];
    assert_eq!(f.len(), 7, "a debugfs ttm line: {f:?}");
    let num = |s: &str| -> u64 { s.parse().unwrap_or_else(|e| panic!("{s:?} in {f:?}: {e}")) };
    let hex = |s: &str| -> u64 {
        u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("{s:?} in {f:?}: {e}"))
    };
    let frames = if f[6] == "-" {
        Vec::new()
    } else {
        f[6].split(',')
            .flat_map(|run| {
                let (a, b) = run.split_once('-').unwrap_or((run, run));
                hex(a)..=hex(b)
            })
            .collect()
    };
    TtmPages {
        place: f[2].to_string(),
        sys: f[3].to_string(),
        released: num(f[4]),
        refused: num(f[5]),
        frames,
    }
}

/// Soft offline of page frame `pfn`: the kernel migrates the page's
/// contents away (a synchronous migration, `MR_MEMORY_FAILURE`) and
/// poisons the old page, so that it is never used again.
fn soft_offline(pfn: u64) -> Result<(), i32> {
    std::fs::write(
        "/sys/devices/system/memory/soft_offline_page",
        format!("{:#x}\n", pfn * PAGE),
    )
    .map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// A TTM object in system memory, made there or moved there from VRAM by
/// GEM_MOVE, sits on folios of its gemfs file, which migration moves
/// although the object's CPU mapping is `VM_PFNMAP` (out of reach of
/// `move_pages()` and of `/proc/self/pagemap`, hence debugfs `ttm` for the
/// page frames): soft offlining each of its page frames asks the owner for
/// the first, which gives every folio back (GEM_INFO's `released` rises,
/// debugfs `ttm` shows no pages) and the migration succeeds; the rest are
/// unheld and migrate without asking. The next accesses through the
/// mapping take the moved folios: every page frame new, every byte
/// intact. With TTM's pool (the baseline) soft offline fails on every
/// page (neither on the LRU nor movable): nothing given back, the same
/// page frames, the same bytes.
///
/// Each soft offline poisons a page of the guest for good (a few hundred
/// KiB in all).
#[test]
fn ttm_system_pages_migrate_unless_pool() {
    needs_vram();
    let dev = open();
    let cases = [
        (0, SOFTGPU_BO_SYSTEM),
        (0, SOFTGPU_BO_VRAM),
        (SOFTGPU_BO_TTM_POOL, SOFTGPU_BO_SYSTEM),
        (SOFTGPU_BO_TTM_POOL, SOFTGPU_BO_VRAM),
    ];
    for (k, (pool, made_in)) in cases.into_iter().enumerate() {
        // Sizes no other object has, to find its line in debugfs `ttm`;
        // below 2 MiB, so that its folios are small (soft offline would
        // first split a large folio, which the holds forbid).
        let size = (61 + 2 * k as u64) * PAGE;
        let pages = (size / PAGE) as usize;
        let what = format!(
            "{} object {}",
            if pool != 0 { "pool" } else { "gemfs" },
            if made_in == SOFTGPU_BO_VRAM {
                "moved from VRAM to system memory"
            } else {
                "made in system memory"
            }
        );
        let seed = 1000 + k as u64;
        let h = create(&dev, size, made_in | pool);
        let mut m = ok(dev.mmap_bo(h, size as usize), "mmap of a TTM object");
        fill(&mut m, seed);
        if made_in == SOFTGPU_BO_VRAM {
            assert!(in_vram(&dev, h), "{what}: not made in VRAM");
            ok(dev.move_bo(h, SOFTGPU_BO_SYSTEM), "GEM_MOVE to system");
        }
        assert!(!in_vram(&dev, h), "{what}: in VRAM");
        assert_eq!(first_wrong(&m, seed), None, "{what}: before soft offline");
        let before = ttm_pages(&dev, size);
        let sys = if pool != 0 { "pool" } else { "gemfs" };
        assert_eq!(
            (
                before.place.as_str(),
                before.sys.as_str(),
                before.frames.len()
            ),
            ("system", sys, pages),
            "{what}: debugfs ttm before soft offline: {before:?}"
        );
        let info0 = ok(dev.info(h), "GEM_INFO");
        assert_eq!(
            (before.released, before.refused),
            (info0.released, info0.refused),
            "{what}: debugfs ttm and GEM_INFO disagree"
        );
        let results: Vec<Result<(), i32>> =
            before.frames.iter().map(|&f| soft_offline(f)).collect();
        let after = ttm_pages(&dev, size);
        let info = ok(dev.info(h), "GEM_INFO");
        if pool == 0 {
            for (i, r) in results.iter().enumerate() {
                assert_eq!(
                    *r,
                    Ok(()),
                    "{what}: soft offline of page {i} (frame {:#x})",
                    before.frames[i]
                );
            }
            assert!(
                info.released > info0.released,
                "{what}: no folio given back to migration: {info:?}"
            );
            assert_eq!(info.refused, info0.refused, "{what}: {info:?}");
            assert_eq!(
                (after.frames.len(), info.resident_pages),
                (0, 0),
                "{what}: pages kept after migration took them: {after:?}"
            );
        } else {
            for (i, r) in results.iter().enumerate() {
                assert!(
                    r.is_err(),
                    "{what}: soft offline of pool page {i} (frame {:#x}) succeeded",
                    before.frames[i]
                );
            }
            assert_eq!(
                (info.released, info.resident_pages),
                (info0.released, pages as u64),
                "{what}: {info:?}"
            );
            assert_eq!(after.frames, before.frames, "{what}: pool pages moved");
        }
        assert_eq!(first_wrong(&m, seed), None, "{what}: after soft offline");
        let touched = ttm_pages(&dev, size);
        assert_eq!(
            touched.frames.len(),
            pages,
            "{what}: pages after the accesses: {touched:?}"
        );
        if pool == 0 {
            let old: std::collections::HashSet<u64> = before.frames.iter().copied().collect();
            let kept: Vec<(usize, &u64)> = touched
                .frames
                .iter()
                .enumerate()
                .filter(|(_, f)| old.contains(f))
                .collect();
            assert_eq!(kept, [], "{what}: pages on page frames soft offlined");
        } else {
            assert_eq!(touched.frames, before.frames, "{what}: pool pages moved");
        }
        drop(m);
        ok(dev.close_bo(h), "GEM_CLOSE");
    }
}

/// The memory keys of the DRM file's fdinfo, in bytes, by key.
pub(crate) fn fdinfo_memory(dev: &Device) -> std::collections::HashMap<String, u64> {
    let path = format!("/proc/self/fdinfo/{}", dev.as_raw_fd());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim();
            let stat = ["total", "shared", "active", "resident", "purgeable"];
            if !stat.iter().any(|s| k.starts_with(&format!("drm-{s}-"))) {
                return None;
            }
            let v = v.trim();
            let (n, unit) = v.split_once(' ').unwrap_or((v, ""));
            let n: u64 = n.parse().unwrap_or_else(|_| panic!("fdinfo {k}: {v:?}"));
            let mult = match unit {
                "" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                _ => panic!("fdinfo {k}: unit of {v:?}"),
            };
            Some((k.to_string(), n * mult))
        })
        .collect()
}

/// What fdinfo must say: `(total, resident)` of `system` and of `vram`
/// (`None`: no VRAM region), no object shared, active or purgeable.
pub(crate) fn assert_fdinfo(
    dev: &Device,
    system: (u64, u64),
    vram: Option<(u64, u64)>,
    what: &str,
) {
    let kv = fdinfo_memory(dev);
    let mut want = std::collections::HashMap::new();
    let regions = [("system", Some(system)), ("vram", vram)];
    for (region, figures) in regions.into_iter() {
        let Some((total, resident)) = figures else {
            continue;
        };
        for (stat, v) in [
            ("total", total),
            ("shared", 0),
            ("active", 0),
            ("resident", resident),
            ("purgeable", 0),
        ] {
            want.insert(format!("drm-{stat}-{region}"), v);
        }
    }
    assert_eq!(kv, want, "fdinfo memory keys {what}");
}

/// fdinfo reports memory per region (Documentation/gpu/drm-usage-stats.rst):
/// `system` counts every ordinary object and the TTM objects in system
/// memory (resident: the pages they have there), `vram` the TTM objects in
/// VRAM (all resident), and a GEM_MOVE moves an object's figures from one
/// region to the other; there is never a `memory` region (without VRAM:
/// `novram::fdinfo_has_no_vram_region`).
#[test]
fn ttm_fdinfo_memory_by_region() {
    needs_vram();
    let dev = open();
    let none = Some((0, 0));
    assert_fdinfo(&dev, (0, 0), none, "of a new file");
    // An ordinary object, 16 pages written through its mapping.
    let plain = create(&dev, 16 * PAGE, 0);
    map(&dev, plain, 16 * PAGE).as_mut_slice().fill(7);
    let p = 16 * PAGE;
    assert_fdinfo(&dev, (p, p), none, "with an ordinary object");
    let v = create(&dev, 2 * MIB, SOFTGPU_BO_VRAM);
    let s = create(&dev, MIB, SOFTGPU_BO_SYSTEM);
    let pool = create(&dev, MIB / 2, SOFTGPU_BO_SYSTEM | SOFTGPU_BO_TTM_POOL);
    let sys_total = p + MIB + MIB / 2;
    assert_fdinfo(
        &dev,
        (sys_total, p),
        Some((2 * MIB, 2 * MIB)),
        "with objects in VRAM and (not populated) in system memory",
    );
    let mut ms = ok(dev.mmap_bo(s, MIB as usize), "mmap");
    fill(&mut ms, 5);
    let mut mp = ok(dev.mmap_bo(pool, (MIB / 2) as usize), "mmap");
    fill(&mut mp, 6);
    assert_fdinfo(
        &dev,
        (sys_total, sys_total),
        Some((2 * MIB, 2 * MIB)),
        "after writing the system objects",
    );
    ok(dev.move_bo(v, SOFTGPU_BO_SYSTEM), "GEM_MOVE to system");
    assert_fdinfo(
        &dev,
        (sys_total + 2 * MIB, sys_total + 2 * MIB),
        Some((0, 0)),
        "after a move VRAM -> system",
    );
    ok(dev.move_bo(s, SOFTGPU_BO_VRAM), "GEM_MOVE to VRAM");
    assert_fdinfo(
        &dev,
        (sys_total + MIB, sys_total + MIB),
        Some((MIB, MIB)),
        "after a move system -> VRAM",
    );
    assert_eq!(first_wrong(&ms, 5), None, "the object moved to VRAM");
    drop((ms, mp));
    for h in [v, s, pool] {
        ok(dev.close_bo(h), "GEM_CLOSE");
    }
    assert_fdinfo(&dev, (p, p), Some((0, 0)), "after closing the TTM objects");
}

/// An object moved into VRAM keeps no copy in system memory: its gemfs
/// file's folios (Shmem in /proc/meminfo) go when GEM_MOVE puts it in
/// VRAM, and come back, with the contents, when it moves back.
#[test]
fn ttm_objects_in_vram_keep_no_system_copy() {
    needs_vram();
    let shmem = || ok(softgpu::mm::meminfo_kb("Shmem"), "Shmem");
    let dev = open();
    let size = 32 * MIB;
    let kib = size / 1024;
    let before = shmem();
    let h = create(&dev, size, SOFTGPU_BO_SYSTEM);
    let mut m = map(&dev, h, size);
    fill(&mut m, 9);
    let filled = shmem();
    assert!(
        filled >= before + kib - 2048,
        "the object's pages in Shmem: {before} -> {filled} KiB"
    );
    ok(dev.move_bo(h, SOFTGPU_BO_VRAM), "GEM_MOVE to VRAM");
    assert!(in_vram(&dev, h));
    let in_vram_kib = shmem();
    assert!(
        in_vram_kib + kib - 2048 <= filled,
        "system pages left while in VRAM: Shmem {filled} -> {in_vram_kib} KiB"
    );
    assert_eq!(first_wrong(&m, 9), None, "in VRAM");
    ok(
        dev.move_bo(h, SOFTGPU_BO_SYSTEM),
        "GEM_MOVE to system memory",
    );
    assert_eq!(first_wrong(&m, 9), None, "back in system memory");
    assert!(shmem() >= in_vram_kib + kib - 2048, "back in system memory");
    drop(m);
    ok(dev.close_bo(h), "GEM_CLOSE");
}
