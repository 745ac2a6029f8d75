//! The VRAM-overcommit phase (`vram`, issue 14's benchmark): what TTM's
//! eviction of VRAM objects into system memory does to fragmentation, with
//! the evicted objects' pages from gemfs (movable: gemfs's release callback
//! gives them back to migration) against TTM's own `ttm_pool` (unmovable,
//! what amdgpu does today) and against anonymous memory.
//!
//! Overcommit. Short-lived memory (frag.rs's churn, anonymous and tmpfs)
//! fills memory; then, in batches, churn pieces spread over all of it are
//! freed and objects created: a working set of `--vram-ws-pct` (200) % of
//! the VRAM (debugfs `vram`'s `size`) of TTM objects created with
//! `SOFTGPU_BO_VRAM | SOFTGPU_BO_SYSTEM` (VRAM while there is room, then
//! system memory), bound in a GPU VM and filled by the GPU. Then
//! `--vram-cycles` passes over every object: GEM_MOVE to VRAM (TTM evicts
//! the least recently used others into system memory: fresh system pages,
//! taken from the holes of the churn) and a FILL plus CHECKSUM job over it.
//! Then the rest of the churn is freed and frag.rs's measurement runs: a
//! quiet window, compaction and a huge page request, the objects alive
//! (idle: a job would make the objects it uses busy). Finally every object
//! is checksummed by the GPU where it is and read by the CPU, and the
//! evictions GEM_INFO counted are summed.
//!
//! Modes: `gemfs` (the TTM objects' system placement a gemfs-backed
//! ttm_tt), `ttm-pool` (`SOFTGPU_BO_TTM_POOL`) and `control`: anonymous
//! memory, mlock()ed, of the footprint the TTM modes keep in system memory
//! (the working set less the VRAM), scattered the same way; each pass
//! replaces every object with a fresh one (the allocation traffic of an
//! eviction) with its next value.
//!
//! Move throughput (`vram-move` records): for each of `--vram-move-kb`,
//! `--vram-move-mb` of objects in system memory (populated by a GPU FILL)
//! are moved to VRAM, then back, each GEM_MOVE timed; against a memcpy of
//! as many bytes between two anonymous buffers of that size, in the same
//! run. The checksums are checked after each direction.
//!
//! Each measurement starts settled (frag::settle); the modes' order rotates
//! between the `--vram-repeat` repetitions.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use softgpu::{
    Cmd, Device, SOFTGPU_BO_INFO_VRAM, SOFTGPU_BO_SYSTEM, SOFTGPU_BO_TTM_POOL, SOFTGPU_BO_VRAM,
};

use crate::frag::{self, cbyte, Churn};
use crate::gpu::{Ctx, Patterns, Stream, Verify, BYTES_PER_JOB, NVALUES, OBJ_VA, RES_VA, SLOTS};
use crate::json::{Json, Obj, Put as _};
use crate::sys::{self, AnonMap, Ctx as _, MIB, PAGE, R};
use crate::{Config, Mode};

/// The modes of the `vram` phase.
pub const VRAM_MODES: [Mode; 3] = [Mode::Control, Mode::Gemfs, Mode::TtmPool];

/// The text of softgpu's debugfs file `name` for the render node `dev`.
pub fn debugfs_text(dev: &Device, name: &str) -> R<String> {
    let node = dev
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let minor = node
        .strip_prefix("renderD")
        .ok_or_else(|| format!("{node} is not a render node"))?;
    sys::read(&format!("/sys/kernel/debug/dri/{minor}/{name}"))
}

/// The VRAM size softgpu reports in debugfs `vram` (`size: <bytes>`) for
/// the render node `dev`; None without VRAM (`none`).
pub fn vram_bytes(dev: &Device) -> R<Option<u64>> {
    Ok(parse_vram(&debugfs_text(dev, "vram")?))
}

/// `size` of debugfs `vram`'s text, if there is VRAM.
fn parse_vram(text: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "size")
        .and_then(|(_, v)| v.trim().parse().ok())
        .filter(|&n| n > 0)
}

/// The creation flags of a TTM mode's objects, given where they start.
fn ttm_flags(mode: Mode, placement: u32) -> u32 {
    placement
        | if mode == Mode::TtmPool {
            SOFTGPU_BO_TTM_POOL
        } else {
            0
        }
}

