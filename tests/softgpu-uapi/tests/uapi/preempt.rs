//! Long jobs on a kernel that does not preempt kernel code
//! (`CONFIG_PREEMPT_NONE`, as the test kernel is): the engine must yield
//! the CPU now and then, or a job over a GiB keeps `stop_machine()` (CPU
//! hotplug, NUMA balancing's `migrate_swap()`) and RCU grace periods
//! waiting on the other CPU for as long as it runs; the console then shows
//! an RCU stall or a soft lockup, which fails the run.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use softgpu::*;

use crate::common::*;

const VA: u64 = 0x1_0000_0000;
const RES_VA: u64 = 0x10_0000_0000;
const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";

/// The longest a CPU may take to go offline or online while the engine
/// runs. A hotplug step takes well under a second here even under TCG; an
/// engine that never yields holds `stop_machine()` for the rest of its job.
const MAX_HOTPLUG: Duration = Duration::from_secs(5);

fn set_cpu1_online(online: bool) -> Duration {
    let start = Instant::now();
    ok(
        fs::write(CPU1_ONLINE, if online { "1" } else { "0" }),
        &format!("writing {} to {CPU1_ONLINE}", online as u8),
    );
    start.elapsed()
}

/// Puts CPU 1 back online however the test ends.
struct Cpu1Online;

impl Drop for Cpu1Online {
    fn drop(&mut self) {
        let _ = fs::write(CPU1_ONLINE, "1");
    }
}

#[test]
fn gib_job_while_a_cpu_goes_offline_and_online() {
    const SIZE: u64 = 1 << 30;
    const VALUE: u32 = 0x5eed_f00d;
    let online = ok(fs::read_to_string(CPU1_ONLINE), CPU1_ONLINE);
    assert_eq!(online.trim(), "1", "CPU 1 must be online to start with");
    let _restore = Cpu1Online;

    let dev = open();
    let bo = create_bound(&dev, SIZE, 0, VA);
    let r = create_bound(&dev, PAGE, 0, RES_VA);
    let res = map(&dev, r, PAGE);

    // The hotplug loop starts first, so that the job overlaps it from its
    // first page on.
    let done = Arc::new(AtomicBool::new(false));
    let hotplug = {
        let done = done.clone();
        thread::spawn(move || {
            let mut steps = Vec::new();
            while !done.load(Ordering::Relaxed) {
                steps.push(set_cpu1_online(false));
                steps.push(set_cpu1_online(true));
            }
            steps
        })
    };
    let (seqno, _) = ok(
        dev.exec(
            &[Cmd::fill(VA, SIZE, VALUE), Cmd::checksum(RES_VA, VA, SIZE)],
            0,
        ),
        "EXEC of a 1 GiB fill and checksum",
    );
    let started = Instant::now();
    let (status, fault) = ok(dev.wait(seqno, WAIT_NS), "WAIT for the 1 GiB job");
    let job_time = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let steps = hotplug.join().expect("the hotplug thread panicked");
    assert_eq!(
        status, 0,
        "the 1 GiB job failed: status {status}, fault_addr {fault:#x}"
    );

    let slowest = steps.iter().max().copied().unwrap_or_default();
    eprintln!(
        "1 GiB fill + checksum: {job_time:?}; {} hotplug steps, slowest {slowest:?}",
        steps.len()
    );
    assert!(
        slowest <= MAX_HOTPLUG,
        "CPU 1 took {slowest:?} to go offline or online while the engine ran a \
         {job_time:?} job: the engine holds up stop_machine() (hotplug steps: {steps:?})"
    );
    // The job took long enough for several steps: the engine and the
    // hotplug really overlapped (else the bound above proves nothing).
    assert!(
        steps.len() >= 4,
        "only {} hotplug steps during a {job_time:?} job (slowest {slowest:?})",
        steps.len()
    );

    // The result is right: the GPU checksum of what it filled, and the
    // CPU sees the fill.
    let mut h = Fnv1a64::new();
    let chunk = filled(MIB as usize, VALUE);
    for _ in 0..SIZE / MIB {
        h.update(&chunk);
    }
    assert_eq!(
        res.read_u64(0),
        h.finish(),
        "GPU checksum of the 1 GiB fill"
    );
    let m = map(&dev, bo, SIZE);
    for off in [0, SIZE / 2 + 4 * PAGE + 12, SIZE - 4] {
        assert_eq!(m.read_u32(off as usize), VALUE, "BO word at {off:#x}");
    }
    drop(m);
    ok(dev.unbind(VA, SIZE), "VM_UNBIND of the 1 GiB BO");
    ok(dev.close_bo(bo), "GEM_CLOSE of the 1 GiB BO");
}
