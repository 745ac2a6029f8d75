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
//! on `mount -t gemfs`, against tmpfs), `fio` (fio.rs: Debian's fio on
//! gemfs against tmpfs), `userptr-frag` (frag.rs again, with
//! anonymous memory bound as softgpu userptr, HMM-mirrored or pinned,
//! against the same memory unbound), `userptr-bind` (userptr.rs: bind
//! and first GPU access throughput, HMM against pinned) and `frag-stress`
//! (frag.rs with stress-ng's memory stressors running while the objects
//! are allocated, stress.rs) and `vram` (vram.rs: discrete mode's VRAM
//! overcommitted twice over by TTM objects among freed short-lived memory,
//! their evictions into system memory from gemfs against TTM's pool and
//! against anonymous memory, then compaction and a huge page request; and
//! GEM_MOVE throughput against memcpy). Before each
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
mod dmem;
mod fio;
mod frag;
mod gpu;
mod io;
mod json;
mod stress;
mod sys;
mod userptr;
mod vram;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgAction, CommandFactory as _, Parser};
use json::{Json, Obj, Put as _};
use serde::Serialize;
use sys::MIB;

/// What the long-lived memory of a fragmentation measurement is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
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
    /// TTM objects whose system placement is TTM's ttm_pool (the `vram`
    /// phase; its `gemfs` mode is TTM objects on a gemfs-backed ttm_tt).
    TtmPool,
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
            Mode::TtmPool => "ttm-pool",
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
    "fio",
    "userptr-bind",
    "frag-stress",
    "age",
    "vram",
    "dmem",
];

/// A list option's value: items separated by `,` or `+` (runner.bench on
/// the kernel command line turns commas into spaces: lists there take
/// `+`); empty for none.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct List<T>(pub Vec<T>);

impl<T> std::ops::Deref for List<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

fn parse_list<T>(s: &str, f: impl Fn(&str) -> Option<T>) -> Result<List<T>, String> {
    s.split([',', '+'])
        .filter(|p| !p.is_empty())
        .map(|p| f(p).ok_or_else(|| format!("bad list item {p:?}")))
        .collect::<Result<_, _>>()
        .map(List)
}

/// A fill level: 1..95 %.
fn parse_level(s: &str) -> Option<u32> {
    s.parse().ok().filter(|l| (1..=95).contains(l))
}

fn phases(s: &str) -> Result<List<String>, String> {
    parse_list(s, |p| PHASES.contains(&p).then(|| p.to_string()))
}

fn frag_modes(s: &str) -> Result<List<Mode>, String> {
    parse_list(s, |p| Mode::parse_in(p, &FRAG_MODES))
}

fn userptr_modes(s: &str) -> Result<List<Mode>, String> {
    parse_list(s, |p| Mode::parse_in(p, &USERPTR_MODES))
}

fn vram_modes(s: &str) -> Result<List<Mode>, String> {
    parse_list(s, |p| Mode::parse_in(p, &vram::VRAM_MODES))
}

fn levels(s: &str) -> Result<List<u32>, String> {
    parse_list(s, parse_level)
}

fn level(s: &str) -> Result<u32, String> {
    parse_level(s).ok_or_else(|| "must be 1..95".into())
}

fn stressors(s: &str) -> Result<List<String>, String> {
    parse_list(s, |p| stress::valid_stressor(p).then(|| p.to_string()))
}

fn sizes_kb(s: &str) -> Result<List<u64>, String> {
    parse_list(s, |p| p.parse().ok())
}

/// A duration in seconds: finite, not negative.
fn secs(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .ok_or_else(|| format!("not a duration: {s:?}"))
}

