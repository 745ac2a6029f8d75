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
const CPU1_ONLINE: &str = "/sys/devices/system/cpu/cpu1/online";

/// The longest a CPU may take to go offline or online while the engine
/// runs, at least: a hotplug step takes well under a second here even
/// under TCG; an engine that never yields holds `stop_machine()` for the
/// rest of its job. On a loaded host every step stretches with the job,
/// so the bound does too (see `max_hotplug`).
const MAX_HOTPLUG: Duration = Duration::from_secs(5);

/// The bound for one hotplug step during a job that took `job`: an eighth
/// of it, or [`MAX_HOTPLUG`] if more. A step held up by an engine that
/// never yields takes about as long as the job left to run, which for the
/// first step after the job starts is nearly all of it; a host slow enough
/// to stretch every step stretches the job alike.
fn max_hotplug(job: Duration) -> Duration {
    MAX_HOTPLUG.max(job / 8)
}

fn set_cpu1_online(online: bool) -> Duration {
    let start = Instant::now();
    ok(
        fs::write(CPU1_ONLINE, if online { "1" } else { "0" }),
        &format!("writing {} to {CPU1_ONLINE}", online as u8),
    );
    start.elapsed()
}

/// A 1 GiB fill takes minutes under TCG with KASAN, more on a busy host:
/// longer than the other tests' `WAIT_NS`.
const JOB_WAIT_NS: i64 = 900_000_000_000;

/// Takes CPU 1 offline and online in a loop on a thread, until dropped;
/// then puts it back online, however the test ends.
struct Hotplug {
    done: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Vec<Duration>>>,
}

impl Hotplug {
    fn start() -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let thread = thread::spawn(move || {
            let mut steps = Vec::new();
            while !d.load(Ordering::Relaxed) {
                steps.push(set_cpu1_online(false));
                steps.push(set_cpu1_online(true));
            }
            steps
        });
        Self {
            done,
            thread: Some(thread),
        }
    }

    /// Stops the loop; how long each step took.
    fn stop(mut self) -> Vec<Duration> {
        self.done.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("stopped once");
        t.join().expect("the hotplug thread panicked")
    }
}

impl Drop for Hotplug {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = fs::write(CPU1_ONLINE, "1");
    }
}

#[test]
fn gib_job_while_a_cpu_goes_offline_and_online() {
    const SIZE: u64 = 1 << 30;
    const VALUE: u32 = 0x5eed_f00d;
    let online = ok(fs::read_to_string(CPU1_ONLINE), CPU1_ONLINE);
    assert_eq!(online.trim(), "1", "CPU 1 must be online to start with");

    let dev = open();
    let bo = create_bound(&dev, SIZE, 0, VA);

    // The hotplug loop starts first, so that the job overlaps it from its
    // first page on.
    let hotplug = Hotplug::start();
    let (seqno, _) = ok(
        dev.exec(&[Cmd::fill(VA, SIZE, VALUE)], 0),
        "EXEC of a 1 GiB fill",
    );
    let started = Instant::now();
    let (status, fault) = ok(dev.wait(seqno, JOB_WAIT_NS), "WAIT for the 1 GiB job");
    let job_time = started.elapsed();
    let steps = hotplug.stop();
    assert_eq!(
        status, 0,
        "the 1 GiB job failed: status {status}, fault_addr {fault:#x}"
    );

    let slowest = steps.iter().max().copied().unwrap_or_default();
    eprintln!(
        "1 GiB fill: {job_time:?}; {} hotplug steps, slowest {slowest:?}",
        steps.len()
    );
    assert!(
        slowest <= max_hotplug(job_time),
        "CPU 1 took {slowest:?} (more than {:?}) to go offline or online while the engine \
         ran a {job_time:?} job: the engine holds up stop_machine() (hotplug steps: {steps:?})",
        max_hotplug(job_time)
    );
    // The job took long enough for several steps: the engine and the
    // hotplug really overlapped (else the bound above proves nothing).
    assert!(
        steps.len() >= 4,
        "only {} hotplug steps during a {job_time:?} job (slowest {slowest:?})",
        steps.len()
    );

    // The result is right: the CPU sees the fill all over the BO.
    let m = map(&dev, bo, SIZE);
    for i in 0..64 {
        let off = i * (SIZE / 64) + (i * 4 * PAGE + 12 * i) % (SIZE / 64);
        assert_eq!(m.read_u32(off as usize), VALUE, "BO word at {off:#x}");
    }
    assert_eq!(m.read_u32(SIZE as usize - 4), VALUE, "the BO's last word");
    drop(m);
    ok(dev.unbind(VA, SIZE), "VM_UNBIND of the 1 GiB BO");
    ok(dev.close_bo(bo), "GEM_CLOSE of the 1 GiB BO");
}
