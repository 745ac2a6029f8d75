//! softgpu-bench: the benchmark suite of `make run` (issue 6), run inside
//! the guest as /bench/softgpu-bench by /bench/run.
//!
//! Phases: `frag` (frag.rs: per fill level and mode, long-lived objects
//! scattered among freed short-lived memory, then compaction and a huge
//! page request while the objects are in use; the headline is gemfs's huge
//! pages over control's, next to pinned's), `migrate` and `gpu` (cost.rs:
//! move_pages throughput of GPU-resident gemfs BO pages against tmpfs, GPU
//! job throughput while migration churns against quiet), `fault` and
//! `fileio` (io.rs: CPU fault throughput on BO mappings, and read/write
//! on `mount -t gemfs`, against tmpfs), `userptr-frag` (frag.rs again, with
//! anonymous memory bound as softgpu userptr, HMM-mirrored or pinned,
//! against the same memory unbound), `userptr-bind` (userptr.rs: bind
//! and first GPU access throughput, HMM against pinned) and `frag-stress`
//! (frag.rs with stress-ng's memory stressors running while the objects
//! are allocated, stress.rs). Before each
//! measurement the machine is settled: no huge pages, caches dropped,
//! memory compacted, the per-CPU free lists drained.
//!
//! Progress goes to stderr as `bench: ...` lines; results go to stdout, one
//! JSON object per line prefixed `BENCH-RESULT ` (scripts/bench-report.py
//! turns them into tables, results.json/csv and plots). Every record has
//! `phase` and `ok`; times measured in the guest are labelled `_emulated`
//! (under TCG only ratios measured side by side mean much).
//!
//! Exit status: 0 if every measurement succeeded and every object kept its
//! data; 1 otherwise (an ioctl error, a failed GPU job, a checksum
//! mismatch); 2 for bad arguments.

mod cost;
mod frag;
mod gpu;
mod io;
mod json;
mod stress;
mod sys;
mod userptr;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use json::{Json, Obj, Put as _};
use sys::MIB;

/// What the long-lived memory of a fragmentation measurement is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Anonymous memory, mlock()ed, used by the CPU.
    Control,
    /// softgpu BOs pinned while bound (today's drivers).
    Pinned,
    /// softgpu BOs on gemfs.
    Gemfs,
    /// The control mode's memory bound as userptr, mirrored through HMM.
    UserptrHmm,
    /// The control mode's memory bound as userptr, pinned at bind.
    UserptrPinned,
}

/// The modes of the `frag` and of the `userptr-frag` phase.
const FRAG_MODES: [Mode; 3] = [Mode::Control, Mode::Pinned, Mode::Gemfs];
const USERPTR_MODES: [Mode; 3] = [Mode::Control, Mode::UserptrHmm, Mode::UserptrPinned];

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Control => "control",
            Mode::Pinned => "pinned",
            Mode::Gemfs => "gemfs",
            Mode::UserptrHmm => "userptr-hmm",
            Mode::UserptrPinned => "userptr-pinned",
        }
    }

    /// The name as a JSON key of the summaries.
    pub fn key(self) -> String {
        self.name().replace('-', "_")
    }

    fn parse_in(s: &str, modes: &[Mode]) -> Option<Self> {
        modes.iter().copied().find(|m| m.name() == s)
    }
}

const PHASES: &[&str] = &[
    "frag",
    "userptr-frag",
    "migrate",
    "gpu",
    "fault",
    "fileio",
    "userptr-bind",
    "frag-stress",
];

