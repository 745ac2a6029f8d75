//! Device private memory: USERPTR_MIGRATE moves the pages of a userptr
//! binding into the VRAM (they become device private pages: the CPU page
//! table holds swap-type entries for them) and back. The CPU faults a page
//! back by touching it; the GPU reaches migrated pages in VRAM, atomics
//! included; TTM objects that need the VRAM push them back to system
//! memory; and the memory behaves across fork, mprotect, munmap,
//! MADV_DONTNEED and process exit as if it had never left. These are the
//! scenarios of the kernel's hmm-tests (tools/testing/selftests/mm) that
//! apply to a device private driver, against softgpu's uAPI. Every test
//! here needs the VRAM device (with `VRAM=0` the ioctl is `ENODEV`:
//! `novram`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use libc::{EFAULT, EINVAL, ENOENT, EOPNOTSUPP};
use softgpu::mm::{self, Pagemap};
use softgpu::uapi::{UserptrMigrate, DRM_IOCTL_SOFTGPU_USERPTR_MIGRATE};
use softgpu::*;

use crate::common::*;
use crate::userptr::{
    bind_mem, child_mem_eq, counter, gpu_checksum, pagemap_state, results, userptr, Mem,
    PAGE_USIZE, VA,
};
use crate::vram::{debugfs_kv, needs_vram};

/// debugfs `devmem` counter `key`.
#[track_caller]
fn devmem(dev: &Device, key: &str) -> u64 {
    let (text, kv) = debugfs_kv(dev, "devmem");
    *kv.get(key)
        .unwrap_or_else(|| panic!("no {key}: in debugfs devmem: {text:?}"))
}

/// USERPTR_MIGRATE of `[va, va + size)` to `placement`: (candidates,
/// migrated).
#[track_caller]
fn migrate(dev: &Device, va: u64, size: u64, placement: u32) -> (u64, u64) {
    ok(
        dev.migrate_userptr(va, size, placement),
        &format!("USERPTR_MIGRATE of {size:#x} bytes at {va:#x} to {placement:#x}"),
    )
}

/// Which pages of `m` the CPU page table maps (present) and which are
/// swap-type entries (device private), by /proc/self/pagemap.
fn states(pm: &Pagemap, m: &Mem) -> Vec<(bool, bool)> {
    m.page_addrs()
        .iter()
        .map(|&a| pagemap_state(pm, a))
        .collect()
}

/// The device, which has VRAM: a test here needs it.
fn vram_device() -> Device {
    needs_vram();
    open()
}

/// Migrated pages: swap-type entries for the CPU, unknown to move_pages,
/// read by the GPU from VRAM without coming back; a CPU read faults back
/// the page it touches, and only it.
#[test]
fn dmem_migrate_then_the_cpu_faults_pages_back() {
    let dev = vram_device();
    const N: usize = 16;
    let size = (N * PAGE_USIZE) as u64;
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let res = results(&dev);
    let m = Mem::new(N);
    let a = pattern(size as usize, 21);
    m.write(0, &a);
    bind_mem(&dev, &m, VA, 0);
    let used = devmem(&dev, "used");
    let faulted = devmem(&dev, "faulted_back");

    assert_eq!(
        migrate(&dev, VA, size, SOFTGPU_BO_VRAM),
        (N as u64, N as u64)
    );
    assert_eq!(devmem(&dev, "used"), used + N as u64, "device pages in use");
    assert!(
        states(&pm, &m).iter().all(|&s| s == (false, true)),
        "pagemap should show swap-type (device private) entries: {:?}",
        states(&pm, &m)
    );
    let nodes = ok(mm::page_nodes(&m.page_addrs()), "move_pages (query)");
    assert!(
        nodes.iter().all(|&n| n == -ENOENT),
        "move_pages should find no page in system memory: {nodes:?}"
    );
    // The GPU reads them where they are: nothing comes back.
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM of migrated pages"),
        fnv1a64(&a),
        "the GPU read wrong data from VRAM"
    );
    assert_eq!(devmem(&dev, "faulted_back"), faulted);
    assert!(states(&pm, &m).iter().all(|&s| s == (false, true)));

    // The CPU touches page 3: it alone comes back, intact.
    assert!(
        m.read(3 * PAGE_USIZE, PAGE_USIZE) == a[3 * PAGE_USIZE..4 * PAGE_USIZE],
        "page 3 came back wrong"
    );
    assert_eq!(devmem(&dev, "faulted_back"), faulted + 1);
    let s = states(&pm, &m);
    assert_eq!(s[3], (true, false), "page 3 is back in system memory");
    assert!(
        s.iter()
            .enumerate()
            .all(|(i, &st)| i == 3 || st == (false, true)),
        "only page 3 came back: {s:?}"
    );
    // All of it.
    assert!(
        m.read(0, size as usize) == a,
        "contents after faulting back"
    );
    assert_eq!(devmem(&dev, "faulted_back"), faulted + N as u64);
    assert_eq!(devmem(&dev, "used"), used, "device pages freed");
    let nodes = ok(mm::page_nodes(&m.page_addrs()), "move_pages (query)");
    assert!(
        nodes.iter().all(|&n| n >= 0),
        "back in system memory: {nodes:?}"
    );
}

