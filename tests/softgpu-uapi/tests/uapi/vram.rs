//! Discrete mode's VRAM: the guest's `ivshmem-plain` PCI device (1af4:1110,
//! `VRAM=` of scripts/run-vm.sh, passed to the guest as `runner.vram=<bytes>`)
//! is bound to softgpu, which maps its BAR 2 and reports it in debugfs
//! `vram`. softgpu's probe writes patterns through its write-combined
//! mapping and reads them back, and refuses a BAR that does not keep them;
//! so a bound device is VRAM that reads back what was written.
//!
//! The VRAM is TTM's `TTM_PL_VRAM`, a resource manager on a buddy allocator,
//! which debugfs `vram_mm` shows as TTM sees it.
//!
//! With `VRAM=0` there is no such device and debugfs `vram` and `vram_mm`
//! say `none`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::common::*;

const VRAM_BAR: usize = 2;
const VA: u64 = 0x4000_0000;
/// `IORESOURCE_MEM`, `IORESOURCE_PREFETCH` and `IORESOURCE_MEM_64`.
const MEM: u64 = 0x200;
const PREFETCH: u64 = 0x2000;
const MEM_64: u64 = 0x10_0000;

/// The VRAM size the guest was booted with, from `runner.vram=`.
pub(crate) fn expected_vram() -> u64 {
    let cmdline = fs::read_to_string("/proc/cmdline").expect("reading /proc/cmdline");
    let v = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("runner.vram="))
        .unwrap_or_else(|| panic!("no runner.vram= in {cmdline:?}"));
    v.parse().unwrap_or_else(|e| panic!("runner.vram={v}: {e}"))
}

/// The VRAM size, for a test of discrete mode (the modules `ttm` and
/// `dmem`). A guest without VRAM skips those tests (`runner.skip=`, set by
/// scripts/run-vm.sh): reaching here without VRAM is a failure, never a
/// pass that tested nothing.
pub(crate) fn needs_vram() -> u64 {
    let vram = expected_vram();
    assert_ne!(
        vram, 0,
        "a discrete-mode test in a guest without VRAM (the runner skips these)"
    );
    vram
}

/// For a test of integrated mode (the module `novram`), skipped likewise
/// in a guest with VRAM.
pub(crate) fn needs_no_vram() {
    let vram = expected_vram();
    assert_eq!(
        vram, 0,
        "an integrated-mode test in a guest with VRAM (the runner skips these)"
    );
}

/// The sysfs directories of the guest's 1af4:1110 devices.
pub(crate) fn vram_devices() -> Vec<PathBuf> {
    let read = |d: &Path, f: &str| fs::read_to_string(d.join(f)).unwrap_or_default();
    let mut devs: Vec<PathBuf> = fs::read_dir("/sys/bus/pci/devices")
        .expect("reading /sys/bus/pci/devices")
        .map(|e| e.expect("a PCI device entry").path())
        .filter(|d| read(d, "vendor").trim() == "0x1af4" && read(d, "device").trim() == "0x1110")
        .collect();
    devs.sort();
    devs
}

/// `(start, end, flags)` of BAR `bar` of the device at `dev`, from sysfs
/// `resource`.
fn bar(dev: &Path, bar: usize) -> (u64, u64, u64) {
    let path = dev.join("resource");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path:?}: {e}"));
    let line = text
        .lines()
        .nth(bar)
        .unwrap_or_else(|| panic!("{path:?} has no line for BAR {bar}"));
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| u64::from_str_radix(x.trim_start_matches("0x"), 16).expect("a hex number"))
        .collect();
    assert_eq!(v.len(), 3, "{path:?}: {line:?}");
    (v[0], v[1], v[2])
}

