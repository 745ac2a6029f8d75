//! Every ioctl with valid and invalid arguments. Errnos: -EINVAL for bad
//! sizes, alignment, flags, padding and ranges; -ENOENT for unknown handles
//! (the DRM lookup convention) and for unbinding nothing; -EEXIST for
//! overlapping binds; -EFAULT for bad user pointers. GEM_CLOSE of an
//! unknown handle is -EINVAL: that is the DRM core's answer. After each
//! rejected call the state is checked to be unchanged.

use libc::{EEXIST, EFAULT, EINVAL, ENOENT, ENOMEM, ENOSPC};
use softgpu::*;

use crate::common::*;

const VA: u64 = 0x4000_0000;
const BAD_HANDLES: [u32; 3] = [0, 0x00de_ad00, u32::MAX];

#[test]
fn open_finds_the_softgpu_render_node() {
    let dev = open();
    assert_eq!(ok(dev.driver_name(), "DRM_IOCTL_VERSION"), DRIVER_NAME);
    let path = dev.path().to_str().unwrap().to_string();
    assert!(path.starts_with("/dev/dri/renderD"), "opened {path}");
    let other = open();
    assert_eq!(other.path(), dev.path(), "both opens find the same node");
}

#[test]
fn null_argument_pointer_is_efault() {
    let dev = open();
    for (name, req) in SOFTGPU_IOCTLS {
        // SAFETY: the kernel only tries to copy from (and to) the NULL
        // argument, which fails.
        let r = unsafe { dev.ioctl_raw(req, std::ptr::null_mut::<u8>()) };
        expect_errno(r, EFAULT, &format!("{name} with a NULL argument"));
    }
}

#[test]
fn unknown_driver_ioctls_are_einval() {
    let dev = open();
    for nr in [
        DRM_COMMAND_BASE + DRM_SOFTGPU_NUM_IOCTLS,
        DRM_COMMAND_BASE + 0x20,
        DRM_COMMAND_END - 1,
    ] {
        let mut arg = [0u8; 64];
        let req = ioc(IOC_READ | IOC_WRITE, DRM_IOCTL_BASE, nr, arg.len());
        expect_errno(
            dev.ioctl(req, &mut arg),
            EINVAL,
            &format!("driver ioctl {nr:#x}, which softgpu does not have"),
        );
    }
}

#[test]
fn gem_create_makes_distinct_bos_of_the_right_kind() {
    let dev = open();
    let mut handles = Vec::new();
    for size in [PAGE, 3 * PAGE, 64 * MIB] {
        for flags in [0, SOFTGPU_BO_PINNED] {
            let h = create(&dev, size, flags);
            assert!(!handles.contains(&h), "handle {h} handed out twice");
            handles.push(h);
            let info = ok(dev.info(h), "GEM_INFO of a new BO");
            let what = format!("new BO of {size:#x} bytes, flags {flags:#x}: {info:?}");
            assert_eq!(info.size, size, "{what}: size");
            let want_flags = if flags & SOFTGPU_BO_PINNED != 0 {
                SOFTGPU_BO_INFO_PINNED
            } else {
                0
            };
            assert_eq!(info.flags, want_flags, "{what}: flags");
            assert_eq!(info.bindings, 0, "{what}: bindings");
            assert_eq!(info.resident_pages, 0, "{what}: resident_pages");
            assert_eq!(info.released, 0, "{what}: released");
            assert_eq!(info.refused, 0, "{what}: refused");
            assert_eq!(info.gpu_faults, 0, "{what}: gpu_faults");
        }
    }
    for h in handles {
        ok(dev.close_bo(h), "GEM_CLOSE");
        expect_errno(dev.info(h), ENOENT, "GEM_INFO after GEM_CLOSE");
    }
}