/// The GPU writes and atomics reach migrated pages in VRAM; atomics need
/// no exclusive entry there (the CPU cannot reach the page anyway), and
/// the CPU sees every update once the pages come back.
#[test]
fn dmem_gpu_writes_and_atomics_on_migrated_pages() {
    let dev = vram_device();
    const N: usize = 8;
    let size = (N * PAGE_USIZE) as u64;
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let m = Mem::new(N);
    m.write(0, &pattern(size as usize, 22));
    bind_mem(&dev, &m, VA, 0);
    assert_eq!(migrate(&dev, VA, size, SOFTGPU_BO_VRAM).1, N as u64);
    let faulted = devmem(&dev, "faulted_back");
    run_ok(
        &dev,
        &[Cmd::fill(VA, size, 0x5eed_f00d)],
        "FILL of migrated pages",
    );
    run_ok(
        &dev,
        &[Cmd::atomic_add(VA, 3, 5)],
        "ATOMIC_ADD on a migrated page",
    );
    assert!(
        states(&pm, &m).iter().all(|&s| s == (false, true)),
        "the GPU's accesses brought pages back: {:?}",
        states(&pm, &m)
    );
    assert_eq!(
        devmem(&dev, "faulted_back"),
        faulted,
        "GPU jobs faulted pages back"
    );
    let mut want = filled(size as usize, 0x5eed_f00d);
    let first = u64::from_ne_bytes(want[..8].try_into().unwrap()) + 15;
    want[..8].copy_from_slice(&first.to_ne_bytes());
    assert!(
        m.read(0, size as usize) == want,
        "the CPU misses the GPU's writes"
    );
    // And the other way: CPU atomics, then the GPU's on a page migrated
    // again.
    counter(&m).fetch_add(100, SeqCst);
    assert_eq!(migrate(&dev, VA, PAGE, SOFTGPU_BO_VRAM).1, 1);
    run_ok(
        &dev,
        &[Cmd::atomic_add(VA, 1, 1)],
        "ATOMIC_ADD after the CPU's",
    );
    assert_eq!(counter(&m).load(SeqCst), first + 101);
}

/// Migrating twice moves nothing the second time; migrating back moves
/// the pages into system memory and gives the device pages back.
#[test]
fn dmem_migrate_twice_and_back_explicitly() {
    let dev = vram_device();
    const N: usize = 32;
    let size = (N * PAGE_USIZE) as u64;
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let res = results(&dev);
    let m = Mem::new(N);
    let a = pattern(size as usize, 23);
    m.write(0, &a);
    bind_mem(&dev, &m, VA, 0);
    let used = devmem(&dev, "used");
    assert_eq!(
        migrate(&dev, VA, size, SOFTGPU_BO_VRAM),
        (N as u64, N as u64)
    );
    assert_eq!(
        migrate(&dev, VA, size, SOFTGPU_BO_VRAM),
        (0, 0),
        "a second migration finds nothing to move"
    );
    // Half of it back.
    let back = migrate(&dev, VA + 8 * PAGE, 16 * PAGE, SOFTGPU_BO_SYSTEM);
    assert_eq!(back, (16, 16), "migrating back pages 8..24");
    let s = states(&pm, &m);
    for (i, st) in s.iter().enumerate() {
        let want = if (8..24).contains(&i) {
            (true, false)
        } else {
            (false, true)
        };
        assert_eq!(*st, want, "page {i} after migrating back 8..24: {s:?}");
    }
    assert_eq!(devmem(&dev, "used"), used + 16);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM of a half-migrated range"),
        fnv1a64(&a)
    );
    assert_eq!(migrate(&dev, VA, size, SOFTGPU_BO_SYSTEM), (16, 16));
    assert_eq!(devmem(&dev, "used"), used);
    assert!(states(&pm, &m).iter().all(|&s| s == (true, false)));
    assert!(
        m.read(0, size as usize) == a,
        "contents after the round trip"
    );
    assert_eq!(migrate(&dev, VA, size, SOFTGPU_BO_SYSTEM), (0, 0));
}