/// The command line; see [`USAGE`].
#[derive(Debug, Clone)]
pub struct Config {
    pub phases: Vec<String>,
    pub modes: Vec<Mode>,
    pub levels: Vec<u32>,
    /// Modes and fill levels of the `userptr-frag` phase.
    pub userptr_modes: Vec<Mode>,
    pub userptr_levels: Vec<u32>,
    /// stress-ng stressors and fill levels of the `frag-stress` phase.
    pub stress_ng: Vec<String>,
    pub stress_levels: Vec<u32>,
    pub mem_mb: Option<u64>,
    pub repeat: u32,
    pub bo_kb: u64,
    /// Object sizes of the size-scaling runs, at `scale_level`.
    pub scale_bo_kb: Vec<u64>,
    pub scale_level: u32,
    pub piece_kb: u64,
    pub batch_mb: u64,
    pub churn_pct: u32,
    pub headroom_mb: u64,
    pub contexts: usize,
    pub busy_us: u64,
    pub quiet_secs: f64,
    pub hugetlb_reserve_mb: u64,
    pub verify_every: usize,
    pub thp_test: bool,
    pub cost_mb: u64,
    pub cost_secs: f64,
    pub migrate_rounds: u32,
    pub workdir: PathBuf,
    /// MemTotal in bytes, filled in at start.
    pub mem_total: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // frag-stress takes as long as the rest of frag together under
            // TCG (stress-ng's workers share the two vCPUs with the fill):
            // make run runs it in its page owner guest only.
            phases: PHASES
                .iter()
                .filter(|&&p| p != "frag-stress")
                .map(|s| s.to_string())
                .collect(),
            // The first repetition's order (each further one rotates it):
            // gemfs right after control, the headline ratio comparing two
            // neighbouring runs; pinned, which leaves unmovable pageblocks
            // behind, last.
            modes: vec![Mode::Control, Mode::Gemfs, Mode::Pinned],
            levels: vec![25, 50, 75],
            // Pinned userptr last, as pinned BOs in `frag`.
            userptr_modes: USERPTR_MODES.to_vec(),
            userptr_levels: vec![50],
            stress_ng: ["vm", "mmapfork", "pagemove"].map(String::from).to_vec(),
            stress_levels: vec![50],
            mem_mb: None,
            repeat: 1,
            bo_kb: 2048,
            scale_bo_kb: vec![256, 16384],
            scale_level: 50,
            piece_kb: 64,
            batch_mb: 32,
            churn_pct: 90,
            headroom_mb: 128,
            contexts: 8,
            busy_us: 2000,
            quiet_secs: 5.0,
            hugetlb_reserve_mb: 64,
            verify_every: 1,
            thp_test: true,
            cost_mb: 64,
            cost_secs: 10.0,
            migrate_rounds: 2,
            workdir: PathBuf::from("/run/softgpu-bench"),
            mem_total: 0,
        }
    }
}

impl Config {
    /// The memory size fill levels are relative to.
    pub fn mem_bytes(&self) -> u64 {
        self.mem_mb.map_or(self.mem_total, |m| m * MIB)
    }

    pub fn bo_bytes(&self) -> u64 {
        self.bo_kb * 1024
    }

    /// Whether `phase` is one of the phases to run.
    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }

    fn to_obj(&self) -> Obj {
        let mut o = Obj::new();
        o.put("phases", self.phases.clone())
            .put(
                "modes",
                self.modes.iter().map(|m| m.name()).collect::<Vec<_>>(),
            )
            .put("levels", self.levels.clone())
            .put(
                "userptr_modes",
                self.userptr_modes
                    .iter()
                    .map(|m| m.name())
                    .collect::<Vec<_>>(),
            )
            .put("userptr_levels", self.userptr_levels.clone())
            .put("stress_ng", self.stress_ng.clone())
            .put("stress_levels", self.stress_levels.clone())
            .put("mem_mb", self.mem_bytes() / MIB)
            .put("repeat", self.repeat)
            .put("bo_kb", self.bo_kb)
            .put("scale_bo_kb", self.scale_bo_kb.clone())
            .put("scale_level", self.scale_level)
            .put("piece_kb", self.piece_kb)
            .put("batch_mb", self.batch_mb)
            .put("churn_pct", self.churn_pct)
            .put("headroom_mb", self.headroom_mb)
            .put("contexts", self.contexts)
            .put("busy_us", self.busy_us)
            .put("quiet_secs", self.quiet_secs)
            .put("hugetlb_reserve_mb", self.hugetlb_reserve_mb)
            .put("verify_every", self.verify_every)
            .put("thp_test", self.thp_test)
            .put("cost_mb", self.cost_mb)
            .put("cost_secs", self.cost_secs)
            .put("migrate_rounds", self.migrate_rounds);
        o
    }
}

