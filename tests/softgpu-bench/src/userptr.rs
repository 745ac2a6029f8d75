//! The `userptr-bind` phase: what binding anonymous memory to the GPU
//! costs, HMM mirroring against pinning, measured side by side.
//!
//! Each iteration maps `cost_mb` of fresh anonymous memory (4 KiB pages:
//! MADV_NOHUGEPAGE, so that both modes do the same per-page work whatever
//! the state of memory), writes a distinct value into every page with the
//! CPU, then, timed: DRM_SOFTGPU_USERPTR (HMM: flags 0, which only
//! registers the MMU interval notifier; pinned: SOFTGPU_USERPTR_PINNED,
//! which pins every page with FOLL_LONGTERM and fills the device page
//! table) and a first GPU job reading every page (CHECKSUMs: in HMM mode
//! every page is faulted into the device through hmm_range_fault). The
//! throughput of a mode is the memory bound over the time of both. Then, also
//! timed but apart: a second pass of the same CHECKSUMs (pages already in the
//! device page table in both modes) and VM_UNBIND. The GPU's checksums must
//! equal the CPU's FNV-1a of the same memory.
//!
//! The modes alternate (HMM, pinned, pinned, HMM, ...) until each has run
//! at least three times and the phase has run for twice `cost_secs`; the
//! record of each mode has the totals and the median, min and max of the
//! iterations. Times are emulated under TCG: only the ratio matters.

use std::collections::BTreeMap;
use std::time::Instant;

use softgpu::{Cmd, SOFTGPU_USERPTR_PINNED};

use crate::frag::settle;
use crate::gpu::{Ctx, BYTES_PER_JOB, OBJ_VA, RES_VA, SLOTS};
use crate::json::{Obj, Put as _};
use crate::sys::{self, AnonMap, Ctx as _, MIB, PAGE, R};
use crate::Config;

/// The modes: name in the records, USERPTR flags.
const MODES: [(&str, u32); 2] = [("hmm", 0), ("pinned", SOFTGPU_USERPTR_PINNED)];

/// At least this many iterations of each mode, and at most this many.
const MIN_ITERS: usize = 3;
const MAX_ITERS: usize = 64;

/// The vmstat counters summed over a mode's iterations (pinning migrates
/// pages out of ZONE_MOVABLE and CMA; faults may allocate).
const COUNTERS: &[&str] = &["pgmigrate_success", "pgmigrate_fail", "pgfault"];

/// One timed iteration of one mode.
#[derive(Default, Clone, Copy)]
struct Iter {
    bind: f64,
    first: f64,
    second: f64,
    unbind: f64,
}

impl Iter {
    /// Bind and first access: what the throughput is measured on.
    fn bind_first(&self) -> f64 {
        self.bind + self.first
    }
}

