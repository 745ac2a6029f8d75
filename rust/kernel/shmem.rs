// SPDX-License-Identifier: GPL-2.0

//! shmem/tmpfs, and tmpfs variants with their own address space operations.
//!
//! A tmpfs variant is a filesystem type whose mounts are tmpfs in every
//! respect (mount options, swap, huge pages, truncation, fallocate, GUP,
//! khugepaged) except for the address space operations of its regular
//! files, of which it may replace `->migrate_folio` (see
//! `shmem_init_fs_context_aops()`).
//!
//! C header: [`include/linux/shmem_fs.h`](srctree/include/linux/shmem_fs.h).

use crate::{
    bindings,
    error::{code::EINVAL, from_err_ptr, to_result, Result},
    folio::{Folio, LockedFolio},
    fs::{AddressSpace, File, FsContext, Mount},
    mm::migrate::MigrateMode,
    str::CStr,
    types::ARef,
};
use core::{marker::PhantomData, ptr::NonNull};

/// The operations a tmpfs variant may change.
pub trait VariantOps {
    /// Migrates the folio `src` of `mapping` to `dst`
    /// (`->migrate_folio`). Both are locked; on success the page cache
    /// entry must point to `dst` (as [`AddressSpace::migrate_folio_default`]
    /// does). Must not sleep when `mode` is [`MigrateMode::Async`].
    fn migrate_folio(
        mapping: &AddressSpace,
        dst: &LockedFolio<'_>,
        src: &LockedFolio<'_>,
        mode: MigrateMode,
    ) -> Result;
}

/// The address space operations of a tmpfs variant: shmem's own, with
/// `->migrate_folio` from `T`.
pub struct VariantAops<T: VariantOps>(PhantomData<T>);

impl<T: VariantOps> VariantAops<T> {
    /// The operations table. Everything but `->migrate_folio` is shmem's, so
    /// that writeback to swap, writes, dirtying and memory-failure behave
    /// exactly as on tmpfs.
    pub const TABLE: bindings::address_space_operations = bindings::address_space_operations {
        writepage: Some(bindings::shmem_writepage),
        dirty_folio: Some(bindings::noop_dirty_folio),
        write_begin: Some(bindings::shmem_write_begin),
        write_end: Some(bindings::shmem_write_end),
        migrate_folio: Some(migrate_folio_callback::<T>),
        error_remove_folio: Some(bindings::shmem_error_remove_folio),
        // SAFETY: all other members are optional function pointers, for
        // which zero is `None`.
        ..unsafe { core::mem::zeroed() }
    };

    /// Initialises a mount of the variant (its `->init_fs_context`): tmpfs's
    /// context, options and superblock, with the variant's operations.
    pub fn init_fs_context(fc: &mut FsContext) -> Result {
        let table: &'static bindings::address_space_operations = &Self::TABLE;
        // SAFETY: `fc` is a context being initialised; `table` is static,
        // so it outlives every superblock made from the context.
        to_result(unsafe { bindings::shmem_init_fs_context_aops(fc.as_raw(), table) })
    }
}

