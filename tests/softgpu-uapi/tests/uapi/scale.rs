//! Many BOs, and much memory: 25 000 small BOs, and 1 GiB of BOs filled
//! and checksummed by the GPU, then freed. (The guest has 4 GiB.)

use std::collections::HashSet;

use libc::{EINVAL, ENOENT};
use softgpu::mm;
use softgpu::*;

use crate::common::*;

const VA: u64 = 0x1_0000_0000;
const RES_VA: u64 = 0x10_0000_0000;

/// 25 000 BOs of a page in one file: unique non-zero handles, GEM_INFO
/// right at the first, middle and last, the newest usable end to end, all
/// closed, then a churn of creates and closes. (100 000 took about ten
/// minutes of `make test`'s hour under TCG with KASAN and kmemleak; a
/// quarter of them exercises the same paths.)
#[test]
fn twenty_five_thousand_small_bos() {
    const N: usize = 25_000;
    let dev = open();
    let mut handles = Vec::with_capacity(N);
    for i in 0..N {
        match dev.create_bo(PAGE, 0) {
            Ok(h) => handles.push(h),
            Err(e) => panic!("GEM_CREATE of small BO {i}: {e}"),
        }
    }
    let unique: HashSet<u32> = handles.iter().copied().collect();
    assert_eq!(unique.len(), N, "handles handed out twice");
    assert!(!unique.contains(&0), "handle 0 handed out");
    for &h in [handles[0], handles[N / 2], handles[N - 1]].iter() {
        let info = ok(dev.info(h), "GEM_INFO");
        assert_eq!((info.size, info.bindings), (PAGE, 0), "{info:?}");
    }
    // The newest one still works end to end.
    let h = handles[N - 1];
    ok(dev.bind(h, VA, 0, PAGE, 0), "VM_BIND");
    let m = map(&dev, h, PAGE);
    run_ok(&dev, &[Cmd::fill(VA, PAGE, 0x1001)], "FILL");
    assert_eq!(m.read_u32(PAGE as usize - 4), 0x1001);
    drop(m);
    ok(dev.unbind(VA, PAGE), "VM_UNBIND");
    for (i, &h) in handles.iter().enumerate() {
        if let Err(e) = dev.close_bo(h) {
            panic!("GEM_CLOSE of small BO {i} (handle {h}): {e}");
        }
    }
    expect_errno(dev.info(handles[0]), ENOENT, "GEM_INFO after closing");
    expect_errno(dev.close_bo(handles[N - 1]), EINVAL, "second GEM_CLOSE");
    // Then churn: create and close right away, both kinds.
    for i in 0..N / 10 {
        let h = dev
            .create_bo(PAGE, (i % 2) as u32 * SOFTGPU_BO_PINNED)
            .unwrap_or_else(|e| panic!("GEM_CREATE {i} of the churn: {e}"));
        dev.close_bo(h)
            .unwrap_or_else(|e| panic!("GEM_CLOSE {i} of the churn: {e}"));
    }
}

#[test]
fn one_gib_of_bos_filled_checksummed_and_freed() {
    const N: usize = 256;
    const BO: u64 = 4 * MIB;
    /// Fill values shared by BOs i, i + CLASSES, ... (keeps the CPU's
    /// reference hashing at 64 MiB instead of 1 GiB).
    const CLASSES: usize = 16;
    /// BOs per job.
    const GROUP: usize = 16;
    let class_value = |c: usize| 0x0101_0101u32.wrapping_mul(c as u32 + 1) ^ 0xa5a5_0000;
    let stamp = |i: usize| 0xc0de_0000u32 | i as u32;

    let free0 = ok(mm::meminfo_kb("MemFree"), "MemFree");
    let dev = open();
    let r = create_bound(&dev, PAGE, 0, RES_VA);
    let res = map(&dev, r, PAGE);
    let va = |i: usize| VA + i as u64 * BO;
    let handles: Vec<u32> = (0..N).map(|i| create_bound(&dev, BO, 0, va(i))).collect();

    // Each BO: filled with its class's value, its last page with its own
    // stamp, then checksummed.
    let mut seqnos = Vec::new();
    for g in 0..N / GROUP {
        let mut cmds = Vec::new();
        for i in g * GROUP..(g + 1) * GROUP {
            cmds.push(Cmd::fill(va(i), BO, class_value(i % CLASSES)));
            cmds.push(Cmd::fill(va(i) + BO - PAGE, PAGE, stamp(i)));
            cmds.push(Cmd::checksum(RES_VA + 8 * i as u64, va(i), BO));
        }
        seqnos.push(ok(dev.exec(&cmds, 0), &format!("EXEC of group {g}")).0);
    }
    for (g, &s) in seqnos.iter().enumerate() {
        let (status, fault) = ok(dev.wait(s, WAIT_NS), &format!("WAIT for group {g}"));
        assert_eq!(
            status, 0,
            "group {g}: status {status}, fault_addr {fault:#x}"
        );
    }
    let free1 = ok(mm::meminfo_kb("MemFree"), "MemFree");
    assert!(
        free0.saturating_sub(free1) >= 768 * 1024,
        "1 GiB of filled BOs took only {} KiB off MemFree ({free0} -> {free1})",
        free0.saturating_sub(free1)
    );

    let prefixes: Vec<Fnv1a64> = (0..CLASSES)
        .map(|c| {
            let mut h = Fnv1a64::new();
            h.update(&filled((BO - PAGE) as usize, class_value(c)));
            h
        })
        .collect();
    for i in 0..N {
        let mut h = prefixes[i % CLASSES];
        let want = h.update(&filled(PAGE as usize, stamp(i))).finish();
        assert_eq!(res.read_u64(8 * i), want, "GPU checksum of BO {i}");
    }
    for i in [0, 1, N / 2, N - 1] {
        let m = map(&dev, handles[i], BO);
        assert_eq!(m.read_u32(0), class_value(i % CLASSES), "BO {i} start");
        assert_eq!(
            m.read_u32((BO - PAGE) as usize - 4),
            class_value(i % CLASSES)
        );
        assert_eq!(m.read_u32((BO - PAGE) as usize), stamp(i), "BO {i} stamp");
        assert_eq!(m.read_u32(BO as usize - 4), stamp(i), "BO {i} end");
    }

    for (i, &h) in handles.iter().enumerate() {
        ok(dev.unbind(va(i), BO), &format!("VM_UNBIND of BO {i}"));
        ok(dev.close_bo(h), &format!("GEM_CLOSE of BO {i}"));
    }
    drop(res);
    drop(dev);
    // Freeing may finish asynchronously (job clean-up): give it 30 s.
    let start = std::time::Instant::now();
    let mut free2 = ok(mm::meminfo_kb("MemFree"), "MemFree");
    while free2 + 256 * 1024 < free0 && start.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        free2 = ok(mm::meminfo_kb("MemFree"), "MemFree");
    }
    assert!(
        free2 + 256 * 1024 >= free0,
        "memory not given back: MemFree {free0} KiB before, {free1} with the BOs, {free2} after freeing"
    );
}
