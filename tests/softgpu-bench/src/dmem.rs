//! The `dmem` phase: what device private memory costs and gives, measured
//! side by side in one run (issue 15's figures).
//!
//! Each repetition maps `--dmem-mb` of fresh anonymous memory (4 KiB
//! pages: MADV_NOHUGEPAGE), writes a distinct value into every page with
//! the CPU and binds it as a userptr (HMM mirroring, no pins). Then, each
//! step timed:
//!
//! - `mirror_first`, `mirror`: CHECKSUMs over the whole range, first with
//!   the device page table empty (every page faulted in through
//!   `hmm_range_fault()`), then again (every page resident): GPU jobs over
//!   mirrored system memory;
//! - `to_vram`: USERPTR_MIGRATE of the range into VRAM (HMM's
//!   `migrate_vma`, each page copied into the BAR);
//! - `vram_first`, `vram`: the same CHECKSUMs over the migrated range (the
//!   device page table refilled with VRAM entries, then resident);
//! - `to_system`: USERPTR_MIGRATE back (`migrate_device_range()`);
//! - `cpu_fault_back`: after a second, untimed migration into VRAM, the CPU
//!   reads every page, each read faulting its page back
//!   (`migrate_to_ram`), and the values are checked;
//! - `memcpy`: the baseline, as many bytes copied between two anonymous
//!   buffers, every page present beforehand.
//!
//! Every GPU checksum must equal the CPU's FNV-1a of the memory, every
//! migration must move every page, and debugfs `devmem`'s `faulted_back`
//! must count every page the CPU read back. The summary gives, over the
//! repetitions, the median and min-max of the migrations' throughput
//! against memcpy and of the GPU's throughput over migrated pages against
//! mirrored ones. Times are emulated under TCG: only the ratios matter.

use std::time::Instant;

use softgpu::{Device, SOFTGPU_BO_SYSTEM, SOFTGPU_BO_VRAM};

use crate::frag::settle;
use crate::gpu::{Ctx, BYTES_PER_JOB, OBJ_VA};
use crate::json::{Obj, Put as _};
use crate::sys::{self, AnonMap, Ctx as _, MIB, PAGE, R};
use crate::userptr::checksum_all;
use crate::vram::{debugfs_text, spread, vram_bytes};
use crate::Config;

/// The ratios of the summary: (name, numerator step, denominator step),
/// each a ratio of throughputs (the inverse ratio of the times).
const RATIOS: [(&str, &str, &str); 5] = [
    ("to_vram_vs_memcpy", "to_vram", "memcpy"),
    ("to_system_vs_memcpy", "to_system", "memcpy"),
    ("cpu_fault_back_vs_memcpy", "cpu_fault_back", "memcpy"),
    (
        "gpu_vram_first_vs_mirror_first",
        "vram_first",
        "mirror_first",
    ),
    ("gpu_vram_vs_mirror", "vram", "mirror"),
];

/// The value the CPU writes at the start of page `page` in repetition
/// `rep`.
fn page_value(rep: u32, page: usize) -> u64 {
    (u64::from(rep) << 48) | ((page as u64) << 12) | 0xd3
}

/// A debugfs `devmem` counter of the render node of `dev`.
fn devmem_counter(dev: &Device, key: &str) -> R<u64> {
    let text = debugfs_text(dev, "devmem")?;
    parse_counter(&text, key).ok_or_else(|| format!("no {key}: in debugfs devmem: {text:?}"))
}

