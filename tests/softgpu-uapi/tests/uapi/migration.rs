//! Moving BO pages between the guest's NUMA nodes 0 and 1 with
//! move_pages(2) on the BO's CPU mapping (its pages are the backing file's
//! own, rmap-visible pages).
//!
//! gemfs BOs (flags 0) hold their pages only through the GPU page table
//! and give them back when migration asks: the pages move even while a
//! stream of GPU jobs uses them, every job still succeeds with the right
//! result, and GEM_INFO counts the releases. Pinned BOs keep their pages
//! pinned while bound, so those cannot move; unbound, they can.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use softgpu::mm::{self, Pagemap};
use softgpu::*;

use crate::common::*;

const VA: u64 = 0x1_0000_0000;
const RES_VA: u64 = 0x2_0000_0000;

#[track_caller]
pub(crate) fn require_two_nodes() {
    let nodes = ok(mm::online_nodes(), "reading the online NUMA nodes");
    assert_eq!(nodes, [0, 1], "the guest must have NUMA nodes 0 and 1");
}

/// The node and PFN of every page; all must be present.
#[track_caller]
pub(crate) fn locate(pm: &Pagemap, addrs: &[usize], what: &str) -> (Vec<i32>, Vec<u64>) {
    let nodes = ok(mm::page_nodes(addrs), "move_pages query of the nodes");
    let pfns = ok(pm.pfns(addrs), "reading /proc/self/pagemap");
    for (i, (&n, p)) in nodes.iter().zip(&pfns).enumerate() {
        assert!(n >= 0, "{what}: page {i} not present (node status {n})");
        assert!(
            p.is_some(),
            "{what}: page {i} has no PFN in pagemap (not present, or not root)"
        );
    }
    (nodes, pfns.into_iter().map(Option::unwrap).collect())
}

pub(crate) fn other_node(nodes: &[i32]) -> Vec<i32> {
    nodes.iter().map(|&n| 1 - n).collect()
}

/// Moves page `i` to `targets[i]`, retrying the pages that fail (busy), at
/// most `tries` move_pages calls. Returns how many calls it took.
pub(crate) fn move_all(addrs: &[usize], targets: &[i32], tries: usize) -> Result<usize, String> {
    let mut pending: Vec<usize> = (0..addrs.len()).collect();
    for attempt in 1..=tries {
        let a: Vec<usize> = pending.iter().map(|&i| addrs[i]).collect();
        let t: Vec<i32> = pending.iter().map(|&i| targets[i]).collect();
        let out = mm::move_pages(&a, &t).map_err(|e| format!("move_pages: {e}"))?;
        let failed = out.failed(&t);
        if failed.is_empty() {
            return Ok(attempt);
        }
        if attempt == tries {
            let st: Vec<(usize, i32)> = failed
                .iter()
                .map(|&j| (pending[j], out.status[j]))
                .collect();
            return Err(format!(
                "after {tries} move_pages calls, {} pages are not on their target node; \
                 (page, status) with status {} = batch failed, {} not migrated: {st:?}",
                failed.len(),
                mm::NOT_MOVED,
                out.not_migrated
            ));
        }
        pending = failed.iter().map(|&j| pending[j]).collect();
        thread::sleep(Duration::from_millis(2));
    }
    unreachable!()
}

/// Moves every page to the other node and checks it got there with a new
/// PFN. Returns the new PFNs.
#[track_caller]
fn move_and_check(pm: &Pagemap, addrs: &[usize], tries: usize, what: &str) -> Vec<u64> {
    let (nodes, pfns) = locate(pm, addrs, what);
    let targets = other_node(&nodes);
    if let Err(e) = move_all(addrs, &targets, tries) {
        panic!("{what}: {e}");
    }
    let (now, new_pfns) = locate(pm, addrs, what);
    for i in 0..addrs.len() {
        assert_eq!(
            now[i], targets[i],
            "{what}: page {i} is not on its target node"
        );
        assert_ne!(new_pfns[i], pfns[i], "{what}: page {i} kept its PFN");
    }
    new_pfns
}