/// A range with pages never touched (holes: they migrate as zeroed device
/// pages) and a read-only binding of read-only memory.
#[test]
fn dmem_ranges_with_holes_and_read_only_pages() {
    let dev = vram_device();
    const N: usize = 8;
    let size = (N * PAGE_USIZE) as u64;
    let res = results(&dev);
    let m = Mem::new(N);
    let a = pattern(4 * PAGE_USIZE, 24);
    m.write(0, &a);
    bind_mem(&dev, &m, VA, 0);
    assert_eq!(
        migrate(&dev, VA, size, SOFTGPU_BO_VRAM),
        (N as u64, N as u64),
        "holes migrate too"
    );
    let mut want = a.clone();
    want.resize(size as usize, 0);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM with holes"),
        fnv1a64(&want)
    );
    assert!(m.read(0, size as usize) == want, "holes read back as zeros");
    ok(dev.unbind(VA, size), "VM_UNBIND");

    let ro = Mem::new(4);
    let b = pattern(4 * PAGE_USIZE, 25);
    ro.write(0, &b);
    ro.protect(libc::PROT_READ);
    bind_mem(&dev, &ro, VA, SOFTGPU_USERPTR_READONLY);
    assert_eq!(migrate(&dev, VA, 4 * PAGE, SOFTGPU_BO_VRAM), (4, 4));
    assert_eq!(
        gpu_checksum(&dev, &res, VA, 4 * PAGE, "CHECKSUM of read-only pages"),
        fnv1a64(&b)
    );
    run_fault_at(
        &dev,
        &[probe_write(VA + PAGE)],
        VA + PAGE,
        "a GPU write to a read-only userptr in VRAM",
    );
    assert!(ro.read(0, 4 * PAGE_USIZE) == b, "read-only pages changed");
}

/// Fork with migrated pages: the child inherits the device private entries
/// (copy-on-write) and reads the data by faulting it back; its writes stay
/// its own; the parent's GPU writes break copy-on-write on the parent's
/// side as a CPU write would.
#[test]
fn dmem_migrate_then_fork() {
    let dev = vram_device();
    const N: usize = 4;
    let size = (N * PAGE_USIZE) as u64;
    let res = results(&dev);
    let m = Mem::new(N);
    let a = pattern(size as usize, 26);
    let c = pattern(size as usize, 27);
    m.write(0, &a);
    bind_mem(&dev, &m, VA, 0);
    assert_eq!(migrate(&dev, VA, size, SOFTGPU_BO_VRAM).1, N as u64);
    let end = in_child(Duration::from_secs(120), || {
        if !child_mem_eq(&m, &a) {
            return Err("the child read wrong data from migrated pages".into());
        }
        m.write(0, &c);
        if !child_mem_eq(&m, &c) {
            return Err("the child's writes did not stick".into());
        }
        Ok(())
    });
    assert_child_ok(end);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM after the child"),
        fnv1a64(&a),
        "the GPU sees the child's writes"
    );
    // Migrate again, fork, and the parent's GPU writes while the child
    // waits: copy-on-write keeps the write out of the child's pages.
    migrate(&dev, VA, size, SOFTGPU_BO_VRAM);
    let (rd, wr) = pipe();
    // SAFETY: the child only reads the pipe and compares memory (no
    // allocation: `a` exists already) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        wait_byte(rd);
        let code = if child_mem_eq(&m, &a) { 0 } else { 3 };
        // SAFETY: ends the child without running the harness on.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: the child's end, ours to close.
    unsafe { libc::close(rd) };
    run_ok(&dev, &[Cmd::fill(VA, size, 0x0bad_cafe)], "FILL after fork");
    send_byte(wr);
    // SAFETY: our end.
    unsafe { libc::close(wr) };
    let mut st = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child: status {st:#x} (exit 3: it saw the parent's GPU write)"
    );
    assert!(
        m.read(0, size as usize) == filled(size as usize, 0x0bad_cafe),
        "the parent misses its GPU FILL"
    );
}

