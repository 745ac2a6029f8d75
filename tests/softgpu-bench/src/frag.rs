//! The fragmentation benchmark: fill a share of memory with long-lived
//! objects of one mode scattered among short-lived page-cache (tmpfs) and
//! anonymous memory, free the short-lived memory, then compact and ask for
//! huge pages while the objects are in use.
//!
//! Scattering. Short-lived memory ("churn") first fills memory up to
//! `churn_pct` % of the memory size (or to `headroom_mb` of free memory) in
//! `piece_kb` pieces that alternate between an anonymous mapping
//! (MADV_NOHUGEPAGE) and a tmpfs file. Then, in batches of `batch_mb`, a
//! set of pieces spread evenly over all the churn is freed and as many
//! long-lived objects are allocated: they land in the holes just made, all
//! over memory (movable objects take the smallest free blocks; pinned ones,
//! allocated unmovable, first take whole free pageblocks, then fall back
//! into the holes of movable pageblocks, which is how pinned GPU memory
//! fragments real systems). Finally the rest of the churn is freed.
//!
//! Modes: `control` objects are anonymous memory written by the CPU and
//! mlock()ed (the same footprint, movable, not reclaimable); `pinned` and
//! `gemfs` objects are softgpu BOs bound in GPU VMs and written by GPU FILL
//! jobs (see gpu.rs). The `userptr-frag` phase runs the same measurement
//! with `control` against `userptr-hmm` and `userptr-pinned`: the control
//! mode's anonymous memory (allocated and mlock()ed the same way), bound to
//! softgpu with DRM_SOFTGPU_USERPTR, mirrored through HMM (movable: the MMU
//! notifier unmaps pages from the GPU before they move, jobs fault them
//! back) or pinned at bind (FOLL_LONGTERM: immovable while bound), and used
//! by the same GPU jobs as BOs.
//!
//! Unbiased: each measurement starts settled (`settle()`), the per-CPU
//! free lists drained, so that what the previous mode's run left there
//! does not shrink the next one's free memory; the huge page request
//! counts what sits on those lists again by then; and the modes' order
//! rotates from one repetition to the next (main.rs).
//!
//! The `frag-stress` phase runs the `frag` measurement with stress-ng's
//! stressors (stress.rs) started after the churn is filled and stopped
//! once the last object is allocated, before the rest of the churn is
//! freed: their allocations (page tables and other kernel memory among
//! them) interleave with the objects'.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::gpu::{BoSet, StopOnDrop, Stream, Verify};
use crate::json::{Json, Obj, Put as _};
use crate::stress::Background;
use crate::sys::{self, create_file, AnonMap, Ctx as _, MIB, PAGE, R};
use crate::{Config, Mode};

/// Short-lived memory: `n` pieces of `piece` bytes, even ones in `anon`,
/// odd ones in `file` (tmpfs).
pub(crate) struct Churn {
    anon: AnonMap,
    file: File,
    path: PathBuf,
    piece: usize,
    pub(crate) n: usize,
}

impl Churn {
    /// Allocates up to `target` bytes, stopping early when free memory
    /// drops to `headroom_kb`.
    pub(crate) fn fill(dir: &Path, target: u64, piece: usize, headroom_kb: u64) -> R<Self> {
        let pieces = (target as usize).div_ceil(piece);
        let anon = AnonMap::new(pieces.div_ceil(2) * piece, 0)?;
        anon.advise(0, anon.len(), libc::MADV_NOHUGEPAGE)?;
        let path = dir.join("churn");
        let file = create_file(&path)?;
        let mut c = Self {
            anon,
            file,
            path,
            piece,
            n: 0,
        };
        let buf = vec![0x6bu8; piece];
        while c.n < pieces {
            let i = c.n;
            let off = (i / 2) * piece;
            if i.is_multiple_of(2) {
                for p in (0..piece).step_by(PAGE) {
                    c.anon.write_u64(off + p, ((i as u64) << 20) | p as u64 | 1);
                }
            } else {
                c.file
                    .write_all_at(&buf, off as u64)
                    .ctx("writing the churn file")?;
            }
            c.n += 1;
            if c.n.is_multiple_of(256) && sys::meminfo_kb("MemFree")? < headroom_kb {
                break;
            }
        }
        Ok(c)
    }