/// Submits jobs (FILL of the BO, CHECKSUM of it) one after the other until
/// `stop`, checking each. Returns the number of jobs and the last value.
fn gpu_stream(
    dev: &Device,
    size: u64,
    res: &Mapping,
    slots: u64,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> Result<(u64, u32), String> {
    let mut k = 0u64;
    let mut last = None;
    while !stop.load(Ordering::SeqCst) {
        let v = (k as u32).wrapping_mul(0x9e37_79b9) ^ 0x5555_5555;
        let slot = k % slots;
        let cmds = [
            Cmd::fill(VA, size, v),
            Cmd::checksum(RES_VA + slot * 8, VA, size),
        ];
        let (seqno, _) = dev
            .exec(&cmds, 0)
            .map_err(|e| format!("EXEC of job {k}: {e}"))?;
        let (status, fault) = dev
            .wait(seqno, WAIT_NS)
            .map_err(|e| format!("WAIT for job {k}: {e}"))?;
        if status != 0 {
            return Err(format!(
                "job {k} failed during migration: status {status}, fault_addr {fault:#x}"
            ));
        }
        let got = res.read_u64(slot as usize * 8);
        let want = fnv1a64(&filled(size as usize, v));
        if got != want {
            return Err(format!(
                "job {k}: checksum of the BO filled with {v:#x} is {got:#x}, expected {want:#x}"
            ));
        }
        last = Some(v);
        k += 1;
        done.store(k, Ordering::SeqCst);
    }
    Ok((k, last.ok_or("no GPU job ran")?))
}

/// Waits until the stream has done `n` jobs, or has stopped (then the
/// caller's join reports why).
fn wait_jobs(done: &AtomicU64, n: u64, worker: &thread::ScopedJoinHandle<'_, impl Sized>) {
    let start = Instant::now();
    while done.load(Ordering::SeqCst) < n && !worker.is_finished() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the GPU job stream is stuck at {} jobs",
            done.load(Ordering::SeqCst)
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn gemfs_bo_pages_migrate_under_a_stream_of_gpu_jobs() {
    require_two_nodes();
    const N: usize = 64;
    const ROUNDS: usize = 4;
    const SLOTS: u64 = 512;
    let size = N as u64 * PAGE;
    let dev = open();
    let h = create_bound(&dev, size, 0, VA);
    let r = create_bound(&dev, SLOTS * 8, 0, RES_VA);
    let mut m = map(&dev, h, size);
    let res = map(&dev, r, SLOTS * 8);
    // CPU writes fault every page in; a GPU checksum puts them all in the
    // GPU page table too.
    let data = pattern(size as usize, 21);
    m.as_mut_slice().copy_from_slice(&data);
    let released0 = ok(dev.info(h), "GEM_INFO").released;
    run_ok(
        &dev,
        &[Cmd::checksum(RES_VA, VA, size)],
        "CHECKSUM of CPU writes",
    );
    assert_eq!(
        res.read_u64(0),
        fnv1a64(&data),
        "GPU checksum of CPU writes"
    );
    let info = ok(dev.info(h), "GEM_INFO");
    assert_resident_since(released0, &info, N as u64, "GPU touched every page");
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let addrs = m.page_addrs();
    let migrated0 = ok(mm::vmstat_counter("pgmigrate_success"), "vmstat");

    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let (jobs, last) = thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let worker = s.spawn(|| gpu_stream(&dev, size, &res, SLOTS, &stop, &done));
        wait_jobs(&done, 2, &worker);
        for round in 0..ROUNDS {
            if worker.is_finished() {
                break;
            }
            let before = done.load(Ordering::SeqCst);
            move_and_check(
                &pm,
                &addrs,
                500,
                &format!("round {round} (GEM_INFO {:?})", dev.info(h)),
            );
            // Let the GPU run over the moved pages before the next round.
            wait_jobs(&done, before + 2, &worker);
        }
        stop.store(true, Ordering::SeqCst);
        worker.join().expect("GPU job stream panicked")
    })
    .unwrap_or_else(|e| panic!("GPU job stream: {e}"));

    assert!(jobs >= 2 * ROUNDS as u64, "only {jobs} GPU jobs ran");
    assert!(
        m.as_slice() == &filled(size as usize, last)[..],
        "the CPU mapping does not show the last GPU FILL ({last:#x})"
    );
    run_ok(&dev, &[Cmd::checksum(RES_VA, VA, size)], "final CHECKSUM");
    assert_eq!(res.read_u64(0), fnv1a64(m.as_slice()), "final GPU checksum");
    let info = ok(dev.info(h), "GEM_INFO");
    assert!(
        info.released > 0,
        "no folio was released to migration: {info:?}"
    );
    assert!(
        info.gpu_faults > 0,
        "the GPU never re-faulted a moved page: {info:?}"
    );
    let migrated = ok(mm::vmstat_counter("pgmigrate_success"), "vmstat") - migrated0;
    assert!(
        migrated >= (N * ROUNDS) as u64,
        "pgmigrate_success grew by {migrated}, expected at least {}",
        N * ROUNDS
    );
}

/// After a job that touched all `n` pages of an object, with `released`
/// its count of released pages before the job: every page is in the GPU
/// page table, but for those background migration (kcompactd, proactive
/// compaction) has released again since, as it may at any time; each such
/// release is counted.
#[track_caller]
fn assert_resident_since(released: u64, info: &softgpu::uapi::GemInfo, n: u64, what: &str) {
    let again = info.released - released;
    assert!(
        info.resident_pages <= n && info.resident_pages + again >= n,
        "{what}: {} of {n} pages resident, {again} released since the job: {info:?}",
        info.resident_pages
    );
}

