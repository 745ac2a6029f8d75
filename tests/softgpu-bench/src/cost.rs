//! What gemfs costs, as ratios measured side by side in the same guest:
//!
//! - `migrate`: move_pages(2) throughput of GPU-resident gemfs BO pages
//!   (each migration asks softgpu to release the folio) against plain tmpfs
//!   file pages, both mapped by the CPU, same size, same huge page policy
//!   (`huge=within_size`, gemfs's). Pinned BOs are measured too: their
//!   pages do not move.
//! - `gpu`: GPU job throughput while migration churns (move_pages of every
//!   object page to the other node and back, and compaction, in a loop)
//!   against a quiet window of the same length.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use softgpu::mm;

use crate::frag::settle;
use crate::gpu::{BoSet, StopOnDrop, Stream};
use crate::json::{Obj, Put as _};
use crate::sys::{self, create_file, Ctx as _, FileMap, Tmpfs, MIB, PAGE, R};
use crate::{Config, Mode};

/// What the kernel may answer under memory pressure, from another
/// workload's or our own: `move_pages(2)` documents ENOMEM, and EBUSY and
/// EAGAIN come from pages that are busy for the moment. Neither is wrong
/// data nor a broken invariant: counted, never a failure.
const TRANSIENT: &[(i32, &str)] = &[
    (libc::ENOMEM, "ENOMEM"),
    (libc::EBUSY, "EBUSY"),
    (libc::EAGAIN, "EAGAIN"),
];

/// The errnos a page may have per page after a move, by name; other
/// negative statuses are named by number.
const PAGE_ERRNOS: &[(i32, &str)] = &[
    (libc::ENOMEM, "ENOMEM"),
    (libc::EBUSY, "EBUSY"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOENT, "ENOENT"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::ENODEV, "ENODEV"),
];