    pub(crate) fn bytes(&self) -> u64 {
        (self.n * self.piece) as u64
    }

    /// Frees batch `j` of `batches` of `needed` pieces spread evenly over
    /// all of the churn (over the batches, each of them once); returns the
    /// bytes freed.
    pub(crate) fn free_spread(&self, j: usize, batches: usize, needed: usize) -> R<u64> {
        let mut freed = 0;
        for k in (j..needed).step_by(batches) {
            self.free_piece(k * self.n / needed)?;
            freed += self.piece as u64;
        }
        Ok(freed)
    }

    fn free_piece(&self, i: usize) -> R<()> {
        let off = (i / 2) * self.piece;
        if i.is_multiple_of(2) {
            self.anon.advise(off, self.piece, libc::MADV_DONTNEED)
        } else {
            sys::punch_hole(&self.file, off as u64, self.piece as u64)
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The long-lived memory of one mode.
enum Objects {
    Control { objs: Vec<AnonMap>, vals: Vec<u8> },
    Bos(BoSet),
}

/// The byte control objects are filled with for value index `k`.
pub(crate) fn cbyte(k: usize) -> u8 {
    (k as u8).wrapping_mul(37).wrapping_add(0x5b)
}

impl Objects {
    fn new(cfg: &Config, mode: Mode) -> R<Self> {
        Ok(match mode {
            Mode::Control => Objects::Control {
                objs: Vec::new(),
                vals: Vec::new(),
            },
            _ => Objects::Bos(BoSet::new(cfg.contexts, mode, cfg.bo_bytes())?),
        })
    }

    fn len(&self) -> usize {
        match self {
            Objects::Control { objs, .. } => objs.len(),
            Objects::Bos(s) => s.len(),
        }
    }

    fn add(&mut self, n: usize, size: usize) -> R<()> {
        match self {
            Objects::Control { objs, vals } => {
                for _ in 0..n {
                    let v = (objs.len() % crate::gpu::NVALUES) as u8;
                    let mut m = AnonMap::new(size, 0)?;
                    m.fill(cbyte(v as usize));
                    m.mlock()?;
                    objs.push(m);
                    vals.push(v);
                }
                Ok(())
            }
            Objects::Bos(s) => s.add(n),
        }
    }

    /// Objects still there (created and not removed).
    fn live(&self) -> usize {
        match self {
            Objects::Control { objs, .. } => objs.len(),
            Objects::Bos(s) => s.live(),
        }
    }

    /// Frees the `pick`-th live object (modulo the count); its size.
    fn remove(&mut self, pick: usize) -> R<u64> {
        match self {
            Objects::Control { objs, vals } => {
                if objs.is_empty() {
                    return Err("no control objects to remove".into());
                }
                let i = pick % objs.len();
                vals.swap_remove(i);
                Ok(objs.swap_remove(i).len() as u64)
            }
            Objects::Bos(s) => s.remove(pick),
        }
    }

    /// Step `k` of the job stream over these objects (see [`stream`]):
    /// whether a job ran.
    fn stream_step(&mut self, busy_us: u64, k: usize) -> R<bool> {
        match self {
            Objects::Control { objs, vals } => cpu_step(objs, vals, k).map(|()| true),
            Objects::Bos(set) => BoSet::stream_step(&set.ctxs, &mut set.vals, &set.pat, busy_us, k),
        }
    }

    fn verify(&self, every: usize) -> R<Verify> {
        match self {
            Objects::Control { objs, vals } => {
                let mut out = Verify::default();
                for (g, m) in objs.iter().enumerate().step_by(every.max(1)) {
                    let want = u64::from_ne_bytes([cbyte(vals[g] as usize); 8]);
                    out.checked += 1;
                    for off in (0..m.len()).step_by(PAGE) {
                        for o in [off, off + PAGE - 8] {
                            let got = m.read_u64(o);
                            if got != want {
                                out.bad(format!(
                                    "control object {g}: read {got:#x} at {o:#x}, expected {want:#x}"
                                ));
                            }
                        }
                    }
                }
                Ok(out)
            }
            Objects::Bos(s) => s.verify(every),
        }
    }
}

/// The CPU's counterpart of a GPU job of the stream, for control objects:
/// step `k` rewrites object `k % len` with its next value and checks it.
fn cpu_step(objs: &mut [AnonMap], vals: &mut [u8], k: usize) -> R<()> {
    if objs.is_empty() {
        return Err("CPU stream: no objects".into());
    }
    let g = k % objs.len();
    let v = (vals[g] as usize + 1) % crate::gpu::NVALUES;
    let m = &mut objs[g];
    m.fill(cbyte(v));
    vals[g] = v as u8;
    let want = u64::from_ne_bytes([cbyte(v); 8]);
    let last = m.len() - 8;
    for o in [0, last] {
        if m.read_u64(o) != want {
            return Err(format!(
                "DATA CORRUPTION: control object {g}: {:#x} at {o:#x} after writing {want:#x}",
                m.read_u64(o)
            ));
        }
    }
    Ok(())
}

/// The background stream over `sets` (one per object size): until
/// `st.stop`, one job (GPU) or rewrite (CPU, control) at a time, going
/// round the sets, and round each set's objects. Returns the jobs run.
fn stream(sets: &mut [Objects], busy_us: u64, st: &Stream) -> R<u64> {
    if sets.iter().all(|s| s.live() == 0) {
        return Err("job stream: no objects".into());
    }
    let n = sets.len();
    let mut k = 0usize;
    while !st.stop.load(Ordering::SeqCst) {
        let set = &mut sets[k % n];
        if set.live() > 0 && set.stream_step(busy_us, k / n)? {
            st.jobs.fetch_add(1, Ordering::SeqCst);
        }
        k += 1;
    }
    Ok(st.jobs.load(Ordering::SeqCst))
}

/// Brings the machine to the same state before each measurement: no huge
/// pages reserved, caches dropped, memory compacted, the per-CPU free
/// lists drained (what the previous measurement freed last, its huge pages
/// among it, sits there, outside MemFree). Returns what the drain did.
pub fn settle() -> R<Obj> {
    sys::set_nr_hugepages(0)?;
    sys::drop_caches()?;
    sys::compact_memory()?;
    let mut o = Obj::new();
    match sys::drain_pcp()? {
        Some((before, after, refreshes)) => o
            .put("pcp_before_kb", before)
            .put("pcp_after_kb", after)
            .put("refreshes", refreshes),
        None => o.put(
            "skipped",
            "no percpu_pagelist_high_fraction or stat_refresh",
        ),
    };
    Ok(o)
}

/// One measurement of `phase` (`frag` or `userptr-frag`): `mode` at
/// `level` % of the memory size. Always returns a record; `ok` is false
/// (with `error`) if anything failed.
/// `position` is the mode's place in this repetition's order (the order
/// rotates from one repetition to the next).
pub fn run(
    cfg: &Config,
    phase: &str,
    churn_dir: &Path,
    mode: Mode,
    level: u32,
    rep: u32,
    position: usize,
) -> Obj {
    let fill = match phase {
        // stress-ng's stressors run while the objects are added.
        "frag-stress" => Fill::Scatter {
            load: Some(&cfg.stress_ng[..]),
        },
        "age" => Fill::Age { seed: rep },
        _ => Fill::Scatter { load: None },
    };
    let mut rec = Obj::new();
    rec.put("phase", phase)
        .put("mode", mode.name())
        .put("level", level)
        .put("bo_kb", cfg.bo_kb)
        .put("rep", rep)
        .put("position", position);
    let t = Instant::now();
    let name = format!("{phase} mode={} level={level}%", mode.name());
    let res = unit(cfg, &name, churn_dir, mode, level, fill, &mut rec);
    rec.put("unit_secs_emulated", t.elapsed().as_secs_f64());
    sys::finish(&mut rec, &format!("{phase} {} {level}%", mode.name()), res);
    rec
}

/// How a measurement lays its objects out before compacting.
#[derive(Clone, Copy)]
enum Fill<'a> {
    /// One churn, the objects (of `--bo-kb`) allocated into its holes
    /// (`frag`, `userptr-frag`), with stress-ng's `load` running meanwhile
    /// (`frag-stress`).
    Scatter { load: Option<&'a [String]> },
    /// `--age-rounds` rounds of churn with objects of the `--age-sizes-kb`
    /// freed and allocated among it (`age`); `seed` (the repetition)
    /// picks which.
    Age { seed: u32 },
}

fn unit(
    cfg: &Config,
    name: &str,
    churn_dir: &Path,
    mode: Mode,
    level: u32,
    fill: Fill,
    rec: &mut Obj,
) -> R<()> {
    let (hp_kb, hp_order) = sys::hugepage()?;
    crate::progress(&format!("{name}: settling (drop caches, compact)"));
    let t = Instant::now();
    let drain = settle()?;
    let settle_secs = t.elapsed().as_secs_f64();
    let vm_start = sys::vmstat()?;
    let gemfs_start = sys::dir_counters("/sys/kernel/debug/gemfs");
    let settled = sys::snapshot(hp_order)?;
    let kb = |o: &Obj, k: &str| o.get(k).and_then(Json::as_u64);
    crate::progress(&format!(
        "{name}: settled in {settle_secs:.1} s: MemFree {:?} KiB; per-CPU lists {:?} KiB, \
         {:?} before the drain ({:?} refreshes)",
        kb(&settled, "MemFree_kb"),
        kb(&settled, "pcp_free_kb"),
        kb(&drain, "pcp_before_kb"),
        kb(&drain, "refreshes"),
    ));
    rec.put("pcp_drain", drain)
        .put("settle_secs_emulated", settle_secs)
        .put("settled", settled);
    // All of /proc/meminfo once per measurement: what one mode's run
    // leaves behind for the next shows here.
    let mut mi = Obj::new();
    for (k, v) in sys::meminfo()? {
        mi.put(&k, v);
    }
    rec.put("settled_meminfo_kb", mi);

    let footprint = cfg.mem_bytes() * u64::from(level) / 100;
    // Open the device (pinned, gemfs) before the long fill: fail early.
    // One set of objects per object size.
    let sizes_kb: Vec<u64> = match fill {
        Fill::Scatter { .. } => vec![cfg.bo_kb],
        Fill::Age { .. } => cfg.age_sizes_kb.to_vec(),
    };
    let mut sets = sizes_kb
        .iter()
        .map(|&bo_kb| {
            let c = Config {
                bo_kb,
                ..cfg.clone()
            };
            Objects::new(&c, mode)
        })
        .collect::<R<Vec<_>>>()?;
    rec.put(
        "contexts",
        if mode == Mode::Control {
            0
        } else {
            cfg.contexts * sets.len()
        },
    );
    let t_fill = Instant::now();
    match fill {
        Fill::Scatter { load } => {
            scatter(cfg, name, churn_dir, &mut sets[0], footprint, load, rec)?
        }
        Fill::Age { seed } => age(
            cfg, name, churn_dir, &mut sets, &sizes_kb, footprint, seed, rec,
        )?,
    }
    rec.put("fill_secs_emulated", t_fill.elapsed().as_secs_f64());
    let vm_filled = sys::vmstat()?;
    rec.put("vmstat_fill", sys::vmstat_delta(&vm_start, &vm_filled));
    rec.put("after_fill", sys::snapshot(hp_order)?);

    // Objects in use while compaction and the huge page request run.
    let st = Stream::default();
    let measured = thread::scope(|s| -> R<(Obj, R<u64>)> {
        let busy_us = cfg.busy_us;
        let (sets, stream_st) = (&mut sets, &st);
        let worker = s.spawn(move || stream(sets, busy_us, stream_st));
        let guard = StopOnDrop(&st);
        let m = measure(cfg, name, &st, hp_kb, hp_order);
        drop(guard);
        let joined = worker
            .join()
            .unwrap_or_else(|_| Err("the job stream panicked".into()));
        Ok((m?, joined))
    })?;
    let (m, jobs) = measured;
    rec.extend(m);
    let jobs = jobs?;
    rec.put("stream_jobs_total", jobs);

    if cfg.thp_test {
        rec.put("thp_test", thp_test(cfg)?);
    }

    crate::progress(&format!("{name}: verifying the objects"));
    let t = Instant::now();
    let mut v = Verify::default();
    for set in &sets {
        v.merge(set.verify(cfg.verify_every)?);
    }
    rec.put("verify_secs_emulated", t.elapsed().as_secs_f64());
    rec.put("verify", v.to_obj());
    let mut bo_info: Option<Obj> = None;
    for set in &sets {
        if let Objects::Bos(b) = set {
            let info = b.info()?;
            match &mut bo_info {
                None => bo_info = Some(info),
                Some(sum) => {
                    for (k, x) in info {
                        if let (Some(a), Some(b)) = (sum.get(&k).and_then(Json::as_u64), x.as_u64())
                        {
                            sum.put(&k, a + b);
                        }
                    }
                }
            }
        }
    }
    if let Some(info) = bo_info {
        rec.put("bo_info", info);
    }
    rec.put(
        "gemfs_counters",
        sys::counters_delta(&gemfs_start, &sys::dir_counters("/sys/kernel/debug/gemfs")),
    );
    let vm_end = sys::vmstat()?;
    rec.put("vmstat_total", sys::vmstat_delta(&vm_start, &vm_end));
    drop(sets);
    v.ok()?;
    let num = |k: &str| {
        rec.get(k)
            .and_then(Json::as_u64)
            .map_or("?".into(), |n| n.to_string())
    };
    crate::progress(&format!(
        "{name}: ok, huge pages obtained {} of {} requested",
        num("hugepages_obtained"),
        num("hugepages_requested")
    ));
    Ok(())
}

/// `frag`'s layout: one churn up to `--churn-pct` of memory, then, in
/// batches, churn pieces spread over all of it freed and as many objects
/// of `--bo-kb` allocated, until `footprint`; the rest of the churn freed.
fn scatter(
    cfg: &Config,
    name: &str,
    churn_dir: &Path,
    objs: &mut Objects,
    footprint: u64,
    load: Option<&[String]>,
    rec: &mut Obj,
) -> R<()> {
    let size = cfg.bo_bytes();
    let nobj = (footprint / size).max(1) as usize;
    let footprint = nobj as u64 * size;
    let piece = cfg.piece_kb as usize * 1024;
    let free_kb = sys::meminfo_kb("MemFree")?;
    let headroom_kb = cfg.headroom_mb * 1024;
    let churn_target = (cfg.mem_bytes() * u64::from(cfg.churn_pct) / 100)
        .max(footprint + footprint / 8)
        .min(free_kb.saturating_sub(headroom_kb) * 1024);
    rec.put("objects", nobj)
        .put("object_kb", size / 1024)
        .put("footprint_mb", footprint / MIB);
    crate::progress(&format!(
        "{name}: churn: filling {} MiB (free {} MiB)",
        churn_target / MIB,
        free_kb / 1024
    ));
    let churn = Churn::fill(churn_dir, churn_target, piece, headroom_kb)?;
    let pieces = churn.n;
    rec.put("churn_mb", churn.bytes() / MIB);
    let needed = footprint.div_ceil(piece as u64) as usize;
    if needed as f64 > pieces as f64 * 0.95 {
        return Err(format!(
            "level too high for this memory: the churn reached {} MiB, the objects need {} MiB \
             (lower --levels or --headroom-mb)",
            churn.bytes() / MIB,
            footprint / MIB
        ));
    }

    let background = match load {
        Some(stressors) => {
            crate::progress(&format!(
                "{name}: starting stress-ng {}",
                stressors.join(",")
            ));
            Some(Background::start(stressors, churn_dir)?)
        }
        None => None,
    };
    let batches = footprint.div_ceil(cfg.batch_mb * MIB).max(1) as usize;
    let mut freed = 0u64;
    for j in 0..batches {
        freed += churn.free_spread(j, batches, needed)?;
        let want = if j + 1 == batches {
            nobj
        } else {
            nobj.min((freed / size) as usize)
        };
        objs.add(want - objs.len(), size as usize)?;
        if (j + 1) % (batches / 10).max(1) == 0 {
            crate::progress(&format!(
                "{name}: objects {} / {nobj} ({} MiB)",
                objs.len(),
                objs.len() as u64 * size / MIB
            ));
        }
    }
    if let Some(b) = background {
        crate::progress(&format!("{name}: stopping stress-ng"));
        rec.put("stress_ng", b.stop()?);
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*): the same seed picks the
/// same objects and sizes in every mode.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for n far below 2^32.
    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 32) as usize) % n.max(1)
    }
}

