//! What the soak (`make soak`) runs beside the fuzzer's workers: stress-ng's
//! memory stressors (anonymous memory churn that also pushes the guest
//! into its zram swap), and a memory block of node 1 taken offline and
//! brought back online in a loop, so that every page in it, GPU-held gemfs
//! BO pages included, migrates out again and again. The workers compact
//! and move pages between the nodes themselves.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MEMORY_SYSFS: &str = "/sys/devices/system/memory";

/// Offline/online cycles of the memory block loop.
#[derive(Default)]
pub struct Cycles {
    pub offlined: AtomicU64,
    pub refused: AtomicU64,
}

/// The background load; stopped when dropped.
pub struct Background {
    stress: Option<Child>,
    stop: Arc<AtomicBool>,
    offliner: Option<std::thread::JoinHandle<()>>,
    pub cycles: Arc<Cycles>,
}

/// Node 1's memory blocks that are online and removable, highest first.
fn node1_blocks() -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/node/node1") else {
        return Vec::new();
    };
    let mut ids: Vec<u64> = dir
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("memory")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    ids.reverse();
    ids.retain(|id| {
        let attr = |a: &str| std::fs::read_to_string(format!("{MEMORY_SYSFS}/memory{id}/{a}"));
        attr("removable").is_ok_and(|r| r.trim() == "1")
            && attr("state").is_ok_and(|s| s.trim() == "online")
    });
    ids
}

/// A block of node 1 made ZONE_MOVABLE (offlined, from the highest block
/// down, as the lower ones hold the kernel's own allocations, and brought
/// back `online_movable`), so that only movable pages ever land in it and
/// offlining it again can succeed: the block the loop cycles.
fn movable_block() -> Option<u64> {
    for id in node1_blocks().into_iter().take(12) {
        if set_state(id, "offline", Duration::from_secs(60)) {
            if set_state(id, "online_movable", Duration::from_secs(60)) {
                return Some(id);
            }
            set_state(id, "online", Duration::from_secs(60));
        }
    }
    None
}

/// Writes `state` to memory block `id`, in a child killed after `timeout`
/// (offline_pages() retries for as long as pages look movable; only a
/// signal ends it). True if the write succeeded.
fn set_state(id: u64, state: &str, timeout: Duration) -> bool {
    let path = format!("{MEMORY_SYSFS}/memory{id}/state");
    let child = Command::new("/bin/busybox")
        .args(["timeout", "-s", "KILL", &timeout.as_secs().to_string()])
        .args(["sh", "-c", &format!("echo {state} > {path}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    child.is_ok_and(|s| s.success())
}

impl Background {
    pub fn start() -> Self {
        // Before the stressors, which would fill the block.
        let block = movable_block();
        let stress = Command::new("stress-ng")
            .args(["--vm", "1", "--vm-bytes", "30%", "--vm-keep", "--mmap", "1"])
            .args(["--mmap-bytes", "10%", "--timeout", "0", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| eprintln!("soak: stress-ng did not start: {e}"))
            .ok();
        let stop = Arc::new(AtomicBool::new(false));
        let cycles = Arc::new(Cycles::default());
        let offliner = block.map(|id| {
            let (stop, cycles) = (stop.clone(), cycles.clone());
            println!("soak: cycling memory block {id} of node 1 (ZONE_MOVABLE)");
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if set_state(id, "offline", Duration::from_secs(60)) {
                        cycles.offlined.fetch_add(1, Ordering::Relaxed);
                    } else {
                        cycles.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    // Back online whatever happened (a no-op if it is).
                    set_state(id, "online_movable", Duration::from_secs(60));
                    std::thread::sleep(Duration::from_secs(2));
                }
            })
        });
        Self {
            stress,
            stop,
            offliner,
            cycles,
        }
    }

    /// Whether stress-ng was still running when asked (it must be, for the
    /// soak to have had its load).
    pub fn stress_alive(&mut self) -> bool {
        self.stress
            .as_mut()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    pub fn has_offliner(&self) -> bool {
        self.offliner.is_some()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut c) = self.stress.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.offliner.take() {
            let _ = t.join();
        }
    }
}