/// One TTM object: handle, GPU address, fill value index.
struct TtmBo {
    handle: u32,
    va: u64,
    val: u8,
}

/// TTM objects of one size in one GPU context.
struct TtmSet {
    ctx: Ctx,
    objs: Vec<TtmBo>,
    pat: Patterns,
    next_va: u64,
}

impl TtmSet {
    fn new(size: u64) -> R<Self> {
        Ok(Self {
            // The result buffer is a plain (gemfs) BO, outside TTM.
            ctx: Ctx::new(0)?,
            objs: Vec::new(),
            pat: Patterns::new(size),
            next_va: OBJ_VA,
        })
    }

    fn per_job(&self) -> usize {
        ((BYTES_PER_JOB / self.pat.size) as usize).clamp(1, SLOTS.min(2048))
    }

    /// Creates `n` objects with `flags`, binds them and fills them by GPU.
    fn add(&mut self, n: usize, flags: u32) -> R<()> {
        let size = self.pat.size;
        let first = self.objs.len();
        for _ in 0..n {
            let i = self.objs.len();
            let handle = self
                .ctx
                .dev
                .create_bo(size, flags)
                .ctx(format!("GEM_CREATE of TTM object {i} ({size} bytes)"))?;
            let va = self.next_va;
            self.ctx
                .dev
                .bind(handle, va, 0, size, 0)
                .ctx(format!("VM_BIND of TTM object {i}"))?;
            self.next_va += size;
            self.objs.push(TtmBo {
                handle,
                va,
                val: (i % NVALUES) as u8,
            });
        }
        let cmds: Vec<Cmd> = self.objs[first..]
            .iter()
            .map(|b| Cmd::fill(b.va, size, self.pat.values[b.val as usize]))
            .collect();
        for chunk in cmds.chunks(self.per_job()) {
            let s = self.ctx.submit(chunk, "the FILL of new TTM objects")?;
            self.ctx.wait_ok(s, "the FILL of new TTM objects")?;
        }
        Ok(())
    }

    /// Object `i` through the GPU: GEM_MOVE to VRAM (evicting others),
    /// then FILL with its next value and CHECKSUM, which must match.
    /// Returns the time the move took.
    fn cycle_step(&mut self, i: usize) -> R<f64> {
        let size = self.pat.size;
        let b = &self.objs[i];
        let t = Instant::now();
        self.ctx
            .dev
            .move_bo(b.handle, SOFTGPU_BO_VRAM)
            .ctx(format!("GEM_MOVE of TTM object {i} to VRAM"))?;
        self.copies_done()?;
        let moved = t.elapsed().as_secs_f64();
        let v = (b.val as usize + 1) % NVALUES;
        let what = format!("the FILL and CHECKSUM of TTM object {i}");
        let s = self.ctx.submit(
            &[
                Cmd::fill(b.va, size, self.pat.values[v]),
                Cmd::checksum(RES_VA, b.va, size),
            ],
            &what,
        )?;
        self.ctx.wait_ok(s, &what)?;
        self.objs[i].val = v as u8;
        let got = self.ctx.slot(0);
        if got != self.pat.hashes[v] {
            return Err(format!(
                "DATA CORRUPTION: {what}: checksum {got:#x}, expected {:#x}",
                self.pat.hashes[v]
            ));
        }
        Ok(moved)
    }

    /// Waits until the copies of the moves so far are done: GEM_MOVE
    /// returns with its copy queued on the engine, which runs everything
    /// in order, so an empty job submitted now ends after them.
    fn copies_done(&self) -> R<()> {
        let what = "an empty job after GEM_MOVEs";
        let s = self.ctx.submit(&[Cmd::busy(0)], what)?;
        self.ctx.wait_ok(s, what)
    }