/// What one mode measured over its iterations.
#[derive(Default)]
struct Totals {
    iters: Vec<Iter>,
    counters: BTreeMap<String, i64>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Submits CHECKSUMs of `[OBJ_VA, OBJ_VA + bytes)`, one per
/// `BYTES_PER_JOB` chunk (one job each, chunk `i` into slot `i`), and waits
/// for all of them. Returns the checksums.
pub(crate) fn checksum_all(ctx: &Ctx, bytes: u64, what: &str) -> R<Vec<u64>> {
    let chunks = bytes.div_ceil(BYTES_PER_JOB) as usize;
    if chunks > SLOTS {
        return Err(format!("{what}: {bytes} bytes is too much"));
    }
    let mut seqnos = Vec::with_capacity(chunks);
    for i in 0..chunks {
        let off = i as u64 * BYTES_PER_JOB;
        let len = BYTES_PER_JOB.min(bytes - off);
        let cmd = Cmd::checksum(RES_VA + i as u64 * 8, OBJ_VA + off, len);
        seqnos.push(ctx.submit(&[cmd], what)?);
    }
    for s in seqnos {
        ctx.wait_ok(s, what)?;
    }
    Ok((0..chunks).map(|i| ctx.slot(i)).collect())
}

/// One iteration of a mode over `bytes` of fresh memory.
fn iteration(ctx: &Ctx, bytes: u64, flags: u32, k: usize) -> R<(Iter, BTreeMap<String, u64>)> {
    let mut m = AnonMap::new(bytes as usize, 0)?;
    m.advise(0, m.len(), libc::MADV_NOHUGEPAGE)?;
    for off in (0..m.len()).step_by(PAGE) {
        m.write_u64(off, ((k as u64) << 40) | (off as u64) | 1);
    }
    let vm0 = sys::vmstat()?;
    let mut it = Iter::default();
    let t = Instant::now();
    // SAFETY: `m` is only read by the CPU, through copies (fnv1a64), while
    // bound; the jobs only read it (CHECKSUM); it is unbound before it is
    // unmapped (and an unmapped userptr page would only fault).
    unsafe { ctx.dev.userptr(m.addr() as u64, bytes, OBJ_VA, flags) }
        .ctx(format!("USERPTR of {} MiB", bytes / MIB))?;
    it.bind = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let first = checksum_all(ctx, bytes, "the first CHECKSUM of the userptr")?;
    it.first = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let second = checksum_all(ctx, bytes, "the second CHECKSUM of the userptr")?;
    it.second = t.elapsed().as_secs_f64();
    let vm1 = sys::vmstat()?;
    for (i, (&a, &b)) in first.iter().zip(&second).enumerate() {
        let off = i as u64 * BYTES_PER_JOB;
        let len = BYTES_PER_JOB.min(bytes - off);
        let want = m.fnv1a64(off as usize, len as usize);
        if a != want || b != want {
            return Err(format!(
                "DATA CORRUPTION: userptr chunk {i}: GPU checksums {a:#x} (first) and \
                 {b:#x} (second), CPU {want:#x}"
            ));
        }
    }
    let t = Instant::now();
    ctx.dev
        .unbind(OBJ_VA, bytes)
        .ctx("VM_UNBIND of the userptr")?;
    it.unbind = t.elapsed().as_secs_f64();
    let d = COUNTERS
        .iter()
        .map(|&c| {
            let v = |s: &BTreeMap<String, u64>| s.get(c).copied().unwrap_or(0);
            (c.to_string(), v(&vm1).wrapping_sub(v(&vm0)))
        })
        .collect();
    drop(m);
    Ok((it, d))
}

/// The phase: one record per mode, then the summary with the ratio.
pub fn bind(cfg: &Config) -> Vec<Obj> {
    let bytes = (cfg.cost_mb * MIB).div_ceil(PAGE as u64) * PAGE as u64;
    let mut totals: Vec<Totals> = MODES.iter().map(|_| Totals::default()).collect();
    let res = run(cfg, bytes, &mut totals);
    let mut recs = Vec::new();
    let mut rates = Vec::new();
    for (i, (mode, flags)) in MODES.iter().enumerate() {
        let t = &totals[i];
        let mut rec = Obj::new();
        let mb = bytes as f64 / MIB as f64;
        let sum = |f: fn(&Iter) -> f64| t.iters.iter().map(f).sum::<f64>();
        let per_iter: Vec<f64> = t.iters.iter().map(|i| mb / i.bind_first()).collect();
        let total = sum(Iter::bind_first);
        let rate = (total > 0.0).then(|| mb * t.iters.len() as f64 / total);
        rates.push(rate);
        rec.put("phase", "userptr-bind")
            .put("mode", *mode)
            .put("flags", *flags)
            .put("mb", bytes / MIB)
            .put("iterations", t.iters.len())
            .put("bind_secs_emulated", sum(|i| i.bind))
            .put("first_access_secs_emulated", sum(|i| i.first))
            .put("second_access_secs_emulated", sum(|i| i.second))
            .put("unbind_secs_emulated", sum(|i| i.unbind))
            .put("mb_per_sec_emulated", rate)
            .put("mb_per_sec_median_emulated", median(per_iter.clone()))
            .put(
                "mb_per_sec_min_emulated",
                per_iter.iter().copied().reduce(f64::min),
            )
            .put(
                "mb_per_sec_max_emulated",
                per_iter.iter().copied().reduce(f64::max),
            )
            .put(
                "resident_mb_per_sec_emulated",
                (sum(|i| i.second) > 0.0).then(|| mb * t.iters.len() as f64 / sum(|i| i.second)),
            );
        let mut c = Obj::new();
        for (k, v) in &t.counters {
            c.put(k, *v);
        }
        rec.put("vmstat", c);
        let r = if res.is_ok() {
            Ok(())
        } else if t.iters.is_empty() {
            res.clone()
        } else {
            Err(format!(
                "the phase failed: {}",
                res.as_ref().err().cloned().unwrap_or_default()
            ))
        };
        sys::finish(&mut rec, &format!("userptr-bind {mode}"), r);
        recs.push(rec);
    }
    let ratio = match (rates[0], rates[1]) {
        (Some(h), Some(p)) if p > 0.0 => Some(h / p),
        _ => None,
    };
    let mut s = Obj::new();
    s.put("phase", "userptr-bind-summary")
        .put("hmm_vs_pinned", ratio)
        .put("ok", res.is_ok());
    if let Err(e) = &res {
        s.put("error", e.clone());
    }
    crate::progress(&format!(
        "userptr-bind: {} MiB, bind + first GPU access: hmm/pinned throughput {}",
        bytes / MIB,
        ratio.map_or("-".into(), |r| format!("{r:.3}"))
    ));
    recs.push(s);
    recs
}

fn run(cfg: &Config, bytes: u64, totals: &mut [Totals]) -> R<()> {
    settle()?;
    crate::progress(&format!(
        "userptr-bind: {} MiB per bind, hmm and pinned alternating, at least {} s",
        bytes / MIB,
        2.0 * cfg.cost_secs
    ));
    let ctx = Ctx::new(0)?;
    let t = Instant::now();
    let mut k = 0usize;
    loop {
        let round = k / MODES.len();
        let enough = round >= MIN_ITERS && t.elapsed().as_secs_f64() >= 2.0 * cfg.cost_secs;
        if (k.is_multiple_of(MODES.len()) && enough) || round >= MAX_ITERS {
            break;
        }
        // ABBA: each mode goes first in every other round.
        let i = if round.is_multiple_of(2) {
            k % MODES.len()
        } else {
            MODES.len() - 1 - k % MODES.len()
        };
        let (it, d) = iteration(&ctx, bytes, MODES[i].1, k)
            .map_err(|e| format!("{} iteration {round}: {e}", MODES[i].0))?;
        totals[i].iters.push(it);
        for (c, v) in d {
            *totals[i].counters.entry(c).or_default() += v as i64;
        }
        k += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn anon_fnv_matches_the_reference() {
        let mut m = AnonMap::new(2 * PAGE, 0).unwrap();
        m.fill(0x61);
        assert_eq!(m.fnv1a64(0, 1), softgpu::fnv1a64(b"a"));
        let all = vec![0x61u8; 2 * PAGE];
        assert_eq!(m.fnv1a64(0, 2 * PAGE), softgpu::fnv1a64(&all));
    }
}
