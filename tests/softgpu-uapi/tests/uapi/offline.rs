//! Memory offlining (hot-unplug of a memory block) with GPU-held gemfs BO
//! pages in the block: offline_pages() migrates every movable page out of
//! the block, through gemfs's ->migrate_folio, which asks softgpu to
//! release the folios it holds. Pinned BOs are allocated unmovable, so they
//! never land where they would block it.
//!
//! The guest's memory blocks (/sys/devices/system/memory) boot online in
//! the kernel zones, where unmovable allocations may sit. The test takes a
//! block of node 1 offline and brings it back `online_movable`: an empty
//! ZONE_MOVABLE block, node 1's only one. Migration to node 1 allocates
//! with GFP_HIGHUSER_MOVABLE, which tries ZONE_MOVABLE first, so the BO
//! pages moved to node 1 land in that block.

use std::time::Duration;

use softgpu::mm::{self, Pagemap};
use softgpu::*;

use crate::common::*;
use crate::migration::{gemfs_counter, locate, move_all, require_two_nodes};

const VA: u64 = 0x1_0000_0000;
const RES_VA: u64 = 0x2_0000_0000;

/// Writes `state` (`offline`, `online`, `online_movable`) to memory block
/// `id`'s `state`. In a child killed after `timeout`: offline_pages()
/// retries migration for as long as the block's pages look movable, and
/// only a signal ends it (the write then fails with EINTR).
fn set_state(id: u64, state: &str, timeout: Duration) -> Result<(), String> {
    let path = format!("{}/memory{id}/state", mm::MEMORY_SYSFS);
    match in_child(timeout, || {
        std::fs::write(&path, state)
            .map_err(|e| e.raw_os_error().map_or_else(|| e.to_string(), errno_name))
    }) {
        ChildEnd::Exited(0, _) => Ok(()),
        ChildEnd::Exited(_, msg) => Err(msg),
        ChildEnd::Signalled(sig) => Err(format!("the writer was killed by signal {sig}")),
        ChildEnd::Hung(t) => Err(format!("still writing after {t:?} (killed)")),
    }
}

#[track_caller]
fn state(id: u64) -> String {
    ok(
        mm::memory_block_attr(id, "state"),
        "reading a memory block state",
    )
}

/// Brings memory block `.0` back online when dropped (also when the test
/// fails), if it is offline then.
struct OnlineOnDrop(u64);

impl Drop for OnlineOnDrop {
    fn drop(&mut self) {
        if mm::memory_block_attr(self.0, "state").is_ok_and(|s| s == "offline") {
            let path = format!("{}/memory{}/state", mm::MEMORY_SYSFS, self.0);
            if let Err(e) = std::fs::write(&path, "online") {
                eprintln!("could not bring memory block {} back online: {e}", self.0);
            }
        }
    }
}

/// Makes one of node 1's memory blocks an empty ZONE_MOVABLE block: offline
/// (trying from the highest block down, as the blocks that hold the kernel's
/// own unmovable memory refuse with EBUSY), then `online_movable`.
fn empty_movable_block() -> (u64, OnlineOnDrop) {
    let blocks = ok(mm::node_memory_blocks(1), "listing node 1's memory blocks");
    let mut refused = Vec::new();
    for &id in blocks.iter().rev().take(12) {
        let s = state(id);
        if s != "online" {
            refused.push((id, format!("state {s}")));
            continue;
        }
        if let Err(e) = set_state(id, "offline", Duration::from_secs(30)) {
            refused.push((id, e));
            continue;
        }
        let guard = OnlineOnDrop(id);
        if let Err(e) = set_state(id, "online_movable", Duration::from_secs(30)) {
            panic!("memory block {id}: online_movable after offline: {e}");
        }
        assert_eq!(
            ok(mm::memory_block_attr(id, "valid_zones"), "valid_zones"),
            "Movable",
            "memory block {id} after online_movable"
        );
        return (id, guard);
    }
    panic!("no memory block of node 1 ({blocks:?}) could be taken offline: {refused:?}");
}