/// `age`'s layout, memory after a long uptime: `--age-rounds` rounds, each
/// of which fills free memory with churn (anonymous and page cache), frees
/// `--age-turnover-pct` % of the live objects (from the second round on,
/// chosen at random, whatever their size or age), then, in batches, frees
/// churn pieces spread over all of it and allocates objects of random
/// sizes among `--age-sizes-kb` (one set per size) until the objects add
/// up to `footprint` again, and finally frees the churn. Objects of every
/// round stay scattered among the holes of every later one.
#[allow(clippy::too_many_arguments)]
fn age(
    cfg: &Config,
    name: &str,
    churn_dir: &Path,
    sets: &mut [Objects],
    sizes_kb: &[u64],
    footprint: u64,
    seed: u32,
    rec: &mut Obj,
) -> R<()> {
    if sets.is_empty() {
        return Err("age: no object sizes (--age-sizes-kb)".into());
    }
    let mut rng = Rng::new(u64::from(seed) + 1);
    let piece = cfg.piece_kb as usize * 1024;
    let headroom_kb = cfg.headroom_mb * 1024;
    let size_of = |i: usize| sizes_kb[i] * 1024;
    let mut live = 0u64;
    let mut rounds = Vec::new();
    for round in 0..cfg.age_rounds {
        let free_kb = sys::meminfo_kb("MemFree")?;
        let target = (cfg.mem_bytes() * u64::from(cfg.churn_pct) / 100)
            .saturating_sub(live)
            .min(free_kb.saturating_sub(headroom_kb) * 1024);
        let churn = Churn::fill(churn_dir, target, piece, headroom_kb)?;
        let pieces = churn.n;

        let (mut removed, mut removed_bytes) = (0u64, 0u64);
        if round > 0 {
            let goal = live * u64::from(cfg.age_turnover_pct) / 100;
            while removed_bytes < goal {
                let total: usize = sets.iter().map(Objects::live).sum();
                if total == 0 {
                    break;
                }
                let mut pick = rng.below(total);
                let i = sets
                    .iter()
                    .position(|s| {
                        let here = pick < s.live();
                        if !here {
                            pick -= s.live();
                        }
                        here
                    })
                    .expect("pick < total");
                let b = sets[i].remove(pick)?;
                removed_bytes += b;
                removed += 1;
            }
            live -= removed_bytes;
        }

        let need = footprint.saturating_sub(live);
        let needed = (need.div_ceil(piece as u64) as usize).min(pieces);
        let batches = need.div_ceil(cfg.batch_mb * MIB).max(1) as usize;
        let (mut freed, mut added, mut added_bytes) = (0u64, 0u64, 0u64);
        for j in 0..batches {
            freed += churn.free_spread(j, batches, needed)?;
            let goal = if j + 1 == batches {
                need
            } else {
                freed.min(need)
            };
            let mut counts = vec![0usize; sets.len()];
            while added_bytes < goal {
                let i = rng.below(sets.len());
                counts[i] += 1;
                added_bytes += size_of(i);
                added += 1;
            }
            for (i, n) in counts.into_iter().enumerate() {
                if n > 0 {
                    sets[i].add(n, size_of(i) as usize)?;
                }
            }
        }
        live += added_bytes;
        drop(churn);
        crate::progress(&format!(
            "{name}: round {} / {}: churn {} MiB, {removed} objects freed ({} MiB), \
             {added} added ({} MiB), {} MiB live",
            round + 1,
            cfg.age_rounds,
            (pieces * piece) as u64 / MIB,
            removed_bytes / MIB,
            added_bytes / MIB,
            live / MIB
        ));
        let mut r = Obj::new();
        r.put("round", round)
            .put("churn_mb", (pieces * piece) as u64 / MIB)
            .put("removed", removed)
            .put("removed_mb", removed_bytes / MIB)
            .put("added", added)
            .put("added_mb", added_bytes / MIB)
            .put("live_mb", live / MIB);
        rounds.push(r);
    }
    let per_size: Vec<usize> = sets.iter().map(Objects::live).collect();
    rec.put("objects", per_size.iter().sum::<usize>())
        .put("object_kb", sizes_kb.to_vec())
        .put("objects_per_size", per_size)
        .put("footprint_mb", live / MIB)
        .put("age_rounds", rounds);
    Ok(())
}

