//! GEM_MADVISE: DONTNEED marks a BO purgeable, WILLNEED reports whether
//! its contents survived. Without memory pressure nothing is purged.

use libc::{EINVAL, ENOENT};
use softgpu::*;

use crate::common::*;

const VA: u64 = 0x2000_0000;
const RES_VA: u64 = 0x3000_0000;

#[test]
fn dontneed_then_willneed_retains_the_contents() {
    for flags in [0, SOFTGPU_BO_PINNED] {
        let dev = open();
        let size = 4 * PAGE;
        let h = create(&dev, size, flags);
        let mut m = map(&dev, h, size);
        let data = pattern(size as usize, 11);
        m.as_mut_slice().copy_from_slice(&data);

        ok(dev.madvise(h, SOFTGPU_MADV_DONTNEED), "MADVISE DONTNEED");
        let info = ok(dev.info(h), "GEM_INFO");
        assert_eq!(
            info.flags & (SOFTGPU_BO_INFO_PURGEABLE | SOFTGPU_BO_INFO_PURGED),
            SOFTGPU_BO_INFO_PURGEABLE,
            "flags {flags:#x}: after DONTNEED: {info:?}"
        );
        let retained = ok(dev.madvise(h, SOFTGPU_MADV_WILLNEED), "MADVISE WILLNEED");
        assert!(
            retained,
            "flags {flags:#x}: WILLNEED reports the BO purged (retained 0) without memory pressure"
        );
        let info = ok(dev.info(h), "GEM_INFO");
        assert_eq!(
            info.flags & (SOFTGPU_BO_INFO_PURGEABLE | SOFTGPU_BO_INFO_PURGED),
            0,
            "flags {flags:#x}: after WILLNEED: {info:?}"
        );
        assert!(
            m.as_slice() == &data[..],
            "flags {flags:#x}: contents changed"
        );

        // The GPU sees the same contents.
        ok(dev.bind(h, VA, 0, size, 0), "VM_BIND");
        let r = create_bound(&dev, PAGE, 0, RES_VA);
        let res = map(&dev, r, PAGE);
        run_ok(&dev, &[Cmd::checksum(RES_VA, VA, size)], "CHECKSUM");
        assert_eq!(
            res.read_u64(0),
            fnv1a64(&data),
            "flags {flags:#x}: GPU checksum"
        );
    }
}

#[test]
fn madvise_rejects_bad_values_handles_and_pad() {
    let dev = open();
    let h = create(&dev, PAGE, 0);
    for madv in [2, 3, 0x100, u32::MAX] {
        let what = format!("MADVISE with madv {madv:#x}");
        expect_errno(dev.madvise(h, madv), EINVAL, &what);
        let info = ok(dev.info(h), "GEM_INFO");
        assert_eq!(info.flags, 0, "{what} changed the BO: {info:?}");
    }
    for bad in [0, 0x00de_ad00, u32::MAX] {
        expect_errno(
            dev.madvise(bad, SOFTGPU_MADV_DONTNEED),
            ENOENT,
            &format!("MADVISE of handle {bad:#x}"),
        );
    }
    let mut a = GemMadvise {
        handle: h,
        madv: SOFTGPU_MADV_DONTNEED,
        retained: 0,
        pad: 1,
    };
    expect_errno(
        dev.ioctl(DRM_IOCTL_SOFTGPU_GEM_MADVISE, &mut a),
        EINVAL,
        "MADVISE DONTNEED with nonzero pad",
    );
    let info = ok(dev.info(h), "GEM_INFO");
    assert_eq!(
        info.flags & SOFTGPU_BO_INFO_PURGEABLE,
        0,
        "the rejected DONTNEED marked the BO purgeable: {info:?}"
    );
}

#[test]
fn bound_dontneed_bo_stays_usable() {
    // DONTNEED on a bound BO is allowed; only unbound ones may be purged.
    let dev = open();
    let h = create_bound(&dev, 2 * PAGE, 0, VA);
    let m = map(&dev, h, 2 * PAGE);
    ok(
        dev.madvise(h, SOFTGPU_MADV_DONTNEED),
        "MADVISE DONTNEED of a bound BO",
    );
    run_ok(&dev, &[Cmd::fill(VA, 2 * PAGE, 0x1234_5678)], "FILL");
    assert!(m.as_slice() == &filled(2 * PAGE as usize, 0x1234_5678)[..]);
    assert!(ok(
        dev.madvise(h, SOFTGPU_MADV_WILLNEED),
        "MADVISE WILLNEED"
    ));
}