const USAGE: &str = "\
usage: softgpu-bench [options]
lists: items separated by commas, or by + (in runner.bench, where commas are spaces)
  --phases LIST           phases to run, of frag,userptr-frag,migrate,gpu,fault,
                          fileio,userptr-bind,frag-stress (default: all but
                          frag-stress)
  --modes LIST            frag modes in the order they run at each level, of
                          control,gemfs,pinned (default: all, in that order);
                          each repetition rotates the order by one
  --levels LIST           fill levels, % of the memory size (default: 25,50,75)
  --userptr-modes LIST    userptr-frag modes in the order they run, of
                          control,userptr-hmm,userptr-pinned (default: all)
  --userptr-levels LIST   userptr-frag fill levels (default: 50)
  --stress-ng LIST        stress-ng stressors of frag-stress, one worker each,
                          running while the objects are allocated
                          (default: vm,mmapfork,pagemove)
  --stress-levels LIST    frag-stress fill levels (default: 50)
  --scale-bo-kb LIST      object sizes (KiB) of extra frag runs at --scale-level,
                          for the object size scaling; empty for none
                          (default: 256,16384)
  --scale-level N         fill level of those runs (default: 50)
  --mem-mb N              memory size the levels refer to, also caps the huge
                          page request and the THP test (default: MemTotal)
  --repeat N              runs of each (level, mode) of frag, userptr-frag and
                          frag-stress (default: 1)
  --bo-kb N               object size in KiB, multiple of 4 (default: 2048)
  --piece-kb N            churn piece size in KiB (default: 64)
  --batch-mb N            churn freed / objects added per step (default: 32)
  --churn-pct N           churn fills memory up to N % of the size (default: 90)
  --headroom-mb N         free memory kept while filling (default: 128)
  --contexts N            GPU contexts the objects are spread over (default: 8)
  --busy-us N             BUSY time of each background GPU job (default: 2000)
  --quiet-secs S          quiet window before compaction (default: 5)
  --hugetlb-reserve-mb N  free memory not asked for as huge pages (default: 64)
  --verify-every N        check every N-th object at the end (default: 1, all)
  --no-thp-test           skip the THP fault test after the huge page request
  --cost-mb N             footprint of the migrate, gpu and userptr-bind phases
                          (default: 64)
  --cost-secs S           each window of the gpu phase, and the least time
                          userptr-bind measures each mode (default: 10)
  --migrate-rounds N      round trips between the nodes (default: 2)
  --workdir DIR           where the benchmark mounts its tmpfs (default: /run/softgpu-bench)
a smoke run: --levels 10 --userptr-levels 10 --stress-levels 10 --scale-bo-kb 512
  --scale-level 10
  --mem-mb 256 --cost-mb 8 --cost-secs 2 --quiet-secs 1 --contexts 2 --batch-mb 8
";

/// A list: items separated by `,` or `+` (runner.bench on the kernel
/// command line turns commas into spaces: lists there take `+`).
fn parse_list<T>(s: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    s.split([',', '+'])
        .filter(|p| !p.is_empty())
        .map(|p| f(p).ok_or_else(|| format!("bad list item {p:?}")))
        .collect()
}

