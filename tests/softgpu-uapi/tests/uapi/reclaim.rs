//! What softgpu's shrinker tells reclaim, as the kernel's own
//! `vmscan:mm_shrink_slab_end` tracepoint records it: the pages it freed.

use std::fs;

use softgpu::*;

use crate::common::*;

const VA: u64 = 0x1_0000_0000;
const TRACEFS: &str = "/sys/kernel/tracing";
const EVENT: &str = "events/vmscan/mm_shrink_slab_end/enable";

fn tracefs_write(f: &str, v: &str) {
    fs::write(format!("{TRACEFS}/{f}"), v)
        .unwrap_or_else(|e| panic!("writing {v:?} to {TRACEFS}/{f}: {e}"))
}

/// The `mm_shrink_slab_end` event, recording while the value lives.
struct ShrinkTrace;

impl ShrinkTrace {
    fn start() -> Self {
        mount_tracefs();
        tracefs_write("trace", "");
        tracefs_write(EVENT, "1");
        ShrinkTrace
    }

    /// The return values of softgpu's shrinker's scans so far (the
    /// event names the shrinker by its scan function, which for softgpu
    /// is `kernel::shrinker::scan_callback::<softgpu::objects::Objects>`).
    fn softgpu_returns(&self) -> Vec<i64> {
        let text = fs::read_to_string(format!("{TRACEFS}/trace")).expect("reading the trace");
        text.lines()
            .filter(|l| l.contains("mm_shrink_slab_end") && l.contains("softgpu"))
            .map(|l| {
                let (_, v) = l
                    .rsplit_once("last shrinker return val ")
                    .unwrap_or_else(|| panic!("unexpected mm_shrink_slab_end line: {l}"));
                v.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("return value in {l:?}: {e}"))
            })
            .collect()
    }
}

impl Drop for ShrinkTrace {
    fn drop(&mut self) {
        let _ = fs::write(format!("{TRACEFS}/{EVENT}"), "0");
    }
}

fn shrinker_stat(dev: &Device, key: &str) -> u64 {
    let path = debugfs_path(dev, "shrinker");
    let text = ok(fs::read_to_string(&path), &path);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no {key} in {path}: {text}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {path}: {e}"))
}

/// Folios given back to reclaim are not freed: a scan that only releases
/// them reports nothing freed (reclaim counts them when it pages them
/// out). Only purged pages are freed.
#[test]
fn shrinker_reports_released_pages_as_not_freed() {
    const PAGES: u64 = 64;
    let dev = open();
    let h = create_bound(&dev, PAGES * PAGE, 0, VA);
    run_ok(&dev, &[Cmd::fill(VA, PAGES * PAGE, 0x5c4a)], "FILL");
    assert_eq!(ok(dev.info(h), "GEM_INFO").resident_pages, PAGES);
    let released0 = shrinker_stat(&dev, "released_pages");
    let purged0 = shrinker_stat(&dev, "purged_pages");

    let trace = ShrinkTrace::start();
    ok(
        fs::write("/proc/sys/vm/drop_caches", "2"),
        "writing /proc/sys/vm/drop_caches",
    );
    let returns = trace.softgpu_returns();
    drop(trace);

    let released = shrinker_stat(&dev, "released_pages") - released0;
    let purged = shrinker_stat(&dev, "purged_pages") - purged0;
    assert!(
        released >= PAGES,
        "the shrinker released {released} pages, not the BO's {PAGES}"
    );
    assert_eq!(ok(dev.info(h), "GEM_INFO").resident_pages, 0);
    assert!(
        !returns.is_empty(),
        "no mm_shrink_slab_end event for softgpu's shrinker"
    );
    let freed: i64 = returns.iter().sum();
    assert!(
        freed >= 0 && freed as u64 <= purged,
        "the shrinker reported {freed} pages freed ({returns:?}) while it purged {purged} \
         and released {released}: released pages are not freed"
    );
    ok(dev.unbind(VA, PAGES * PAGE), "VM_UNBIND");
    ok(dev.close_bo(h), "GEM_CLOSE");
}