#[test]
fn gemfs_bo_idle_pages_migrate_and_the_gpu_refaults_them() {
    require_two_nodes();
    const N: usize = 16;
    let size = N as u64 * PAGE;
    let dev = open();
    let h = create_bound(&dev, size, 0, VA);
    let r = create_bound(&dev, PAGE, 0, RES_VA);
    let mut m = map(&dev, h, size);
    let res = map(&dev, r, PAGE);
    let data = pattern(size as usize, 22);
    m.as_mut_slice().copy_from_slice(&data);
    let released0 = ok(dev.info(h), "GEM_INFO").released;
    run_ok(&dev, &[Cmd::checksum(RES_VA, VA, size)], "CHECKSUM");
    let before = ok(dev.info(h), "GEM_INFO");
    assert_resident_since(released0, &before, N as u64, "after the CHECKSUM");
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let addrs = m.page_addrs();

    let requests = || {
        [
            "released_migrated",
            "released_not_migrated",
            "refused_busy",
            "refused_other",
        ]
        .map(gemfs_counter)
        .iter()
        .sum::<u64>()
    };
    let timed = || RELEASE_BUCKETS.map(gemfs_counter).iter().sum::<u64>();
    let (requests0, timed0) = (requests(), timed());
    let (migrated0, migrate_ns0) = (
        gemfs_counter("released_migrated"),
        gemfs_counter("released_migrate_ns_total"),
    );
    move_and_check(&pm, &addrs, 50, "moving the idle gemfs BO");
    let info = ok(dev.info(h), "GEM_INFO");
    assert!(info.released > 0, "migration released nothing: {info:?}");
    // gemfs's latency histogram counts every release request once (a
    // request counted in one and not yet in the other: at most one in
    // flight per CPU, from compaction in the background), and the
    // migrations after a release are timed.
    let (asked, timed) = (requests() - requests0, timed() - timed0);
    assert!(asked > 0, "no release requests, {info:?}");
    assert!(
        asked.abs_diff(timed) <= 2,
        "release histogram +{timed} vs requests +{asked}"
    );
    assert!(gemfs_counter("released_migrated") > migrated0);
    assert!(gemfs_counter("released_migrate_ns_total") > migrate_ns0);
    assert_eq!(
        info.resident_pages, 0,
        "released pages must have left the GPU page table: {info:?}"
    );
    assert!(m.as_slice() == &data[..], "contents changed by migration");
    // The GPU faults the new pages in and reads the moved data...
    run_ok(
        &dev,
        &[Cmd::checksum(RES_VA, VA, size)],
        "CHECKSUM after migration",
    );
    assert_eq!(
        res.read_u64(0),
        fnv1a64(&data),
        "GPU checksum after migration"
    );
    let after = ok(dev.info(h), "GEM_INFO");
    assert!(
        after.gpu_faults > info.gpu_faults,
        "no GPU fault re-validated the moved pages: {info:?} -> {after:?}"
    );
    assert_resident_since(info.released, &after, N as u64, "after the CHECKSUM");
    // ...and its writes land in the pages the CPU now maps.
    run_ok(
        &dev,
        &[Cmd::fill(VA, size, 0x600d_f00d)],
        "FILL after migration",
    );
    assert!(
        m.as_slice() == &filled(size as usize, 0x600d_f00d)[..],
        "the CPU does not see the GPU's FILL after migration"
    );
}

/// Releasing a folio clears its page table entries and must flush the
/// device TLB with them (`PageTable::clear()`): an entry cached from the
/// job before would otherwise send the next job to the old page, which
/// migration has freed. One page, so that the next job's first access is
/// the translation the TLB cached (with more, the 8-entry TLB evicts it
/// before reuse). The same after the shrinker gives the folio back.
#[test]
fn a_released_page_leaves_no_stale_entry_in_the_device_tlb() {
    require_two_nodes();
    let dev = open();
    let h = create_bound(&dev, PAGE, 0, VA);
    let m = map(&dev, h, PAGE);
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let addrs = m.page_addrs();
    for (k, how) in [(1u32, "migration"), (3, "the shrinker")] {
        // The GPU touches the page: its translation is now in the TLB.
        run_ok(&dev, &[Cmd::fill(VA, PAGE, k)], "FILL");
        assert_eq!(m.read_u32(0), k, "CPU view of the GPU's FILL");
        let before = ok(dev.info(h), "GEM_INFO");
        assert_eq!(before.resident_pages, 1, "{before:?}");
        if how == "migration" {
            move_and_check(&pm, &addrs, 50, "moving the GPU-held page");
        } else {
            std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop_caches");
        }
        let released = ok(dev.info(h), "GEM_INFO");
        assert!(
            released.released > before.released && released.resident_pages == 0,
            "{how} did not release the page: {before:?} -> {released:?}"
        );
        // Right away, the next job's first access: it must fault the
        // page in again and write where the CPU reads.
        run_ok(
            &dev,
            &[Cmd::fill(VA, PAGE, k + 1)],
            &format!("FILL after {how}"),
        );
        let after = ok(dev.info(h), "GEM_INFO");
        assert!(
            after.gpu_faults > released.gpu_faults && after.resident_pages == 1,
            "the job after {how} did not fault the page back in (a stale TLB \
             entry?): {released:?} -> {after:?}"
        );
        assert_eq!(
            m.read_u32(0),
            k + 1,
            "the GPU's FILL after {how} went elsewhere than the page the CPU maps"
        );
    }
}

