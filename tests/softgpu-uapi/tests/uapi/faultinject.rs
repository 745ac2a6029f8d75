//! Allocation failures injected at every allocation site of an operation
//! in turn (`/proc/thread-self/fail-nth`, with failslab and
//! fail_page_alloc set to fail sleeping and order-0 allocations too): the
//! operation returns a clean errno, the object or binding is either fully
//! there or fully gone, and the same operation succeeds once nothing is
//! injected. kmemleak, at the end of the run, finds what an error path
//! leaked.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};

use libc::{EFAULT, ENOMEM, ENOSPC};
use softgpu::*;

use crate::common::*;

const VA: u64 = 0x5_0000_0000;
const RES_VA: u64 = 0x5_8000_0000;
/// Allocation sites tried per operation at most; an operation with more
/// is a failure of this test (it would not be swept whole).
const MAX_SITES: u32 = 400;

/// Fault injection set up for sleeping and order-0 allocations, silent
/// (a verbose injection prints a stack trace, which the run's splat scan
/// would take for a bug); restored afterwards.
struct Injection {
    _settings: Vec<Setting>,
    fail_nth: File,
}

impl Injection {
    fn new() -> Self {
        let s = vec![
            Setting::set("/sys/kernel/debug/failslab/ignore-gfp-wait", "N"),
            Setting::set("/sys/kernel/debug/failslab/verbose", "0"),
            Setting::set("/sys/kernel/debug/fail_page_alloc/ignore-gfp-wait", "N"),
            Setting::set("/sys/kernel/debug/fail_page_alloc/ignore-gfp-highmem", "N"),
            Setting::set("/sys/kernel/debug/fail_page_alloc/min-order", "0"),
            Setting::set("/sys/kernel/debug/fail_page_alloc/verbose", "0"),
        ];
        let fail_nth = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/proc/thread-self/fail-nth")
            .expect("opening /proc/thread-self/fail-nth");
        Self {
            _settings: s,
            fail_nth,
        }
    }

    /// Runs `op` with the `n`-th fallible allocation of this thread made
    /// to fail; also whether it was (the operation reached that many).
    fn at<T>(&mut self, n: u32, op: impl FnOnce() -> T) -> (T, bool) {
        // fail-nth cannot seek: a fresh descriptor for the read, opened
        // before the injection is armed (opening allocates).
        let mut rd = File::open("/proc/thread-self/fail-nth").expect("opening fail-nth");
        self.fail_nth
            .write_all(n.to_string().as_bytes())
            .expect("writing fail-nth");
        let r = op();
        let mut s = String::new();
        rd.read_to_string(&mut s).expect("reading fail-nth");
        self.fail_nth.write_all(b"0").expect("clearing fail-nth");
        (r, s.trim() == "0")
    }
}

/// Sweeps `op` over its allocation sites: for n = 1, 2, ... the n-th
/// allocation fails, until an attempt reaches no n-th allocation (and
/// then must have succeeded). `check` judges each attempt: it gets the
/// result and whether a failure was injected, and undoes what succeeded.
/// Returns how many sites were swept and how many attempts failed.
fn sweep<T: std::fmt::Debug>(
    what: &str,
    mut op: impl FnMut() -> io::Result<T>,
    mut check: impl FnMut(&io::Result<T>, bool),
) -> (u32, u32) {
    let mut inj = Injection::new();
    let mut failed = 0;
    for n in 1..=MAX_SITES {
        let (r, injected) = inj.at(n, &mut op);
        if r.is_err() {
            failed += 1;
        }
        check(&r, injected);
        if !injected {
            assert!(r.is_ok(), "{what} failed with nothing injected: {r:?}");
            assert!(n > 1, "{what} allocates nothing: nothing was swept");
            return (n - 1, failed);
        }
    }
    panic!("{what}: more than {MAX_SITES} allocation sites");
}