/// The command line (`softgpu-bench --help`); also the `env` record's
/// `config`.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(
    name = "softgpu-bench",
    about = "The benchmark of make run: memory fragmentation with softgpu BOs on gemfs \
             against pinned BOs and anonymous memory, and what gemfs costs",
    after_help = "Lists: items separated by commas, or by + (in runner.bench, where commas \
                  are spaces).\n\
                  A smoke run: --levels 10 --userptr-levels 10 --stress-levels 10 \
                  --scale-bo-kb 512 --scale-level 10 --mem-mb 256 --cost-mb 8 --cost-secs 2 \
                  --quiet-secs 1 --contexts 2 --batch-mb 8"
)]
pub struct Config {
    /// Phases to run, of frag, userptr-frag, migrate, gpu, fault, fileio,
    /// fio, userptr-bind, frag-stress, age, vram, dmem (frag-stress takes as long as the rest of
    /// frag together under TCG, stress-ng's workers sharing the vCPUs
    /// with the fill: make run runs it in its page owner guest only; fio
    /// needs /bin/fio and a kernel with CONFIG_SYSVIPC, which the guest
    /// has not yet; vram and dmem need VRAM, and are not in make run yet)
    #[arg(
        long,
        value_name = "LIST",
        value_parser = phases,
        default_value = "frag,userptr-frag,migrate,gpu,fault,fileio,userptr-bind"
    )]
    pub phases: List<String>,
    /// frag modes in the order they run at each level, of control, gemfs,
    /// pinned; each repetition rotates the order by one (the first: gemfs
    /// right after control, the headline ratio comparing neighbouring
    /// runs; pinned, which leaves unmovable pageblocks behind, last)
    #[arg(long, value_name = "LIST", value_parser = frag_modes, default_value = "control,gemfs,pinned")]
    pub modes: List<Mode>,
    /// Fill levels, % of the memory size
    #[arg(long, value_name = "LIST", value_parser = levels, default_value = "25,50,75")]
    pub levels: List<u32>,
    /// userptr-frag modes in the order they run, of control, userptr-hmm,
    /// userptr-pinned
    #[arg(
        long,
        value_name = "LIST",
        value_parser = userptr_modes,
        default_value = "control,userptr-hmm,userptr-pinned"
    )]
    pub userptr_modes: List<Mode>,
    /// userptr-frag fill levels
    #[arg(long, value_name = "LIST", value_parser = levels, default_value = "50")]
    pub userptr_levels: List<u32>,
    /// stress-ng stressors of frag-stress, one worker each, running while
    /// the objects are allocated
    #[arg(long, value_name = "LIST", value_parser = stressors, default_value = "vm,mmapfork,pagemove")]
    pub stress_ng: List<String>,
    /// frag-stress fill levels
    #[arg(long, value_name = "LIST", value_parser = levels, default_value = "50")]
    pub stress_levels: List<u32>,
    /// age fill levels: objects of mixed sizes created and freed over
    /// rounds of churn (frag.rs), then the frag measurement
    #[arg(long, value_name = "LIST", value_parser = levels, default_value = "50")]
    pub age_levels: List<u32>,
    /// Rounds of churn of the age phase
    #[arg(long, value_name = "N", default_value_t = 6)]
    pub age_rounds: u32,
    /// Object sizes (KiB) of the age phase, each object's drawn at random
    #[arg(long, value_name = "LIST", value_parser = sizes_kb, default_value = "64,512,2048,8192")]
    pub age_sizes_kb: List<u64>,
    /// Share of the live objects the age phase frees in each round after
    /// the first
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub age_turnover_pct: u32,
    /// Memory size the levels refer to, also caps the huge page request
    /// and the THP test [default: MemTotal]
    #[arg(long, value_name = "N")]
    pub mem_mb: Option<u64>,
    /// Runs of each (level, mode) of frag's fill levels (the headline):
    /// the report shows medians and min-max
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub repeat: u32,
    /// Runs of each (size, mode) of frag's object size scaling and of
    /// each (level, mode) of userptr-frag and frag-stress: once by
    /// default, which keeps make run under an hour under TCG
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat_other: u32,
    /// Object size in KiB, a multiple of 4
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub bo_kb: u64,
    /// Object sizes (KiB) of extra frag runs at --scale-level, for the
    /// object size scaling; empty for none
    #[arg(long, value_name = "LIST", value_parser = sizes_kb, default_value = "256,16384")]
    pub scale_bo_kb: List<u64>,
    /// Fill level of those runs
    #[arg(long, value_name = "N", value_parser = level, default_value_t = 50)]
    pub scale_level: u32,
    /// Churn piece size in KiB, a multiple of 4
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub piece_kb: u64,
    /// Churn freed / objects added per step
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub batch_mb: u64,
    /// The churn fills memory up to N % of the size (at most 98)
    #[arg(long, value_name = "N", default_value_t = 90)]
    pub churn_pct: u32,
    /// Free memory kept while filling
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub headroom_mb: u64,
    /// GPU contexts the objects are spread over
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub contexts: usize,
    /// BUSY time of each background GPU job (at most 1 s)
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub busy_us: u64,
    /// Quiet window before compaction
    #[arg(long, value_name = "S", value_parser = secs, default_value_t = 5.0)]
    pub quiet_secs: f64,
    /// Free memory not asked for as huge pages
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub hugetlb_reserve_mb: u64,
    /// Check every N-th object at the end (1: all)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub verify_every: usize,
    /// Skip the THP fault test after the huge page request
    #[arg(long = "no-thp-test", action = ArgAction::SetFalse)]
    pub thp_test: bool,
    /// Footprint of the migrate, gpu, fio and userptr-bind phases
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub cost_mb: u64,
    /// Each window of the gpu phase, the least time userptr-bind measures
    /// each mode, and the most each fio job runs
    #[arg(long, value_name = "S", value_parser = secs, default_value_t = 10.0)]
    pub cost_secs: f64,
    /// Round trips between the nodes
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub migrate_rounds: u32,
    /// vram modes in the order they run, of control, gemfs, ttm-pool
    /// (rotated between repetitions); the move throughput runs the TTM
    /// modes among them
    #[arg(long, value_name = "LIST", value_parser = vram_modes, default_value = "control,gemfs,ttm-pool")]
    pub vram_modes: List<Mode>,
    /// The vram phase's working set, % of the VRAM (debugfs vram)
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub vram_ws_pct: u32,
    /// Object size of the vram working set in KiB, a multiple of 4
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub vram_bo_kb: u64,
    /// Passes through the GPU over every object of the working set
    /// (GEM_MOVE to VRAM, FILL, CHECKSUM)
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub vram_cycles: u32,
    /// Runs of each vram mode, and of each move throughput measurement
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub vram_repeat: u32,
    /// Object sizes (KiB) of the move throughput; empty for none
    #[arg(long, value_name = "LIST", value_parser = sizes_kb, default_value = "256,2048,16384")]
    pub vram_move_kb: List<u64>,
    /// MiB of objects moved each way per size (at most half the VRAM)
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub vram_move_mb: u64,
    /// MiB of userptr memory the dmem phase migrates into VRAM and back
    /// (the VRAM must hold one and a half times as much)
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub dmem_mb: u64,
    /// Repetitions of the dmem phase
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub dmem_repeat: u32,
    /// Runs the benchmark on CPU N only (sched_setaffinity() at start),
    /// so that its address space is never live on another CPU and its
    /// TLB shootdowns stay local
    #[arg(long, value_name = "N")]
    pub cpu: Option<usize>,
    /// Where the benchmark mounts its tmpfs
    #[arg(long, value_name = "DIR", default_value = "/run/softgpu-bench")]
    #[serde(skip)]
    pub workdir: PathBuf,
    /// MemTotal in bytes, filled in at start.
    #[arg(skip)]
    #[serde(skip)]
    pub mem_total: u64,
}