#[test]
fn pinned_bo_pages_do_not_move_while_bound() {
    require_two_nodes();
    const N: usize = 16;
    let size = N as u64 * PAGE;
    let dev = open();
    let h = create_bound(&dev, size, SOFTGPU_BO_PINNED, VA);
    let r = create_bound(&dev, PAGE, 0, RES_VA);
    let mut m = map(&dev, h, size);
    let res = map(&dev, r, PAGE);
    let data = pattern(size as usize, 23);
    m.as_mut_slice().copy_from_slice(&data);
    run_ok(&dev, &[Cmd::checksum(RES_VA, VA, size)], "CHECKSUM");
    assert_eq!(res.read_u64(0), fnv1a64(&data));
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let addrs = m.page_addrs();
    let (nodes, pfns) = locate(&pm, &addrs, "pinned BO");
    let targets = other_node(&nodes);

    let out = ok(mm::move_pages(&addrs, &targets), "move_pages");
    for (i, &st) in out.status.iter().enumerate() {
        assert!(
            st < 0,
            "page {i} of a bound pinned BO: move_pages status {st} (node {} -> {}), \
             expected a failure",
            nodes[i],
            targets[i]
        );
    }
    let (now, now_pfns) = locate(&pm, &addrs, "pinned BO after move_pages");
    assert_eq!(now, nodes, "bound pinned pages changed node");
    assert_eq!(now_pfns, pfns, "bound pinned pages changed PFN");
    assert!(m.as_slice() == &data[..], "contents changed");
    run_ok(
        &dev,
        &[Cmd::checksum(RES_VA, VA, size)],
        "CHECKSUM after move_pages",
    );
    assert_eq!(
        res.read_u64(0),
        fnv1a64(&data),
        "GPU checksum after move_pages"
    );
    run_ok(
        &dev,
        &[Cmd::fill(VA, size, 0x0bad_cafe)],
        "FILL after move_pages",
    );
    assert!(m.as_slice() == &filled(size as usize, 0x0bad_cafe)[..]);
    let info = ok(dev.info(h), "GEM_INFO");
    assert_eq!(info.flags & SOFTGPU_BO_INFO_PINNED, SOFTGPU_BO_INFO_PINNED);
    assert_eq!(info.released, 0, "a pinned BO released pages: {info:?}");
}

#[test]
fn pinned_bo_pages_move_once_unbound() {
    require_two_nodes();
    const N: usize = 16;
    let size = N as u64 * PAGE;
    let dev = open();
    let h = create_bound(&dev, size, SOFTGPU_BO_PINNED, VA);
    let r = create_bound(&dev, PAGE, 0, RES_VA);
    let mut m = map(&dev, h, size);
    let res = map(&dev, r, PAGE);
    let data = pattern(size as usize, 24);
    m.as_mut_slice().copy_from_slice(&data);
    run_ok(
        &dev,
        &[Cmd::checksum(RES_VA, VA, size)],
        "CHECKSUM while bound",
    );
    ok(dev.unbind(VA, size), "VM_UNBIND");
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    move_and_check(&pm, &m.page_addrs(), 50, "moving the unbound pinned BO");
    assert!(m.as_slice() == &data[..], "contents changed by migration");
    ok(dev.bind(h, VA, 0, size, 0), "VM_BIND again");
    run_ok(
        &dev,
        &[Cmd::checksum(RES_VA, VA, size)],
        "CHECKSUM after migration",
    );
    assert_eq!(
        res.read_u64(0),
        fnv1a64(&data),
        "GPU checksum after migration"
    );
    run_ok(
        &dev,
        &[Cmd::fill(VA, size, 0x1357_9bdf)],
        "FILL after migration",
    );
    assert!(
        m.as_slice() == &filled(size as usize, 0x1357_9bdf)[..],
        "the CPU does not see the GPU's FILL after migration"
    );
}

#[test]
fn never_bound_bo_pages_move() {
    require_two_nodes();
    for flags in [0, SOFTGPU_BO_PINNED] {
        const N: usize = 8;
        let size = N as u64 * PAGE;
        let dev = open();
        let h = create(&dev, size, flags);
        let mut m = map(&dev, h, size);
        let data = pattern(size as usize, 25);
        m.as_mut_slice().copy_from_slice(&data);
        let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
        let what = format!("moving a never-bound BO, flags {flags:#x}");
        move_and_check(&pm, &m.page_addrs(), 50, &what);
        assert!(m.as_slice() == &data[..], "{what}: contents changed");
        let info = ok(dev.info(h), "GEM_INFO");
        assert_eq!(info.resident_pages, 0, "{what}: {info:?}");
    }
}

/// The gemfs tracepoints, through tracefs: enabled for the life of the value.
struct GemfsTrace;

const TRACEFS: &str = "/sys/kernel/tracing";

impl GemfsTrace {
    fn start() -> Self {
        mount_tracefs();
        let write = |f: &str, v: &str| {
            std::fs::write(format!("{TRACEFS}/{f}"), v)
                .unwrap_or_else(|e| panic!("writing {v:?} to {TRACEFS}/{f}: {e}"))
        };
        write("trace", "");
        write("events/gemfs/enable", "1");
        GemfsTrace
    }

    /// The events recorded so far: (event name, fields).
    fn events(&self) -> Vec<(String, std::collections::HashMap<String, String>)> {
        let text = std::fs::read_to_string(format!("{TRACEFS}/trace")).expect("reading trace");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (_, rest) = l.split_once(": gemfs_")?;
                let (name, fields) = rest.split_once(": ")?;
                let fields = fields
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                Some((name.to_string(), fields))
            })
            .collect()
    }
}

impl Drop for GemfsTrace {
    fn drop(&mut self) {
        let _ = std::fs::write(format!("{TRACEFS}/events/gemfs/enable"), "0");
    }
}