#[test]
fn gem_create_accepts_the_largest_size() {
    // "above 1 << SOFTGPU_VA_BITS" is invalid: exactly that is not. It may
    // still not fit the memory or the backing mount.
    let dev = open();
    match dev.create_bo(SOFTGPU_VA_END, 0) {
        Ok(h) => {
            assert_eq!(ok(dev.info(h), "GEM_INFO").size, SOFTGPU_VA_END);
            ok(dev.close_bo(h), "GEM_CLOSE");
        }
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(ENOMEM | ENOSPC)),
            "GEM_CREATE of 1 << 39 bytes: {e} (only ENOMEM/ENOSPC allowed)"
        ),
    }
}

#[test]
fn gem_create_rejects_bad_sizes() {
    let dev = open();
    for size in [
        0,
        1,
        100,
        PAGE - 1,
        PAGE + 1,
        3 * PAGE + 8,
        SOFTGPU_VA_END + PAGE,
        1 << 40,
        !(PAGE - 1),
        u64::MAX,
    ] {
        expect_errno(
            dev.create_bo(size, 0),
            EINVAL,
            &format!("GEM_CREATE of {size:#x} bytes"),
        );
    }
    // The file still works.
    let h = create(&dev, PAGE, 0);
    ok(dev.close_bo(h), "GEM_CLOSE");
}

#[test]
fn gem_create_rejects_unknown_flags() {
    let dev = open();
    // Placement flags alone are discrete mode's (see `ttm`); the pool flag
    // needs a placement, and pinned objects are not TTM's.
    for flags in [
        0x10,
        0x20,
        1 << 31,
        u32::MAX,
        SOFTGPU_BO_TTM_POOL,
        SOFTGPU_BO_PINNED | SOFTGPU_BO_VRAM,
        SOFTGPU_BO_PINNED | SOFTGPU_BO_SYSTEM,
    ] {
        expect_errno(
            dev.create_bo(PAGE, flags),
            EINVAL,
            &format!("GEM_CREATE with flags {flags:#x}"),
        );
    }
}

#[test]
fn gem_close_rejects_unknown_handles() {
    let dev = open();
    for h in BAD_HANDLES {
        expect_errno(
            dev.close_bo(h),
            EINVAL,
            &format!("GEM_CLOSE of handle {h:#x}"),
        );
    }
    let h = create(&dev, PAGE, 0);
    let keep = create(&dev, PAGE, 0);
    ok(dev.close_bo(h), "GEM_CLOSE");
    expect_errno(dev.close_bo(h), EINVAL, "second GEM_CLOSE of a handle");
    expect_errno(dev.info(h), ENOENT, "GEM_INFO of a closed handle");
    expect_errno(dev.mmap_offset(h), ENOENT, "MMAP_OFFSET of a closed handle");
    expect_errno(
        dev.bind(h, VA, 0, PAGE, 0),
        ENOENT,
        "VM_BIND of a closed handle",
    );
    expect_errno(
        dev.madvise(h, SOFTGPU_MADV_DONTNEED),
        ENOENT,
        "MADVISE of a closed handle",
    );
    expect_errno(
        dev.prime_export(h),
        ENOENT,
        "PRIME export of a closed handle",
    );
    assert_unbound(&dev, VA, "after binding a closed handle failed");
    // The other BO is untouched.
    assert_eq!(ok(dev.info(keep), "GEM_INFO of the other BO").size, PAGE);
}

#[test]
fn mmap_offset_is_stable_and_maps_the_bo() {
    let dev = open();
    let a = create(&dev, 2 * PAGE, 0);
    let b = create(&dev, 2 * PAGE, SOFTGPU_BO_PINNED);
    let oa = ok(dev.mmap_offset(a), "MMAP_OFFSET");
    let ob = ok(dev.mmap_offset(b), "MMAP_OFFSET");
    assert_ne!(oa, ob, "two BOs get distinct fake offsets");
    assert!(
        oa.is_multiple_of(PAGE) && ob.is_multiple_of(PAGE),
        "offsets {oa:#x} {ob:#x}"
    );
    assert_eq!(
        ok(dev.mmap_offset(a), "MMAP_OFFSET"),
        oa,
        "offset is stable"
    );
    for h in [a, b] {
        // Two mappings of the same BO share its pages.
        let mut m1 = map(&dev, h, 2 * PAGE);
        let m2 = map(&dev, h, 2 * PAGE);
        assert!(m1.as_slice().iter().all(|&x| x == 0), "new BO is zeroed");
        m1.as_mut_slice()[PAGE as usize + 7] = 0x5a;
        assert_eq!(m2.as_slice()[PAGE as usize + 7], 0x5a, "shared mapping");
    }
}