    /// GEM_MOVE of every object to `placement`; the seconds it took, until
    /// the last copy was done.
    fn move_all(&self, placement: u32) -> R<f64> {
        let t = Instant::now();
        for (i, b) in self.objs.iter().enumerate() {
            self.ctx
                .dev
                .move_bo(b.handle, placement)
                .ctx(format!("GEM_MOVE of TTM object {i} to {placement:#x}"))?;
        }
        self.copies_done()?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// Every object checksummed by the GPU where it is, and the first and
    /// last u32 of each read by the CPU through its mapping.
    fn verify(&self) -> R<Verify> {
        let mut out = Verify::default();
        let size = self.pat.size;
        for (c, chunk) in self.objs.chunks(self.per_job()).enumerate() {
            let cmds: Vec<Cmd> = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| Cmd::checksum(RES_VA + i as u64 * 8, b.va, size))
                .collect();
            let s = self.ctx.submit(&cmds, "the verification CHECKSUMs")?;
            self.ctx.wait_ok(s, "the verification CHECKSUMs")?;
            for (i, b) in chunk.iter().enumerate() {
                let n = c * self.per_job() + i;
                let want = self.pat.hashes[b.val as usize];
                out.checked += 1;
                let got = self.ctx.slot(i);
                if got != want {
                    out.bad(format!(
                        "TTM object {n}: GPU checksum {got:#x}, expected {want:#x}"
                    ));
                }
                let m = self
                    .ctx
                    .dev
                    .mmap_bo(b.handle, size as usize)
                    .ctx(format!("mmap of TTM object {n}"))?;
                let v = self.pat.values[b.val as usize];
                for o in [0, size as usize - 4] {
                    let got = m.read_u32(o);
                    if got != v {
                        out.bad(format!(
                            "TTM object {n}: CPU read {got:#x} at {o:#x}, expected {v:#x}"
                        ));
                    }
                }
            }
        }
        Ok(out)
    }

    /// (evictions summed, objects in VRAM) from GEM_INFO.
    fn info(&self) -> R<(u64, usize)> {
        let (mut ev, mut in_vram) = (0, 0);
        for (i, b) in self.objs.iter().enumerate() {
            let info = self
                .ctx
                .dev
                .info(b.handle)
                .ctx(format!("GEM_INFO of TTM object {i}"))?;
            ev += info.evictions;
            in_vram += usize::from(info.flags & SOFTGPU_BO_INFO_VRAM != 0);
        }
        Ok((ev, in_vram))
    }
}

/// The long-lived memory of one mode.
enum Objects {
    Control { objs: Vec<AnonMap>, vals: Vec<u8> },
    Ttm(TtmSet, u32),
}

impl Objects {
    fn len(&self) -> usize {
        match self {
            Objects::Control { objs, .. } => objs.len(),
            Objects::Ttm(s, _) => s.objs.len(),
        }
    }

    fn add(&mut self, n: usize, size: usize) -> R<()> {
        match self {
            Objects::Control { objs, vals } => {
                for _ in 0..n {
                    let v = (objs.len() % NVALUES) as u8;
                    objs.push(control_object(size, v)?);
                    vals.push(v);
                }
                Ok(())
            }
            Objects::Ttm(s, flags) => s.add(n, *flags),
        }
    }

    /// Step `i` of a pass; the GEM_MOVE's time (0 for control).
    fn cycle_step(&mut self, i: usize) -> R<f64> {
        match self {
            Objects::Control { objs, vals } => {
                let v = (vals[i] as usize + 1) % NVALUES;
                // The new object first, then the old one goes: as an
                // eviction allocates system pages while the object moving
                // in still has its own.
                let m = control_object(objs[i].len(), v as u8)?;
                objs[i] = m;
                vals[i] = v as u8;
                Ok(0.0)
            }
            Objects::Ttm(s, _) => s.cycle_step(i),
        }
    }

    fn verify(&self) -> R<Verify> {
        match self {
            Objects::Control { objs, vals } => {
                let mut out = Verify::default();
                for (g, m) in objs.iter().enumerate() {
                    let want = u64::from_ne_bytes([cbyte(vals[g] as usize); 8]);
                    out.checked += 1;
                    for off in (0..m.len()).step_by(PAGE) {
                        let got = m.read_u64(off);
                        if got != want {
                            out.bad(format!(
                                "control object {g}: read {got:#x} at {off:#x}, expected {want:#x}"
                            ));
                            break;
                        }
                    }
                }
                Ok(out)
            }
            Objects::Ttm(s, _) => s.verify(),
        }
    }
}

/// Anonymous memory of `size` bytes filled with value `v`'s byte, mlock()ed.
fn control_object(size: usize, v: u8) -> R<AnonMap> {
    let mut m = AnonMap::new(size, 0)?;
    m.fill(cbyte(v as usize));
    m.mlock()?;
    Ok(m)
}

