//! The fuzzer for a fixed budget, as `make test` runs it; `make fuzz`
//! runs the same for as long as asked. `SOFTGPU_FUZZ_SECS` (default 60),
//! `SOFTGPU_FUZZ_SEED` (default: from the clock) and `SOFTGPU_FUZZ_PROCS`
//! / `SOFTGPU_FUZZ_THREADS` (default 2 each) come from the environment,
//! which the guest's init fills from `runner.fuzz_*` kernel parameters.
//! With `SOFTGPU_FUZZ_SOAK=1` (`make soak`), stress-ng's memory stressors
//! and a memory block offline/online loop run beside the workers
//! ([`softgpu_fuzz::soak`]), and the report adds gemfs's counters.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use softgpu_fuzz::{run, soak, Config};

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

/// The report's lines go to stdout as such, not through `println!`, which
/// libtest captures (and shows only for a failing test): the figures of a
/// passing run are the point of `make fuzz` and `make soak`.
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
        let _ = out.flush();
    }};
}

/// One of gemfs's debugfs counters.
fn gemfs_counter(name: &str) -> u64 {
    let path = format!("/sys/kernel/debug/gemfs/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn fuzz_the_uapi_for_a_fixed_budget() {
    let seed = env_u64("SOFTGPU_FUZZ_SEED").unwrap_or_else(|| {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        t.as_nanos() as u64
    });
    let cfg = Config {
        seed,
        budget: Duration::from_secs(env_u64("SOFTGPU_FUZZ_SECS").unwrap_or(60)),
        procs: env_u64("SOFTGPU_FUZZ_PROCS").unwrap_or(2),
        threads: env_u64("SOFTGPU_FUZZ_THREADS").unwrap_or(2),
    };
    // First, so that a crash of the guest still leaves the seed behind.
    say!(
        "fuzz: seed={seed:#x} secs={} procs={} threads={}",
        cfg.budget.as_secs(),
        cfg.procs,
        cfg.threads
    );
    let soaking = env_u64("SOFTGPU_FUZZ_SOAK").unwrap_or(0) != 0;
    let counters = ["released_migrated", "refused_busy", "unheld_migrated"];
    let before = counters.map(gemfs_counter);
    let mut background = soaking.then(soak::Background::start);
    let t = run(&cfg);
    if let Some(bg) = background.as_mut() {
        let alive = bg.stress_alive();
        let (off, refused) = (
            bg.cycles
                .offlined
                .load(std::sync::atomic::Ordering::Relaxed),
            bg.cycles.refused.load(std::sync::atomic::Ordering::Relaxed),
        );
        let after = counters.map(gemfs_counter);
        say!(
            "soak: minutes={} ops={} bytes_checked={} mismatches={} offlined={off} \
             offline_refused={refused} {}",
            cfg.budget.as_secs() / 60,
            t.calls,
            t.bytes_checked,
            t.violations.len(),
            counters
                .iter()
                .zip(before.iter().zip(after.iter()))
                .map(|(n, (b, a))| format!("{n}={}", a - b))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(alive, "stress-ng was not running at the end of the soak");
        assert!(
            bg.has_offliner(),
            "no removable memory block of node 1 to cycle"
        );
        assert!(
            off > 0,
            "no memory block offlining succeeded during the soak"
        );
    }
    drop(background);
    say!(
        "fuzz: seed={seed:#x} calls={} distinct call/errno pairs={} bytes checked={} \
         violations={}",
        t.calls,
        t.outcomes.len(),
        t.bytes_checked,
        t.violations.len()
    );
    for ((op, errno), n) in &t.outcomes {
        say!("fuzz: outcome {op} errno={errno} n={n}");
    }
    for v in &t.violations {
        say!("fuzz: VIOLATION {v}");
    }
    assert!(
        t.violations.is_empty(),
        "seed {seed:#x}: {} broken invariants, first: {}",
        t.violations.len(),
        t.violations[0]
    );
    // A fuzzer that made few calls, or whose calls all failed the same
    // way, tested nothing: the workers must have reached the driver.
    // (An emulated guest with KASAN makes about 60 calls a second.)
    assert!(
        t.calls >= 10 * cfg.budget.as_secs().max(1),
        "only {} calls in {} s",
        t.calls,
        cfg.budget.as_secs()
    );
    for op in [
        "GEM_CREATE",
        "VM_BIND",
        "EXEC",
        "USERPTR",
        "verify",
        "unbound_fault",
    ] {
        assert!(
            t.outcomes.contains_key(&(op.to_string(), 0)),
            "seed {seed:#x}: no {op} ever succeeded"
        );
    }
}
