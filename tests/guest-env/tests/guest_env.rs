//! The guest must be what later tests rely on: two NUMA nodes with memory,
//! swap on zram, THP, compaction, KUnit results in debugfs, and page
//! migration between the nodes on the real mm paths.

use std::fs;

/// `MPOL_MF_MOVE` from <linux/mempolicy.h>: move pages owned by this process.
const MPOL_MF_MOVE: libc::c_int = 1 << 1;

fn read(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn node_mem_kb(node: u32) -> u64 {
    let meminfo = read(&format!("/sys/devices/system/node/node{node}/meminfo"));
    let line = meminfo
        .lines()
        .find(|l| l.contains("MemTotal:"))
        .expect("MemTotal in node meminfo");
    line.split_whitespace()
        .rev()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("MemTotal value")
}

#[test]
fn two_numa_nodes_with_memory() {
    let online = read("/sys/devices/system/node/online");
    assert_eq!(online.trim(), "0-1", "online nodes");
    for node in 0..2 {
        assert!(node_mem_kb(node) > 256 * 1024, "node{node} has memory");
    }
}

#[test]
fn swap_on_zram_is_active() {
    let swaps = read("/proc/swaps");
    let zram = swaps
        .lines()
        .find(|l| l.starts_with("/dev/zram0"))
        .unwrap_or_else(|| panic!("no zram swap in:\n{swaps}"));
    let size_kb: u64 = zram.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(size_kb > 0);
}

#[test]
fn thp_and_compaction_are_available() {
    let thp = read("/sys/kernel/mm/transparent_hugepage/enabled");
    assert!(thp.contains('['), "THP modes: {thp}");
    fs::write("/proc/sys/vm/compact_memory", "1").expect("trigger compaction");
    let vmstat = read("/proc/vmstat");
    assert!(vmstat.contains("compact_migrate_scanned"));
    assert!(vmstat.contains("pgmigrate_success"));
}

/// The KUnit suites every test run must report (one truth for this test
/// and scripts/check-results.py).
const KUNIT_SUITES: &str = include_str!("../../kunit-suites.txt");

/// `kunit.filter_glob`'s suite part on the kernel command line, if any.
fn kunit_suite_glob() -> Option<String> {
    read("/proc/cmdline")
        .split_whitespace()
        .find_map(|w| w.strip_prefix("kunit.filter_glob="))
        .map(|g| g.split('.').next().unwrap_or(g).to_string())
}

/// Whether `name` matches `glob` (`*` and `?`), as KUnit's filter does.
fn glob_match(glob: &[u8], name: &[u8]) -> bool {
    match (glob.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&glob[1..], name) || (!name.is_empty() && glob_match(glob, &name[1..]))
        }
        (Some(&g), Some(&n)) if g == b'?' || g == n => glob_match(&glob[1..], &name[1..]),
        _ => false,
    }
}

/// Every expected suite ran during boot and its results are in debugfs:
/// at least one case passed and the suite as a whole is `ok`. A suite
/// whose config is off has no directory there.
#[test]
fn kunit_results_are_in_debugfs() {
    let glob = kunit_suite_glob();
    let expected: Vec<&str> = KUNIT_SUITES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(!expected.is_empty(), "no suite in tests/kunit-suites.txt");
    let mut checked = 0;
    for suite in expected {
        if glob
            .as_deref()
            .is_some_and(|g| !glob_match(g.as_bytes(), suite.as_bytes()))
        {
            continue;
        }
        let path = format!("/sys/kernel/debug/kunit/{suite}/results");
        let results = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("suite {suite} did not run: {path}: {e}"));
        // Cases are indented one level ("    ok 1 name"); the suite's own
        // result closes the document at column 0 ("ok 1 suite").
        let passed = results
            .lines()
            .filter(|l| l.starts_with("    ok ") && !l.contains("# SKIP"))
            .count();
        assert!(passed > 0, "suite {suite} passed no case:\n{results}");
        let last = results.lines().rev().find(|l| !l.trim().is_empty());
        assert!(
            last.is_some_and(|l| l.starts_with("ok ")),
            "suite {suite} did not pass:\n{results}"
        );
        checked += 1;
    }
    if glob.is_none() {
        assert!(checked > 0);
    }
}

/// Moves one anonymous page to node 1 and back with move_pages(2) and
/// checks where it is each time: the NUMA setup the migration tests use.
#[test]
fn move_pages_between_nodes() {
    const PAGE: usize = 4096;
    // SAFETY: an anonymous private mapping of one page; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    // SAFETY: p is a writable mapping of PAGE bytes.
    unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0x5a, PAGE) };
    for target in [1i32, 0] {
        let mut pages = [p];
        let nodes = [target];
        let mut status = [-1i32];
        // SAFETY: arrays of one element each, as count says; pid 0 is us.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_pages,
                0,
                1usize,
                pages.as_mut_ptr(),
                nodes.as_ptr(),
                status.as_mut_ptr(),
                MPOL_MF_MOVE,
            )
        };
        assert_eq!(r, 0, "move_pages: {}", std::io::Error::last_os_error());
        assert_eq!(status[0], target, "page is on node {target}");
    }
    // SAFETY: p is still mapped, PAGE bytes.
    let data = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), PAGE) };
    assert!(
        data.iter().all(|&b| b == 0x5a),
        "contents survived migration"
    );
    // SAFETY: unmapping what we mapped.
    assert_eq!(unsafe { libc::munmap(p, PAGE) }, 0);
}
