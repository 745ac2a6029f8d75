//! `fio`: Debian's fio (in the guest as /bin/fio) on `mount -t gemfs`
//! against `mount -t tmpfs` with the same options: sequential and random,
//! read and write, 4 KiB and 1 MiB blocks, through read(2)/write(2)
//! (`psync`) and through a shared mapping (`mmap`). The figures are fio's
//! own (bandwidth from its JSON output), the ratio of gemfs's to tmpfs's
//! for each job; times are emulated (TCG).

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::frag::settle;
use crate::json::{Obj, Put as _};
use crate::sys::{Ctx as _, Tmpfs, MIB, R};
use crate::Config;

pub const FIO: &str = "/bin/fio";

const ENGINES: [&str; 2] = ["psync", "mmap"];
const RWS: [&str; 4] = ["read", "write", "randread", "randwrite"];
const BLOCKS: [&str; 2] = ["4k", "1m"];

/// One fio job: engine, access pattern, block size.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Job {
    engine: &'static str,
    rw: &'static str,
    bs: &'static str,
}

impl Job {
    fn name(self) -> String {
        format!("{}-{}-{}", self.engine, self.rw, self.bs)
    }

    fn writes(self) -> bool {
        self.rw.ends_with("write")
    }
}

fn jobs() -> Vec<Job> {
    let mut v = Vec::new();
    for engine in ENGINES {
        for bs in BLOCKS {
            for rw in RWS {
                v.push(Job { engine, rw, bs });
            }
        }
    }
    v
}

/// fio's arguments: every job in turn (`stonewall`) on one file of
/// `size_mb` in `dir`, each at most `runtime_ms`, one pass over the file.
fn args(dir: &Path, size_mb: u64, runtime_ms: u64) -> Vec<String> {
    let mut a = vec![
        "--output-format=json".to_string(),
        format!("--directory={}", dir.display()),
        "--filename=data".into(),
        format!("--size={size_mb}M"),
        format!("--runtime={runtime_ms}ms"),
        "--invalidate=0".into(),
    ];
    for j in jobs() {
        a.extend([
            format!("--name={}", j.name()),
            format!("--ioengine={}", j.engine),
            format!("--rw={}", j.rw),
            format!("--bs={}", j.bs),
            "--stonewall".into(),
        ]);
    }
    a
}

/// The parts of fio's JSON output the phase reads.
#[derive(Debug, Deserialize)]
struct Output {
    #[serde(rename = "fio version")]
    version: String,
    jobs: Vec<JobOut>,
}

#[derive(Debug, Deserialize)]
struct JobOut {
    jobname: String,
    error: i64,
    read: Dir,
    write: Dir,
}

#[derive(Debug, Deserialize)]
struct Dir {
    io_bytes: u64,
    bw_bytes: u64,
}

/// fio's version and each job's bandwidth in MiB/s (of its reads or of its
/// writes), from its JSON output; an error if a job failed or moved no
/// data, or a job is missing.
fn parse(out: &str) -> R<(String, Vec<(String, f64)>)> {
    // fio may print notes before the JSON document.
    let start = out.find('{').ok_or("fio printed no JSON")?;
    let o: Output = serde_json::from_str(&out[start..]).ctx("parsing fio's JSON")?;
    let mut rates = Vec::new();
    for j in jobs() {
        let name = j.name();
        let r = o
            .jobs
            .iter()
            .find(|r| r.jobname == name)
            .ok_or_else(|| format!("fio: no result for job {name}"))?;
        if r.error != 0 {
            return Err(format!("fio: job {name} failed with error {}", r.error));
        }
        let d = if j.writes() { &r.write } else { &r.read };
        if d.io_bytes == 0 {
            return Err(format!("fio: job {name} moved no data"));
        }
        rates.push((name, d.bw_bytes as f64 / MIB as f64));
    }
    Ok((o.version, rates))
}

/// The `fio` phase: one record.
pub fn fio(cfg: &Config, workdir: &Path) -> Obj {
    let mut rec = Obj::new();
    rec.put("phase", "fio");
    let res = fio_inner(cfg, workdir, &mut rec);
    crate::sys::finish(&mut rec, "fio", res);
    rec
}