fn errno_name(table: &[(i32, &'static str)], errno: i32) -> Option<&'static str> {
    table.iter().find(|(e, _)| *e == errno).map(|(_, n)| *n)
}

/// A move_pages(2) call's error: `Ok(name)` if transient (to be counted),
/// `Err` (a failure) otherwise.
fn classify_call_error(e: &std::io::Error) -> R<&'static str> {
    e.raw_os_error()
        .and_then(|n| errno_name(TRANSIENT, n))
        .ok_or_else(|| format!("move_pages: {e}"))
}

/// One page's status after a move to `target`: `Ok(None)` if it is there,
/// `Ok(Some(why))` if it was not moved (a per-page errno, or no status:
/// the call stopped before its batch), `Err` for a status move_pages(2)
/// never gives (a node other than the target).
fn classify_page(status: i32, target: i32) -> R<Option<String>> {
    match status {
        s if s == target => Ok(None),
        mm::NOT_MOVED => Ok(Some("unreported".into())),
        s if s < 0 => Ok(Some(
            errno_name(PAGE_ERRNOS, -s).map_or_else(|| format!("errno {}", -s), String::from),
        )),
        s => Err(format!(
            "move_pages: a page reported on node {s}, asked to move to {target}"
        )),
    }
}

/// What moving pages to the other node came to, over one or more rounds.
#[derive(Debug, Default, PartialEq)]
struct Moves {
    /// Pages that reached their target.
    moved: u64,
    /// Pages asked (every page, present or not).
    asked: u64,
    /// Pages not moved, by reason (per-page errno, `unreported`, `absent`:
    /// not present at the query).
    not_moved: BTreeMap<String, u64>,
    /// Calls (query or move) that failed transiently, by errno.
    transient_calls: BTreeMap<String, u64>,
}

impl Moves {
    fn add(&mut self, o: Moves) {
        self.moved += o.moved;
        self.asked += o.asked;
        for (k, v) in o.not_moved {
            *self.not_moved.entry(k).or_default() += v;
        }
        for (k, v) in o.transient_calls {
            *self.transient_calls.entry(k).or_default() += v;
        }
    }

    fn put(&self, o: &mut Obj) {
        let map = |m: &BTreeMap<String, u64>| {
            let mut j = Obj::new();
            for (k, &v) in m {
                j.put(k, v);
            }
            j
        };
        o.put("not_moved", map(&self.not_moved))
            .put("transient_calls", map(&self.transient_calls));
    }
}

/// Counts a move's outcome: `asked` pages, of which those present at the
/// query were asked to move to `t`, and the call's result. Errors only on a broken invariant or a call that
/// failed for a reason other than memory pressure.
fn count_move(asked: usize, t: &[i32], res: std::io::Result<mm::MoveOutcome>) -> R<Moves> {
    let mut m = Moves {
        asked: asked as u64,
        ..Moves::default()
    };
    let absent = asked - t.len();
    if absent > 0 {
        m.not_moved.insert("absent".into(), absent as u64);
    }
    let status = match res {
        Ok(out) => out.status,
        Err(e) => {
            *m.transient_calls
                .entry(classify_call_error(&e)?.into())
                .or_default() += 1;
            *m.not_moved.entry("call failed".into()).or_default() += t.len() as u64;
            return Ok(m);
        }
    };
    for (j, &s) in status.iter().enumerate() {
        match classify_page(s, t[j])? {
            None => m.moved += 1,
            Some(why) => *m.not_moved.entry(why).or_default() += 1,
        }
    }
    Ok(m)
}

/// Moves every page to the other node once, and counts what happened.
fn move_to_other_node(addrs: &[usize]) -> R<Moves> {
    let now = match mm::page_nodes(addrs) {
        Ok(n) => n,
        Err(e) => {
            let why = classify_call_error(&e).map_err(|e| format!("{e} (query)"))?;
            let mut m = Moves {
                asked: addrs.len() as u64,
                ..Moves::default()
            };
            m.transient_calls.insert(why.into(), 1);
            m.not_moved
                .insert("query failed".into(), addrs.len() as u64);
            return Ok(m);
        }
    };
    let (mut a, mut t) = (Vec::new(), Vec::new());
    for (i, &n) in now.iter().enumerate() {
        if n >= 0 {
            a.push(addrs[i]);
            t.push(1 - n);
        }
    }
    count_move(addrs.len(), &t, mm::move_pages(&a, &t))
}

fn two_nodes() -> bool {
    mm::online_nodes().is_ok_and(|n| n == [0, 1])
}

/// The `migrate` phase: one record per target (tmpfs, gemfs, pinned), then
/// a summary with the ratio.
pub fn migrate(cfg: &Config, workdir: &Path) -> Vec<Obj> {
    let mut recs = Vec::new();
    let mut rates = Vec::new();
    for target in ["tmpfs", "gemfs", "pinned"] {
        let mut rec = Obj::new();
        rec.put("phase", "migrate").put("target", target);
        let res = if two_nodes() {
            migrate_one(cfg, workdir, target, &mut rec)
        } else {
            rec.put("skipped", "needs NUMA nodes 0 and 1");
            Ok(())
        };
        sys::finish(&mut rec, &format!("migrate {target}"), res);
        rates.push(rec.get("pages_per_sec_emulated").and_then(|r| r.as_f64()));
        recs.push(rec);
    }
    let mut s = Obj::new();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    s.put("phase", "migrate-summary")
        .put("gemfs_vs_tmpfs", ratio(rates[1], rates[0]))
        .put("pinned_vs_tmpfs", ratio(rates[2], rates[0]))
        .put("ok", true);
    recs.push(s);
    recs
}

fn migrate_one(cfg: &Config, workdir: &Path, target: &str, rec: &mut Obj) -> R<()> {
    settle()?;
    let size = cfg.bo_bytes();
    let total = (cfg.cost_mb * MIB).div_ceil(size).max(1) * size;
    rec.put("mb", total / MIB).put("rounds", cfg.migrate_rounds);
    crate::progress(&format!("migrate {target}: {} MiB", total / MIB));
    let gemfs0 = sys::dir_counters("/sys/kernel/debug/gemfs");
    // Keep what the addresses point into alive until the end.
    let mut _tmpfs = None;
    let mut _file = None;
    let mut fmap = None;
    let mut set = None;
    let mut _maps = Vec::new();
    let addrs: Vec<usize> = if target == "tmpfs" {
        let t = Tmpfs::mount(
            &workdir.join("migrate-tmpfs"),
            &format!("huge=within_size,size={}m", 2 * total / MIB + 4),
        )?;
        let path = t.dir.join("data");
        let f = create_file(&path)?;
        f.set_len(total).ctx("ftruncate")?;
        let chunk = vec![0x3cu8; MIB as usize];
        for off in (0..total).step_by(MIB as usize) {
            f.write_all_at(&chunk, off).ctx("writing the tmpfs file")?;
        }
        let m = FileMap::new(&f, total as usize)?;
        for off in (0..total as usize).step_by(PAGE) {
            m.read_u64(off);
        }
        let a = m.page_addrs();
        _tmpfs = Some(t);
        _file = Some(f);
        fmap = Some(m);
        a
    } else {
        let mode = if target == "pinned" {
            Mode::Pinned
        } else {
            Mode::Gemfs
        };
        let mut s = BoSet::new(1, mode, size)?;
        s.add((total / size) as usize)?;
        let maps = s.map_all()?;
        let a = maps.iter().flat_map(|m| m.page_addrs()).collect();
        _maps = maps;
        set = Some(s);
        a
    };
    let mut total = Moves::default();
    let mut secs = 0f64;
    let mut per_move = Vec::new();
    for r in 0..cfg.migrate_rounds * 2 {
        if let Some(s) = &set {
            // Make every page GPU-resident again (a CHECKSUM faults them
            // in, and checks them), so that each move asks the driver.
            let v = s.verify(1)?;
            if v.mismatches > 0 {
                return Err(format!("DATA CORRUPTION before move {r}: {:?}", v.first));
            }
        }
        let t = Instant::now();
        let moves = move_to_other_node(&addrs)?;
        let dt = t.elapsed().as_secs_f64();
        secs += dt;
        let mut m = Obj::new();
        m.put("moved", moves.moved)
            .put("asked", moves.asked)
            .put("secs_emulated", dt);
        moves.put(&mut m);
        per_move.push(m);
        total.add(moves);
    }
    let moved_total = total.moved;
    total.put(rec);
    rec.put("moves", per_move)
        .put("pages_moved", moved_total)
        .put("secs_emulated", secs)
        .put(
            "pages_per_sec_emulated",
            (secs > 0.0).then(|| moved_total as f64 / secs),
        )
        .put(
            "moved_fraction",
            moved_total as f64 / (addrs.len() as f64 * f64::from(cfg.migrate_rounds) * 2.0),
        );
    if let Some(s) = &set {
        let v = s.verify(1)?;
        rec.put("verify", v.to_obj()).put("bo_info", s.info()?);
        if v.mismatches > 0 {
            return Err(format!("DATA CORRUPTION after the moves: {:?}", v.first));
        }
    }
    if let Some(m) = &fmap {
        let want = u64::from_ne_bytes([0x3c; 8]);
        let bad = (0..m.len)
            .step_by(PAGE)
            .filter(|&o| m.read_u64(o) != want)
            .count();
        if bad > 0 {
            return Err(format!(
                "DATA CORRUPTION: {bad} tmpfs pages differ after the moves"
            ));
        }
    }
    rec.put(
        "gemfs_counters",
        sys::counters_delta(&gemfs0, &sys::dir_counters("/sys/kernel/debug/gemfs")),
    );
    Ok(())
}

/// The `gpu` phase: GPU job throughput, quiet against while migration
/// churns, for pinned and gemfs objects.
pub fn gpu(cfg: &Config) -> Vec<Obj> {
    let mut recs = Vec::new();
    for pinned in [true, false] {
        let mode = if pinned { "pinned" } else { "gemfs" };
        let mut rec = Obj::new();
        rec.put("phase", "gpu").put("mode", mode);
        let res = if two_nodes() {
            gpu_one(cfg, pinned, &mut rec)
        } else {
            rec.put("skipped", "needs NUMA nodes 0 and 1");
            Ok(())
        };
        sys::finish(&mut rec, &format!("gpu {mode}"), res);
        recs.push(rec);
    }
    recs
}

fn gpu_one(cfg: &Config, pinned: bool, rec: &mut Obj) -> R<()> {
    let mode = if pinned { "pinned" } else { "gemfs" };
    settle()?;
    let size = cfg.bo_bytes();
    let n = ((cfg.cost_mb * MIB) / size).max(cfg.contexts as u64) as usize;
    crate::progress(&format!(
        "gpu {mode}: {n} objects of {} KiB over {} contexts",
        size / 1024,
        cfg.contexts
    ));
    let bo_mode = if pinned { Mode::Pinned } else { Mode::Gemfs };
    let mut set = BoSet::new(cfg.contexts, bo_mode, size)?;
    set.add(n)?;
    let maps = set.map_all()?;
    let addrs: Vec<usize> = maps.iter().flat_map(|m| m.page_addrs()).collect();
    rec.put("objects", n)
        .put("mb", n as u64 * size / MIB)
        .put("contexts", cfg.contexts)
        .put("busy_us", cfg.busy_us)
        .put("window_secs", cfg.cost_secs);
    let vm0 = sys::vmstat()?;
    let stream = Stream::default();
    let (win, jobs) = thread::scope(|s| -> R<(Obj, R<u64>)> {
        let (ctxs, vals, pat, st) = (&set.ctxs, &mut set.vals, &set.pat, &stream);
        let busy = cfg.busy_us;
        let worker = s.spawn(move || BoSet::stream(ctxs, vals, pat, busy, st));
        let guard = StopOnDrop(&stream);
        let w = windows(cfg, mode, &stream, &addrs);
        drop(guard);
        let j = worker
            .join()
            .unwrap_or_else(|_| Err("the job stream panicked".into()));
        Ok((w?, j))
    })?;
    rec.extend(win);
    jobs?;
    rec.put("vmstat", sys::vmstat_delta(&vm0, &sys::vmstat()?));
    drop(maps);
    let v = set.verify(1)?;
    rec.put("verify", v.to_obj()).put("bo_info", set.info()?);
    if v.mismatches > 0 {
        return Err(format!("DATA CORRUPTION: {:?}", v.first));
    }
    Ok(())
}

fn windows(cfg: &Config, mode: &str, st: &Stream, addrs: &[usize]) -> R<Obj> {
    let jobs = || st.jobs.load(Ordering::SeqCst);
    let w = Duration::from_secs_f64(cfg.cost_secs);
    crate::progress(&format!("gpu {mode}: quiet window"));
    let (j0, t) = (jobs(), Instant::now());
    thread::sleep(w);
    let (quiet, quiet_secs) = (jobs() - j0, t.elapsed().as_secs_f64());
    crate::progress(&format!(
        "gpu {mode}: churn window (move_pages + compaction)"
    ));
    let (j1, t) = (jobs(), Instant::now());
    let mut iters = 0u64;
    let mut moves = Moves::default();
    while t.elapsed() < w {
        moves.add(move_to_other_node(addrs)?);
        sys::compact_memory()?;
        iters += 1;
    }
    let (churn, churn_secs) = (jobs() - j1, t.elapsed().as_secs_f64());
    let qr = quiet as f64 / quiet_secs;
    let cr = churn as f64 / churn_secs;
    let mut o = Obj::new();
    o.put("quiet_jobs", quiet)
        .put("quiet_secs_emulated", quiet_secs)
        .put("churn_jobs", churn)
        .put("churn_secs_emulated", churn_secs)
        .put("churn_iterations", iters)
        .put("churn_pages_moved", moves.moved)
        .put("churn_pages_asked", moves.asked)
        .put("jobs_per_sec_quiet_emulated", qr)
        .put("jobs_per_sec_churn_emulated", cr)
        .put("churn_vs_quiet", (quiet > 0).then(|| cr / qr));
    moves.put(&mut o);
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Error;

    #[test]
    fn pressure_is_counted_not_failed() {
        for (e, name) in [
            (libc::ENOMEM, "ENOMEM"),
            (libc::EBUSY, "EBUSY"),
            (libc::EAGAIN, "EAGAIN"),
        ] {
            let m = count_move(3, &[1, 0], Err(Error::from_raw_os_error(e))).unwrap();
            assert_eq!(m.moved, 0);
            assert_eq!(m.asked, 3);
            assert_eq!(m.transient_calls[name], 1);
            assert_eq!(m.not_moved["call failed"], 2);
            assert_eq!(m.not_moved["absent"], 1);
        }
    }

    #[test]
    fn other_call_errors_fail() {
        for e in [
            libc::EFAULT,
            libc::EINVAL,
            libc::EPERM,
            libc::ENODEV,
            libc::E2BIG,
        ] {
            assert!(count_move(1, &[1], Err(Error::from_raw_os_error(e))).is_err());
        }
    }

    #[test]
    fn per_page_statuses() {
        let out = mm::MoveOutcome {
            not_migrated: 1,
            status: vec![
                1,
                -libc::ENOMEM,
                -libc::EBUSY,
                mm::NOT_MOVED,
                0,
                -libc::EACCES,
                -200,
            ],
        };
        let t = [1, 1, 1, 1, 0, 1, 1];
        let m = count_move(7, &t, Ok(out)).unwrap();
        assert_eq!((m.moved, m.asked), (2, 7));
        let want: BTreeMap<String, u64> = [
            ("ENOMEM", 1),
            ("EBUSY", 1),
            ("unreported", 1),
            ("EACCES", 1),
            ("errno 200", 1),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .into();
        assert_eq!(m.not_moved, want);
        assert!(m.transient_calls.is_empty());
        // A page on a node it was not asked to go to: a broken invariant.
        let bad = mm::MoveOutcome {
            not_migrated: 0,
            status: vec![0],
        };
        assert!(count_move(1, &[1], Ok(bad)).is_err());
    }

    #[test]
    fn moves_add_up() {
        let mut a = count_move(2, &[1], Err(Error::from_raw_os_error(libc::ENOMEM))).unwrap();
        let b = count_move(
            2,
            &[1, 1],
            Ok(mm::MoveOutcome {
                not_migrated: 0,
                status: vec![1, -libc::ENOMEM],
            }),
        )
        .unwrap();
        a.add(b);
        assert_eq!((a.moved, a.asked), (1, 4));
        assert_eq!(a.not_moved["ENOMEM"], 1);
        assert_eq!(a.not_moved["call failed"], 1);
        assert_eq!(a.not_moved["absent"], 1);
        assert_eq!(a.transient_calls["ENOMEM"], 1);
    }
}