impl Config {
    /// The command line `args` (without the program name), checked, with
    /// the counts that must be at least 1 raised to 1 and the others
    /// capped as documented.
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, clap::Error> {
        let mut c = Self::try_parse_from(std::iter::once("softgpu-bench".to_string()).chain(args))?;
        c.repeat = c.repeat.max(1);
        c.repeat_other = c.repeat_other.max(1);
        c.batch_mb = c.batch_mb.max(1);
        c.churn_pct = c.churn_pct.min(98);
        c.contexts = c.contexts.max(1);
        c.busy_us = c.busy_us.min(1_000_000);
        c.verify_every = c.verify_every.max(1);
        c.cost_mb = c.cost_mb.max(1);
        c.migrate_rounds = c.migrate_rounds.max(1);
        let invalid =
            |msg: &str| Self::command().error(clap::error::ErrorKind::ValueValidation, msg);
        c.age_rounds = c.age_rounds.max(1);
        c.age_turnover_pct = c.age_turnover_pct.min(100);
        c.vram_ws_pct = c.vram_ws_pct.max(1);
        c.vram_cycles = c.vram_cycles.max(1);
        c.vram_repeat = c.vram_repeat.max(1);
        c.vram_move_mb = c.vram_move_mb.max(1);
        c.dmem_mb = c.dmem_mb.max(1);
        c.dmem_repeat = c.dmem_repeat.max(1);
        if std::iter::once(&c.bo_kb)
            .chain(c.scale_bo_kb.iter())
            .chain(c.age_sizes_kb.iter())
            .chain(std::iter::once(&c.vram_bo_kb))
            .chain(c.vram_move_kb.iter())
            .any(|&kb| kb == 0 || !kb.is_multiple_of(4))
        {
            return Err(invalid("object sizes must be non-zero multiples of 4 KiB"));
        }
        if c.piece_kb == 0 || !c.piece_kb.is_multiple_of(4) {
            return Err(invalid("--piece-kb must be a non-zero multiple of 4"));
        }
        Ok(c)
    }

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