fn fio_inner(cfg: &Config, workdir: &Path, rec: &mut Obj) -> R<()> {
    if !Path::new(FIO).exists() {
        return Err(format!("no {FIO} in the guest"));
    }
    // fio keeps its jobs' state in System V shared memory, even with
    // --thread: without CONFIG_SYSVIPC it fails at once.
    if !Path::new("/proc/sysvipc").exists() {
        return Err("fio needs System V IPC: a kernel with CONFIG_SYSVIPC".into());
    }
    settle()?;
    let opts = format!("size={}m", cfg.cost_mb + 4);
    let runtime_ms = (cfg.cost_secs * 1000.0) as u64;
    rec.put("mb", cfg.cost_mb)
        .put("runtime_ms_max", runtime_ms)
        .put("mount_options", opts.as_str());
    let mut rates = Vec::new();
    for fs in ["tmpfs", "gemfs"] {
        crate::progress(&format!(
            "fio: {} jobs on {fs}, {} MiB file",
            jobs().len(),
            cfg.cost_mb
        ));
        let m = Tmpfs::mount_type(&workdir.join(format!("fio-{fs}")), fs, &opts)?;
        let out = Command::new(FIO)
            .args(args(&m.dir, cfg.cost_mb, runtime_ms))
            .output()
            .ctx(format!("running {FIO}"))?;
        if !out.status.success() {
            return Err(format!(
                "fio on {fs} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let (version, r) = parse(&String::from_utf8_lossy(&out.stdout))?;
        rec.put("fio_version", version);
        for (name, mbs) in &r {
            rec.put(&format!("{fs}_{name}_mb_per_sec_emulated"), *mbs);
        }
        rates.push(r);
    }
    for ((name, t), (_, g)) in rates[0].iter().zip(&rates[1]) {
        rec.put(&format!("gemfs_vs_tmpfs_{name}"), (*t > 0.0).then(|| g / t));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_block_and_engine() {
        let j = jobs();
        assert_eq!(j.len(), 16);
        assert_eq!(j[0].name(), "psync-read-4k");
        assert!(j.iter().any(|j| j.name() == "mmap-randwrite-1m"));
        let a = args(Path::new("/m"), 64, 2500);
        assert_eq!(
            a[..4],
            [
                "--output-format=json",
                "--directory=/m",
                "--filename=data",
                "--size=64M"
            ]
        );
        assert_eq!(a.iter().filter(|a| *a == "--stonewall").count(), 16);
    }

    /// fio 3.33's output, trimmed to two jobs' fields the phase reads.
    fn sample(jobs: &[Job], error: i64, bytes: u64) -> String {
        let mut s = String::from(
            "note: a line fio may print first\n{\"fio version\" : \"fio-3.33\", \"jobs\" : [",
        );
        for (i, j) in jobs.iter().enumerate() {
            let (r, w) = if j.writes() { (0, bytes) } else { (bytes, 0) };
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"jobname\" : \"{}\", \"groupid\" : {i}, \"error\" : {error}, \
                 \"read\" : {{\"io_bytes\" : {r}, \"bw_bytes\" : {}, \"iops\" : 1.5}}, \
                 \"write\" : {{\"io_bytes\" : {w}, \"bw_bytes\" : {}, \"iops\" : 2.5}}}}",
                j.name(),
                r * 2,
                w * 2
            ));
        }
        s.push_str("]}");
        s
    }

    #[test]
    fn parses_fio_json() {
        let (v, r) = parse(&sample(&jobs(), 0, MIB)).unwrap();
        assert_eq!(v, "fio-3.33");
        assert_eq!(r.len(), 16);
        assert!(r.iter().all(|(_, mbs)| *mbs == 2.0), "{r:?}");
        assert!(parse(&sample(&jobs(), 5, MIB))
            .unwrap_err()
            .contains("error 5"));
        assert!(parse(&sample(&jobs(), 0, 0))
            .unwrap_err()
            .contains("no data"));
        assert!(parse(&sample(&jobs()[1..], 0, MIB))
            .unwrap_err()
            .contains("psync-read-4k"));
        assert!(parse("fio: bad option").is_err());
    }
}