#[test]
fn offline_migrates_held_gemfs_bo_pages_out_of_the_block() {
    require_two_nodes();
    // NUMA balancing would move the pages behind the test's back.
    let _numa = Setting::set("/proc/sys/kernel/numa_balancing", "0");
    let block_size = ok(mm::memory_block_size(), "reading block_size_bytes");
    let (block, _online) = empty_movable_block();
    let first = block * block_size / PAGE;
    let end = first + block_size / PAGE;
    let in_block = |pfn: u64| (first..end).contains(&pfn);
    let range = format!("memory block {block} (PFNs {first:#x}..{end:#x})");

    const BOS: usize = 4;
    let size = 4 * MIB;
    let dev = open();
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let data: Vec<Vec<u8>> = (0..BOS)
        .map(|i| pattern(size as usize, 70 + i as u64))
        .collect();
    // (va, handle, mapping)
    let mut bos = Vec::new();
    for (i, d) in data.iter().enumerate() {
        let va = VA + i as u64 * size;
        let h = create_bound(&dev, size, 0, va);
        let mut m = map(&dev, h, size);
        m.as_mut_slice().copy_from_slice(d);
        bos.push((va, h, m));
    }
    // Into the block: every page to node 0, then to node 1.
    let addrs: Vec<usize> = bos.iter().flat_map(|(_, _, m)| m.page_addrs()).collect();
    for node in [0, 1] {
        if let Err(e) = move_all(&addrs, &vec![node; addrs.len()], 50) {
            panic!("moving the BO pages to node {node}: {e}");
        }
    }
    // Migration released the GPU's holds; GPU jobs take them again, on the
    // folios in the block.
    for (i, (va, h, _)) in bos.iter().enumerate() {
        assert_eq!(
            gpu_checksum(&dev, *va, size, RES_VA),
            fnv1a64(&data[i]),
            "GPU checksum of BO {i} before offlining"
        );
        let info = ok(dev.info(*h), "GEM_INFO");
        assert_eq!(
            info.resident_pages,
            size / PAGE,
            "BO {i}: the GPU holds every page: {info:?}"
        );
    }

    // A pinned BO, allocated from node 1 (its CPU's): unmovable, so not
    // in the ZONE_MOVABLE block, where it would keep offlining from ever
    // finishing.
    let pinned_va = VA + BOS as u64 * size;
    let pinned_size = 2 * MIB;
    let pinned_data = pattern(pinned_size as usize, 79);
    let (ph, pm_map) = {
        let _cpu1 = OnCpu::new(1);
        let ph = create_bound(&dev, pinned_size, SOFTGPU_BO_PINNED, pinned_va);
        let mut pm_map = map(&dev, ph, pinned_size);
        pm_map.as_mut_slice().copy_from_slice(&pinned_data);
        (ph, pm_map)
    };
    assert_eq!(
        gpu_checksum(&dev, pinned_va, pinned_size, RES_VA),
        fnv1a64(&pinned_data),
        "GPU checksum of the pinned BO"
    );
    let pinned_addrs = pm_map.page_addrs();
    let (pinned_nodes, pinned_pfns) = locate(&pm, &pinned_addrs, "the pinned BO");
    assert!(
        pinned_nodes.contains(&1),
        "no page of the pinned BO written from CPU 1 is on node 1: {pinned_nodes:?}"
    );
    let pinned_inside = pinned_pfns.iter().filter(|&&p| in_block(p)).count();
    assert_eq!(
        pinned_inside, 0,
        "{pinned_inside} pages of a pinned (unmovable) BO are in the ZONE_MOVABLE {range}"
    );

    let (_, before) = locate(&pm, &addrs, "before offlining");
    let inside: Vec<usize> = (0..addrs.len()).filter(|&j| in_block(before[j])).collect();
    assert!(
        !inside.is_empty(),
        "none of the {} BO pages moved to node 1 landed in the ZONE_MOVABLE {range}",
        addrs.len()
    );
    let pages_per_bo = (size / PAGE) as usize;
    let bos_inside: Vec<usize> = (0..BOS)
        .filter(|i| inside.iter().any(|j| j / pages_per_bo == *i))
        .collect();
    let infos0: Vec<GemInfo> = bos
        .iter()
        .map(|(_, h, _)| ok(dev.info(*h), "GEM_INFO"))
        .collect();
    let released0 = gemfs_counter("released_migrated");

    if let Err(e) = set_state(block, "offline", Duration::from_secs(120)) {
        panic!(
            "offlining {range} with {} GPU-held BO pages in it: {e}",
            inside.len()
        );
    }
    assert_eq!(state(block), "offline", "{range} after offlining");

    let (nodes, after) = locate(&pm, &addrs, "after offlining");
    if let Some(j) = (0..addrs.len()).find(|&j| in_block(after[j])) {
        panic!("page {j} is at PFN {:#x}, in the offline {range}", after[j]);
    }
    for &j in &inside {
        assert_ne!(after[j], before[j], "page {j} kept its PFN");
        // do_migrate_range() allocates the new pages on the other nodes.
        assert_eq!(
            nodes[j], 0,
            "page {j} was offlined from node 1 to node {}",
            nodes[j]
        );
    }
    let released = gemfs_counter("released_migrated") - released0;
    assert!(
        released > 0,
        "gemfs counted no held folio released and migrated while offlining \
         ({} BO pages were in the block)",
        inside.len()
    );
    for &i in &bos_inside {
        let info = ok(dev.info(bos[i].1), "GEM_INFO");
        assert!(
            info.released > infos0[i].released,
            "BO {i} had pages in the block, but softgpu released none of its folios: \
             {:?} -> {info:?}",
            infos0[i]
        );
    }
    // Contents intact, for the CPU and the GPU (which re-faults the folios
    // it released).
    for (i, (va, h, m)) in bos.iter().enumerate() {
        assert!(m.as_slice() == &data[i][..], "BO {i}: contents changed");
        assert_eq!(
            gpu_checksum(&dev, *va, size, RES_VA),
            fnv1a64(&data[i]),
            "GPU checksum of BO {i} after offlining"
        );
        let info = ok(dev.info(*h), "GEM_INFO");
        assert_eq!(info.resident_pages, size / PAGE, "BO {i}: {info:?}");
    }
    let (_, pinned_after) = locate(&pm, &pinned_addrs, "the pinned BO after offlining");
    assert_eq!(
        pinned_after, pinned_pfns,
        "the bound pinned BO's pages moved"
    );
    assert!(
        pm_map.as_slice() == &pinned_data[..],
        "the pinned BO's contents changed"
    );
    drop(pm_map);
    ok(
        dev.unbind(pinned_va, pinned_size),
        "VM_UNBIND of the pinned BO",
    );
    ok(dev.close_bo(ph), "GEM_CLOSE of the pinned BO");
}