/// `->migrate_folio` of [`VariantAops<T>`].
///
/// # Safety
///
/// Called by the migration core only: `src` is a folio of `mapping`,
/// both folios are locked and referenced.
unsafe extern "C" fn migrate_folio_callback<T: VariantOps>(
    mapping: *mut bindings::address_space,
    dst: *mut bindings::folio,
    src: *mut bindings::folio,
    mode: bindings::migrate_mode,
) -> crate::ffi::c_int {
    // SAFETY: the migration core calls `->migrate_folio` with the mapping of
    // `src`, whose inode it keeps alive, and with both folios locked and
    // referenced for the duration of the call.
    let (mapping, dst, src) = unsafe {
        (
            AddressSpace::from_raw(mapping),
            LockedFolio::from_locked(dst),
            LockedFolio::from_locked(src),
        )
    };
    let Some(mode) = MigrateMode::from_raw(mode) else {
        return EINVAL.to_errno();
    };
    match T::migrate_folio(mapping, &dst, &src, mode) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Creates an unlinked file of `size` bytes on `mnt`, which must be a tmpfs
/// or tmpfs-variant mount (`shmem_file_setup_with_mnt()`).
///
/// `vm_flags` takes `VM_NORESERVE` to account memory as it is used rather
/// than all at creation.
pub fn file_setup(mnt: &Mount, name: &CStr, size: i64, vm_flags: usize) -> Result<ARef<File>> {
    // SAFETY: `mnt` is a live mount; `name` is NUL terminated and copied.
    let f = from_err_ptr(unsafe {
        bindings::shmem_file_setup_with_mnt(mnt.as_raw(), name.as_char_ptr(), size, vm_flags as _)
    })?;
    // SAFETY: a successful `shmem_file_setup_with_mnt` returns a new file
    // with one reference, now owned by the `ARef`.
    Ok(unsafe { ARef::from_raw(NonNull::new_unchecked(f.cast())) })
}

/// Creates an unlinked file of `size` bytes on the kernel's internal tmpfs
/// mount (`shmem_file_setup()`), as GEM does for its objects.
pub fn file_setup_internal(name: &CStr, size: i64, vm_flags: usize) -> Result<ARef<File>> {
    // SAFETY: `name` is NUL terminated and copied.
    let f = from_err_ptr(unsafe {
        bindings::shmem_file_setup(name.as_char_ptr(), size, vm_flags as _)
    })?;
    // SAFETY: as in `file_setup`.
    Ok(unsafe { ARef::from_raw(NonNull::new_unchecked(f.cast())) })
}

/// Returns the folio holding page `index` of a shmem `mapping`, reading it
/// back from swap or allocating it as needed, with the mapping's own
/// allocation flags (`GFP_HIGHUSER_MOVABLE` unless its owner changed them;
/// `shmem_read_folio()`). The folio is uptodate and unlocked, and the
/// caller owns a reference to it.
pub fn read_folio(mapping: &AddressSpace, index: usize) -> Result<ARef<Folio>> {
    // SAFETY: `mapping` is valid; shmem refuses a mapping that is not its
    // own with an error pointer.
    let f = from_err_ptr(unsafe {
        bindings::shmem_read_folio_gfp(
            mapping.as_raw(),
            index as _,
            bindings::mapping_gfp_mask(mapping.as_raw()),
        )
    })?;
    // SAFETY: success returns a referenced folio, now owned.
    Ok(unsafe { ARef::from_raw(NonNull::new_unchecked(f.cast())) })
}

/// Drops the contents of bytes `[start, end]` (inclusive; `end == -1` for
/// "to the end of the file") of a shmem `file` from the page cache and swap
/// (`shmem_truncate_range()`); the file keeps its size and reads back zeros
/// there. Mapped pages are unmapped first. This is how a driver purges the
/// backing of an object whose contents userspace said it does not need.
///
/// May sleep: takes folio locks. `start` must be page aligned, and `end + 1`
/// too unless `end == -1`; anything else is refused with `EINVAL`.
pub fn truncate_range(file: &File, start: i64, end: i64) -> Result {
    let page = crate::page::PAGE_SIZE as i64;
    if start < 0 || start % page != 0 || (end != -1 && (end < start || (end + 1) % page != 0)) {
        return Err(EINVAL);
    }
    // shmem_truncate_range() would take a non-shmem inode for one of its
    // own and corrupt it.
    // SAFETY: `file` pins its mapping.
    if !unsafe { bindings::shmem_mapping(file.mapping().as_raw()) } {
        return Err(EINVAL);
    }
    // SAFETY: the file pins its inode, a shmem inode (checked above); the
    // range is valid (checked above).
    unsafe { bindings::shmem_truncate_range((*file.as_raw()).f_inode, start, end) };
    Ok(())
}