/// (objects of the working set, of them in system memory once VRAM is
/// full) for `vram` bytes of VRAM, `pct` % of it, objects of `size`.
pub fn working_set(vram: u64, pct: u32, size: u64) -> (usize, usize) {
    let total = (vram * u64::from(pct) / 100 / size).max(1) as usize;
    let in_vram = (vram / size) as usize;
    (total, total.saturating_sub(in_vram))
}

/// The median, least and greatest of `xs` (None if empty).
pub fn spread(xs: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((med, v[0], v[n - 1]))
}

/// Runs the phase: every repetition, every mode (rotated); a summary per
/// repetition; then the move throughput. Emits its records; whether any
/// failed.
pub fn phase(cfg: &Config, churn_dir: &Path) -> bool {
    let vram = match Device::open()
        .ctx("opening the softgpu render node")
        .and_then(|d| vram_bytes(&d))
    {
        Ok(Some(v)) => v,
        res => {
            let mut rec = Obj::new();
            rec.put("phase", "vram").put("ok", true);
            match res {
                Ok(_) => rec.put("skipped", "no VRAM (VRAM=0)"),
                Err(e) => rec.put("ok", false).put("error", e),
            };
            crate::progress("vram: skipped or failed: no VRAM");
            let ok = crate::ok_of(&rec);
            crate::emit(&rec);
            return !ok;
        }
    };
    let mut failed = false;
    let mut summary = Vec::new();
    for rep in 0..cfg.vram_repeat {
        let mut got = Vec::new();
        for (position, mode) in crate::rotated(&cfg.vram_modes, rep).into_iter().enumerate() {
            let rec = run(cfg, churn_dir, mode, vram, rep, position);
            failed |= !crate::ok_of(&rec);
            got.push((mode, crate::obtained(&rec)));
            crate::emit(&rec);
        }
        summary.push((rep, got));
    }
    for (rep, got) in summary {
        let find = |m: Mode| got.iter().find(|(g, _)| *g == m).and_then(|(_, h)| *h);
        let ratio = |m: Mode| match (find(m), find(Mode::Control)) {
            (Some(a), Some(c)) if c > 0 => Some(a as f64 / c as f64),
            _ => None,
        };
        let mut s = Obj::new();
        s.put("phase", "vram-summary")
            .put("rep", rep)
            .put("vram_mb", vram / MIB)
            .put("bo_kb", cfg.vram_bo_kb)
            .put(
                "order",
                got.iter().map(|(m, _)| m.name()).collect::<Vec<_>>(),
            );
        for m in VRAM_MODES {
            s.put(&m.key(), find(m));
        }
        s.put("gemfs_vs_control", ratio(Mode::Gemfs))
            .put("ttm_pool_vs_control", ratio(Mode::TtmPool))
            .put("target", 0.95)
            .put("ok", true);
        let r = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
        crate::progress(&format!(
            "vram summary rep {rep}: huge pages control {:?} gemfs {:?} ttm-pool {:?}; \
             gemfs/control {}, ttm-pool/control {}",
            find(Mode::Control),
            find(Mode::Gemfs),
            find(Mode::TtmPool),
            r(ratio(Mode::Gemfs)),
            r(ratio(Mode::TtmPool))
        ));
        crate::emit(&s);
    }
    failed |= move_phase(cfg, vram);
    failed
}

/// One overcommit measurement of `mode`; always a record.
fn run(cfg: &Config, churn_dir: &Path, mode: Mode, vram: u64, rep: u32, position: usize) -> Obj {
    let mut rec = Obj::new();
    rec.put("phase", "vram")
        .put("mode", mode.name())
        .put("rep", rep)
        .put("position", position)
        .put("vram_mb", vram / MIB)
        .put("bo_kb", cfg.vram_bo_kb)
        .put("ws_pct", cfg.vram_ws_pct);
    let t = Instant::now();
    let name = format!("vram mode={} rep {rep}", mode.name());
    let res = unit(cfg, &name, churn_dir, mode, vram, &mut rec);
    rec.put("unit_secs_emulated", t.elapsed().as_secs_f64());
    sys::finish(&mut rec, &name, res);
    rec
}