    /// The `env` record's `config`: the options, `mem_mb` the memory size
    /// in effect.
    fn to_obj(&self) -> Obj {
        let mut o = match serde_json::to_value(self) {
            Ok(Json::Object(o)) => o,
            _ => unreachable!("a struct of numbers and lists serialises to an object"),
        };
        o.put("mem_mb", self.mem_bytes() / MIB);
        o
    }
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

/// The (object KiB, level, runs) units of [`frag_phase`] for `levels` with
/// the default object size, each run `runs` times.
fn level_units(cfg: &Config, levels: &[u32], runs: u32) -> Vec<(u64, u32, u32)> {
    levels.iter().map(|&l| (cfg.bo_kb, l, runs)).collect()
}

/// Runs the fragmentation measurements of `phase` (`frag`,
/// `userptr-frag` or `frag-stress`): every (object KiB, level, runs) of
/// `units`, that many times, each time every mode of `modes` in turn; then one
/// `<phase>-summary` record per (unit, repetition) with the huge pages
/// each mode obtained and their ratios to control. Whether any failed.
fn frag_phase(
    cfg: &Config,
    phase: &str,
    units: &[(u64, u32, u32)],
    modes: &[Mode],
    churn_dir: &std::path::Path,
) -> bool {
    let mut failed = false;
    // (object KiB, level, rep, huge pages obtained per mode)
    type Row = (u64, u32, u32, Vec<(Mode, Option<u64>)>);
    let mut summary: Vec<Row> = Vec::new();
    for &(bo_kb, level, runs) in units {
        let unit_cfg = Config {
            bo_kb,
            ..cfg.clone()
        };
        for rep in 0..runs {
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
    let mut cfg = match Config::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        // --help, or bad arguments (exit status 2, clap's).
        Err(e) => e.exit(),
    };
    let mut failed = false;
    if let Some(cpu) = cfg.cpu {
        if let Err(e) = sys::pin_to_cpu(cpu) {
            progress(&format!("FAILED: {e}"));
            return ExitCode::from(1);
        }
    }
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

    let churn_fs = if ["frag", "userptr-frag", "frag-stress", "age", "vram"]
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
            let mut units = level_units(&cfg, &cfg.levels, cfg.repeat);
            units.extend(
                cfg.scale_bo_kb
                    .iter()
                    .map(|&kb| (kb, cfg.scale_level, cfg.repeat_other)),
            );
            failed |= frag_phase(&cfg, "frag", &units, &cfg.modes, &churn.dir);
        }
        if cfg.runs("userptr-frag") {
            let units = level_units(&cfg, &cfg.userptr_levels, cfg.repeat_other);
            failed |= frag_phase(&cfg, "userptr-frag", &units, &cfg.userptr_modes, &churn.dir);
        }
        if cfg.runs("frag-stress") {
            if cfg.stress_ng.is_empty() {
                progress("FAILED: frag-stress needs at least one stressor (--stress-ng)");
                failed = true;
            } else {
                let units = level_units(&cfg, &cfg.stress_levels, cfg.repeat_other);
                failed |= frag_phase(&cfg, "frag-stress", &units, &cfg.modes, &churn.dir);
            }
        }
        if cfg.runs("age") {
            if cfg.age_sizes_kb.is_empty() {
                progress("FAILED: age needs at least one object size (--age-sizes-kb)");
                failed = true;
            } else {
                let units = level_units(&cfg, &cfg.age_levels, cfg.repeat_other);
                failed |= frag_phase(&cfg, "age", &units, &cfg.modes, &churn.dir);
            }
        }
        if cfg.runs("vram") {
            if cfg.vram_modes.is_empty() {
                progress("FAILED: vram needs at least one mode (--vram-modes)");
                failed = true;
            } else {
                failed |= vram::phase(&cfg, &churn.dir);
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
        ("fio", fio::fio),
    ] {
        if cfg.runs(phase) {
            let rec = run(&cfg, &cfg.workdir);
            failed |= !ok_of(&rec);
            emit(&rec);
        }
    }
    if cfg.runs("dmem") {
        failed |= dmem::phase(&cfg);
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

    fn parse_args(a: &[String]) -> Result<Config, clap::Error> {
        Config::parse(a.iter().cloned())
    }

    #[test]
    fn defaults_and_smoke_args() {
        let c = parse_args(&[]).unwrap();
        assert_eq!(*c.levels, [25, 50, 75]);
        assert_eq!(c.modes.len(), 3);
        assert_eq!((c.repeat, c.repeat_other), (3, 1));
        let c = parse_args(&args(
            "--levels 10 --mem-mb=256 --modes gemfs,control --phases frag --no-thp-test --quiet-secs 0.5",
        ))
        .unwrap();
        assert_eq!(*c.levels, [10]);
        assert_eq!(c.mem_mb, Some(256));
        assert_eq!(*c.modes, [Mode::Gemfs, Mode::Control]);
        assert_eq!(*c.phases, ["frag"]);
        assert!(!c.thp_test);
        assert_eq!(c.quiet_secs, 0.5);
        let c = parse_args(&args(
            "--phases userptr-frag,userptr-bind --userptr-modes userptr-pinned,control \
             --userptr-levels 10,20",
        ))
        .unwrap();
        assert_eq!(*c.phases, ["userptr-frag", "userptr-bind"]);
        assert_eq!(*c.userptr_modes, [Mode::UserptrPinned, Mode::Control]);
        assert_eq!(*c.userptr_levels, [10, 20]);
        let c = parse_args(&args(
            "--phases frag-stress --stress-ng vm+mmapfork --stress-levels 30",
        ))
        .unwrap();
        assert_eq!(*c.phases, ["frag-stress"]);
        assert_eq!(*c.stress_ng, ["vm", "mmapfork"]);
        assert_eq!(*c.stress_levels, [30]);
        let c = parse_args(&[]).unwrap();
        assert_eq!(c.stress_ng.len(), 3);
        assert!(!c.runs("frag-stress"));
        let c = parse_args(&args("--phases frag+userptr-bind --levels 25+50")).unwrap();
        assert_eq!(*c.phases, ["frag", "userptr-bind"]);
        assert_eq!(*c.levels, [25, 50]);
        assert_eq!(Mode::UserptrHmm.key(), "userptr_hmm");
    }

    /// What scripts/bench-guests.sh and run-vm.sh pass (runner.bench's
    /// commas already made spaces by tests/guest/bench-run).
    #[test]
    fn runner_bench_args() {
        let c = parse_args(&args(
            "--phases frag+frag-stress --levels 50 --scale-bo-kb= --no-thp-test --repeat 3",
        ))
        .unwrap();
        assert_eq!(*c.phases, ["frag", "frag-stress"]);
        assert!(c.scale_bo_kb.is_empty());
        assert!(!c.thp_test);
        assert_eq!(c.repeat, 3);
        let c = parse_args(&args("--bo-kb 256 --levels 50 --modes control+gemfs")).unwrap();
        assert_eq!(
            (c.bo_kb, &*c.modes),
            (256, &vec![Mode::Control, Mode::Gemfs])
        );
        // Counts that must be at least 1 are raised, and caps apply.
        let c = parse_args(&args(
            "--repeat 0 --repeat-other 0 --churn-pct 99 --busy-us 2000000",
        ))
        .unwrap();
        assert_eq!(
            (c.repeat, c.repeat_other, c.churn_pct, c.busy_us),
            (1, 1, 98, 1_000_000)
        );
    }

    /// The `env` record's config: every option but workdir, the memory
    /// size in effect, modes by name (bench-report.py reads bo_kb and
    /// scale_level).
    #[test]
    fn config_record() {
        let mut c = parse_args(&args("--modes gemfs,control --levels 10")).unwrap();
        c.mem_total = 512 * MIB;
        let o = c.to_obj();
        assert_eq!(o["mem_mb"], 512);
        assert_eq!(o["bo_kb"], 2048);
        assert_eq!(o["scale_level"], 50);
        assert_eq!(o["modes"], serde_json::json!(["gemfs", "control"]));
        assert_eq!(o["levels"], serde_json::json!([10]));
        assert_eq!(o["thp_test"], true);
        assert!(o.get("workdir").is_none() && o.get("mem_total").is_none());
        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "phases",
                "modes",
                "levels",
                "userptr_modes",
                "userptr_levels",
                "stress_ng",
                "stress_levels",
                "age_levels",
                "age_rounds",
                "age_sizes_kb",
                "age_turnover_pct",
                "mem_mb",
                "repeat",
                "repeat_other",
                "bo_kb",
                "scale_bo_kb",
                "scale_level",
                "piece_kb",
                "batch_mb",
                "churn_pct",
                "headroom_mb",
                "contexts",
                "busy_us",
                "quiet_secs",
                "hugetlb_reserve_mb",
                "verify_every",
                "thp_test",
                "cost_mb",
                "cost_secs",
                "migrate_rounds",
                "vram_modes",
                "vram_ws_pct",
                "vram_bo_kb",
                "vram_cycles",
                "vram_repeat",
                "vram_move_kb",
                "vram_move_mb",
                "dmem_mb",
                "dmem_repeat",
                "cpu",
            ]
        );
    }

    /// The dmem phase's options: defaults, counts raised to 1; not in the
    /// default phases.
    #[test]
    fn dmem_args() {
        let c = parse_args(&[]).unwrap();
        assert!(!c.runs("dmem"));
        assert_eq!((c.dmem_mb, c.dmem_repeat), (16, 3));
        let c = parse_args(&args("--phases dmem --dmem-mb 0 --dmem-repeat 0")).unwrap();
        assert_eq!(*c.phases, ["dmem"]);
        assert_eq!((c.dmem_mb, c.dmem_repeat), (1, 1));
        let c = parse_args(&args("--phases vram+dmem --dmem-mb 64 --dmem-repeat 5")).unwrap();
        assert_eq!(*c.phases, ["vram", "dmem"]);
        assert_eq!((c.dmem_mb, c.dmem_repeat), (64, 5));
    }

    /// The vram phase's options: its own modes (ttm-pool is no frag mode,
    /// pinned no vram mode), defaults, lists with + as runner.bench passes
    /// them, counts raised to 1, object sizes checked; not in the default
    /// phases (make run's).
    #[test]
    fn vram_args() {
        let c = parse_args(&[]).unwrap();
        assert!(!c.runs("vram"));
        assert_eq!(*c.vram_modes, [Mode::Control, Mode::Gemfs, Mode::TtmPool]);
        assert_eq!(
            (
                c.vram_ws_pct,
                c.vram_bo_kb,
                c.vram_cycles,
                c.vram_repeat,
                c.vram_move_mb
            ),
            (200, 2048, 2, 3, 64)
        );
        assert_eq!(*c.vram_move_kb, [256, 2048, 16384]);
        let c = parse_args(&args(
            "--phases vram --vram-modes ttm-pool+control --vram-ws-pct 150 --vram-bo-kb 4096 \
             --vram-cycles 0 --vram-repeat 0 --vram-move-kb 64+1024 --vram-move-mb 0",
        ))
        .unwrap();
        assert_eq!(*c.phases, ["vram"]);
        assert_eq!(*c.vram_modes, [Mode::TtmPool, Mode::Control]);
        assert_eq!((c.vram_ws_pct, c.vram_bo_kb), (150, 4096));
        assert_eq!((c.vram_cycles, c.vram_repeat, c.vram_move_mb), (1, 1, 1));
        assert_eq!(*c.vram_move_kb, [64, 1024]);
        assert_eq!(Mode::TtmPool.key(), "ttm_pool");
        let c = parse_args(&args("--phases vram --vram-move-kb=")).unwrap();
        assert!(c.vram_move_kb.is_empty());
        for a in [
            "--vram-modes pinned",
            "--vram-modes userptr-hmm",
            "--modes ttm-pool",
            "--vram-bo-kb 6",
            "--vram-bo-kb 0",
            "--vram-move-kb 256+5",
            "--vram-ws-pct x",
        ] {
            assert!(parse_args(&args(a)).is_err(), "{a}");
        }
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
        assert_eq!(
            parse_args(&args("--help")).unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
    }
}
