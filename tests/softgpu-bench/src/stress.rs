//! Background load of the `frag-stress` phase: stress-ng memory stressors
//! running while the long-lived objects are allocated, stopped (their
//! memory freed) before compaction.
//!
//! They add what the benchmark's own churn lacks: kernel allocations
//! interleaved with the objects (mmapfork's processes bring page tables,
//! task structs and VMAs: unmovable memory), pages remapped (pagemove)
//! and anonymous memory allocated and freed while the objects land (vm).

use std::fs::{self, File};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::json::{Obj, Put as _};
use crate::sys::{Ctx as _, R};

/// Where stress-ng is in the guest (scripts/mkinitramfs.sh puts it there).
const STRESS_NG: &str = "/bin/stress-ng";

/// How long stress-ng may take to stop its workers after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long stress-ng may take to start its workers.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the workers run at least. A vm worker stopped 0.3 s after it
/// started, before its first operation (a smoke run's fill can be that
/// short), reported "aborted early, out of system resources", and
/// stress-ng failed.
const MIN_RUN: Duration = Duration::from_secs(5);

/// What stress-ng prints as it starts its workers ("dispatching hogs: 1
/// vm, 1 pagemove"). A SIGINT after it stops stress-ng; one 0.7 s after
/// the start, before it, killed stress-ng.
const DISPATCHED: &str = "dispatching hogs:";