fn unit(cfg: &Config, name: &str, churn_dir: &Path, mode: Mode, vram: u64, rec: &mut Obj) -> R<()> {
    let (hp_kb, hp_order) = sys::hugepage()?;
    crate::progress(&format!("{name}: settling (drop caches, compact)"));
    let t = Instant::now();
    let drain = frag::settle()?;
    rec.put("pcp_drain", drain)
        .put("settle_secs_emulated", t.elapsed().as_secs_f64())
        .put("settled", sys::snapshot(hp_order)?);
    let vm_start = sys::vmstat()?;
    let gemfs_start = sys::dir_counters("/sys/kernel/debug/gemfs");

    let size = cfg.vram_bo_kb * 1024;
    let (total, in_system) = working_set(vram, cfg.vram_ws_pct, size);
    // Control holds what the TTM modes keep in system memory.
    let nobj = if mode == Mode::Control {
        in_system.max(1)
    } else {
        total
    };
    let mut objs = match mode {
        Mode::Control => Objects::Control {
            objs: Vec::new(),
            vals: Vec::new(),
        },
        _ => Objects::Ttm(
            TtmSet::new(size)?,
            ttm_flags(mode, SOFTGPU_BO_VRAM | SOFTGPU_BO_SYSTEM),
        ),
    };
    let system = in_system.max(1) as u64 * size;
    rec.put("objects", nobj)
        .put("working_set_mb", total as u64 * size / MIB)
        .put("system_footprint_mb", system / MIB);

    // The churn, then objects into holes spread over it.
    let piece = cfg.piece_kb as usize * 1024;
    let free_kb = sys::meminfo_kb("MemFree")?;
    let headroom_kb = cfg.headroom_mb * 1024;
    let churn_target = (cfg.mem_bytes() * u64::from(cfg.churn_pct) / 100)
        .max(system + system / 8)
        .min(free_kb.saturating_sub(headroom_kb) * 1024);
    crate::progress(&format!(
        "{name}: churn: filling {} MiB (free {} MiB); {nobj} objects of {} KiB, {} MiB in \
         system memory once VRAM ({} MiB) is full",
        churn_target / MIB,
        free_kb / 1024,
        size / 1024,
        system / MIB,
        vram / MIB
    ));
    let t_fill = Instant::now();
    let churn = Churn::fill(churn_dir, churn_target, piece, headroom_kb)?;
    rec.put("churn_mb", churn.bytes() / MIB);
    let needed = system.div_ceil(piece as u64) as usize;
    if needed as f64 > churn.n as f64 * 0.95 {
        return Err(format!(
            "the churn reached {} MiB, the objects need {} MiB of system memory \
             (lower --vram-ws-pct or --headroom-mb)",
            churn.bytes() / MIB,
            system / MIB
        ));
    }
    let batches = system.div_ceil(cfg.batch_mb * MIB).max(1) as usize;
    for j in 0..batches {
        churn.free_spread(j, batches, needed)?;
        let want = nobj * (j + 1) / batches;
        objs.add(want - objs.len(), size as usize)?;
    }
    let after_fill = sys::snapshot(hp_order)?;
    rec.put("fill_secs_emulated", t_fill.elapsed().as_secs_f64());

    // The passes through the GPU, the churn still there.
    crate::progress(&format!(
        "{name}: {} passes over {nobj} objects",
        cfg.vram_cycles
    ));
    let t_cycle = Instant::now();
    let mut move_secs = 0.0;
    for _ in 0..cfg.vram_cycles {
        for i in 0..objs.len() {
            move_secs += objs.cycle_step(i)?;
        }
    }
    let steps = u64::from(cfg.vram_cycles) * nobj as u64;
    rec.put("cycles", cfg.vram_cycles)
        .put("cycle_steps", steps)
        .put("cycle_secs_emulated", t_cycle.elapsed().as_secs_f64())
        .put("cycle_move_secs_emulated", move_secs);
    // What the passes took from system memory: an eviction takes fresh
    // system pages, a move into VRAM should give the object's back (with
    // gemfs, its file keeps them: see the record's Shmem_kb).
    let after_cycles = sys::snapshot(hp_order)?;
    let kb = |o: &Obj, k: &str| o.get(k).and_then(Json::as_i64).unwrap_or(0);
    rec.put(
        "cycles_memfree_drop_mb",
        (kb(&after_fill, "MemFree_kb") - kb(&after_cycles, "MemFree_kb")) / 1024,
    )
    .put(
        "cycles_shmem_growth_mb",
        (kb(&after_cycles, "Shmem_kb") - kb(&after_fill, "Shmem_kb")) / 1024,
    )
    .put("after_fill", after_fill)
    .put("after_cycles", after_cycles);
    drop(churn);

    // Compaction and the huge page request with the objects alive.
    let st = Stream::default();
    st.stop.store(true, Ordering::SeqCst);
    rec.extend(frag::measure(cfg, name, &st, hp_kb, hp_order)?);

    crate::progress(&format!("{name}: verifying the objects"));
    let t = Instant::now();
    let v = objs.verify()?;
    rec.put("verify_secs_emulated", t.elapsed().as_secs_f64())
        .put("verify", v.to_obj());
    if let Objects::Ttm(s, _) = &objs {
        let (evictions, in_vram) = s.info()?;
        rec.put("evictions", evictions)
            .put("objects_in_vram", in_vram)
            .put("objects_in_system", s.objs.len() - in_vram);
    }
    rec.put(
        "gemfs_counters",
        sys::counters_delta(&gemfs_start, &sys::dir_counters("/sys/kernel/debug/gemfs")),
    )
    .put(
        "vmstat_total",
        sys::vmstat_delta(&vm_start, &sys::vmstat()?),
    );
    drop(objs);
    v.ok()?;
    let num = |k: &str| {
        rec.get(k)
            .and_then(Json::as_u64)
            .map_or("?".into(), |n| n.to_string())
    };
    let evictions = if mode == Mode::Control {
        String::new()
    } else {
        format!(", {} evictions", num("evictions"))
    };
    crate::progress(&format!(
        "{name}: ok, huge pages obtained {} of {} requested{evictions}",
        num("hugepages_obtained"),
        num("hugepages_requested"),
    ));
    Ok(())
}

