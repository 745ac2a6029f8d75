//! Integrated mode: a guest without the VRAM device (`VRAM=0`), where
//! softgpu is the system-memory GPU it was before discrete mode. What
//! discrete mode adds is refused with `ENODEV` and changes nothing, and
//! no `vram` region shows anywhere. A guest with VRAM skips these tests
//! (`runner.skip=`, set by scripts/run-vm.sh), as one without VRAM skips
//! `ttm` and `dmem`.

use libc::{EINVAL, ENODEV};
use softgpu::*;

use crate::common::*;
use crate::ttm::{assert_fdinfo, object_count};
use crate::userptr::{bind_mem, Mem, VA};
use crate::vram::needs_no_vram;

/// Every placement flag is ENODEV (or EINVAL for bad combinations), and
/// nothing is created; GEM_MOVE of an ordinary object is EINVAL.
#[test]
fn placement_flags_are_enodev() {
    needs_no_vram();
    let dev = open();
    let before = object_count(&dev);
    for flags in [
        SOFTGPU_BO_VRAM,
        SOFTGPU_BO_SYSTEM,
        SOFTGPU_BO_VRAM | SOFTGPU_BO_SYSTEM,
        SOFTGPU_BO_VRAM | SOFTGPU_BO_TTM_POOL,
    ] {
        expect_errno(
            dev.create_bo(MIB, flags),
            ENODEV,
            &format!("GEM_CREATE with flags {flags:#x} and no VRAM device"),
        );
    }
    expect_errno(
        dev.create_bo(MIB, SOFTGPU_BO_TTM_POOL),
        EINVAL,
        "GEM_CREATE with the pool flag alone",
    );
    assert_eq!(
        object_count(&dev),
        before,
        "objects made by failed GEM_CREATEs"
    );
    let h = create(&dev, PAGE, 0);
    expect_errno(
        dev.move_bo(h, SOFTGPU_BO_VRAM),
        EINVAL,
        "GEM_MOVE of a gemfs BO",
    );
}

/// USERPTR_MIGRATE to VRAM is ENODEV, and the memory stays as it was.
#[test]
fn userptr_migrate_is_enodev() {
    needs_no_vram();
    let dev = open();
    let m = Mem::new(2);
    m.write(0, &[7; 16]);
    bind_mem(&dev, &m, VA, 0);
    expect_errno(
        dev.migrate_userptr(VA, 2 * PAGE, SOFTGPU_BO_VRAM),
        ENODEV,
        "USERPTR_MIGRATE without a VRAM device",
    );
    assert_eq!(m.read(0, 16), vec![7; 16], "memory changed");
}

/// fdinfo has a `system` region and no `vram` one (nor a `memory` one).
#[test]
fn fdinfo_has_no_vram_region() {
    needs_no_vram();
    let dev = open();
    assert_fdinfo(&dev, (0, 0), None, "of a new file");
    let plain = create(&dev, 16 * PAGE, 0);
    map(&dev, plain, 16 * PAGE).as_mut_slice().fill(7);
    let p = 16 * PAGE;
    assert_fdinfo(&dev, (p, p), None, "with an ordinary object");
}