/// A pipe: (read end, write end).
fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

fn wait_byte(fd: i32) {
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into `b`.
    unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) };
}

fn send_byte(fd: i32) {
    // SAFETY: writing one byte from a static buffer to our pipe.
    assert_eq!(unsafe { libc::write(fd, b"g".as_ptr().cast(), 1) }, 1);
}

/// mprotect, munmap and MADV_DONTNEED of migrated pages: a write job on
/// pages made read-only faults; unmapped and discarded pages free their
/// device pages, and read back as zeros (DONTNEED) or fault (munmap).
#[test]
fn dmem_mprotect_munmap_and_dontneed_while_migrated() {
    let dev = vram_device();
    const N: usize = 8;
    let size = (N * PAGE_USIZE) as u64;
    let res = results(&dev);
    let m = Mem::new(N);
    let a = pattern(size as usize, 28);
    m.write(0, &a);
    bind_mem(&dev, &m, VA, 0);
    let used = devmem(&dev, "used");
    assert_eq!(migrate(&dev, VA, size, SOFTGPU_BO_VRAM).1, N as u64);

    m.protect(libc::PROT_READ);
    run_fault_at(
        &dev,
        &[probe_write(VA + 2 * PAGE)],
        VA + 2 * PAGE,
        "a GPU write to migrated pages after mprotect(PROT_READ)",
    );
    assert_eq!(
        gpu_checksum(&dev, &res, VA, size, "CHECKSUM after mprotect"),
        fnv1a64(&a)
    );
    m.protect(libc::PROT_READ | libc::PROT_WRITE);

    // MADV_DONTNEED of pages 0..2: gone, their device pages freed.
    m.0.advise(0, 2 * PAGE_USIZE, libc::MADV_DONTNEED);
    assert_eq!(devmem(&dev, "used"), used + N as u64 - 2);
    // munmap of pages 6..8.
    // SAFETY: the tail of our own mapping; `m` is not used beyond page 6
    // from here on (its drop unmaps the whole range again, which is fine).
    assert_eq!(
        unsafe { libc::munmap(m.0.ptr.add(6 * PAGE_USIZE).cast(), 2 * PAGE_USIZE) },
        0
    );
    assert_eq!(devmem(&dev, "used"), used + N as u64 - 4);
    run_fault_at(
        &dev,
        &[Cmd::checksum(RES, VA + 6 * PAGE, PAGE)],
        VA + 6 * PAGE,
        "a GPU read of unmapped migrated pages",
    );
    let mut want = vec![0u8; 2 * PAGE_USIZE];
    want.extend_from_slice(&a[2 * PAGE_USIZE..6 * PAGE_USIZE]);
    assert_eq!(
        gpu_checksum(&dev, &res, VA, 6 * PAGE, "CHECKSUM of what is left"),
        fnv1a64(&want)
    );
    assert!(
        m.read(0, 6 * PAGE_USIZE) == want,
        "what is left, read by the CPU"
    );
    assert_eq!(devmem(&dev, "used"), used, "every device page freed");
}

const RES: u64 = crate::userptr::RES_VA;