#[test]
fn held_folio_migration_is_traced() {
    require_two_nodes();
    const N: usize = 8;
    let size = N as u64 * PAGE;
    let dev = open();
    let h = create_bound(&dev, size, 0, VA);
    run_ok(&dev, &[Cmd::fill(VA, size, 0x7ace)], "FILL");
    let m = map(&dev, h, size);
    assert!(m.as_slice() == &filled(size as usize, 0x7ace)[..]);
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let addrs = m.page_addrs();
    let (_, old) = locate(&pm, &addrs, "before");

    let trace = GemfsTrace::start();
    let new = move_and_check(&pm, &addrs, 50, "moving the traced BO");
    let events = trace.events();
    drop(trace);

    let hex = |p: u64| format!("0x{p:x}");
    for i in 0..N {
        let released = events.iter().any(|(name, f)| {
            // move_pages() tries MIGRATE_ASYNC first, then the sync mode.
            name == "release"
                && f["pfn"] == hex(old[i])
                && f["ret"] == "0"
                && ["async", "sync_light", "sync"].contains(&f["mode"].as_str())
        });
        assert!(
            released,
            "page {i}: no gemfs_release of pfn {:#x} with ret=0 in {events:?}",
            old[i]
        );
        let migrated = events.iter().any(|(name, f)| {
            name == "migrate"
                && f["src_pfn"] == hex(old[i])
                && f["dst_pfn"] == hex(new[i])
                && f["held"] == "1"
                && f["ret"] == "0"
        });
        assert!(
            migrated,
            "page {i}: no gemfs_migrate {:#x} -> {:#x} held=1 ret=0 in {events:?}",
            old[i], new[i]
        );
    }
}

/// gemfs's release latency histogram (Documentation/filesystems/gemfs.rst).
const RELEASE_BUCKETS: [&str; 7] = [
    "release_lt_1us",
    "release_lt_10us",
    "release_lt_100us",
    "release_lt_1ms",
    "release_lt_10ms",
    "release_lt_100ms",
    "release_ge_100ms",
];