/// A fill level: 1..95 %.
fn parse_level(s: &str) -> Option<u32> {
    s.parse().ok().filter(|l| (1..=95).contains(l))
}

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut c = Config::default();
    let mut i = 0;
    while i < args.len() {
        let (key, inline) = match args[i].split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (args[i].clone(), None),
        };
        i += 1;
        if key == "-h" || key == "--help" {
            return Err(String::new());
        }
        if key == "--no-thp-test" {
            c.thp_test = false;
            continue;
        }
        let val = match inline {
            Some(v) => v,
            None => {
                let v = args.get(i).ok_or(format!("{key} needs a value"))?.clone();
                i += 1;
                v
            }
        };
        let num = |v: &str| -> Result<u64, String> {
            v.parse().map_err(|_| format!("{key}: not a number: {v:?}"))
        };
        let float = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| format!("{key}: not a duration: {v:?}"))
        };
        match key.as_str() {
            "--phases" => {
                c.phases = parse_list(&val, |p| PHASES.contains(&p).then(|| p.to_string()))?
            }
            "--modes" => c.modes = parse_list(&val, |p| Mode::parse_in(p, &FRAG_MODES))?,
            "--levels" => c.levels = parse_list(&val, parse_level)?,
            "--userptr-modes" => {
                c.userptr_modes = parse_list(&val, |p| Mode::parse_in(p, &USERPTR_MODES))?
            }
            "--userptr-levels" => c.userptr_levels = parse_list(&val, parse_level)?,
            "--stress-ng" => {
                c.stress_ng =
                    parse_list(&val, |p| stress::valid_stressor(p).then(|| p.to_string()))?
            }
            "--stress-levels" => c.stress_levels = parse_list(&val, parse_level)?,
            "--mem-mb" => c.mem_mb = Some(num(&val)?),
            "--repeat" => c.repeat = num(&val)?.max(1) as u32,
            "--bo-kb" => c.bo_kb = num(&val)?,
            "--scale-bo-kb" => c.scale_bo_kb = parse_list(&val, |p| p.parse().ok())?,
            "--scale-level" => {
                c.scale_level = Some(num(&val)?)
                    .filter(|l| (1..=95).contains(l))
                    .ok_or("--scale-level must be 1..95")? as u32
            }
            "--piece-kb" => c.piece_kb = num(&val)?,
            "--batch-mb" => c.batch_mb = num(&val)?.max(1),
            "--churn-pct" => c.churn_pct = num(&val)?.min(98) as u32,
            "--headroom-mb" => c.headroom_mb = num(&val)?,
            "--contexts" => c.contexts = num(&val)?.max(1) as usize,
            "--busy-us" => c.busy_us = num(&val)?.min(1_000_000),
            "--quiet-secs" => c.quiet_secs = float(&val)?,
            "--hugetlb-reserve-mb" => c.hugetlb_reserve_mb = num(&val)?,
            "--verify-every" => c.verify_every = num(&val)?.max(1) as usize,
            "--cost-mb" => c.cost_mb = num(&val)?.max(1),
            "--cost-secs" => c.cost_secs = float(&val)?,
            "--migrate-rounds" => c.migrate_rounds = num(&val)?.max(1) as u32,
            "--workdir" => c.workdir = PathBuf::from(val),
            _ => return Err(format!("unknown option {key}")),
        }
    }
    if std::iter::once(&c.bo_kb)
        .chain(&c.scale_bo_kb)
        .any(|&kb| kb == 0 || !kb.is_multiple_of(4))
    {
        return Err("object sizes must be non-zero multiples of 4 KiB".into());
    }
    if c.piece_kb == 0 || !c.piece_kb.is_multiple_of(4) {
        return Err("--piece-kb must be a non-zero multiple of 4".into());
    }
    Ok(c)
}

/// A progress line on stderr, with the (emulated) time since the start.
pub fn progress(msg: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let t = START.get_or_init(std::time::Instant::now).elapsed();
    eprintln!("bench: [{:7.1}s] {msg}", t.as_secs_f64());
}