#[test]
fn mmap_offset_rejects_bad_handles_and_pad() {
    let dev = open();
    for h in BAD_HANDLES {
        expect_errno(
            dev.mmap_offset(h),
            ENOENT,
            &format!("MMAP_OFFSET of {h:#x}"),
        );
    }
    let h = create(&dev, PAGE, 0);
    let mut a = GemMmapOffset {
        handle: h,
        pad: 1,
        offset: 0,
    };
    expect_errno(
        dev.ioctl(DRM_IOCTL_SOFTGPU_GEM_MMAP_OFFSET, &mut a),
        EINVAL,
        "MMAP_OFFSET with nonzero pad",
    );
    ok(dev.mmap_offset(h), "MMAP_OFFSET after the rejected one");
}

#[test]
fn mmap_rejects_bad_offsets_and_sizes() {
    let dev = open();
    let h = create(&dev, 2 * PAGE, 0);
    let off = ok(dev.mmap_offset(h), "MMAP_OFFSET");
    let r = dev.mmap_at(off, 3 * PAGE as usize);
    assert!(r.is_err(), "mmap of 3 pages of a 2-page BO succeeded");
    let r = dev.mmap_at(0, PAGE as usize);
    assert!(r.is_err(), "mmap at offset 0 (no BO there) succeeded");
    ok(dev.close_bo(h), "GEM_CLOSE");
    let r = dev.mmap_at(off, PAGE as usize);
    assert!(r.is_err(), "mmap of a closed BO's offset succeeded");
}

#[test]
fn gem_info_rejects_unknown_handles() {
    let dev = open();
    for h in BAD_HANDLES {
        expect_errno(dev.info(h), ENOENT, &format!("GEM_INFO of {h:#x}"));
    }
}

#[test]
fn bind_maps_pages_and_counts_bindings() {
    let dev = open();
    let h = create(&dev, 4 * PAGE, 0);
    ok(dev.bind(h, VA, 0, 4 * PAGE, 0), "VM_BIND of the whole BO");
    let info = ok(dev.info(h), "GEM_INFO");
    assert_eq!(info.bindings, 1, "{info:?}");
    assert_eq!(
        info.resident_pages, 0,
        "binding faults nothing in: {info:?}"
    );
    ok(
        dev.bind(h, 2 * VA, PAGE, 2 * PAGE, SOFTGPU_BIND_READONLY),
        "VM_BIND of part of the BO, read-only",
    );
    // The last page of the VA space is usable.
    let last = SOFTGPU_VA_END - PAGE;
    ok(
        dev.bind(h, last, 3 * PAGE, PAGE, 0),
        "VM_BIND at the top of the VA space",
    );
    assert_eq!(ok(dev.info(h), "GEM_INFO").bindings, 3);
    for va in [VA, VA + 3 * PAGE, last] {
        assert_writable(&dev, va, "bound read-write");
    }
    assert_unbound(&dev, VA + 4 * PAGE, "just past the first binding");
    assert_unbound(&dev, 0, "VA 0, never bound");
}

#[test]
fn bind_rejects_unknown_handles() {
    let dev = open();
    for h in BAD_HANDLES {
        expect_errno(
            dev.bind(h, VA, 0, PAGE, 0),
            ENOENT,
            &format!("VM_BIND of handle {h:#x}"),
        );
    }
    assert_unbound(&dev, VA, "after the rejected binds");
}

/// Checks that a rejected bind left nothing behind.
#[track_caller]
fn assert_no_binding(dev: &Device, h: u32, vas: &[u64], what: &str) {
    let info = ok(dev.info(h), "GEM_INFO");
    assert_eq!(info.bindings, 0, "{what}: BO has bindings: {info:?}");
    for &va in vas {
        assert_unbound(dev, va, what);
    }
}

