//! The fuzzer for a fixed budget, as `make test` runs it; `make fuzz`
//! runs the same for as long as asked. `SOFTGPU_FUZZ_SECS` (default 60),
//! `SOFTGPU_FUZZ_SEED` (default: from the clock) and `SOFTGPU_FUZZ_PROCS`
//! / `SOFTGPU_FUZZ_THREADS` (default 2 each) come from the environment,
//! which the guest's init fills from `runner.fuzz_*` kernel parameters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use softgpu_fuzz::{run, Config};

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
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
    println!(
        "fuzz: seed={seed:#x} secs={} procs={} threads={}",
        cfg.budget.as_secs(),
        cfg.procs,
        cfg.threads
    );
    let t = run(&cfg);
    println!(
        "fuzz: seed={seed:#x} calls={} distinct call/errno pairs={} violations={}",
        t.calls,
        t.outcomes.len(),
        t.violations.len()
    );
    for ((op, errno), n) in &t.outcomes {
        println!("fuzz: outcome {op} errno={errno} n={n}");
    }
    for v in &t.violations {
        println!("fuzz: VIOLATION {v}");
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