#[track_caller]
fn assert_clean_errno<T: std::fmt::Debug>(r: &io::Result<T>, allowed: &[i32], what: &str) {
    if let Err(e) = r {
        let errno = e.raw_os_error().unwrap_or(0);
        assert!(
            allowed.contains(&errno),
            "{what}: an injected allocation failure came back as {} ({e}), not one of {:?}",
            errno_name(errno),
            allowed.iter().map(|&e| errno_name(e)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn gem_create_under_allocation_failures() {
    let dev = open();
    for flags in [0, SOFTGPU_BO_PINNED] {
        let before = object_count(&dev);
        let (sites, failed) = sweep(
            &format!("GEM_CREATE flags={flags}"),
            || dev.create_bo(64 * PAGE, flags),
            |r, _| {
                // shmem answers a failed inode allocation with ENOSPC
                // (__shmem_get_inode()), as memfd_create() and open(2) on
                // tmpfs do.
                assert_clean_errno(r, &[ENOMEM, ENOSPC], "GEM_CREATE");
                match r {
                    Ok(h) => {
                        // Fully there: usable by the CPU and the GPU.
                        let m = map(&dev, *h, 64 * PAGE);
                        assert!(m.as_slice().iter().all(|&b| b == 0));
                        drop(m);
                        ok(dev.close_bo(*h), "GEM_CLOSE");
                    }
                    // Fully gone: no object left behind.
                    Err(_) => assert_eq!(object_count(&dev), before, "a failed create left a BO"),
                }
            },
        );
        println!("GEM_CREATE flags={flags}: {sites} allocation sites, {failed} failed");
        assert!(failed > 0, "no injected failure made GEM_CREATE fail");
        assert_eq!(object_count(&dev), before);
    }
}

#[test]
fn vm_bind_under_allocation_failures() {
    let dev = open();
    for flags in [0, SOFTGPU_BO_PINNED] {
        let h = create(&dev, 16 * PAGE, flags);
        let (sites, failed) = sweep(
            &format!("VM_BIND of a BO with flags={flags}"),
            || dev.bind(h, VA, 0, 16 * PAGE, 0),
            |r, _| {
                assert_clean_errno(r, &[ENOMEM], "VM_BIND");
                match r {
                    Ok(()) => {
                        run_ok(&dev, &[Cmd::fill(VA, 16 * PAGE, 9)], "FILL after VM_BIND");
                        ok(dev.unbind(VA, 16 * PAGE), "VM_UNBIND");
                    }
                    Err(_) => {
                        assert_eq!(ok(dev.info(h), "GEM_INFO").bindings, 0);
                        assert_unbound(&dev, VA, "after a failed VM_BIND");
                        assert_unbound(&dev, VA + 15 * PAGE, "after a failed VM_BIND");
                    }
                }
            },
        );
        println!("VM_BIND flags={flags}: {sites} allocation sites, {failed} failed");
        assert!(failed > 0, "no injected failure made VM_BIND fail");
        ok(dev.close_bo(h), "GEM_CLOSE");
    }
}

/// EXEC, and what the job then does in the submitting task (validation,
/// and whatever the driver resolves of the job's memory at submission):
/// EXEC fails cleanly, or the job runs; a job never reports success with
/// wrong results.
#[test]
fn exec_under_allocation_failures() {
    let dev = open();
    let h = create_bound(&dev, 32 * PAGE, 0, VA);
    // A new value each attempt, so that a job that did nothing is seen.
    let value = std::cell::Cell::new(0x100);
    let (sites, failed) = sweep(
        "EXEC of a FILL",
        || {
            value.set(value.get() + 1);
            dev.exec(&[Cmd::fill(VA, 32 * PAGE, value.get())], 0)
        },
        |r, _| {
            assert_clean_errno(r, &[ENOMEM], "EXEC");
            if let Ok((seqno, _)) = r {
                let (status, _) = ok(dev.wait(*seqno, WAIT_NS), "WAIT");
                assert!(
                    status == 0 || status == -ENOMEM,
                    "job status {status} after an injected allocation failure"
                );
                if status == 0 {
                    let sum = gpu_checksum(&dev, VA, 32 * PAGE, RES_VA);
                    assert_eq!(sum, fnv1a64(&filled(32 * PAGE as usize, value.get())));
                }
            }
        },
    );
    println!("EXEC: {sites} allocation sites, {failed} failed");
    assert!(failed > 0, "no injected failure made EXEC fail");
    ok(dev.close_bo(h), "GEM_CLOSE");
}

#[test]
fn userptr_under_allocation_failures() {
    let dev = open();
    let len = 16 * PAGE;
    for flags in [0, SOFTGPU_USERPTR_PINNED] {
        let anon = Anon::new(len as usize);
        // SAFETY: a private mapping of this test, alive until the end of
        // this iteration, after every binding of it is gone.
        let mem = unsafe { std::slice::from_raw_parts_mut(anon.ptr, len as usize) };
        mem.fill(0x3c);
        let (sites, failed) = sweep(
            &format!("USERPTR flags={flags}"),
            // SAFETY: see above.
            || unsafe { dev.userptr(anon.ptr as u64, len, VA, flags) },
            |r, _| {
                // hmm_range_fault() answers a failed fault with EFAULT.
                assert_clean_errno(r, &[ENOMEM, EFAULT], "USERPTR");
                match r {
                    Ok(()) => {
                        let sum = gpu_checksum(&dev, VA, len, RES_VA);
                        assert_eq!(sum, fnv1a64(&vec![0x3c; len as usize]));
                        ok(dev.unbind(VA, len), "VM_UNBIND of the userptr");
                    }
                    Err(_) => assert_unbound(&dev, VA, "after a failed USERPTR"),
                }
            },
        );
        println!("USERPTR flags={flags}: {sites} allocation sites, {failed} failed");
        assert!(failed > 0, "no injected failure made USERPTR fail");
        assert!(mem.iter().all(|&b| b == 0x3c), "USERPTR changed the memory");
        drop(anon);
    }
}

/// move_pages() of GPU-held gemfs BO pages: the release callback and the
/// migration core allocate in the calling task. A page that fails to move
/// stays where it was, with its data; the GPU sees the data either way.
/// Each attempt moves every page from node A to node B; between attempts
/// they go back to A, with nothing injected.
#[test]
fn migration_of_held_pages_under_allocation_failures() {
    let nodes = softgpu::mm::online_nodes().expect("online nodes");
    assert!(nodes.len() >= 2, "the guest has two NUMA nodes");
    let (a, b) = (nodes[0] as i32, nodes[1] as i32);
    let dev = open();
    let size = 8 * PAGE;
    let h = create_bound(&dev, size, 0, VA);
    let m = map(&dev, h, size);
    run_ok(&dev, &[Cmd::fill(VA, size, 0x5eed)], "FILL");
    let want = fnv1a64(&filled(size as usize, 0x5eed));
    // The CPU maps every page (move_pages() moves only mapped ones).
    assert!(m.as_slice() == &filled(size as usize, 0x5eed)[..]);
    let addrs = m.page_addrs();
    let back = |what: &str| {
        crate::migration::move_all(&addrs, &vec![a; addrs.len()], 100)
            .unwrap_or_else(|e| panic!("{what}: moving the pages to node {a}: {e}"));
    };
    back("before the sweep");
    let (sites, failed) = sweep(
        "move_pages of held BO pages",
        || softgpu::mm::move_pages_to(&addrs, b),
        |r, _| {
            assert_clean_errno(r, &[ENOMEM], "move_pages");
            // Data intact wherever the pages are, for the CPU and the GPU.
            assert!(m.as_slice() == &filled(size as usize, 0x5eed)[..]);
            assert_eq!(gpu_checksum(&dev, VA, size, RES_VA), want);
            back("after an attempt");
        },
    );
    println!("move_pages: {sites} allocation sites, {failed} calls failed");
    drop(m);
    ok(dev.unbind(VA, size), "VM_UNBIND");
    ok(dev.close_bo(h), "GEM_CLOSE");
}