#[test]
fn bind_rejects_unaligned_or_empty_ranges() {
    let dev = open();
    let h = create(&dev, 4 * PAGE, 0);
    let cases = [
        (VA + 1, 0, PAGE, "unaligned gpu_va"),
        (VA + 2048, 0, PAGE, "half-page gpu_va"),
        (VA, 1, PAGE, "unaligned bo_offset"),
        (VA, 2048, PAGE, "half-page bo_offset"),
        (VA, 0, 1, "one-byte size"),
        (VA, 0, PAGE + 1, "unaligned size"),
        (VA, 0, 2 * PAGE - 8, "unaligned size below the BO size"),
        (VA, 0, 0, "zero size"),
    ];
    for (va, off, size, what) in cases {
        let what = format!("VM_BIND with {what} (va {va:#x}, offset {off:#x}, size {size:#x})");
        expect_errno(dev.bind(h, va, off, size, 0), EINVAL, &what);
        assert_no_binding(&dev, h, &[VA, VA + PAGE], &what);
    }
}

#[test]
fn bind_rejects_ranges_beyond_the_bo() {
    let dev = open();
    let h = create(&dev, 4 * PAGE, 0);
    let cases = [
        (0, 5 * PAGE, "size above the BO's"),
        (4 * PAGE, PAGE, "offset at the BO's end"),
        (3 * PAGE, 2 * PAGE, "range straddling the BO's end"),
        (SOFTGPU_VA_END, PAGE, "offset far beyond the BO"),
        (!(PAGE - 1), PAGE, "offset + size wrapping around to 0"),
        (PAGE, !(PAGE - 1), "huge size wrapping around"),
    ];
    for (off, size, what) in cases {
        let what = format!("VM_BIND with {what} (offset {off:#x}, size {size:#x})");
        expect_errno(dev.bind(h, VA, off, size, 0), EINVAL, &what);
        assert_no_binding(&dev, h, &[VA, VA + 3 * PAGE], &what);
    }
}

#[test]
fn bind_rejects_ranges_beyond_the_va_space() {
    let dev = open();
    let h = create(&dev, 2 * PAGE, 0);
    let cases = [
        (SOFTGPU_VA_END, PAGE, "gpu_va at the end of the VA space"),
        (
            SOFTGPU_VA_END - PAGE,
            2 * PAGE,
            "range straddling the end of the VA space",
        ),
        (1 << 63, PAGE, "gpu_va far above the VA space"),
        (!(PAGE - 1), 2 * PAGE, "gpu_va + size wrapping around"),
    ];
    for (va, size, what) in cases {
        let what = format!("VM_BIND with {what} (va {va:#x}, size {size:#x})");
        expect_errno(dev.bind(h, va, 0, size, 0), EINVAL, &what);
        assert_no_binding(&dev, h, &[SOFTGPU_VA_END - PAGE, 0], &what);
    }
}

#[test]
fn bind_rejects_unknown_flags() {
    let dev = open();
    let h = create(&dev, PAGE, 0);
    for flags in [2, 1 << 31, u32::MAX, SOFTGPU_BIND_READONLY | 2] {
        let what = format!("VM_BIND with flags {flags:#x}");
        expect_errno(dev.bind(h, VA, 0, PAGE, flags), EINVAL, &what);
        assert_no_binding(&dev, h, &[VA], &what);
    }
}