pub(crate) fn gemfs_counter(name: &str) -> u64 {
    let path = format!("/sys/kernel/debug/gemfs/{name}");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

pub(crate) fn compact_memory() {
    std::fs::write("/proc/sys/vm/compact_memory", "1").expect("writing compact_memory");
}

/// Whole-memory compaction (`compact_memory`) runs two scanners towards
/// each other through every zone: the migration scanner from the bottom
/// takes in-use pages, the free scanner from the top takes free pages of
/// partly used pageblocks as their new homes. A wholly free pageblock is
/// never a target (compaction exists to make such blocks), so with the
/// guest's memory mostly free the free scanner runs down to the highest
/// partly used pageblocks, wherever they are, and the scan stops where the
/// scanners meet: pages above that point stay. This test therefore lays
/// memory out so the BO pages are scanned, all on node 0. An anonymous
/// filler bound to node 0 takes all of that node's free memory but a small
/// margin; the lowest-addressed part of it is freed, and the BOs are
/// allocated there, bound to node 0 too, where those freshly freed pages
/// are then nearly all the node has free; then the filler is freed but for
/// one page in each of its pageblocks, which leaves partly used pageblocks
/// above the BOs for the free scanner to fill. Binding both to one node
/// keeps the BOs from landing on the other node, whose free memory nothing
/// arranged; NUMA balancing and proactive compaction are off, so no page
/// moves between the layout and the measurement but by `compact_memory`.
/// Where each page lands is still the allocator's choice: the assertions
/// are on counts. The BOs are 1 MiB each: too small for huge folios, which
/// compaction does not move (a 2 MiB folio fills its pageblock).
#[test]
fn compaction_moves_bound_gemfs_bo_pages_but_not_pinned_ones() {
    const BOS: usize = 32;
    // Node 0's free memory the filler leaves: above the node's watermarks,
    // so filling it wakes no reclaim, and small beside the freed low part.
    const MARGIN_KB: u64 = 32 * 1024;
    let size = MIB;
    let _numa = Setting::set("/proc/sys/kernel/numa_balancing", "0");
    let _proactive = Setting::set("/proc/sys/vm/compaction_proactiveness", "0");
    let dev = open();
    let data = pattern(size as usize, 41);
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let _on_cpu0 = OnCpu::new(0);
    let free_kb = ok(
        mm::node_meminfo_kb(0, "MemFree"),
        "reading node 0's MemFree",
    );
    let fill = Anon::new((free_kb.saturating_sub(MARGIN_KB) * 1024) as usize & !(MIB as usize - 1));
    ok(
        mm::bind_range_to_node(fill.ptr as usize, fill.len, 0),
        "binding the filler to node 0",
    );
    fill.advise(0, fill.len, libc::MADV_NOHUGEPAGE);
    fill.advise(0, fill.len, MADV_POPULATE_WRITE);
    let fill_addrs = fill.page_addrs();
    let fill_pfns = pm.range_pfns(fill.ptr as usize, fill_addrs.len());
    let mut by_pfn: Vec<(u64, usize)> = ok(fill_pfns, "reading pagemap")
        .into_iter()
        .zip(&fill_addrs)
        .filter_map(|(pfn, &a)| Some((pfn?, a)))
        .collect();
    by_pfn.sort_unstable();
    // Twice the pages the BOs (gemfs and pinned) need, so that the allocator's other free
    // pages on the node are few beside them.
    let low_pages = 4 * BOS * (size / PAGE) as usize;
    let mut low: Vec<usize> = by_pfn.iter().take(low_pages).map(|&(_, a)| a).collect();
    low.sort_unstable();
    for run in low.chunk_by(|a, b| b - a == PAGE as usize) {
        let off = run[0] - fill.ptr as usize;
        fill.advise(off, run.len() * PAGE as usize, libc::MADV_DONTNEED);
    }
    let low_end_pfn = by_pfn.get(low_pages).map_or(u64::MAX, |&(pfn, _)| pfn);
    // One filler page of each pageblock above the BOs' part will stay.
    let mut blocks = HashSet::new();
    let mut kept: Vec<usize> = by_pfn[low_pages.min(by_pfn.len())..]
        .iter()
        .filter(|&&(pfn, _)| blocks.insert(pfn / PAGEBLOCK_PAGES))
        .map(|&(_, a)| a)
        .collect();
    kept.sort_unstable();
    // (flags, va, handle, mapping)
    let mut bos = Vec::new();
    let on_node0 = ok(
        mm::ThreadOnNode::bind(0),
        "binding the BOs' allocations to node 0",
    );
    for i in 0..2 * BOS {
        let flags = if i < BOS { 0 } else { SOFTGPU_BO_PINNED };
        let va = VA + i as u64 * size;
        let h = create_bound(&dev, size, flags, va);
        let mut m = map(&dev, h, size);
        m.as_mut_slice().copy_from_slice(&data);
        bos.push((flags, va, h, m));
    }
    drop(on_node0);
    // Free the filler but the kept pages; the BO pages stay where they were
    // put. (Under the filler's memory pressure the shrinker may have taken
    // idle BOs' folios back: the GPU sums below make every page resident
    // again, held.)
    // Folios of the gemfs BOs taken back before the GPU sums below (by the
    // shrinker, under the filler's pressure): their re-fault may land
    // anywhere, outside the part laid out for them. Reported if the layout
    // does not come about.
    let released_before_sums: u64 = bos
        .iter()
        .filter(|(flags, ..)| *flags == 0)
        .map(|(_, _, h, _)| ok(dev.info(*h), "GEM_INFO").released)
        .sum();
    let base = fill.ptr as usize;
    let mut from = base;
    for &a in kept.iter().chain(std::iter::once(&(base + fill.len))) {
        if a > from {
            fill.advise(from - base, a - from, libc::MADV_DONTNEED);
        }
        from = a + PAGE as usize;
    }
    for (_, va, h, m) in &bos {
        assert_eq!(gpu_sum(&dev, *va, size), fnv1a64(&data));
        assert_eq!(ok(dev.info(*h), "GEM_INFO").resident_pages, size / PAGE);
        // And mapped by the CPU again (reclaim may have unmapped them), so
        // that pagemap shows where they are.
        assert!(m.as_slice() == &data[..]);
    }
    let pfns = |bos: &[(u32, u64, u32, Mapping)]| -> Vec<Vec<Option<u64>>> {
        bos.iter()
            .map(|(_, _, _, m)| {
                ok(
                    pm.range_pfns(m.addr(), m.len() / PAGE as usize),
                    "reading pagemap",
                )
            })
            .collect()
    };
    let before = pfns(&bos);
    assert!(
        before.iter().flatten().all(Option::is_some),
        "BO pages not mapped by the CPU before compaction"
    );
    // Through gemfs's ->migrate_folio: held folios after their release, or
    // unheld ones. Which, depends on timing: reclaim woken by the filler may
    // still run the shrinker, which drops the holds of idle BOs. The held
    // path itself is checked deterministically by the move_pages tests.
    let through_gemfs = || gemfs_counter("released_migrated") + gemfs_counter("unheld_migrated");
    let migrated_before = through_gemfs();
    let counters = || {
        let vm = ok(mm::vmstat(), "reading /proc/vmstat");
        let mut c: Vec<(String, u64)> = [
            "compact_migrate_scanned",
            "compact_free_scanned",
            "compact_isolated",
            "pgmigrate_success",
            "pgmigrate_fail",
        ]
        .iter()
        .map(|&k| (k.to_string(), vm.get(k).copied().unwrap_or(0)))
        .collect();
        for k in [
            "released_migrated",
            "released_not_migrated",
            "refused_busy",
            "refused_other",
            "unheld_migrated",
            "release_ns_total",
        ] {
            c.push((format!("gemfs {k}"), gemfs_counter(k)));
        }
        c
    };
    let counters_before = counters();
    let t0 = Instant::now();
    compact_memory();
    let compact_time = t0.elapsed();

    let moved = |bos: &[(u32, u64, u32, Mapping)]| {
        let after = pfns(bos);
        let (mut gemfs_moved, mut pinned_moved) = (0, 0);
        for (i, (flags, ..)) in bos.iter().enumerate() {
            // Present before and after at another PFN: migrated. A page
            // not present afterwards was reclaimed (the huge page request
            // below reclaims too, and the shrinker may have let go of an
            // idle BO): that is no migration, so it is not counted.
            let moved = before[i]
                .iter()
                .zip(&after[i])
                .filter(|(x, y)| matches!((x, y), (Some(a), Some(b)) if a != b))
                .count();
            if *flags == 0 {
                gemfs_moved += moved;
            } else {
                pinned_moved += moved;
            }
        }
        (gemfs_moved, pinned_moved)
    };
    let (gemfs_moved, pinned_moved) = moved(&bos);
    drop(fill);
    let deltas: Vec<String> = counters_before
        .iter()
        .zip(counters())
        .map(|((k, a), (_, b))| format!("{k} +{}", b - a))
        .collect();
    let n = BOS as u64 * size / PAGE;
    let placed_low = before[..BOS]
        .iter()
        .flatten()
        .filter(|pfn| pfn.is_some_and(|p| p < low_end_pfn))
        .count();
    assert!(
        gemfs_moved > 0,
        "compaction moved none of {n} bound gemfs BO pages ({placed_low} of them were \
         placed in the freed low part, below PFN {low_end_pfn:#x}, {} filler pages kept above; \
         {released_before_sums} of their folios released before they were made resident \
         again); compact_memory took {compact_time:?}; {}",
        kept.len(),
        deltas.join(", ")
    );
    assert_eq!(
        pinned_moved, 0,
        "compaction moved {pinned_moved} of {n} pages of bound pinned BOs"
    );
    assert!(
        through_gemfs() > migrated_before,
        "gemfs's migrate_folio counted no migrated folio"
    );
    // Data intact, for the CPU and for the GPU (which re-faults the moved
    // folios).
    for (flags, va, h, m) in &bos {
        let what = if *flags == 0 { "gemfs" } else { "pinned" };
        assert!(m.as_slice() == &data[..], "{what} BO {h}: contents changed");
        assert_eq!(
            gpu_sum(&dev, *va, size),
            fnv1a64(&data),
            "GPU view of {what} BO {h}"
        );
    }
}

fn gpu_sum(dev: &Device, va: u64, size: u64) -> u64 {
    gpu_checksum(dev, va, size, RES_VA)
}

/// Migration racing the destruction of the BO whose owner it asks: BOs are
/// unbound and closed (their gemfs objects destroyed) while another thread
/// moves their pages back and forth through a CPU mapping, which outlives
/// the BO. gemfs must not call a destroyed object's owner (KASAN would
/// report the use after free); the pages and data survive either way.
#[test]
fn migration_races_bo_destruction() {
    require_two_nodes();
    let dev = open();
    let size = 16 * PAGE;
    let data = pattern(size as usize, 57);
    for round in 0..24u64 {
        let h = create_bound(&dev, size, 0, VA);
        let mut m = map(&dev, h, size);
        m.as_mut_slice().copy_from_slice(&data);
        // Resident in the GPU page table: gemfs holds on every page.
        assert_eq!(gpu_sum(&dev, VA, size), fnv1a64(&data));
        let addrs = m.page_addrs();
        let stop = AtomicBool::new(false);
        let moves = AtomicU64::new(0);
        thread::scope(|s| {
            let mover = s.spawn(|| {
                let mut node = 1;
                while !stop.load(Ordering::SeqCst) {
                    mm::move_pages_to(&addrs, node).expect("move_pages");
                    moves.fetch_add(1, Ordering::SeqCst);
                    node = 1 - node;
                }
            });
            let _guard = StopOnDrop(&stop);
            // Let the mover get going, then destroy the BO under it at a
            // different point of its loop each round.
            while moves.load(Ordering::SeqCst) == 0 {
                thread::yield_now();
            }
            thread::sleep(Duration::from_micros(round * 250));
            ok(dev.unbind(VA, size), "VM_UNBIND");
            ok(dev.close_bo(h), "GEM_CLOSE");
            thread::sleep(Duration::from_millis(5));
            drop(_guard);
            mover.join().expect("the mover panicked");
        });
        assert!(
            m.as_slice() == &data[..],
            "round {round}: contents changed after the BO was destroyed"
        );
        // With nobody holding them, the pages still move.
        let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
        move_and_check(&pm, &addrs, 50, "moving the pages of a destroyed BO");
    }
}

/// Pages of a PMD-sized (2 MiB) folio.
const THP_NR: usize = 512;

/// Whether `pfns`, the PFNs of 512 consecutive pages of a mapping, are one
/// 2 MiB transparent huge page: contiguous from a 2 MiB-aligned head, the
/// head flagged THP and compound head in /proc/kpageflags, every other page
/// THP and compound tail. Else why not.
pub(crate) fn check_thp(pfns: &[u64]) -> Result<(), String> {
    assert_eq!(pfns.len(), THP_NR);
    let head = pfns[0];
    if !head.is_multiple_of(THP_NR as u64) {
        return Err(format!("its first PFN {head:#x} is not 2 MiB aligned"));
    }
    if let Some(i) = (0..THP_NR).find(|&i| pfns[i] != head + i as u64) {
        return Err(format!(
            "page {i} is at PFN {:#x}, not {:#x}: not one contiguous folio",
            pfns[i],
            head + i as u64
        ));
    }
    let flags = mm::kpageflags(pfns).map_err(|e| format!("reading /proc/kpageflags: {e}"))?;
    let has = |f: u64, bit: u32| f & (1 << bit) != 0;
    if !has(flags[0], mm::KPF_THP) || !has(flags[0], mm::KPF_COMPOUND_HEAD) {
        return Err(format!(
            "PFN {head:#x} is not the head of a THP (kpageflags {:#x})",
            flags[0]
        ));
    }
    if let Some(i) =
        (1..THP_NR).find(|&i| !has(flags[i], mm::KPF_THP) || !has(flags[i], mm::KPF_COMPOUND_TAIL))
    {
        return Err(format!(
            "PFN {:#x} (page {i}) is not a THP tail (kpageflags {:#x})",
            pfns[i], flags[i]
        ));
    }
    Ok(())
}

/// A held 2 MiB folio migrates whole. softgpu's gemfs mount is
/// huge=within_size, so a 4 MiB BO (2 MiB-aligned in its file) is two
/// PMD-sized folios when the allocator has 2 MiB blocks. The GPU holds each
/// as one folio; move_pages() of one address of each moves all 512 pages
/// to one new 2 MiB folio, after one release per folio (nr=512), not 512.
#[test]
fn thp_held_folio_migrates_whole() {
    require_two_nodes();
    // NUMA balancing would move the pages behind the test's back.
    let _numa = Setting::set("/proc/sys/kernel/numa_balancing", "0");
    let size = 4 * MIB;
    let folios = size as usize / PAGE as usize / THP_NR;
    let dev = open();
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let data = pattern(size as usize, 61);
    let mut compacted = false;
    let (h, m, old) = loop {
        let h = create_bound(&dev, size, 0, VA);
        // The GPU allocates the folios (through gemfs_object_get_folio, with
        // no VMA whose flags could refuse a huge page); the CPU then writes
        // through them.
        run_ok(&dev, &[Cmd::fill(VA, size, 0)], "FILL");
        let mut m = map(&dev, h, size);
        m.as_mut_slice().copy_from_slice(&data);
        assert_eq!(
            gpu_sum(&dev, VA, size),
            fnv1a64(&data),
            "GPU checksum of CPU writes"
        );
        let (_, pfns) = locate(&pm, &m.page_addrs(), "the 4 MiB BO");
        let not_thp = pfns
            .chunks(THP_NR)
            .enumerate()
            .find_map(|(k, c)| check_thp(c).err().map(|e| format!("folio {k}: {e}")));
        match not_thp {
            None => break (h, m, pfns),
            Some(e) if !compacted => {
                eprintln!("no THP yet ({e}): compacting memory and creating the BO again");
                drop(m);
                ok(dev.unbind(VA, size), "VM_UNBIND");
                ok(dev.close_bo(h), "GEM_CLOSE");
                compact_memory();
                compacted = true;
            }
            Some(e) => panic!(
                "a 4 MiB BO on softgpu's huge=within_size gemfs mount got no 2 MiB folios, \
                 even after compact_memory: {e}"
            ),
        }
    };
    let info0 = ok(dev.info(h), "GEM_INFO");
    assert_eq!(
        info0.resident_pages,
        size / PAGE,
        "the GPU holds every page: {info0:?}"
    );
    let addrs = m.page_addrs();
    let heads: Vec<usize> = (0..folios).map(|k| addrs[k * THP_NR]).collect();
    let (nodes, _) = locate(&pm, &heads, "the folio heads");
    let targets = other_node(&nodes);

    let trace = GemfsTrace::start();
    if let Err(e) = move_all(&heads, &targets, 50) {
        panic!("moving the 2 MiB folios: {e}");
    }
    let events = trace.events();
    drop(trace);

    let (now, new) = locate(&pm, &addrs, "after move_pages");
    for i in 0..addrs.len() {
        let k = i / THP_NR;
        assert_eq!(
            now[i], targets[k],
            "page {i}: on node {}, but its folio {k} was moved to node {}",
            now[i], targets[k]
        );
        assert_ne!(new[i], old[i], "page {i} kept its PFN {:#x}", old[i]);
    }
    let hex = |p: u64| format!("0x{p:x}");
    for k in 0..folios {
        let pages = &new[k * THP_NR..(k + 1) * THP_NR];
        if let Err(e) = check_thp(pages) {
            panic!("folio {k} is not one 2 MiB THP after migration: {e}");
        }
        let (src, dst) = (hex(old[k * THP_NR]), hex(pages[0]));
        let released: Vec<_> = events
            .iter()
            .filter(|(name, f)| name == "release" && f["pfn"] == src)
            .collect();
        let ok_released: Vec<_> = released.iter().filter(|(_, f)| f["ret"] == "0").collect();
        assert_eq!(
            ok_released.len(),
            1,
            "folio {k}: gemfs_release events of pfn {src} with ret=0 (all: {released:?})"
        );
        assert_eq!(
            ok_released[0].1["nr"], "512",
            "folio {k}: released as {:?}",
            ok_released[0]
        );
        let migrated = events.iter().any(|(name, f)| {
            name == "migrate"
                && f["src_pfn"] == src
                && f["dst_pfn"] == dst
                && f["nr"] == "512"
                && f["held"] == "1"
                && f["ret"] == "0"
        });
        assert!(
            migrated,
            "folio {k}: no gemfs_migrate {src} -> {dst} nr=512 held=1 ret=0 in {events:?}"
        );
    }
    // Released as whole folios: no release names a page inside one.
    let inner: std::collections::HashSet<String> = (0..addrs.len())
        .filter(|i| i % THP_NR != 0)
        .map(|i| hex(old[i]))
        .collect();
    let stray: Vec<_> = events
        .iter()
        .filter(|(name, f)| name == "release" && inner.contains(&f["pfn"]))
        .collect();
    assert!(
        stray.is_empty(),
        "releases of single pages of the folios: {stray:?}"
    );
    let info = ok(dev.info(h), "GEM_INFO");
    assert_eq!(
        info.released - info0.released,
        folios as u64,
        "softgpu released {} folios for {folios} 2 MiB folios: {info0:?} -> {info:?}",
        info.released - info0.released
    );

    assert!(m.as_slice() == &data[..], "contents changed by migration");
    assert_eq!(
        gpu_sum(&dev, VA, size),
        fnv1a64(&data),
        "GPU checksum after migration"
    );
}