/// A thread writes the pages while they migrate to VRAM and back, over and
/// over: no write is lost.
#[test]
fn dmem_migrate_under_concurrent_cpu_writes() {
    let dev = vram_device();
    const N: usize = 16;
    let size = (N * PAGE_USIZE) as u64;
    let m = Mem::new(N);
    bind_mem(&dev, &m, VA, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(AtomicU64::new(0));
    let writer = {
        let (base, stop, last) = (m.0.ptr as usize, stop.clone(), last.clone());
        thread::spawn(move || {
            let mut v = 0u64;
            while !stop.load(SeqCst) {
                v += 1;
                for p in 0..N {
                    let off = p * PAGE_USIZE + 8 * (v as usize % 8);
                    // SAFETY: within `m`, which outlives the thread (joined
                    // below); only this thread writes to it meanwhile, and
                    // no job runs on it.
                    unsafe { std::ptr::write_volatile((base + off) as *mut u64, v) };
                }
                last.store(v, SeqCst);
            }
        })
    };
    let mut moved = 0;
    let started = Instant::now();
    for round in 0..20 {
        let to = if round % 2 == 0 {
            SOFTGPU_BO_VRAM
        } else {
            SOFTGPU_BO_SYSTEM
        };
        moved += migrate(&dev, VA, size, to).1;
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    stop.store(true, SeqCst);
    writer.join().expect("the writer thread");
    let v = last.load(SeqCst);
    assert!(moved > 0, "nothing migrated while the CPU wrote");
    for p in 0..N {
        for k in 0..8u64 {
            // The last value written at each slot: the greatest w <= v
            // with w % 8 == k.
            let Some(w) = (0..=v).rev().find(|w| w % 8 == k && *w > 0) else {
                continue;
            };
            let off = p * PAGE_USIZE + 8 * k as usize;
            assert_eq!(m.read_u64(off), w, "page {p} slot {k}: a lost write");
        }
    }
}

/// A TTM object that needs the VRAM pushes migrated pages back to system
/// memory first; they stay intact.
#[test]
fn dmem_vram_pressure_evicts_migrated_pages() {
    let dev = vram_device();
    const N: usize = 64;
    let size = (N * PAGE_USIZE) as u64;
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let m = Mem::new(N);
    let a = pattern(size as usize, 29);
    m.write(0, &a);
    bind_mem(&dev, &m, VA, 0);
    assert_eq!(migrate(&dev, VA, size, SOFTGPU_BO_VRAM).1, N as u64);
    let evicted = devmem(&dev, "evicted");
    // An object as big as the VRAM: nothing else can stay there.
    let h = ok(
        dev.create_bo(needs_vram(), SOFTGPU_BO_VRAM),
        "GEM_CREATE of a VRAM-sized object",
    );
    let info = ok(dev.info(h), "GEM_INFO");
    assert_ne!(
        info.flags & SOFTGPU_BO_INFO_VRAM,
        0,
        "the object is in VRAM: {info:?}"
    );
    assert_eq!(
        devmem(&dev, "evicted"),
        evicted + N as u64,
        "device pages evicted"
    );
    assert_eq!(devmem(&dev, "chunks"), 0, "VRAM chunks given back");
    assert!(
        states(&pm, &m).iter().all(|&s| s == (true, false)),
        "evicted pages are in system memory: {:?}",
        states(&pm, &m)
    );
    assert!(m.read(0, size as usize) == a, "contents after eviction");
    // No room for device pages now: nothing moves, and nothing breaks.
    assert_eq!(migrate(&dev, VA, size, SOFTGPU_BO_VRAM), (N as u64, 0));
    ok(dev.close_bo(h), "GEM_CLOSE");
    // TTM frees the object's VRAM once its clear (a copy job of the
    // engine, maybe still running) is done.
    assert_eq!(
        crate::ttm::vram_used_is(&dev, 0),
        0,
        "VRAM used after GEM_CLOSE"
    );
    assert_eq!(migrate(&dev, VA, size, SOFTGPU_BO_VRAM).1, N as u64);
    assert!(
        m.read(0, size as usize) == a,
        "contents after migrating again"
    );
}

/// A process exits with pages in VRAM: its device pages are freed.
#[test]
fn dmem_process_exit_with_migrated_pages() {
    let dev = vram_device();
    let used = devmem(&dev, "used");
    let end = in_child(Duration::from_secs(120), || {
        let dev = open();
        let m = Mem::new(16);
        m.write(0, &pattern(16 * PAGE_USIZE, 30));
        bind_mem(&dev, &m, VA, 0);
        let (_, moved) = dev
            .migrate_userptr(VA, 16 * PAGE, SOFTGPU_BO_VRAM)
            .map_err(|e| format!("USERPTR_MIGRATE: {e}"))?;
        if moved != 16 {
            return Err(format!("migrated {moved} of 16 pages"));
        }
        // Exit with the pages in VRAM and the binding live.
        std::mem::forget(m);
        Ok(())
    });
    assert_child_ok(end);
    assert_eq!(
        devmem(&dev, "used"),
        used,
        "the exited process's device pages"
    );
}

/// Bad input: a clear errno, and nothing moves.
#[test]
fn dmem_bad_input_errnos_change_nothing() {
    let dev = vram_device();
    let pm = ok(Pagemap::open(), "opening /proc/self/pagemap");
    let m = Mem::new(4);
    m.write(0, &pattern(4 * PAGE_USIZE, 31));
    bind_mem(&dev, &m, VA, 0);
    let raw = |a: UserptrMigrate| {
        let mut a = a;
        dev.ioctl(DRM_IOCTL_SOFTGPU_USERPTR_MIGRATE, &mut a)
    };
    let good = UserptrMigrate {
        gpu_va: VA,
        size: 4 * PAGE,
        placement: SOFTGPU_BO_VRAM,
        ..Default::default()
    };
    for (what, a, errno) in [
        (
            "placement 0",
            UserptrMigrate {
                placement: 0,
                ..good
            },
            EINVAL,
        ),
        (
            "both placements",
            UserptrMigrate {
                placement: SOFTGPU_BO_VRAM | SOFTGPU_BO_SYSTEM,
                ..good
            },
            EINVAL,
        ),
        (
            "unknown placement",
            UserptrMigrate {
                placement: 1 << 8,
                ..good
            },
            EINVAL,
        ),
        ("non-zero pad", UserptrMigrate { pad: 1, ..good }, EINVAL),
        ("size 0", UserptrMigrate { size: 0, ..good }, EINVAL),
        (
            "unaligned size",
            UserptrMigrate {
                size: PAGE + 1,
                ..good
            },
            EINVAL,
        ),
        (
            "unaligned address",
            UserptrMigrate {
                gpu_va: VA + 8,
                ..good
            },
            EINVAL,
        ),
        (
            "past the binding",
            UserptrMigrate {
                size: 5 * PAGE,
                ..good
            },
            EINVAL,
        ),
        (
            "a wrapping range",
            UserptrMigrate {
                size: u64::MAX - PAGE + 1,
                ..good
            },
            EINVAL,
        ),
        (
            "no binding there",
            UserptrMigrate {
                gpu_va: VA - PAGE,
                ..good
            },
            ENOENT,
        ),
    ] {
        expect_errno(raw(a), errno, &format!("USERPTR_MIGRATE with {what}"));
    }
    // A buffer object binding is not a userptr.
    let h = create_bound(&dev, PAGE, 0, 0x3000_0000);
    expect_errno(
        dev.migrate_userptr(0x3000_0000, PAGE, SOFTGPU_BO_VRAM),
        ENOENT,
        "USERPTR_MIGRATE of a BO binding",
    );
    ok(dev.close_bo(h), "GEM_CLOSE");
    assert!(
        states(&pm, &m).iter().all(|&s| s == (true, false)),
        "nothing moved on bad input"
    );

    // Shared anonymous memory, a file mapping, a pinned binding.
    let shared = SharedMem::new(4 * PAGE_USIZE, -1);
    ok(
        userptr(&dev, shared.addr(), 4 * PAGE, 0x5000_0000, 0),
        "USERPTR of shared memory",
    );
    expect_errno(
        dev.migrate_userptr(0x5000_0000, 4 * PAGE, SOFTGPU_BO_VRAM),
        EOPNOTSUPP,
        "USERPTR_MIGRATE of shared anonymous memory",
    );
    let file = tempfile(4 * PAGE_USIZE);
    let fm = SharedMem::new(4 * PAGE_USIZE, file);
    ok(
        userptr(&dev, fm.addr(), 4 * PAGE, 0x6000_0000, 0),
        "USERPTR of a file mapping",
    );
    expect_errno(
        dev.migrate_userptr(0x6000_0000, 4 * PAGE, SOFTGPU_BO_VRAM),
        EOPNOTSUPP,
        "USERPTR_MIGRATE of a file mapping",
    );
    // SAFETY: our own descriptor.
    unsafe { libc::close(file) };
    let pinned = Mem::new(2);
    bind_mem(&dev, &pinned, 0x7000_0000, SOFTGPU_USERPTR_PINNED);
    expect_errno(
        dev.migrate_userptr(0x7000_0000, 2 * PAGE, SOFTGPU_BO_VRAM),
        EINVAL,
        "USERPTR_MIGRATE of a pinned binding",
    );
    // A range no longer mapped.
    let gone = Mem::new(2);
    bind_mem(&dev, &gone, 0x8000_0000, 0);
    // SAFETY: our own mapping; `gone` is not read afterwards.
    assert_eq!(
        unsafe { libc::munmap(gone.0.ptr.cast(), 2 * PAGE_USIZE) },
        0
    );
    expect_errno(
        dev.migrate_userptr(0x8000_0000, 2 * PAGE, SOFTGPU_BO_VRAM),
        EFAULT,
        "USERPTR_MIGRATE of unmapped memory",
    );
    std::mem::forget(gone);
}

/// A `MAP_SHARED` mapping: of anonymous memory (`fd` -1) or of a file.
struct SharedMem(*mut u8, usize);

impl SharedMem {
    fn new(len: usize, fd: i32) -> Self {
        let flags = libc::MAP_SHARED | if fd < 0 { libc::MAP_ANONYMOUS } else { 0 };
        // SAFETY: a fresh mapping; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Self(p.cast(), len)
    }

    fn addr(&self) -> u64 {
        self.0 as u64
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: unmapping what new() mapped.
        unsafe { libc::munmap(self.0.cast(), self.1) };
    }
}

/// An unlinked file of `len` bytes in /tmp (the guest's tmpfs).
fn tempfile(len: usize) -> i32 {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(c"/tmp".as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
    assert!(fd >= 0, "O_TMPFILE: {}", std::io::Error::last_os_error());
    // SAFETY: our descriptor.
    assert_eq!(unsafe { libc::ftruncate(fd, len as i64) }, 0);
    fd
}

/// The benchmark's `dmem` phase (make run's softgpu-bench, `--phases
/// dmem`) on a small range, so that it cannot silently break: two
/// repetitions, each checked by the benchmark itself (GPU checksums, every
/// page migrated each way, every page the CPU reads faulted back and
/// intact), and a summary with every ratio.
#[test]
fn dmem_benchmark_phase_smoke() {
    needs_vram();
    let stdout =
        crate::bench::run_bench(&["--phases", "dmem", "--dmem-mb", "4", "--dmem-repeat", "2"]);
    let results = crate::bench::bench_results(&stdout);
    let reps: Vec<&&str> = results
        .iter()
        .filter(|r| r.contains("\"phase\":\"dmem\","))
        .collect();
    assert_eq!(reps.len(), 2, "{stdout}");
    for r in reps {
        assert!(r.contains("\"ok\":true"), "{r}");
        // 4 MiB: 1024 pages, each faulted back by the CPU's read.
        assert!(r.contains("\"faulted_back\":1024"), "{r}");
        assert!(r.contains("\"to_vram_secs_emulated\":"), "{r}");
    }
    let summary = results
        .iter()
        .find(|r| r.contains("\"phase\":\"dmem-summary\""))
        .unwrap_or_else(|| panic!("no dmem-summary in:\n{stdout}"));
    assert!(summary.contains("\"reps\":2"), "{summary}");
    for ratio in [
        "to_vram_vs_memcpy",
        "to_system_vs_memcpy",
        "cpu_fault_back_vs_memcpy",
        "gpu_vram_first_vs_mirror_first",
        "gpu_vram_vs_mirror",
    ] {
        assert!(
            summary.contains(&format!("\"{ratio}\":"))
                && !summary.contains(&format!("\"{ratio}\":null")),
            "no {ratio} in {summary}"
        );
    }
    assert!(summary.contains("\"ok\":true"), "{summary}");
}
