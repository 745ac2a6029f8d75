//! A short smoke of the benchmark suite (`make run`), so that it cannot
//! silently break: every phase on a small footprint, every mode (the
//! userptr ones too: `userptr-frag` and `userptr-bind`; `frag-stress`
//! with stress-ng's stressors; `age` with two rounds). Its
//! figures are not looked at here; its own checks (GPU checksums, CPU
//! reads of every page, ioctl results) are, through its exit status.

use std::io::Write as _;
use std::process::Command;

const BENCH: &str = "/bench/softgpu-bench";

/// Runs the benchmark with `args`, which must succeed; its progress goes
/// into the runner's log (past libtest's capture). Returns its standard
/// output.
pub(crate) fn run_bench(args: &[&str]) -> String {
    let out = Command::new(BENCH)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {BENCH}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The benchmark's progress (its phases' times, the settled free
    // memory) into the runner's log, past libtest's capture.
    let _ = std::io::stderr().write_all(&out.stderr);
    assert!(
        out.status.success(),
        "{BENCH} failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    stdout
}

/// The JSON records of the benchmark's output.
pub(crate) fn bench_results(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("BENCH-RESULT "))
        .collect()
}

#[test]
fn benchmark_smoke_runs_every_phase_and_mode() {
    let stdout = run_bench(&[
        "--phases",
        "frag,userptr-frag,migrate,gpu,fault,fileio,userptr-bind,frag-stress,age",
        "--modes",
        "control,gemfs,pinned",
        "--levels",
        "10",
        "--userptr-modes",
        "control,userptr-hmm,userptr-pinned",
        "--userptr-levels",
        "10",
        "--stress-levels",
        "10",
        // mmapfork, the third default, maps much of the free memory
        // in 32 children: slow to stop in this roomy debug guest.
        "--stress-ng",
        "vm,pagemove",
        "--age-levels",
        "10",
        "--age-rounds",
        "2",
        "--age-sizes-kb",
        "64,512",
        "--scale-bo-kb",
        "512",
        "--scale-level",
        "10",
        "--mem-mb",
        "256",
        "--cost-mb",
        "8",
        "--cost-secs",
        "2",
        "--quiet-secs",
        "1",
        "--contexts",
        "2",
        "--batch-mb",
        "8",
        // Churn up to half the 256 MiB, not 90 %: enough to scatter
        // 10 % of objects, at half the fill time of each measurement.
        "--churn-pct",
        "50",
        // One run of each measurement: the rotation of the modes
        // between repetitions is softgpu-bench's own unit test.
        "--repeat",
        "1",
    ]);
    let results = bench_results(&stdout);
    for phase in [
        "\"frag\"",
        "\"frag-summary\"",
        "\"migrate\"",
        "\"gpu\"",
        "\"fault\"",
        "\"fileio\"",
        "\"userptr-frag\"",
        "\"userptr-frag-summary\"",
        "\"userptr-bind\"",
        "\"userptr-bind-summary\"",
        "\"frag-stress\"",
        "\"frag-stress-summary\"",
        "\"age\"",
        "\"age-summary\"",
    ] {
        assert!(
            results
                .iter()
                .any(|r| r.contains(&format!("\"phase\":{phase}"))),
            "no {phase} result in:\n{stdout}"
        );
    }
    for mode in [
        "control",
        "gemfs",
        "pinned",
        "userptr-hmm",
        "userptr-pinned",
        "hmm",
    ] {
        assert!(
            results
                .iter()
                .any(|r| r.contains(&format!("\"mode\":\"{mode}\""))),
            "no result for mode {mode} in:\n{stdout}"
        );
    }
    // Every frag-stress measurement ran stress-ng and has its metrics.
    let stressed: Vec<&&str> = results
        .iter()
        .filter(|r| r.contains("\"phase\":\"frag-stress\""))
        .collect();
    assert_eq!(stressed.len(), 3, "{stdout}");
    for r in stressed {
        assert!(r.contains("\"stress_ng\":{\"stressors\":"), "{r}");
        assert!(r.contains("\"bogo_ops\":{\"vm\":"), "{r}");
    }
    // Every age measurement went through both rounds, and the second
    // freed objects of the first before it allocated more.
    let aged: Vec<&&str> = results
        .iter()
        .filter(|r| r.contains("\"phase\":\"age\""))
        .collect();
    assert_eq!(aged.len(), 3, "{stdout}");
    for r in aged {
        assert!(r.contains("\"object_kb\":[64,512]"), "{r}");
        let rounds = r
            .split_once("\"age_rounds\":[")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("no age_rounds in {r}"));
        assert!(rounds.contains("{\"round\":0,"), "{r}");
        let second = rounds
            .split_once("{\"round\":1,")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("no second round in {r}"));
        let removed: u64 = second
            .split_once("\"removed\":")
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no objects removed count in the second round of {r}"));
        assert!(removed > 0, "the second round freed no objects: {r}");
    }
    // Every fragmentation measurement started with the per-CPU lists
    // drained, and the drain reached every list's floor.
    let measured: Vec<&&str> = results
        .iter()
        .filter(|r| {
            ["frag", "userptr-frag", "frag-stress", "age"]
                .iter()
                .any(|p| r.contains(&format!("\"phase\":\"{p}\",")))
        })
        .collect();
    assert!(!measured.is_empty(), "{stdout}");
    for r in measured {
        assert!(r.contains("\"pcp_drain\":{\"pcp_before_kb\":"), "{r}");
        assert!(
            !r.contains("\"refreshes\":200"),
            "the drain did not converge: {r}"
        );
    }
    assert!(
        results.iter().all(|r| !r.contains("\"ok\":false")),
        "a failed record:\n{stdout}"
    );
}