/// The move throughput: per TTM mode, object size and repetition a
/// `vram-move` record; per mode and size a `vram-move-summary` with the
/// median and min-max of each ratio to memcpy. Whether any failed.
fn move_phase(cfg: &Config, vram: u64) -> bool {
    let mut failed = false;
    let modes: Vec<Mode> = cfg
        .vram_modes
        .iter()
        .copied()
        .filter(|&m| m != Mode::Control)
        .collect();
    for &kb in cfg.vram_move_kb.iter() {
        let mut ratios: Vec<(Mode, Vec<f64>, Vec<f64>)> =
            modes.iter().map(|&m| (m, Vec::new(), Vec::new())).collect();
        for rep in 0..cfg.vram_repeat {
            for mode in crate::rotated(&modes, rep) {
                let mut rec = Obj::new();
                rec.put("phase", "vram-move")
                    .put("mode", mode.name())
                    .put("object_kb", kb)
                    .put("rep", rep);
                let res = move_unit(cfg, mode, kb * 1024, vram, &mut rec);
                let what = format!("vram-move {} {kb} KiB rep {rep}", mode.name());
                sys::finish(&mut rec, &what, res);
                failed |= !crate::ok_of(&rec);
                if let Some(r) = ratios.iter_mut().find(|r| r.0 == mode) {
                    let f = |k: &str| rec.get(k).and_then(Json::as_f64);
                    r.1.extend(f("to_vram_vs_memcpy"));
                    r.2.extend(f("to_system_vs_memcpy"));
                }
                crate::emit(&rec);
            }
        }
        for (mode, to_vram, to_system) in ratios {
            let mut s = Obj::new();
            s.put("phase", "vram-move-summary")
                .put("mode", mode.name())
                .put("object_kb", kb)
                .put("reps", to_vram.len());
            for (k, xs) in [("to_vram", &to_vram), ("to_system", &to_system)] {
                let sp = spread(xs);
                s.put(&format!("{k}_vs_memcpy"), sp.map(|x| x.0))
                    .put(&format!("{k}_vs_memcpy_min"), sp.map(|x| x.1))
                    .put(&format!("{k}_vs_memcpy_max"), sp.map(|x| x.2));
            }
            s.put("ok", true);
            crate::progress(&format!(
                "vram-move summary {} {kb} KiB: to VRAM {:?}, to system {:?} of memcpy \
                 (median, min, max)",
                mode.name(),
                spread(&to_vram),
                spread(&to_system)
            ));
            crate::emit(&s);
        }
    }
    failed
}