#[test]
fn bind_rejects_overlaps_with_eexist() {
    let dev = open();
    let a = create_bound(&dev, 4 * PAGE, 0, VA);
    let b = create(&dev, 8 * PAGE, 0);
    let cases = [
        (a, VA, 4 * PAGE, "the same range, same BO"),
        (b, VA, 4 * PAGE, "the same range"),
        (b, VA + PAGE, PAGE, "a range inside"),
        (b, VA - PAGE, 2 * PAGE, "a range over the start"),
        (b, VA + 3 * PAGE, 2 * PAGE, "a range over the end"),
        (b, VA - PAGE, 6 * PAGE, "a range around"),
    ];
    for (h, va, size, what) in cases {
        let what = format!("VM_BIND over an existing binding: {what} (va {va:#x}, size {size:#x})");
        expect_errno(dev.bind(h, va, 0, size, 0), EEXIST, &what);
        assert_eq!(ok(dev.info(a), "GEM_INFO").bindings, 1, "{what}");
        assert_eq!(ok(dev.info(b), "GEM_INFO").bindings, 0, "{what}");
        // The non-overlapping parts of the rejected range stay unbound.
        assert_unbound(&dev, VA - PAGE, &what);
        assert_unbound(&dev, VA + 4 * PAGE, &what);
        assert_writable(&dev, VA, &what);
    }
    // Adjacent ranges are fine.
    ok(
        dev.bind(b, VA + 4 * PAGE, 0, 4 * PAGE, 0),
        "VM_BIND right after",
    );
    ok(
        dev.bind(b, VA - 4 * PAGE, 0, 4 * PAGE, 0),
        "VM_BIND right before",
    );
    assert_eq!(ok(dev.info(b), "GEM_INFO").bindings, 2);
    assert_writable(&dev, VA - PAGE, "bound right before");
    assert_writable(&dev, VA + 4 * PAGE, "bound right after");
}

#[test]
fn unbind_removes_the_binding() {
    let dev = open();
    let h = create_bound(&dev, 4 * PAGE, 0, VA);
    run_ok(&dev, &[Cmd::fill(VA, 4 * PAGE, 1)], "fill of the bound BO");
    ok(dev.unbind(VA, 4 * PAGE), "VM_UNBIND");
    let info = ok(dev.info(h), "GEM_INFO");
    assert_eq!(info.bindings, 0, "after unbind: {info:?}");
    assert_eq!(info.resident_pages, 0, "after unbind: {info:?}");
    assert_unbound(&dev, VA, "after VM_UNBIND");
    assert_unbound(&dev, VA + 3 * PAGE, "after VM_UNBIND");
    // The range can be bound again, differently.
    ok(
        dev.bind(h, VA, 0, 4 * PAGE, SOFTGPU_BIND_READONLY),
        "VM_BIND again, read-only",
    );
    run_fault_at(
        &dev,
        &[probe_write(VA + PAGE)],
        VA + PAGE,
        "GPU write through the new read-only binding",
    );
    ok(dev.unbind(VA, 4 * PAGE), "VM_UNBIND");
    ok(dev.bind(h, VA, 0, 4 * PAGE, 0), "VM_BIND again");
    assert_writable(&dev, VA + PAGE, "bound again read-write");
}

#[test]
fn unbind_rejects_missing_bindings_and_wrong_sizes() {
    let dev = open();
    let h = create_bound(&dev, 4 * PAGE, 0, VA);
    let cases = [
        (2 * VA, PAGE, ENOENT, "where nothing was ever bound"),
        (
            VA + PAGE,
            PAGE,
            ENOENT,
            "inside a binding, not at its start",
        ),
        (VA + PAGE, 3 * PAGE, ENOENT, "at the middle, up to the end"),
        (VA, PAGE, EINVAL, "with a smaller size"),
        (VA, 8 * PAGE, EINVAL, "with a larger size"),
        (VA, 0, EINVAL, "with size 0"),
    ];
    for (va, size, err, what) in cases {
        let what = format!("VM_UNBIND {what} (va {va:#x}, size {size:#x})");
        expect_errno(dev.unbind(va, size), err, &what);
        assert_eq!(ok(dev.info(h), "GEM_INFO").bindings, 1, "{what}");
        assert_writable(&dev, VA, &what);
        assert_writable(&dev, VA + 3 * PAGE, &what);
    }
    ok(dev.unbind(VA, 4 * PAGE), "VM_UNBIND");
    expect_errno(dev.unbind(VA, 4 * PAGE), ENOENT, "second VM_UNBIND");
}

