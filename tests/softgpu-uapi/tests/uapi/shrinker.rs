//! The shrinker, and what reclaim may do to BO pages.
//!
//! `echo 2 > /proc/sys/vm/drop_caches` runs every registered shrinker
//! (`drop_slab()`) with `GFP_KERNEL`, as direct reclaim and kswapd do: a
//! deterministic way to make softgpu's shrinker run. `MADV_PAGEOUT` on a
//! CPU mapping sends the mapped pages through reclaim's own
//! `shrink_folio_list()`, to swap (zram in the guest).
//!
//! Expected: idle DONTNEED BOs that are not bound are purged; idle gemfs BOs
//! give their folios back and are faulted back in intact; busy BOs, bound
//! pinned BOs and WILLNEED BOs keep everything; and a folio the device holds
//! is never paged out behind its back.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;

use libc::EFAULT;
use softgpu::mm::{self, pagemap_pfn};
use softgpu::*;

use crate::common::*;

const VA: u64 = 0x4000_0000;
const VA2: u64 = 0x4800_0000;
const RES_VA: u64 = 0x5000_0000;

fn drop_slab() {
    fs::write("/proc/sys/vm/drop_caches", "2").expect("writing /proc/sys/vm/drop_caches");
}

/// The device's debugfs `shrinker` counters.
fn shrinker_stats(dev: &Device) -> HashMap<String, u64> {
    let path = debugfs_path(dev, "shrinker");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn page_out(m: &Mapping) -> io::Result<()> {
    // SAFETY: advice on a mapping we own.
    let r = unsafe { libc::madvise(m.addr() as *mut _, m.len(), libc::MADV_PAGEOUT) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn present_pages(m: &Mapping) -> usize {
    m.page_addrs()
        .iter()
        .filter(|&&a| pagemap_pfn(a).expect("reading pagemap").is_some())
        .count()
}

#[test]
fn idle_unbound_dontneed_bo_is_purged() {
    for flags in [0, SOFTGPU_BO_PINNED] {
        let dev = open();
        let size = 16 * PAGE;
        let h = create(&dev, size, flags);
        let mut m = map(&dev, h, size);
        m.as_mut_slice().copy_from_slice(&pattern(size as usize, 3));
        ok(dev.madvise(h, SOFTGPU_MADV_DONTNEED), "MADVISE DONTNEED");
        let before = shrinker_stats(&dev);
        assert!(
            before["purgeable_pages"] >= size / PAGE,
            "flags {flags:#x}: debugfs purgeable_pages {} does not count the BO",
            before["purgeable_pages"]
        );

        drop_slab();

        let info = ok(dev.info(h), "GEM_INFO");
        assert_eq!(
            info.flags & (SOFTGPU_BO_INFO_PURGED | SOFTGPU_BO_INFO_PURGEABLE),
            SOFTGPU_BO_INFO_PURGED,
            "flags {flags:#x}: after drop_caches: {info:?}"
        );
        let after = shrinker_stats(&dev);
        assert!(
            after["purged_pages"] >= before["purged_pages"] + size / PAGE,
            "flags {flags:#x}: purged_pages went from {} to {}",
            before["purged_pages"],
            after["purged_pages"]
        );
        assert!(
            !ok(dev.madvise(h, SOFTGPU_MADV_WILLNEED), "MADVISE WILLNEED"),
            "flags {flags:#x}: WILLNEED reports a purged BO retained"
        );
        assert!(
            !ok(dev.madvise(h, SOFTGPU_MADV_DONTNEED), "MADVISE DONTNEED"),
            "flags {flags:#x}: a purged BO came back"
        );
        assert!(
            m.as_slice().iter().all(|&b| b == 0),
            "flags {flags:#x}: the CPU mapping of a purged BO does not read zeros"
        );
        expect_errno(
            dev.bind(h, VA, 0, size, 0),
            EFAULT,
            &format!("flags {flags:#x}: VM_BIND of a purged BO"),
        );
        assert_unbound(&dev, VA, "after the refused VM_BIND");
    }
}

#[test]
fn bound_or_willneed_bos_are_not_purged() {
    for flags in [0, SOFTGPU_BO_PINNED] {
        let dev = open();
        let size = 8 * PAGE;
        let bound = create_bound(&dev, size, flags, VA);
        let unbound = create(&dev, size, flags);
        let data = pattern(size as usize, 5);
        for h in [bound, unbound] {
            map(&dev, h, size).as_mut_slice().copy_from_slice(&data);
        }
        ok(
            dev.madvise(bound, SOFTGPU_MADV_DONTNEED),
            "MADVISE DONTNEED",
        );

        drop_slab();

        for (h, what) in [(bound, "bound DONTNEED"), (unbound, "unbound WILLNEED")] {
            let info = ok(dev.info(h), "GEM_INFO");
            assert_eq!(
                info.flags & SOFTGPU_BO_INFO_PURGED,
                0,
                "flags {flags:#x}: {what} BO purged: {info:?}"
            );
            assert!(
                map(&dev, h, size).as_slice() == &data[..],
                "flags {flags:#x}: {what} BO lost its contents"
            );
        }
        assert!(ok(dev.madvise(bound, SOFTGPU_MADV_WILLNEED), "WILLNEED"));
        assert_eq!(
            gpu_checksum(&dev, VA, size, RES_VA),
            fnv1a64(&data),
            "flags {flags:#x}: GPU view of the bound BO"
        );
    }
}

#[test]
fn idle_gemfs_bo_gives_its_folios_back_and_refaults_intact() {
    let dev = open();
    let size = 64 * PAGE;
    let h = create_bound(&dev, size, 0, VA);
    run_ok(&dev, &[Cmd::fill(VA, size, 0x5eed_0001)], "FILL");
    let before = ok(dev.info(h), "GEM_INFO");
    assert_eq!(before.resident_pages, size / PAGE, "after FILL: {before:?}");
    let stats = shrinker_stats(&dev);
    assert!(
        stats["held_pages"] >= size / PAGE,
        "debugfs held_pages {} does not count the BO",
        stats["held_pages"]
    );

    drop_slab();

    let after = ok(dev.info(h), "GEM_INFO");
    assert_eq!(
        after.resident_pages, 0,
        "the shrinker left an idle gemfs BO resident: {after:?}"
    );
    assert!(after.released > before.released, "released: {after:?}");

    // Now nothing holds the folios: reclaim can swap them out.
    let m = map(&dev, h, size);
    let expected = filled(size as usize, 0x5eed_0001);
    assert!(m.as_slice() == &expected[..], "CPU view after the shrinker");
    ok(page_out(&m), "MADV_PAGEOUT");
    assert!(
        present_pages(&m) < (size / PAGE) as usize / 2,
        "MADV_PAGEOUT left {} of {} unheld pages in memory",
        present_pages(&m),
        size / PAGE
    );
    // The GPU faults them back in, from swap.
    assert_eq!(
        gpu_checksum(&dev, VA, size, RES_VA),
        fnv1a64(&expected),
        "GPU checksum after the shrinker and swap-out"
    );
    let again = ok(dev.info(h), "GEM_INFO");
    assert!(
        again.gpu_faults > after.gpu_faults && again.resident_pages == size / PAGE,
        "the GPU did not fault the BO back in: {again:?}"
    );
}

#[test]
fn busy_and_pinned_bos_keep_their_pages() {
    let dev = open();
    let size = 16 * PAGE;
    let gem = create_bound(&dev, size, 0, VA);
    let pinned = create_bound(&dev, size, SOFTGPU_BO_PINNED, VA2);
    run_ok(
        &dev,
        &[Cmd::fill(VA, size, 7), Cmd::fill(VA2, size, 9)],
        "FILL",
    );
    // A job that keeps both busy while the shrinker runs.
    let (seqno, _) = ok(dev.exec(&[Cmd::busy(300_000)], 0), "EXEC BUSY");
    drop_slab();
    let (status, _) = ok(dev.wait(seqno, WAIT_NS), "WAIT");
    assert_eq!(status, 0);
    for (h, what) in [(gem, "busy gemfs"), (pinned, "busy pinned")] {
        let info = ok(dev.info(h), "GEM_INFO");
        assert_eq!(
            info.resident_pages,
            size / PAGE,
            "{what} BO lost resident pages while its job ran: {info:?}"
        );
    }
    // Idle now: the gemfs BO gives its folios back, the pinned one not.
    drop_slab();
    assert_eq!(ok(dev.info(gem), "GEM_INFO").resident_pages, 0);
    let info = ok(dev.info(pinned), "GEM_INFO");
    assert_eq!(
        info.resident_pages,
        size / PAGE,
        "a bound pinned BO lost its pages: {info:?}"
    );
    assert_eq!(info.released, 0, "{info:?}");
}

/// Where the BO's pages are: how many are in memory (the page cache, as
/// mincore(2) sees it, mapped or not) and how many KiB of the mapping are
/// in swap (smaps).
fn swap_state(m: &Mapping) -> (usize, u64) {
    let resident = ok(mm::mincore(m.addr(), m.len()), "mincore");
    let swapped = ok(mm::smaps_kb(m.addr(), "Swap"), "smaps Swap");
    (resident.into_iter().filter(|&r| r).count(), swapped)
}

/// Reclaim may unmap a held folio from the CPU but never write it to swap
/// and free it: the device would go on using a freed page. Once released,
/// the same folios do go to swap.
#[test]
fn held_folios_are_never_paged_out_behind_the_device() {
    let dev = open();
    let size = 32 * PAGE;
    let pages = (size / PAGE) as usize;
    let h = create_bound(&dev, size, 0, VA);
    let m = map(&dev, h, size);
    run_ok(&dev, &[Cmd::fill(VA, size, 0x1111_1111)], "FILL");
    // Map the pages for the CPU too: MADV_PAGEOUT only sees mapped pages.
    assert!(m.as_slice() == &filled(size as usize, 0x1111_1111)[..]);
    assert_eq!(present_pages(&m), pages, "CPU mapping not populated");
    let pfns: Vec<_> = m
        .page_addrs()
        .iter()
        .map(|&a| pagemap_pfn(a).expect("reading pagemap"))
        .collect();

    // Reclaim sees folios with extra references: it keeps them
    // (pageout() only writes folios that nothing else references). It
    // puts them back through this CPU's LRU batch: the second page-out
    // runs on the other CPU, as it may whenever the scheduler moves the
    // test, so that the drain below is what lets it see them.
    let on_cpu0 = OnCpu::new(0);
    ok(page_out(&m), "MADV_PAGEOUT of held folios");
    drop(on_cpu0);
    assert_eq!(
        swap_state(&m),
        (pages, 0),
        "(pages in memory, KiB in swap) of the held BO after MADV_PAGEOUT"
    );
    assert_eq!(
        ok(dev.info(h), "GEM_INFO").resident_pages,
        size / PAGE,
        "held folios left the device page table"
    );
    // The CPU (re)maps the very folios the device holds, not copies of
    // them brought back from swap.
    assert!(m.as_slice() == &filled(size as usize, 0x1111_1111)[..]);
    let again: Vec<_> = m
        .page_addrs()
        .iter()
        .map(|&a| pagemap_pfn(a).expect("reading pagemap"))
        .collect();
    assert_eq!(again, pfns, "the held folios were replaced");

    // The device writes on; then the holds go and the folios swap out.
    run_ok(&dev, &[Cmd::fill(VA, size, 0x2222_2222)], "second FILL");
    drop_slab();
    assert_eq!(ok(dev.info(h), "GEM_INFO").resident_pages, 0);
    // Touch through the CPU mapping so the pages are mapped to page out.
    let expected = filled(size as usize, 0x2222_2222);
    assert!(
        m.as_slice() == &expected[..],
        "the device's last writes are lost"
    );
    // MADV_PAGEOUT skips folios that are not on an LRU list, and drains
    // only its own CPU's batches of folios on their way to one: drain
    // every CPU's first (drop_caches=1 starts with lru_add_drain_all()).
    let _on_cpu1 = OnCpu::new(1);
    fs::write("/proc/sys/vm/drop_caches", "1").expect("writing /proc/sys/vm/drop_caches");
    ok(page_out(&m), "MADV_PAGEOUT of released folios");
    let (in_memory, swapped_kb) = swap_state(&m);
    assert!(
        in_memory < pages / 2 && swapped_kb * 1024 > size / 2,
        "released folios did not go to swap: {in_memory} of {pages} pages in memory, \
         {swapped_kb} KiB in swap"
    );
    assert!(
        m.as_slice() == &expected[..],
        "the device's last writes did not survive swap"
    );
}

/// fdinfo's drm-active-* counts BOs that a running job may use;
/// drm-purgeable-* counts idle DONTNEED BOs.
#[test]
fn fdinfo_counts_active_and_purgeable_memory() {
    let dev = open();
    let size = 16 * PAGE;
    let h = create_bound(&dev, size, 0, VA);
    // Every page resident, so that drm-active counts the whole BO.
    run_ok(&dev, &[Cmd::fill(VA, size, 1)], "FILL");
    let idle = create(&dev, size, 0);
    map(&dev, idle, size).as_mut_slice().fill(1);
    ok(dev.madvise(idle, SOFTGPU_MADV_DONTNEED), "MADVISE DONTNEED");
    let fdinfo = || -> HashMap<String, String> {
        let path = format!("/proc/self/fdinfo/{}", dev.as_raw_fd());
        fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {path}: {e}"))
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect()
    };
    let kib = |v: &str| -> u64 {
        let (n, unit) = v.split_once(' ').unwrap_or((v, ""));
        let n: u64 = n.parse().unwrap_or_else(|_| panic!("fdinfo value {v:?}"));
        match unit {
            "" => n / 1024,
            "KiB" => n,
            "MiB" => n * 1024,
            _ => panic!("fdinfo unit in {v:?}"),
        }
    };
    let (seqno, _) = ok(
        dev.exec(&[Cmd::fill(VA, size, 2), Cmd::busy(300_000)], 0),
        "EXEC",
    );
    let running = fdinfo();
    ok(dev.wait(seqno, WAIT_NS), "WAIT");
    let done = fdinfo();
    assert!(
        kib(&running["drm-active-system"]) >= size / 1024,
        "drm-active-system while a job runs over a bound BO: {running:?}"
    );
    assert_eq!(
        kib(&done["drm-active-system"]),
        0,
        "drm-active-system once the job is done: {done:?}"
    );
    assert!(
        kib(&done["drm-purgeable-system"]) >= size / 1024,
        "drm-purgeable-system with an idle DONTNEED BO: {done:?}"
    );
    let info = ok(dev.info(h), "GEM_INFO");
    assert_eq!(info.resident_pages, size / PAGE, "{info:?}");
}

/// debugfs `objects`: a header and a line per object of the device.
#[test]
fn debugfs_lists_every_object() {
    let dev = open();
    let path = debugfs_path(&dev, "objects");
    // Sizes no other test uses, to find the lines.
    let (a, b, c) = (5 * PAGE + 3 * MIB, 7 * PAGE + 3 * MIB, 9 * PAGE + 3 * MIB);
    let _ha = create_bound(&dev, a, 0, VA);
    let _hb = create(&dev, b, SOFTGPU_BO_PINNED);
    let hc = create(&dev, c, 0);
    ok(dev.madvise(hc, SOFTGPU_MADV_DONTNEED), "MADVISE DONTNEED");
    run_ok(&dev, &[Cmd::fill(VA, a, 3)], "FILL");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("empty objects file")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "id",
            "size",
            "mode",
            "madv",
            "resident",
            "bindings",
            "released",
            "refused",
            "gpu_faults"
        ]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    let find = |size: u64| -> Vec<&str> {
        rows.iter()
            .find(|r| r.get(1) == Some(&size.to_string().as_str()))
            .unwrap_or_else(|| panic!("no object of {size} bytes in:\n{text}"))
            .clone()
    };
    let (ra, rb, rc) = (find(a), find(b), find(c));
    assert_eq!(
        &ra[2..6],
        ["gemfs", "willneed", &(a / PAGE).to_string(), "1"],
        "{ra:?}"
    );
    assert_eq!(&rb[2..6], ["pinned", "willneed", "0", "0"], "{rb:?}");
    assert_eq!(&rc[2..6], ["gemfs", "dontneed", "0", "0"], "{rc:?}");
}

/// Real memory pressure: anonymous memory beyond what is free pushes
/// reclaim (kswapd and direct) into softgpu's shrinker and to swap. An idle
/// bound gemfs BO gives its folios back and keeps its contents, which the
/// GPU then faults back in.
#[test]
fn idle_gemfs_bo_survives_memory_pressure_intact() {
    let dev = open();
    let size = 64 * MIB;
    let h = create_bound(&dev, size, 0, VA);
    let data = pattern(size as usize, 77);
    map(&dev, h, size).as_mut_slice().copy_from_slice(&data);
    assert_eq!(gpu_checksum(&dev, VA, size, RES_VA), fnv1a64(&data));
    let before = ok(dev.info(h), "GEM_INFO");
    assert_eq!(before.resident_pages, size / PAGE, "{before:?}");
    let swapped = |what: &str| ok(softgpu::mm::vmstat_counter("pswpout"), what);
    let out0 = swapped("pswpout before");
    // 256 MiB more than is free: the excess must come from reclaim.
    let free_kb = ok(softgpu::mm::meminfo_kb("MemFree"), "reading MemFree");
    let hog = Anon::populated(((free_kb + 256 * 1024) * 1024) as usize);
    let during = ok(dev.info(h), "GEM_INFO");
    drop(hog);
    assert!(
        swapped("pswpout after") > out0,
        "no page went to swap: the pressure did not reach reclaim"
    );
    assert!(
        during.released > before.released && during.resident_pages < before.resident_pages,
        "under memory pressure the shrinker took nothing back: {before:?} -> {during:?}"
    );
    assert_eq!(
        gpu_checksum(&dev, VA, size, RES_VA),
        fnv1a64(&data),
        "GPU view after memory pressure"
    );
    assert!(
        map(&dev, h, size).as_slice() == &data[..],
        "CPU view after memory pressure"
    );
}