fn move_unit(cfg: &Config, mode: Mode, size: u64, vram: u64, rec: &mut Obj) -> R<()> {
    frag::settle()?;
    // All of them must fit in VRAM at once (no eviction in this test).
    let mb = (cfg.vram_move_mb * MIB).min(vram / 2);
    let n = (mb / size).max(1) as usize;
    let bytes = n as u64 * size;
    rec.put("objects", n).put("mb", bytes / MIB);
    crate::progress(&format!(
        "vram-move {}: {n} objects of {} KiB",
        mode.name(),
        size / 1024
    ));
    let mut set = TtmSet::new(size)?;
    set.add(n, ttm_flags(mode, SOFTGPU_BO_SYSTEM))?;
    let to_vram = set.move_all(SOFTGPU_BO_VRAM)?;
    let (_, in_vram) = set.info()?;
    let v1 = set.verify()?;
    let to_system = set.move_all(SOFTGPU_BO_SYSTEM)?;
    let (_, left) = set.info()?;
    let mut v = set.verify()?;
    v.merge(v1);
    drop(set);

    // The baseline: as many bytes copied in pieces of the same size
    // between two anonymous buffers, every page present beforehand.
    let mut src = AnonMap::new(size as usize, 0)?;
    src.fill(0x5a);
    let mut dsts = Vec::with_capacity(n);
    for _ in 0..n {
        let mut d = AnonMap::new(size as usize, 0)?;
        d.fill(0);
        dsts.push(d);
    }
    let t = Instant::now();
    for d in &mut dsts {
        d.copy_from(&src);
    }
    let memcpy = t.elapsed().as_secs_f64();
    if dsts
        .iter()
        .any(|d| d.read_u64(d.len() - 8) != 0x5a5a_5a5a_5a5a_5a5a)
    {
        return Err("memcpy baseline: the copy is not there".into());
    }
    let rate = |s: f64| (bytes as f64 / MIB as f64) / s.max(1e-9);
    rec.put("in_vram_after_move", in_vram)
        .put("in_vram_after_move_back", left)
        .put("to_vram_secs_emulated", to_vram)
        .put("to_system_secs_emulated", to_system)
        .put("memcpy_secs_emulated", memcpy)
        .put("to_vram_mb_per_sec_emulated", rate(to_vram))
        .put("to_system_mb_per_sec_emulated", rate(to_system))
        .put("memcpy_mb_per_sec_emulated", rate(memcpy))
        .put("to_vram_vs_memcpy", rate(to_vram) / rate(memcpy))
        .put("to_system_vs_memcpy", rate(to_system) / rate(memcpy))
        .put("verify", v.to_obj());
    if in_vram != n || left != 0 {
        return Err(format!(
            "GEM_MOVE: {in_vram} of {n} objects in VRAM after the move there, {left} after \
             the move back"
        ));
    }
    if v.mismatches > 0 {
        return Err(format!(
            "DATA CORRUPTION: {} mismatches after the moves: {:?}",
            v.mismatches, v.first
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debugfs_vram_size() {
        assert_eq!(
            parse_vram("size: 536870912\nused: 0\nfree: 536870912\n"),
            Some(512 * MIB)
        );
        assert_eq!(parse_vram("none\n"), None);
        assert_eq!(parse_vram("size: 0\n"), None);
    }

    #[test]
    fn working_set_and_spread() {
        // 2x 512 MiB of 2 MiB objects: 512, half of them in system memory.
        assert_eq!(working_set(512 * MIB, 200, 2 * MIB), (512, 256));
        // Less than VRAM: nothing in system memory.
        assert_eq!(working_set(512 * MIB, 50, 2 * MIB), (128, 0));
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(&[1.0, 4.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(spread(&[f64::NAN]), None);
        assert_eq!(
            ttm_flags(Mode::TtmPool, SOFTGPU_BO_SYSTEM),
            SOFTGPU_BO_SYSTEM | SOFTGPU_BO_TTM_POOL
        );
        assert_eq!(ttm_flags(Mode::Gemfs, SOFTGPU_BO_VRAM), SOFTGPU_BO_VRAM);
    }
}
