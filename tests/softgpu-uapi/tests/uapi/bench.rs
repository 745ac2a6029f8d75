//! A short smoke of the benchmark suite (`make run`), so that it cannot
//! silently break: every phase on a small footprint, every mode (the
//! userptr ones too: `userptr-frag` and `userptr-bind`). Its
//! figures are not looked at here; its own checks (GPU checksums, CPU
//! reads of every page, ioctl results) are, through its exit status.

use std::process::Command;

const BENCH: &str = "/bench/softgpu-bench";

#[test]
fn benchmark_smoke_runs_every_phase_and_mode() {
    let out = Command::new(BENCH)
        .args([
            "--phases",
            "frag,userptr-frag,migrate,gpu,fault,fileio,userptr-bind",
            "--modes",
            "control,gemfs,pinned",
            "--levels",
            "10",
            "--userptr-modes",
            "control,userptr-hmm,userptr-pinned",
            "--userptr-levels",
            "10",
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
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {BENCH}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{BENCH} failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    let results: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("BENCH-RESULT "))
        .collect();
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
    assert!(
        results.iter().all(|r| !r.contains("\"ok\":false")),
        "a failed record:\n{stdout}"
    );
}