/// A result line on stdout, written in one piece.
fn emit(rec: &Obj) {
    let line = format!("BENCH-RESULT {}\n", json::line(rec));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

fn ok_of(rec: &Obj) -> bool {
    rec.get("ok") == Some(&Json::Bool(true))
}

/// Hugepages obtained by a frag record, if it succeeded.
fn obtained(rec: &Obj) -> Option<u64> {
    ok_of(rec)
        .then(|| rec.get("hugepages_obtained")?.as_u64())
        .flatten()
}

/// The modes of repetition `rep`: `modes` rotated left by `rep`, so that
/// over as many repetitions as there are modes each mode runs once in each
/// place, after each of the others (what a run leaves behind, free pages
/// on the per-CPU lists, unmovable pageblocks, swapped-out memory, weighs
/// on the next one).
fn rotated(modes: &[Mode], rep: u32) -> Vec<Mode> {
    let mut m = modes.to_vec();
    if !m.is_empty() {
        let n = rep as usize % m.len();
        m.rotate_left(n);
    }
    m
}

/// Runs the fragmentation measurements of `phase` (`frag`,
/// `userptr-frag` or `frag-stress`): every (object KiB, level) of `units`, `cfg.repeat`
/// times, each time every mode of `modes` in turn; then one
/// `<phase>-summary` record per (unit, repetition) with the huge pages
/// each mode obtained and their ratios to control. Whether any failed.
fn frag_phase(
    cfg: &Config,
    phase: &str,
    units: &[(u64, u32)],
    modes: &[Mode],
    churn_dir: &std::path::Path,
) -> bool {
    let mut failed = false;
    // (object KiB, level, rep, huge pages obtained per mode)
    type Row = (u64, u32, u32, Vec<(Mode, Option<u64>)>);
    let mut summary: Vec<Row> = Vec::new();
    for &(bo_kb, level) in units {
        let unit_cfg = Config {
            bo_kb,
            ..cfg.clone()
        };
        for rep in 0..cfg.repeat {
            let mut got = Vec::new();
            for (position, mode) in rotated(modes, rep).into_iter().enumerate() {
                let rec = frag::run(&unit_cfg, phase, churn_dir, mode, level, rep, position);
                failed |= !ok_of(&rec);
                got.push((mode, obtained(&rec)));
                emit(&rec);
            }
            summary.push((bo_kb, level, rep, got));
        }
    }
    let all = if phase == "userptr-frag" {
        &USERPTR_MODES
    } else {
        &FRAG_MODES
    };
    for (bo_kb, level, rep, got) in summary {
        let find = |m: Mode| got.iter().find(|(g, _)| *g == m).and_then(|(_, h)| *h);
        let ratio = |m: Mode| match (find(m), find(Mode::Control)) {
            (Some(a), Some(c)) if c > 0 => Some(a as f64 / c as f64),
            _ => None,
        };
        let mut s = Obj::new();
        s.put("phase", format!("{phase}-summary"))
            .put("bo_kb", bo_kb)
            .put("level", level)
            .put("rep", rep)
            .put(
                "order",
                got.iter().map(|(m, _)| m.name()).collect::<Vec<_>>(),
            );
        for &m in all {
            s.put(&m.key(), find(m));
        }
        for &m in &all[1..] {
            s.put(&format!("{}_vs_control", m.key()), ratio(m));
        }
        if phase == "frag" {
            s.put("target", 0.95);
        }
        s.put("ok", true);
        let n = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        let r = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
        let counts: Vec<String> = all
            .iter()
            .map(|&m| format!("{} {}", m.name(), n(find(m))))
            .collect();
        let ratios: Vec<String> = all[1..]
            .iter()
            .map(|&m| format!("{}/control {}", m.name(), r(ratio(m))))
            .collect();
        progress(&format!(
            "{phase} summary {bo_kb} KiB objects, level {level}% rep {rep}: huge pages {}; {}",
            counts.join(" "),
            ratios.join(", ")
        ));
        emit(&s);
    }
    failed
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = match parse_args(&args) {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("softgpu-bench: {e}");
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut failed = false;
    match sys::meminfo_kb("MemTotal") {
        Ok(kb) => cfg.mem_total = kb * 1024,
        Err(e) => {
            progress(&format!("FAILED: {e}"));
            return ExitCode::from(1);
        }
    }
    let mut env = Obj::new();
    env.put("phase", "env")
        .put("ok", true)
        .put("config", cfg.to_obj());
    env.extend(sys::environment());
    emit(&env);
    progress(&format!(
        "start: phases {:?}, memory size {} MiB",
        cfg.phases,
        cfg.mem_bytes() / MIB
    ));

    let churn_fs = if ["frag", "userptr-frag", "frag-stress"]
        .iter()
        .any(|p| cfg.runs(p))
    {
        match sys::Tmpfs::mount(&cfg.workdir.join("churn"), "size=100%,huge=never,mode=0700") {
            Ok(t) => Some(t),
            Err(e) => {
                progress(&format!("FAILED: {e}"));
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };

    if let Some(churn) = &churn_fs {
        if cfg.runs("frag") {
            // The fill levels with the default object size (object count
            // scaling), then other object sizes at one level (size scaling).
            let mut units: Vec<(u64, u32)> = cfg.levels.iter().map(|&l| (cfg.bo_kb, l)).collect();
            units.extend(cfg.scale_bo_kb.iter().map(|&kb| (kb, cfg.scale_level)));
            failed |= frag_phase(&cfg, "frag", &units, &cfg.modes, &churn.dir);
        }
        if cfg.runs("userptr-frag") {
            let units: Vec<(u64, u32)> =
                cfg.userptr_levels.iter().map(|&l| (cfg.bo_kb, l)).collect();
            failed |= frag_phase(&cfg, "userptr-frag", &units, &cfg.userptr_modes, &churn.dir);
        }
        if cfg.runs("frag-stress") {
            if cfg.stress_ng.is_empty() {
                progress("FAILED: frag-stress needs at least one stressor (--stress-ng)");
                failed = true;
            } else {
                let units: Vec<(u64, u32)> =
                    cfg.stress_levels.iter().map(|&l| (cfg.bo_kb, l)).collect();
                failed |= frag_phase(&cfg, "frag-stress", &units, &cfg.modes, &churn.dir);
            }
        }
    }
    drop(churn_fs);

    if cfg.runs("migrate") {
        for rec in cost::migrate(&cfg, &cfg.workdir) {
            failed |= !ok_of(&rec);
            emit(&rec);
        }
    }
    if cfg.runs("gpu") {
        for rec in cost::gpu(&cfg) {
            failed |= !ok_of(&rec);
            emit(&rec);
        }
    }
    for (phase, run) in [
        ("fault", io::fault as fn(&Config, &std::path::Path) -> Obj),
        ("fileio", io::fileio),
    ] {
        if cfg.runs(phase) {
            let rec = run(&cfg, &cfg.workdir);
            failed |= !ok_of(&rec);
            emit(&rec);
        }
    }
    if cfg.runs("userptr-bind") {
        for rec in userptr::bind(&cfg) {
            failed |= !ok_of(&rec);
            emit(&rec);
        }
    }
    if let Err(e) = frag::settle() {
        progress(&format!("final settle FAILED: {e}"));
        failed = true;
    }
    progress(if failed {
        "finished with FAILURES"
    } else {
        "finished, all ok"
    });
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn defaults_and_smoke_args() {
        let c = parse_args(&[]).unwrap();
        assert_eq!(c.levels, [25, 50, 75]);
        assert_eq!(c.modes.len(), 3);
        let c = parse_args(&args(
            "--levels 10 --mem-mb=256 --modes gemfs,control --phases frag --no-thp-test --quiet-secs 0.5",
        ))
        .unwrap();
        assert_eq!(c.levels, [10]);
        assert_eq!(c.mem_mb, Some(256));
        assert_eq!(c.modes, [Mode::Gemfs, Mode::Control]);
        assert_eq!(c.phases, ["frag"]);
        assert!(!c.thp_test);
        assert_eq!(c.quiet_secs, 0.5);
        let c = parse_args(&args(
            "--phases userptr-frag,userptr-bind --userptr-modes userptr-pinned,control \
             --userptr-levels 10,20",
        ))
        .unwrap();
        assert_eq!(c.phases, ["userptr-frag", "userptr-bind"]);
        assert_eq!(c.userptr_modes, [Mode::UserptrPinned, Mode::Control]);
        assert_eq!(c.userptr_levels, [10, 20]);
        let c = parse_args(&args(
            "--phases frag-stress --stress-ng vm+mmapfork --stress-levels 30",
        ))
        .unwrap();
        assert_eq!(c.phases, ["frag-stress"]);
        assert_eq!(c.stress_ng, ["vm", "mmapfork"]);
        assert_eq!(c.stress_levels, [30]);
        let c = parse_args(&[]).unwrap();
        assert_eq!(c.stress_ng.len(), 3);
        assert!(!c.runs("frag-stress"));
        let c = parse_args(&args("--phases frag+userptr-bind --levels 25+50")).unwrap();
        assert_eq!(c.phases, ["frag", "userptr-bind"]);
        assert_eq!(c.levels, [25, 50]);
        assert_eq!(Mode::UserptrHmm.key(), "userptr_hmm");
    }

    #[test]
    fn modes_rotate_between_repetitions() {
        use Mode::*;
        let m = [Control, Gemfs, Pinned];
        assert_eq!(rotated(&m, 0), [Control, Gemfs, Pinned]);
        assert_eq!(rotated(&m, 1), [Gemfs, Pinned, Control]);
        assert_eq!(rotated(&m, 2), [Pinned, Control, Gemfs]);
        assert_eq!(rotated(&m, 3), m);
        assert_eq!(rotated(&[], 5), []);
    }

    #[test]
    fn bad_args_are_refused() {
        for a in [
            "--levels 0",
            "--levels 100",
            "--modes foo",
            "--phases x",
            "--bo-kb 3",
            "--mem-mb",
            "--bogus 1",
            "--quiet-secs -1",
            "--modes userptr-hmm",
            "--userptr-modes gemfs",
            "--userptr-levels 96",
            "--phases userptr",
            "--stress-ng VM",
            "--stress-ng vm,--cpu",
            "--stress-levels 0",
        ] {
            assert!(parse_args(&args(a)).is_err(), "{a}");
        }
        assert_eq!(parse_args(&args("--help")).unwrap_err(), "");
    }
}
