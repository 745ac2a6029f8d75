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

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use softgpu::mm;

use crate::frag::settle;
use crate::gpu::{BoSet, StopOnDrop, Stream};
use crate::json::Obj;
use crate::sys::{self, create_file, Ctx as _, FileMap, Tmpfs, MIB, PAGE, R};
use crate::{Config, Mode};

/// Moves every page to the other node once. Returns (pages that reached
/// their target, pages asked).
fn move_to_other_node(addrs: &[usize]) -> R<(u64, u64)> {
    let now = mm::page_nodes(addrs).ctx("move_pages query")?;
    let (mut a, mut t) = (Vec::new(), Vec::new());
    for (i, &n) in now.iter().enumerate() {
        if n >= 0 {
            a.push(addrs[i]);
            t.push(1 - n);
        }
    }
    let out = mm::move_pages(&a, &t).ctx("move_pages")?;
    let moved = (0..a.len()).filter(|&i| out.moved(i, t[i])).count();
    Ok((moved as u64, addrs.len() as u64))
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
        rates.push(match rec.get("pages_per_sec_emulated") {
            Some(crate::json::Json::Num(r)) => Some(*r),
            _ => None,
        });
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
    let mut moved_total = 0u64;
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
        let (moved, asked) = move_to_other_node(&addrs)?;
        let dt = t.elapsed().as_secs_f64();
        moved_total += moved;
        secs += dt;
        let mut m = Obj::new();
        m.put("moved", moved)
            .put("asked", asked)
            .put("secs_emulated", dt);
        per_move.push(m);
    }
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
    let (mut iters, mut moved, mut asked) = (0u64, 0u64, 0u64);
    while t.elapsed() < w {
        let (m, a) = move_to_other_node(addrs)?;
        moved += m;
        asked += a;
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
        .put("churn_pages_moved", moved)
        .put("churn_pages_asked", asked)
        .put("jobs_per_sec_quiet_emulated", qr)
        .put("jobs_per_sec_churn_emulated", cr)
        .put("churn_vs_quiet", (quiet > 0).then(|| cr / qr));
    Ok(o)
}