/// A bound 1-page BO whose first u32 the rejected jobs would have written.
fn target(dev: &Device) -> (u32, Mapping) {
    let h = create_bound(dev, PAGE, 0, VA);
    let m = map(dev, h, PAGE);
    (h, m)
}

#[track_caller]
fn assert_untouched(m: &Mapping, what: &str) {
    assert!(
        m.as_slice().iter().all(|&b| b == 0),
        "{what}: a rejected job wrote memory"
    );
}

#[test]
fn exec_rejects_bad_command_counts() {
    let dev = open();
    let (_, m) = target(&dev);
    let cmds = vec![Cmd::fill(VA, 4, 0xaaaa_aaaa); SOFTGPU_MAX_CMDS + 1];
    expect_errno(dev.exec(&[], 0), EINVAL, "EXEC of 0 commands");
    expect_errno(
        dev.exec(&cmds, 0),
        EINVAL,
        "EXEC of SOFTGPU_MAX_CMDS + 1 commands",
    );
    let mut a = Exec {
        cmds: cmds.as_ptr() as u64,
        num_cmds: u32::MAX,
        ..Default::default()
    };
    expect_errno(
        dev.ioctl(DRM_IOCTL_SOFTGPU_EXEC, &mut a),
        EINVAL,
        "EXEC of u32::MAX commands (must be refused before copying them)",
    );
    assert_untouched(&m, "after EXEC with bad counts");
    // Exactly the maximum is fine, and every command runs.
    let adds = vec![Cmd::atomic_add(VA + 8, 1, 1); SOFTGPU_MAX_CMDS];
    run_ok(&dev, &adds, "EXEC of SOFTGPU_MAX_CMDS atomic adds");
    assert_eq!(m.read_u64(8), SOFTGPU_MAX_CMDS as u64, "sum of the adds");
}

#[test]
fn exec_rejects_unknown_ops() {
    let dev = open();
    let (_, m) = target(&dev);
    for op in [0, SOFTGPU_CMD_BUSY + 1, 0x100, u32::MAX] {
        let bad = Cmd {
            op,
            dst: VA + 8,
            size: 8,
            ..Default::default()
        };
        let what = format!("EXEC with op {op:#x} after a valid FILL");
        expect_errno(
            dev.exec(&[Cmd::fill(VA, 4, 0xaaaa_aaaa), bad], 0),
            EINVAL,
            &what,
        );
        assert_untouched(&m, &what);
    }
}

#[test]
fn exec_rejects_command_flags() {
    let dev = open();
    let (_, m) = target(&dev);
    let cmds = [
        Cmd::fill(VA, 4, 1),
        Cmd::copy(VA + 8, VA, 4),
        Cmd::atomic_add(VA + 16, 1, 1),
        Cmd::checksum(VA + 24, VA, 8),
        Cmd::busy(1),
    ];
    for cmd in cmds {
        for flags in [1, 1 << 31] {
            let bad = Cmd { flags, ..cmd };
            let what = format!("EXEC of op {} with cmd flags {flags:#x}", cmd.op);
            expect_errno(
                dev.exec(&[Cmd::fill(VA, 4, 0xaaaa_aaaa), bad], 0),
                EINVAL,
                &what,
            );
            assert_untouched(&m, &what);
        }
    }
}

#[test]
fn exec_rejects_unknown_flags_and_pad() {
    let dev = open();
    let (_, m) = target(&dev);
    let cmds = [Cmd::fill(VA, 4, 0xaaaa_aaaa)];
    for (flags, pad) in [
        (2, 0),
        (1 << 31, 0),
        (SOFTGPU_EXEC_FENCE_OUT | 4, 0),
        (0, 1),
    ] {
        let mut a = Exec {
            cmds: cmds.as_ptr() as u64,
            num_cmds: 1,
            flags,
            pad,
            ..Default::default()
        };
        let what = format!("EXEC with flags {flags:#x} and pad {pad}");
        expect_errno(dev.ioctl(DRM_IOCTL_SOFTGPU_EXEC, &mut a), EINVAL, &what);
        assert_untouched(&m, &what);
    }
}