/// With the job stream running: a quiet window, compaction (timed), the
/// huge page request (timed), then the huge pages given back.
pub(crate) fn measure(cfg: &Config, name: &str, st: &Stream, hp_kb: u64, hp_order: u32) -> R<Obj> {
    let mut o = Obj::new();
    let jobs = || st.jobs.load(Ordering::SeqCst);
    crate::progress(&format!("{name}: quiet window of {} s", cfg.quiet_secs));
    let t = Instant::now();
    let j0 = jobs();
    thread::sleep(Duration::from_secs_f64(cfg.quiet_secs));
    let (quiet_jobs, quiet_secs) = (jobs() - j0, t.elapsed().as_secs_f64());
    o.put("quiet_jobs", quiet_jobs)
        .put("quiet_secs_emulated", quiet_secs);

    crate::progress(&format!("{name}: compacting"));
    let vm0 = sys::vmstat()?;
    let j1 = jobs();
    let dt = sys::compact_memory()?;
    let compact_jobs = jobs() - j1;
    let vm1 = sys::vmstat()?;
    o.put("compact_secs_emulated", dt.as_secs_f64())
        .put("compact_jobs", compact_jobs)
        .put("vmstat_compact", sys::vmstat_delta(&vm0, &vm1))
        .put("after_compact", sys::snapshot(hp_order)?);
    let quiet_rate = quiet_jobs as f64 / quiet_secs;
    let compact_rate = compact_jobs as f64 / dt.as_secs_f64().max(1e-9);
    o.put(
        "jobs_rate_ratio_compact_vs_quiet",
        (quiet_jobs > 0).then(|| compact_rate / quiet_rate),
    );

    // Free pages on the per-CPU lists count: they are free, the huge page
    // allocation drains the lists when it runs short, and how many sit
    // there differs from one mode's run to the next.
    let free_kb = sys::meminfo_kb("MemFree")?;
    let pcp_kb = sys::pcp_free_kb()?;
    let request = ((free_kb + pcp_kb).saturating_sub(cfg.hugetlb_reserve_mb * 1024) / hp_kb)
        .min(cfg.mem_bytes() / 1024 / hp_kb);
    o.put("request_memfree_kb", free_kb)
        .put("request_pcp_free_kb", pcp_kb);
    crate::progress(&format!("{name}: requesting {request} huge pages"));
    let j2 = jobs();
    let t = Instant::now();
    let obtained = sys::set_nr_hugepages(request)?;
    let hdt = t.elapsed();
    let per_node = sys::nr_hugepages_per_node(hp_kb);
    let hugetlb_jobs = jobs() - j2;
    let vm2 = sys::vmstat()?;
    o.put("hugepages_requested", request)
        .put("hugepages_obtained", obtained)
        .put("hugepages_per_node", per_node)
        .put(
            "hugepages_obtained_of_requested",
            (request > 0).then(|| obtained as f64 / request as f64),
        )
        .put("hugetlb_secs_emulated", hdt.as_secs_f64())
        .put("hugetlb_jobs", hugetlb_jobs)
        .put("vmstat_hugetlb", sys::vmstat_delta(&vm1, &vm2));
    let left = sys::set_nr_hugepages(0)?;
    if left != 0 {
        return Err(format!("nr_hugepages is {left} after setting it to 0"));
    }
    Ok(o)
}