/// A stressor name as stress-ng spells its options: a lower case letter,
/// then lower case letters, digits and dashes.
pub fn valid_stressor(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// stress-ng's arguments: one worker of each stressor, the ones that size
/// their memory kept small (the churn leaves little free memory: the load
/// must interleave with the objects, not push them into swap).
pub fn args(stressors: &[String], temp_dir: &Path) -> Vec<String> {
    let mut a = Vec::new();
    for s in stressors {
        a.extend([format!("--{s}"), "1".into()]);
        match s.as_str() {
            "vm" => a.extend(["--vm-bytes".into(), "64M".into()]),
            "pagemove" => a.extend(["--pagemove-bytes".into(), "16M".into()]),
            _ => {}
        }
    }
    a.extend([
        "--timeout".into(),
        "0".into(),
        "--metrics".into(),
        "--temp-path".into(),
        temp_dir.display().to_string(),
    ]);
    a
}

/// A running stress-ng; killed with its workers if dropped before
/// [`Background::stop`].
pub struct Background {
    child: Child,
    log: PathBuf,
    started: Instant,
    stressors: Vec<String>,
}

impl Background {
    /// Starts one worker of each of `stressors`, output to `dir/stress-ng.log`,
    /// temporary files in `dir`.
    pub fn start(stressors: &[String], dir: &Path) -> R<Self> {
        let log = dir.join("stress-ng.log");
        let out = File::create(&log).ctx("creating the stress-ng log")?;
        let err = out.try_clone().ctx("duplicating the stress-ng log")?;
        let child = Command::new(STRESS_NG)
            .args(args(stressors, dir))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a failed stop kills every worker.
            .process_group(0)
            .spawn()
            .ctx("starting stress-ng")?;
        Ok(Self {
            child,
            log,
            started: Instant::now(),
            stressors: stressors.to_vec(),
        })
    }

    fn log_tail(&self) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(12)..].join(" | ")
    }

    /// Polls every 50 ms until `f` gives a value, for at most `timeout`;
    /// `what` says what was awaited, in the error.
    fn poll<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&mut Self) -> R<Option<T>>,
    ) -> R<T> {
        let t = Instant::now();
        loop {
            if let Some(v) = f(self)? {
                return Ok(v);
            }
            if t.elapsed() > timeout {
                return Err(format!(
                    "stress-ng did not {what} within {} s: {}",
                    timeout.as_secs(),
                    self.log_tail()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until stress-ng has dispatched its workers: a SIGINT before
    /// that kills it instead of stopping it. Returns the stressors it
    /// dispatched.
    fn wait_dispatched(&mut self) -> R<Vec<String>> {
        self.poll(START_TIMEOUT, "start its workers", |b| {
            if let Some(st) = b.child.try_wait().ctx("polling stress-ng")? {
                return Err(format!(
                    "stress-ng exited before the objects were allocated ({st}): {}",
                    b.log_tail()
                ));
            }
            Ok(dispatched(&fs::read_to_string(&b.log).unwrap_or_default()))
        })
    }

    /// Stops stress-ng (SIGINT: it stops its workers, prints its metrics
    /// and exits 0) once its workers have run for at least [`MIN_RUN`],
    /// and returns what ran: the stressors, for how long, and the bogo
    /// operations of each (`null` where its metrics have no line). An
    /// error if it exited before being stopped, did not start every
    /// stressor, failed (a stressor out of resources is not a failure:
    /// `exit` says so), or did not stop in time.
    pub fn stop(mut self) -> R<Obj> {
        let started = self.wait_dispatched()?;
        if let Some(s) = self.stressors.iter().find(|s| !started.contains(s)) {
            return Err(format!(
                "stress-ng did not start {s} (dispatched {started:?})"
            ));
        }
        thread::sleep(MIN_RUN.saturating_sub(self.started.elapsed()));
        let secs = self.started.elapsed().as_secs_f64();
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, which has not been reaped yet
        // (wait_dispatched's try_wait saw it running, and only this
        // function and Drop reap it), so the pid is still its.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let t = Instant::now();
        let status = self.poll(STOP_TIMEOUT, "stop after SIGINT", |b| {
            b.child.try_wait().ctx("waiting for stress-ng")
        })?;
        let exit = exit_outcome(status.code())
            .map_err(|e| format!("stress-ng failed ({status}): {e}: {}", self.log_tail()))?;
        let log = fs::read_to_string(&self.log).ctx("reading the stress-ng log")?;
        let ops = bogo_ops(&log);
        let mut o = Obj::new();
        o.put("stressors", self.stressors.clone())
            .put("secs_emulated", secs)
            .put("stop_secs_emulated", t.elapsed().as_secs_f64());
        let mut b = Obj::new();
        for s in &self.stressors {
            b.put(s, ops.get(s).copied());
        }
        o.put("bogo_ops", b).put("exit", exit);
        Ok(o)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) of the process group stress-ng leads (it was
            // spawned with process_group(0), so its pid is the group id),
            // while the leader is unreaped: the group cannot be someone
            // else's.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// What stress-ng's exit status says: `Ok` for a run (0), or one whose
/// stressor ran out of memory or another resource (2, EXIT_NO_RESOURCE:
/// what a memory stressor meets under the pressure it makes, counted in
/// the record, not a failure); `Err` otherwise (killed, bad arguments, a
/// stressor that failed).
fn exit_outcome(code: Option<i32>) -> R<&'static str> {
    match code {
        Some(0) => Ok("ok"),
        Some(2) => Ok("no resources"),
        Some(c) => Err(format!("exit status {c}")),
        None => Err("killed by a signal".into()),
    }
}

/// The stressors of stress-ng's "dispatching hogs: 1 vm, 1 pagemove"
/// line, if it printed it.
fn dispatched(log: &str) -> Option<Vec<String>> {
    let list = log
        .lines()
        .find_map(|l| Some(l.split_once(DISPATCHED)?.1))?;
    Some(
        list.split(',')
            .filter_map(|w| w.split_whitespace().nth(1).map(String::from))
            .collect(),
    )
}

/// The bogo operations per stressor from stress-ng's `--metrics` table ("stress-ng: metrc: [pid] vm  924  4.18 ...").
fn bogo_ops(log: &str) -> std::collections::BTreeMap<String, u64> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split_once("metrc:")?.1;
            let mut w = rest.split_whitespace().skip(1);
            let name = w.next()?;
            let ops = w.next()?.parse().ok()?;
            valid_stressor(name).then(|| (name.to_string(), ops))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_resources_is_an_outcome() {
        assert_eq!(exit_outcome(Some(0)), Ok("ok"));
        assert_eq!(exit_outcome(Some(2)), Ok("no resources"));
        assert!(exit_outcome(Some(1)).is_err());
        assert!(exit_outcome(Some(3)).is_err());
        assert!(exit_outcome(None).is_err());
    }

    #[test]
    fn stressor_names_and_arguments() {
        assert!(valid_stressor("mmapfork") && valid_stressor("vm-addr"));
        assert!(!valid_stressor("") && !valid_stressor("--vm") && !valid_stressor("Vm"));
        let a = args(&["vm".into(), "numa".into()], Path::new("/t"));
        assert_eq!(
            a.join(" "),
            "--vm 1 --vm-bytes 64M --numa 1 --timeout 0 --metrics --temp-path /t"
        );
    }

    /// A real stress-ng (the guest has it in /bin): it runs, stops on
    /// SIGINT and reports its stressor; an unknown stressor is an error.
    #[test]
    fn stress_ng_runs_and_stops() {
        let dir = std::env::temp_dir().join(format!("stress-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // Stopped at once: stop() waits for the workers to start.
        let b = Background::start(&["vm".into()], &dir).unwrap();
        let o = b.stop().unwrap();
        let line = crate::json::line(&o);
        assert!(line.contains("\"bogo_ops\":{\"vm\":"), "{line}");
        let b = Background::start(&["no-such-stressor".into()], &dir).unwrap();
        thread::sleep(Duration::from_secs(1));
        let e = b.stop().unwrap_err();
        assert!(e.contains("exited before"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn metrics_are_parsed() {
        let log = "\
stress-ng: info:  [17023] dispatching hogs: 1 vm, 1 pagemove
stress-ng: metrc: [17023] stressor       bogo ops real time  usr time
stress-ng: metrc: [17023]                           (secs)    (secs)
stress-ng: metrc: [17023] vm                  924      4.18      0.08
stress-ng: metrc: [17023] pagemove              8      4.33      0.03
stress-ng: metrc: [17023] miscellaneous metrics:
stress-ng: metrc: [17023] pagemove           12406.92 page remaps per sec
";
        assert_eq!(dispatched(log).unwrap(), ["vm", "pagemove"]);
        assert!(dispatched("stress-ng: info: setting to a 0 second run").is_none());
        let m = bogo_ops(log);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!((m["vm"], m["pagemove"]), (924, 8));
    }
}