#[test]
fn exec_rejects_misaligned_and_bad_sizes() {
    let dev = open();
    let (_, m) = target(&dev);
    let cases = [
        (Cmd::atomic_add(VA + 4, 1, 1), "ATOMIC_ADD dst 4-aligned"),
        (Cmd::atomic_add(VA + 1, 1, 1), "ATOMIC_ADD dst unaligned"),
        (Cmd::checksum(VA + 4, VA, 8), "CHECKSUM dst 4-aligned"),
        (Cmd::checksum(VA + 12, VA, 8), "CHECKSUM dst 4-aligned"),
        (Cmd::checksum(VA + 3, VA, 8), "CHECKSUM dst unaligned"),
        (Cmd::fill(VA, 6, 1), "FILL size not a multiple of 4"),
        (Cmd::fill(VA, 2, 1), "FILL size 2"),
        (Cmd::fill(VA, PAGE + 1, 1), "FILL size PAGE + 1"),
        (
            Cmd {
                value: 1 << 32,
                ..Cmd::fill(VA, 4, 1)
            },
            "FILL value above 32 bits",
        ),
        (Cmd::busy(SOFTGPU_BUSY_MAX_US + 1), "BUSY above 1 s"),
        (Cmd::busy(u64::MAX), "BUSY u64::MAX us"),
    ];
    for (bad, what) in cases {
        let what = format!("EXEC with {what} after a valid FILL");
        expect_errno(
            dev.exec(&[Cmd::fill(VA, 4, 0xaaaa_aaaa), bad], 0),
            EINVAL,
            &what,
        );
        assert_untouched(&m, &what);
    }
}

/// Assumption (not spelled out by the header): COPY ranges that overlap
/// are rejected at submission, like the other checks that need no memory.
#[test]
fn exec_rejects_overlapping_copies() {
    let dev = open();
    let (_, m) = target(&dev);
    for (dst, src, size) in [
        (VA, VA, 8),
        (VA + 8, VA, 16),
        (VA, VA + 8, 16),
        (VA + 1, VA, 2),
    ] {
        let what = format!("EXEC of an overlapping COPY {src:#x} -> {dst:#x}, {size} bytes");
        expect_errno(
            dev.exec(
                &[
                    Cmd::fill(VA + 64, 4, 0xaaaa_aaaa),
                    Cmd::copy(dst, src, size),
                ],
                0,
            ),
            EINVAL,
            &what,
        );
        assert_untouched(&m, &what);
    }
    run_ok(&dev, &[Cmd::copy(VA + 16, VA, 16)], "adjacent COPY");
}

#[test]
fn exec_with_bad_command_pointers_is_efault() {
    let dev = open();
    let (_, m) = target(&dev);
    let anon = Anon::new(2 * PAGE as usize);
    let cmd_size = std::mem::size_of::<Cmd>();
    // Two commands, the second on a page we make inaccessible.
    let first = PAGE as usize - cmd_size;
    // SAFETY: in bounds of the writable first page, and 8-aligned.
    unsafe {
        anon.ptr
            .add(first)
            .cast::<Cmd>()
            .write(Cmd::fill(VA, 4, 0xaaaa_aaaa))
    };
    anon.protect_none(PAGE as usize, PAGE as usize);
    let base = anon.ptr as u64;
    let cases = [
        (0, 1, "NULL"),
        (base + PAGE, 1, "an inaccessible page"),
        (
            base + first as u64,
            2,
            "an array running into an inaccessible page",
        ),
        (0xffff_8880_0000_0000, 1, "a kernel address"),
        (u64::MAX - 7, 1, "the top of the address space"),
    ];
    for (cmds, num_cmds, what) in cases {
        let mut a = Exec {
            cmds,
            num_cmds,
            ..Default::default()
        };
        let what = format!("EXEC with cmds pointing at {what}");
        expect_errno(dev.ioctl(DRM_IOCTL_SOFTGPU_EXEC, &mut a), EFAULT, &what);
        assert_untouched(&m, &what);
    }
    // The readable first command alone is fine.
    let mut a = Exec {
        cmds: base + first as u64,
        num_cmds: 1,
        ..Default::default()
    };
    ok(
        dev.ioctl(DRM_IOCTL_SOFTGPU_EXEC, &mut a),
        "EXEC of the readable command",
    );
    let (status, _) = ok(dev.wait(a.seqno, WAIT_NS), "WAIT");
    assert_eq!(status, 0);
    assert_eq!(m.read_u32(0), 0xaaaa_aaaa);
}