/// THP faults with direct compaction: touch one byte per huge page in a
/// MADV_HUGEPAGE mapping of (most of) the free memory; count
/// thp_fault_alloc and thp_fault_fallback.
fn thp_test(cfg: &Config) -> R<Obj> {
    let mut o = Obj::new();
    let enabled = sys::selected("/sys/kernel/mm/transparent_hugepage/enabled");
    o.put("thp_enabled", enabled.clone());
    if enabled.as_deref() == Some("never") {
        return Ok(o);
    }
    let hp = 2 * MIB as usize;
    let free = sys::meminfo_kb("MemFree")? * 1024;
    let len = (free
        .saturating_sub(cfg.headroom_mb * MIB)
        .min(cfg.mem_bytes()) as usize)
        / hp
        * hp;
    if len == 0 {
        return Ok(o);
    }
    let vm0 = sys::vmstat()?;
    let t = Instant::now();
    let mut m = AnonMap::new(len, hp)?;
    m.advise(0, len, libc::MADV_HUGEPAGE)?;
    for off in (0..len).step_by(hp) {
        m.write_u64(off, 1);
    }
    let dt = t.elapsed();
    let vm1 = sys::vmstat()?;
    drop(m);
    let d = |k: &str| vm1.get(k).copied().unwrap_or(0) - vm0.get(k).copied().unwrap_or(0);
    o.put("attempts", len / hp)
        .put("thp_fault_alloc", d("thp_fault_alloc"))
        .put("thp_fault_fallback", d("thp_fault_fallback"))
        .put("secs_emulated", dt.as_secs_f64());
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churn_fills_and_frees_pieces() {
        let dir = std::env::temp_dir().join(format!("softgpu-bench-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let piece = 16 * PAGE;
        let c = Churn::fill(&dir, 20 * piece as u64, piece, 0).unwrap();
        assert_eq!(c.n, 20);
        assert_eq!(c.bytes(), 20 * piece as u64);
        assert_eq!(fs::metadata(&c.path).unwrap().len(), 10 * piece as u64);
        // The pieces freed over all batches are distinct and in range.
        let (needed, batches) = (7, 3);
        let mut freed = Vec::new();
        for j in 0..batches {
            for k in (j..needed).step_by(batches) {
                freed.push(k * c.n / needed);
            }
            let bytes = c.free_spread(j, batches, needed).unwrap();
            assert_eq!(bytes, ((j..needed).step_by(batches).count() * piece) as u64);
        }
        freed.sort();
        freed.dedup();
        assert_eq!(freed.len(), needed);
        assert!(freed.iter().all(|&i| i < c.n));
        let path = c.path.clone();
        drop(c);
        assert!(!path.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn control_objects_stream_and_verify() {
        let mut o = Objects::Control {
            objs: Vec::new(),
            vals: Vec::new(),
        };
        o.add(3, 4 * PAGE).unwrap();
        assert_eq!(o.len(), 3);
        let st = Stream::default();
        let mut sets = [o];
        thread::scope(|s| {
            let h = s.spawn(|| stream(&mut sets, 0, &st));
            while st.jobs.load(Ordering::SeqCst) < 10 {
                thread::yield_now();
            }
            st.stop.store(true, Ordering::SeqCst);
            assert!(h.join().unwrap().unwrap() >= 10);
        });
        let [mut o] = sets;
        let v = o.verify(1).unwrap();
        assert_eq!((v.checked, v.mismatches), (3, 0));
        if let Objects::Control { objs, .. } = &mut o {
            objs[1].write_u64(PAGE, 0);
        }
        let v = o.verify(1).unwrap();
        assert_eq!(v.mismatches, 1, "{v:?}");
    }

    #[test]
    fn control_objects_are_removed_and_streamed_across_sets() {
        let new = || Objects::Control {
            objs: Vec::new(),
            vals: Vec::new(),
        };
        let mut sets = [new(), new()];
        sets[0].add(3, 4 * PAGE).unwrap();
        sets[1].add(2, 8 * PAGE).unwrap();
        assert_eq!(sets[1].remove(5).unwrap(), 8 * PAGE as u64);
        assert_eq!((sets[0].live(), sets[1].live()), (3, 1));
        let st = Stream::default();
        thread::scope(|s| {
            let h = s.spawn(|| stream(&mut sets, 0, &st));
            while st.jobs.load(Ordering::SeqCst) < 20 {
                thread::yield_now();
            }
            st.stop.store(true, Ordering::SeqCst);
            assert!(h.join().unwrap().unwrap() >= 20);
        });
        for set in &sets {
            let v = set.verify(1).unwrap();
            assert_eq!(v.mismatches, 0, "{v:?}");
        }
        // A set whose objects are all gone is skipped; none left at all is
        // an error.
        for _ in 0..3 {
            sets[0].remove(0).unwrap();
        }
        assert!(sets[0].remove(0).is_err());
        let st = Stream::default();
        thread::scope(|s| {
            let h = s.spawn(|| stream(&mut sets, 0, &st));
            while st.jobs.load(Ordering::SeqCst) < 5 {
                thread::yield_now();
            }
            st.stop.store(true, Ordering::SeqCst);
            assert!(h.join().unwrap().unwrap() >= 5);
        });
        sets[1].remove(0).unwrap();
        assert!(stream(&mut sets, 0, &Stream::default()).is_err());
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        let xs: Vec<usize> = (0..100).map(|_| a.below(7)).collect();
        let ys: Vec<usize> = (0..100).map(|_| b.below(7)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 7));
        // All of 0..7 come up.
        assert!((0..7).all(|v| xs.contains(&v)), "{xs:?}");
        assert_ne!(Rng::new(4).next(), Rng::new(3).next());
    }
}