/// A debugfs file of the device's, as text and as its `key: value` pairs
/// with a number for a value.
pub(crate) fn debugfs_kv(dev: &softgpu::Device, name: &str) -> (String, HashMap<String, u64>) {
    let path = debugfs_path(dev, name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let kv = text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect();
    (text, kv)
}

/// The device's debugfs `vram`, as `key: value` pairs (`none` when empty).
pub(crate) fn debugfs_vram(dev: &softgpu::Device) -> (String, HashMap<String, u64>) {
    debugfs_kv(dev, "vram")
}

/// With VRAM: the device is softgpu's, its BAR 2 is 64-bit prefetchable
/// memory of the VRAM's size, and debugfs reports that size, nothing used.
/// Without: no device, and debugfs says `none`.
#[test]
fn vram_bar_bound_and_reported() {
    let want = expected_vram();
    let gpu = open();
    let devs = vram_devices();
    let (text, kv) = debugfs_vram(&gpu);
    if want == 0 {
        assert!(devs.is_empty(), "VRAM=0, yet 1af4:1110 devices: {devs:?}");
        assert_eq!(text, "none\n", "debugfs vram without VRAM");
        return;
    }
    assert_eq!(devs.len(), 1, "1af4:1110 devices: {devs:?}");
    let dev = &devs[0];
    let driver = fs::read_link(dev.join("driver"))
        .unwrap_or_else(|e| panic!("{dev:?} has no driver (softgpu's probe failed?): {e}"));
    assert_eq!(
        driver.file_name().and_then(|n| n.to_str()),
        Some("softgpu"),
        "driver of {dev:?}: {driver:?}"
    );
    let (start, end, flags) = bar(dev, VRAM_BAR);
    assert_ne!(start, 0, "BAR {VRAM_BAR} of {dev:?} is not assigned");
    assert_eq!(end - start + 1, want, "BAR {VRAM_BAR} size of {dev:?}");
    assert_eq!(
        flags & (MEM | PREFETCH | MEM_64),
        MEM | PREFETCH | MEM_64,
        "BAR {VRAM_BAR} flags {flags:#x}"
    );
    assert_eq!(
        kv.get("bar"),
        Some(&(VRAM_BAR as u64)),
        "debugfs vram: {text:?}"
    );
    assert_eq!(kv.get("size"), Some(&want), "debugfs vram: {text:?}");
    assert_eq!(kv.get("used"), Some(&0), "debugfs vram: {text:?}");
    assert_eq!(kv.get("free"), Some(&want), "debugfs vram: {text:?}");
    // The BAR is softgpu's: /proc/iomem names the region after it.
    let iomem = fs::read_to_string("/proc/iomem").expect("reading /proc/iomem");
    let region = format!("{start:08x}-{end:08x} : softgpu VRAM");
    assert!(
        iomem.lines().any(|l| l.trim() == region),
        "no {region:?} in /proc/iomem:\n{iomem}"
    );
}

/// The free blocks by order in the allocator part of debugfs `vram`
/// (`drm_buddy_print()`'s lines `order-N free: ..., blocks: B`), as
/// `(order, blocks)`; and its first line (`chunk_size: ...`).
pub(crate) fn allocator_state(text: &str) -> (String, Vec<(u32, u64)>) {
    let (_, state) = text
        .split_once("allocator:\n")
        .unwrap_or_else(|| panic!("no allocator in debugfs vram: {text:?}"));
    let first = state.lines().next().unwrap_or_default().to_string();
    let orders = state
        .lines()
        .filter_map(|l| l.strip_prefix("order-"))
        .map(|l| {
            // `order-%2d`: one-digit orders have a space before them.
            let (order, rest) = l.trim_start().split_once(' ').expect("order-N ...");
            let (_, blocks) = rest.rsplit_once("blocks: ").expect("..., blocks: B");
            (
                order.trim().parse().expect("an order"),
                blocks.trim().parse().expect("a block count"),
            )
        })
        .collect();
    (first, orders)
}

/// Unbinding the device empties debugfs `vram` (softgpu unmaps the BAR and
/// releases it: /proc/iomem no longer names it softgpu's), and the render
/// node goes on working; binding it again maps and reports it again.
#[test]
fn vram_unbind_and_rebind() {
    let want = expected_vram();
    let devs = vram_devices();
    if want == 0 {
        assert!(devs.is_empty(), "VRAM=0, yet 1af4:1110 devices: {devs:?}");
        return;
    }
    assert_eq!(devs.len(), 1, "1af4:1110 devices: {devs:?}");
    let addr = devs[0].file_name().unwrap().to_str().unwrap().to_string();
    let gpu = open();
    let drv = "/sys/bus/pci/drivers/softgpu";
    let owned = || {
        fs::read_to_string("/proc/iomem")
            .expect("reading /proc/iomem")
            .contains(": softgpu VRAM")
    };
    assert_eq!(debugfs_vram(&gpu).1.get("size"), Some(&want));

    fs::write(format!("{drv}/unbind"), &addr).unwrap_or_else(|e| panic!("unbinding {addr}: {e}"));
    assert!(!devs[0].join("driver").exists(), "{addr} still bound");
    assert_eq!(debugfs_vram(&gpu).0, "none\n", "debugfs vram after unbind");
    assert!(!owned(), "/proc/iomem still has softgpu's VRAM region");
    // The render node is unaffected: a job runs and its result is seen.
    let h = create_bound(&gpu, PAGE, 0, VA);
    run_ok(&gpu, &[softgpu::Cmd::fill(VA, PAGE, 0x7e57_ab1e)], "FILL");
    assert_eq!(map(&gpu, h, PAGE).read_u32(PAGE as usize - 4), 0x7e57_ab1e);
    ok(gpu.unbind(VA, PAGE), "VM_UNBIND");
    ok(gpu.close_bo(h), "GEM_CLOSE");

    fs::write(format!("{drv}/bind"), &addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    let (text, kv) = debugfs_vram(&gpu);
    assert_eq!(
        kv.get("size"),
        Some(&want),
        "debugfs vram after bind: {text:?}"
    );
    assert!(
        owned(),
        "/proc/iomem lacks softgpu's VRAM region after bind"
    );
}

/// debugfs `vram_mm`, TTM's view of the VRAM manager
/// (`ttm_resource_manager_debug()`), as `key: value` pairs.
fn debugfs_vram_mm(dev: &softgpu::Device) -> (String, HashMap<String, u64>) {
    debugfs_kv(dev, "vram_mm")
}

/// The VRAM is TTM's: its TTM_PL_VRAM manager is in use, not a TT
/// manager, of the BAR's size in bytes, nothing used, and prints the same
/// allocator as debugfs `vram`. Unbinding removes it (`none`), binding
/// registers a new one. Without VRAM there is none.
#[test]
fn vram_manager_is_ttms() {
    let want = expected_vram();
    let gpu = open();
    if want == 0 {
        assert_eq!(
            debugfs_vram_mm(&gpu).0,
            "none\n",
            "debugfs vram_mm without VRAM"
        );
        return;
    }
    let check = |when: &str| {
        let (text, kv) = debugfs_vram_mm(&gpu);
        assert!(text.starts_with("vram:\n"), "{when}: {text:?}");
        for (k, v) in [("use_type", 1), ("use_tt", 0), ("size", want), ("usage", 0)] {
            assert_eq!(kv.get(k), Some(&v), "{when}: {k} in {text:?}");
        }
        let (mm_first, mm_orders) = allocator_state(&text);
        let (vram_first, vram_orders) = allocator_state(&debugfs_vram(&gpu).0);
        assert_eq!((mm_first, mm_orders), (vram_first, vram_orders), "{when}");
    };
    check("after boot");
    let devs = vram_devices();
    assert_eq!(devs.len(), 1, "1af4:1110 devices: {devs:?}");
    let addr = devs[0].file_name().unwrap().to_str().unwrap().to_string();
    let drv = "/sys/bus/pci/drivers/softgpu";
    fs::write(format!("{drv}/unbind"), &addr).unwrap_or_else(|e| panic!("unbinding {addr}: {e}"));
    assert_eq!(
        debugfs_vram_mm(&gpu).0,
        "none\n",
        "debugfs vram_mm after unbind"
    );
    fs::write(format!("{drv}/bind"), &addr).unwrap_or_else(|e| panic!("binding {addr}: {e}"));
    check("after unbind and bind");
}