#[test]
fn exec_without_fence_out_returns_fence_fd_minus_one() {
    let dev = open();
    let (_, m) = target(&dev);
    let cmds = [Cmd::fill(VA, 4, 7)];
    let mut a = Exec {
        cmds: cmds.as_ptr() as u64,
        num_cmds: 1,
        fence_fd: 0,
        ..Default::default()
    };
    ok(
        dev.ioctl(DRM_IOCTL_SOFTGPU_EXEC, &mut a),
        "EXEC without FENCE_OUT",
    );
    assert_eq!(a.fence_fd, -1, "fence_fd without SOFTGPU_EXEC_FENCE_OUT");
    assert_eq!(ok(dev.wait(a.seqno, WAIT_NS), "WAIT").0, 0);
    assert_eq!(m.read_u32(0), 7);
}

#[test]
fn exec_seqnos_increase() {
    let dev = open();
    let _ = target(&dev);
    let mut last = None;
    for i in 0..8 {
        let (seqno, _) = ok(dev.exec(&[Cmd::fill(VA, 4, i)], 0), "EXEC");
        if let Some(prev) = last {
            assert!(seqno > prev, "seqno {seqno} after {prev}");
        }
        last = Some(seqno);
    }
    assert_eq!(ok(dev.wait(last.unwrap(), WAIT_NS), "WAIT").0, 0);
}

#[test]
fn wait_rejects_unknown_seqnos_and_pad() {
    let dev = open();
    for seqno in [0, 1, u64::MAX] {
        expect_errno(
            dev.wait(seqno, 0),
            EINVAL,
            &format!("WAIT for seqno {seqno} in a file that submitted nothing"),
        );
    }
    let _ = target(&dev);
    let (seqno, _) = ok(dev.exec(&[Cmd::fill(VA, 4, 1)], 0), "EXEC");
    for bad in [seqno + (1 << 40), u64::MAX] {
        expect_errno(
            dev.wait(bad, WAIT_NS),
            EINVAL,
            &format!("WAIT for seqno {bad}, never submitted (last is {seqno})"),
        );
    }
    let mut a = Wait {
        seqno,
        timeout_ns: WAIT_NS,
        pad: 1,
        ..Default::default()
    };
    expect_errno(
        dev.ioctl(DRM_IOCTL_SOFTGPU_WAIT, &mut a),
        EINVAL,
        "WAIT with nonzero pad",
    );
    assert_eq!(ok(dev.wait(seqno, WAIT_NS), "WAIT").0, 0);
}

#[test]
fn wait_tracks_the_last_1024_jobs() {
    let dev = open();
    let (_, m) = target(&dev);
    let n = SOFTGPU_TRACKED_SEQNOS + 1;
    let seqnos: Vec<u64> = (0..n)
        .map(|_| ok(dev.exec(&[Cmd::atomic_add(VA, 1, 1)], 0), "EXEC").0)
        .collect();
    let (status, _) = ok(dev.wait(seqnos[n - 1], WAIT_NS), "WAIT for the last job");
    assert_eq!(status, 0);
    assert_eq!(m.read_u64(0), n as u64, "every job ran");
    expect_errno(
        dev.wait(seqnos[0], 0),
        EINVAL,
        "WAIT for the job before the last 1024",
    );
    for (i, &s) in seqnos.iter().enumerate().skip(1) {
        let (status, _) = ok(
            dev.wait(s, 0),
            &format!("WAIT for job {i} of the last 1024"),
        );
        assert_eq!(status, 0, "job {i}");
    }
}