/// `key: <u64>` of a debugfs text.
fn parse_counter(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// The step times of one repetition, seconds (emulated), by step name.
type Times = Vec<(&'static str, f64)>;

/// USERPTR_MIGRATE of the whole range to `placement`, timed; every page
/// must move.
fn migrate_all(ctx: &Ctx, bytes: u64, placement: u32, what: &str) -> R<f64> {
    let pages = bytes / PAGE as u64;
    let t = Instant::now();
    let (candidates, migrated) = ctx
        .dev
        .migrate_userptr(OBJ_VA, bytes, placement)
        .ctx(format!("USERPTR_MIGRATE {what}"))?;
    let secs = t.elapsed().as_secs_f64();
    if candidates != pages || migrated != pages {
        return Err(format!(
            "USERPTR_MIGRATE {what}: {migrated} of {pages} pages moved ({candidates} \
             candidates)"
        ));
    }
    Ok(secs)
}

/// One repetition over `bytes` of fresh memory.
fn repetition(ctx: &Ctx, bytes: u64, rep: u32, rec: &mut Obj) -> R<Times> {
    settle()?;
    let pages = bytes as usize / PAGE;
    let mut times: Times = Vec::new();
    let mut m = AnonMap::new(bytes as usize, 0)?;
    m.advise(0, m.len(), libc::MADV_NOHUGEPAGE)?;
    for p in 0..pages {
        m.write_u64(p * PAGE, page_value(rep, p));
    }
    let want: Vec<u64> = (0..bytes.div_ceil(BYTES_PER_JOB))
        .map(|i| {
            let off = i * BYTES_PER_JOB;
            m.fnv1a64(off as usize, BYTES_PER_JOB.min(bytes - off) as usize)
        })
        .collect();
    // SAFETY: while bound, `m` is written by nobody and read by the CPU
    // only through copies; the jobs only read it (CHECKSUM); it is unbound
    // before it is unmapped.
    unsafe { ctx.dev.userptr(m.addr() as u64, bytes, OBJ_VA, 0) }
        .ctx(format!("USERPTR of {} MiB", bytes / MIB))?;
    // Unbound whatever happens, so that the next repetition can bind the
    // same range.
    let measured = (|| -> R<()> {
        let gpu = |step: &'static str, times: &mut Times| -> R<()> {
            let t = Instant::now();
            let got = checksum_all(ctx, bytes, step)?;
            times.push((step, t.elapsed().as_secs_f64()));
            if got != want {
                return Err(format!(
                    "DATA CORRUPTION: GPU checksums {got:x?} in step {step}, CPU {want:x?}"
                ));
            }
            Ok(())
        };
        gpu("mirror_first", &mut times)?;
        gpu("mirror", &mut times)?;
        times.push((
            "to_vram",
            migrate_all(ctx, bytes, SOFTGPU_BO_VRAM, "into VRAM")?,
        ));
        gpu("vram_first", &mut times)?;
        gpu("vram", &mut times)?;
        times.push((
            "to_system",
            migrate_all(ctx, bytes, SOFTGPU_BO_SYSTEM, "back to system memory")?,
        ));
        migrate_all(ctx, bytes, SOFTGPU_BO_VRAM, "into VRAM again")?;
        let faulted = devmem_counter(&ctx.dev, "faulted_back")?;
        let t = Instant::now();
        let mut wrong = None;
        for p in 0..pages {
            let v = m.read_u64(p * PAGE);
            if v != page_value(rep, p) && wrong.is_none() {
                wrong = Some((p, v));
            }
        }
        times.push(("cpu_fault_back", t.elapsed().as_secs_f64()));
        let faulted = devmem_counter(&ctx.dev, "faulted_back")? - faulted;
        rec.put("faulted_back", faulted);
        if let Some((p, v)) = wrong {
            return Err(format!(
                "DATA CORRUPTION: page {p} reads {v:#x} after the fault back, wrote {:#x}",
                page_value(rep, p)
            ));
        }
        if faulted != pages as u64 {
            return Err(format!(
                "the CPU's reads faulted {faulted} of {pages} pages back (debugfs devmem)"
            ));
        }
        Ok(())
    })();
    let unbound = ctx
        .dev
        .unbind(OBJ_VA, bytes)
        .ctx("VM_UNBIND of the userptr");
    measured?;
    unbound?;
    drop(m);

    let mut src = AnonMap::new(bytes as usize, 0)?;
    src.fill(0x6b);
    let mut dst = AnonMap::new(bytes as usize, 0)?;
    dst.fill(0);
    let t = Instant::now();
    dst.copy_from(&src);
    times.push(("memcpy", t.elapsed().as_secs_f64()));
    if dst.read_u64(dst.len() - 8) != 0x6b6b_6b6b_6b6b_6b6b {
        return Err("memcpy baseline: the copy is not there".into());
    }
    Ok(times)
}

/// A ratio of throughputs over the same bytes: `den`'s time over `num`'s.
fn ratio(times: &Times, num: &str, den: &str) -> Option<f64> {
    let t = |s: &str| times.iter().find(|(k, _)| *k == s).map(|(_, v)| *v);
    match (t(num), t(den)) {
        (Some(n), Some(d)) if n > 0.0 => Some(d / n),
        _ => None,
    }
}

/// The phase: a `dmem` record per repetition, then `dmem-summary`.
/// Whether any failed.
pub fn phase(cfg: &Config) -> bool {
    let bytes = (cfg.dmem_mb * MIB).div_ceil(PAGE as u64) * PAGE as u64;
    let ctx = match Ctx::new(0).and_then(|c| Ok((vram_bytes(&c.dev)?, c))) {
        Ok((Some(vram), c)) if vram >= bytes + bytes / 2 => c,
        res => {
            let mut rec = Obj::new();
            rec.put("phase", "dmem");
            match res {
                Ok((vram, _)) => {
                    // Not measured, and said so: never a passed figure.
                    let why = match vram {
                        None => "no VRAM (VRAM=0)".to_string(),
                        Some(v) => format!("{} MiB of VRAM is too little", v / MIB),
                    };
                    crate::progress(&format!("dmem: skipped: {why}"));
                    rec.put("ok", true).put("skipped", why)
                }
                Err(e) => {
                    crate::progress(&format!("dmem: FAILED: {e}"));
                    rec.put("ok", false).put("error", e)
                }
            };
            let ok = crate::ok_of(&rec);
            crate::emit(&rec);
            return !ok;
        }
    };
    crate::progress(&format!(
        "dmem: {} MiB of userptr memory, {} repetitions",
        bytes / MIB,
        cfg.dmem_repeat
    ));
    let mut failed = false;
    let mut ratios: Vec<Vec<f64>> = RATIOS.iter().map(|_| Vec::new()).collect();
    for rep in 0..cfg.dmem_repeat {
        let mut rec = Obj::new();
        rec.put("phase", "dmem")
            .put("rep", rep)
            .put("mb", bytes / MIB);
        let res = repetition(&ctx, bytes, rep, &mut rec).map(|times| {
            for (step, secs) in &times {
                rec.put(&format!("{step}_secs_emulated"), *secs);
            }
            for (i, (name, num, den)) in RATIOS.iter().enumerate() {
                let r = ratio(&times, num, den);
                rec.put(name, r);
                ratios[i].extend(r);
            }
        });
        sys::finish(&mut rec, &format!("dmem rep {rep}"), res);
        failed |= !crate::ok_of(&rec);
        crate::emit(&rec);
    }
    let mut s = Obj::new();
    s.put("phase", "dmem-summary")
        .put("mb", bytes / MIB)
        .put("reps", ratios[0].len());
    let mut line = Vec::new();
    for ((name, _, _), xs) in RATIOS.iter().zip(&ratios) {
        let sp = spread(xs);
        s.put(name, sp.map(|x| x.0))
            .put(&format!("{name}_min"), sp.map(|x| x.1))
            .put(&format!("{name}_max"), sp.map(|x| x.2));
        line.push(format!(
            "{name} {}",
            sp.map_or("-".into(), |(m, lo, hi)| format!(
                "{m:.3} ({lo:.3}-{hi:.3})"
            ))
        ));
    }
    s.put("ok", !failed);
    crate::progress(&format!(
        "dmem summary, median (min-max) of {} repetitions: {}",
        ratios[0].len(),
        line.join(", ")
    ));
    crate::emit(&s);
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devmem_counters() {
        let text = "size: 536870912\nused: 0\nto_vram: 12\nfaulted_back: 4096\n";
        assert_eq!(parse_counter(text, "faulted_back"), Some(4096));
        assert_eq!(parse_counter(text, "to_vram"), Some(12));
        assert_eq!(parse_counter(text, "evicted"), None);
        assert_eq!(parse_counter("faulted_back: x\n", "faulted_back"), None);
    }

    #[test]
    fn ratios_are_of_throughputs() {
        let t: Times = vec![("to_vram", 2.0), ("memcpy", 0.5), ("mirror", 0.0)];
        assert_eq!(ratio(&t, "to_vram", "memcpy"), Some(0.25));
        // A zero or missing time gives no ratio, never infinity.
        assert_eq!(ratio(&t, "mirror", "memcpy"), None);
        assert_eq!(ratio(&t, "vram", "memcpy"), None);
    }

    #[test]
    fn page_values_differ_by_page_and_repetition() {
        assert_ne!(page_value(0, 1), page_value(0, 2));
        assert_ne!(page_value(0, 1), page_value(1, 1));
    }
}
