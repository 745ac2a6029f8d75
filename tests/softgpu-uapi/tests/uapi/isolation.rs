//! What IGT checks of every driver's objects: nothing of one object, file
//! or process leaks into another. Fake offsets are per file; a new object
//! holds zeros even where a freed one was; a mapping keeps only its own
//! object; debuggers' paths into a mapping (`/proc/<pid>/mem`,
//! `ptrace`) see the object's bytes; a process that dies with everything
//! in flight leaves no object behind.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use libc::{EACCES, EINVAL};
use softgpu::*;

use crate::common::*;

const VA: u64 = 0x3_0000_0000;
const RES_VA: u64 = 0x3_8000_0000;

/// The two kinds of BO, by their `GEM_CREATE` flags.
const KINDS: [(u32, &str); 2] = [(0, "gemfs"), (SOFTGPU_BO_PINNED, "pinned")];

/// Waits until the device has `want` objects: freeing is asynchronous
/// (jobs in flight keep their objects until they retire).
fn wait_object_count(dev: &Device, want: usize, what: &str) {
    let start = Instant::now();
    loop {
        let n = object_count(dev);
        if n == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: {n} objects left, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fake mmap offset is a capability of the file that created it: another
/// file gets `EACCES` for a live object's offset, and an offset no object
/// has is `EINVAL` (`drm_gem_mmap()`), in both cases with nothing mapped.
#[test]
fn another_files_fake_offset_is_refused() {
    let a = open();
    let b = open();
    for (flags, kind) in KINDS {
        let h = create(&a, 4 * PAGE, flags);
        let off = ok(a.mmap_offset(h), "MMAP_OFFSET");
        expect_errno(
            b.mmap_at(off, 4 * PAGE as usize),
            EACCES,
            &format!("B mapping A's {kind} BO through A's offset"),
        );
        // The lookup is exact (`drm_vma_offset_exact_lookup_locked()`):
        // nobody maps an object from inside it.
        expect_errno(
            b.mmap_at(off + PAGE, PAGE as usize),
            EINVAL,
            &format!("B mapping from the second page of A's {kind} BO"),
        );
        expect_errno(
            a.mmap_at(off + PAGE, PAGE as usize),
            EINVAL,
            &format!("A mapping from the second page of its {kind} BO"),
        );
        ok(a.close_bo(h), "GEM_CLOSE");
        // The offset died with the object: nobody maps it now.
        expect_errno(
            a.mmap_at(off, 4 * PAGE as usize),
            EINVAL,
            &format!("A mapping the offset of its closed {kind} BO"),
        );
    }
}

/// A new object reads zeros everywhere, through the CPU and the GPU, also
/// right after another process filled and freed one of the same size
/// (whose pages the allocator is likely to hand out again).
#[test]
fn a_new_bo_reads_zeros_after_another_process_freed_one() {
    const SIZE: u64 = 64 * PAGE;
    for (flags, kind) in KINDS {
        let r = in_child(Duration::from_secs(120), || {
            let dev = Device::open().map_err(|e| format!("open: {e}"))?;
            for _ in 0..8 {
                let h = create_bound(&dev, SIZE, flags, VA);
                let mut m = map(&dev, h, SIZE);
                m.as_mut_slice().fill(0xa5);
                run_ok(&dev, &[Cmd::fill(VA, SIZE / 2, 0x5a5a_5a5a)], "FILL");
                drop(m);
                ok(dev.unbind(VA, SIZE), "VM_UNBIND");
                ok(dev.close_bo(h), "GEM_CLOSE");
            }
            Ok(())
        });
        assert_child_ok(r);
        let dev = open();
        let zeros = fnv1a64(&vec![0u8; SIZE as usize]);
        for i in 0..8 {
            let h = create_bound(&dev, SIZE, flags, VA);
            // The GPU first, so that its pages are faulted in by the GPU.
            assert_eq!(
                gpu_checksum(&dev, VA, SIZE, RES_VA),
                zeros,
                "{kind} BO {i}: the GPU read something other than zeros"
            );
            let m = map(&dev, h, SIZE);
            if let Some(at) = m.as_slice().iter().position(|&b| b != 0) {
                panic!("{kind} BO {i}: byte {at} of a new BO is not zero");
            }
            drop(m);
            ok(dev.unbind(VA, SIZE), "VM_UNBIND");
            ok(dev.close_bo(h), "GEM_CLOSE");
        }
    }
}

/// A mapping outliving its handle keeps the object's backing file, and
/// only that: the GEM object itself is freed at close (the mapping was
/// switched to the backing file at mmap), a later object of the same size
/// never shows through the mapping, and writes through it never reach the
/// later object.
#[test]
fn a_stale_mapping_keeps_only_its_own_object() {
    const SIZE: u64 = 16 * PAGE;
    let dev = open();
    for (flags, kind) in KINDS {
        let before = object_count(&dev);
        let old = create(&dev, SIZE, flags);
        let mut stale = map(&dev, old, SIZE);
        let mine = pattern(SIZE as usize, 7);
        stale.as_mut_slice().copy_from_slice(&mine);
        ok(dev.close_bo(old), "GEM_CLOSE of the mapped BO");
        // The mapping keeps the backing file, not the GEM object.
        wait_object_count(&dev, before, kind);

        let new = create_bound(&dev, SIZE, flags, VA);
        run_ok(
            &dev,
            &[Cmd::fill(VA, SIZE, 0x1234_5678)],
            "FILL of the new BO",
        );
        assert!(
            stale.as_slice() == &mine[..],
            "{kind}: the stale mapping shows other bytes than its own object's"
        );
        stale.as_mut_slice().fill(0xee);
        let filled = fnv1a64(&filled(SIZE as usize, 0x1234_5678));
        assert_eq!(
            gpu_checksum(&dev, VA, SIZE, RES_VA),
            filled,
            "{kind}: a write through the stale mapping reached the new BO"
        );
        assert!(
            stale.as_slice().iter().all(|&b| b == 0xee),
            "{kind}: the stale mapping lost its own write"
        );
        drop(stale);
        ok(dev.unbind(VA, SIZE), "VM_UNBIND");
        ok(dev.close_bo(new), "GEM_CLOSE");
        wait_object_count(&dev, before, kind);
    }
}

/// `/proc/self/mem` reaches a BO mapping through the mm's `access_remote_vm()`
/// path, as a debugger does: reads see the BO's bytes, writes land in the
/// BO (seen by the CPU mapping and by the GPU).
#[test]
fn proc_mem_reads_and_writes_a_bo_mapping() {
    const SIZE: u64 = 8 * PAGE;
    let dev = open();
    let mem = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .expect("opening /proc/self/mem");
    for (flags, kind) in KINDS {
        let h = create_bound(&dev, SIZE, flags, VA);
        run_ok(&dev, &[Cmd::fill(VA, SIZE, 0xc0de_f00d)], "FILL");
        let m = map(&dev, h, SIZE);
        let mut buf = vec![0u8; SIZE as usize];
        mem.read_exact_at(&mut buf, m.addr() as u64)
            .unwrap_or_else(|e| panic!("{kind}: reading the mapping through /proc/self/mem: {e}"));
        assert!(
            buf == filled(SIZE as usize, 0xc0de_f00d),
            "{kind}: /proc/self/mem read other bytes than the GPU wrote"
        );
        let mine = pattern(SIZE as usize, 11);
        mem.write_all_at(&mine, m.addr() as u64)
            .unwrap_or_else(|e| panic!("{kind}: writing the mapping through /proc/self/mem: {e}"));
        assert!(
            m.as_slice() == &mine[..],
            "{kind}: a /proc/self/mem write is not in the mapping"
        );
        assert_eq!(
            gpu_checksum(&dev, VA, SIZE, RES_VA),
            fnv1a64(&mine),
            "{kind}: the GPU does not see the /proc/self/mem write"
        );
        drop(m);
        ok(dev.unbind(VA, SIZE), "VM_UNBIND");
        ok(dev.close_bo(h), "GEM_CLOSE");
    }
}

/// A tracer's `PTRACE_PEEKDATA` and `PTRACE_POKEDATA` on a stopped child's
/// BO mapping read and write the BO.
#[test]
fn ptrace_peeks_and_pokes_a_childs_bo_mapping() {
    const SIZE: u64 = 2 * PAGE;
    const POKED: u64 = 0x0123_4567_89ab_cdef;
    let dev = open();
    for (flags, kind) in KINDS {
        let h = create_bound(&dev, SIZE, flags, VA);
        let mut m = map(&dev, h, SIZE);
        m.write_u64(0, 0xfeed_face_cafe_beef);
        let addr = m.addr();
        // SAFETY: the child only calls async-signal-safe functions and
        // reads its copy of the mapping before _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: in the child: become traced, stop, then check the
            // tracer's poke (the mapping is shared with the parent).
            unsafe {
                libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
                libc::raise(libc::SIGSTOP);
                let seen = core::ptr::read_volatile((addr + 8) as *const u64);
                libc::_exit(if seen == POKED { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFSTOPPED(status),
            "{kind}: child did not stop: {status:#x}"
        );
        // SAFETY: PEEKDATA of a stopped tracee; errno tells a failure apart
        // from a word that happens to be -1.
        let word = unsafe {
            *libc::__errno_location() = 0;
            let w = libc::ptrace(libc::PTRACE_PEEKDATA, pid, addr, 0);
            assert_eq!(
                *libc::__errno_location(),
                0,
                "{kind}: PTRACE_PEEKDATA: {}",
                std::io::Error::last_os_error()
            );
            w as u64
        };
        assert_eq!(
            word, 0xfeed_face_cafe_beef,
            "{kind}: PEEKDATA read the wrong word"
        );
        // SAFETY: POKEDATA into the stopped tracee's mapping.
        let r = unsafe { libc::ptrace(libc::PTRACE_POKEDATA, pid, addr + 8, POKED) };
        assert_eq!(
            r,
            0,
            "{kind}: PTRACE_POKEDATA: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: resuming and reaping our tracee.
        unsafe {
            assert_eq!(libc::ptrace(libc::PTRACE_CONT, pid, 0, 0), 0);
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{kind}: the child did not see the poke: {status:#x}"
        );
        assert_eq!(m.read_u64(8), POKED, "{kind}: the poke is not in the BO");
        drop(m);
        ok(dev.unbind(VA, SIZE), "VM_UNBIND");
        ok(dev.close_bo(h), "GEM_CLOSE");
    }
}

/// A process that exits with objects bound, mapped, exported, busy on the
/// engine and with a userptr binding leaves no object behind once its jobs
/// retire.
#[test]
fn exiting_with_everything_in_flight_leaves_no_object_behind() {
    const SIZE: u64 = 32 * PAGE;
    let dev = open();
    let before = object_count(&dev);
    let r = in_child(Duration::from_secs(120), || {
        let dev = Device::open().map_err(|e| format!("open: {e}"))?;
        let mut keep = Vec::new();
        for (i, (flags, _)) in KINDS.iter().enumerate() {
            let va = VA + i as u64 * SIZE;
            let h = create_bound(&dev, SIZE, *flags, va);
            keep.push(map(&dev, h, SIZE));
            keep_fd(
                dev.prime_export(h)
                    .map_err(|e| format!("PRIME export: {e}"))?,
            );
        }
        // An unbound, unmapped one too.
        create(&dev, SIZE, 0);
        let anon = Anon::new(SIZE as usize);
        let uva = VA + 4 * SIZE;
        // SAFETY: `anon` stays mapped until the process exits.
        unsafe { dev.userptr(anon.ptr as u64, SIZE, uva, 0) }
            .map_err(|e| format!("USERPTR: {e}"))?;
        std::mem::forget(anon);
        let cmds = [
            Cmd::fill(VA, 2 * SIZE, 0x77),
            Cmd::busy(200_000),
            Cmd::copy(uva, VA, SIZE),
            Cmd::busy(200_000),
        ];
        dev.exec(&cmds, 0).map_err(|e| format!("EXEC: {e}"))?;
        std::mem::forget(keep);
        // SAFETY: ends the child with everything still open and in flight.
        unsafe { libc::_exit(0) }
    });
    assert_child_ok(r);
    wait_object_count(&dev, before, "after the child exited");
}

/// Keeps a file descriptor open until the process exits.
fn keep_fd(fd: std::os::fd::OwnedFd) {
    std::mem::forget(fd);
}
