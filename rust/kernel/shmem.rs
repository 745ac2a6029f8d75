// SPDX-License-Identifier: GPL-2.0

//! shmem/tmpfs, and tmpfs variants with their own address space operations.
//!
//! A tmpfs variant is a filesystem type whose mounts are tmpfs in every
//! respect (mount options, swap, huge pages, truncation, fallocate, GUP,
//! khugepaged) except for what `struct shmem_variant_ops` changes: the
//! `->migrate_folio` of its regular files, and being told before
//! truncation, hole punching and memory failure take folios from them (see
//! `shmem_init_fs_context_variant()`). shmem builds the files' address space
//! operations itself.
//!
//! C header: [`include/linux/shmem_fs.h`](srctree/include/linux/shmem_fs.h).

use crate::{
    bindings,
    error::{code::EINVAL, from_err_ptr, to_result, Result},
    folio::{Folio, LockedFolio},
    fs::{address_space::FolioMigration, AddressSpace, File, FsContext, Mount},
    mm::migrate::MigrateMode,
    str::CStr,
    types::ARef,
};
use core::{marker::PhantomData, ptr::NonNull};

/// The operations a tmpfs variant may change.
pub trait VariantOps {
    /// Migrates a folio of the variant (`->migrate_folio`): ends in
    /// [`FolioMigration::migrate_default`], or fails. Must not sleep when the
    /// mode is [`MigrateMode::Async`].
    fn migrate_folio(m: &FolioMigration<'_>) -> Result;

    /// Pages `first` to `last` (inclusive) of `mapping` are about to be
    /// removed or zeroed by truncation or hole punching: drop the folio
    /// references handed out there, or fail the operation with an error.
    ///
    /// Runs with the inode's `i_rwsem` and the mapping's `invalidate_lock`
    /// held for writing; the latter is held until the folios are gone.
    fn invalidate_range(_mapping: &AddressSpace, _first: usize, _last: usize) -> Result {
        Ok(())
    }

    /// Memory failure is about to keep the poisoned `folio` of `mapping` in
    /// the page cache, as tmpfs does: drop the references handed out on it,
    /// or fail (memory failure then reports that it could not recover).
    fn error_remove_folio(_mapping: &AddressSpace, _folio: &LockedFolio<'_>) -> Result {
        Ok(())
    }
}

/// The operations of a tmpfs variant `T`, for shmem.
pub struct Variant<T: VariantOps>(PhantomData<T>);

impl<T: VariantOps> Variant<T> {
    const OPS: bindings::shmem_variant_ops = bindings::shmem_variant_ops {
        migrate_folio: Some(migrate_folio_callback::<T>),
        invalidate_range: Some(invalidate_range_callback::<T>),
        error_remove_folio: Some(error_remove_folio_callback::<T>),
    };

    /// Initialises a mount of the variant (its `->init_fs_context`): tmpfs's
    /// context, options and superblock, with the variant's operations.
    pub fn init_fs_context(fc: &mut FsContext) -> Result {
        let ops: &'static bindings::shmem_variant_ops = &Self::OPS;
        // SAFETY: `fc` is a context being initialised; `ops` is static, so
        // it outlives every superblock made from the context, and its
        // functions are this module's, which the filesystem type's owner
        // keeps loaded while a superblock exists.
        to_result(unsafe { bindings::shmem_init_fs_context_variant(fc.as_raw(), ops) })
    }
}

fn to_errno(r: Result) -> crate::ffi::c_int {
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `->migrate_folio` of [`Variant<T>`].
///
/// # Safety
///
/// Called by shmem's `->migrate_folio` of a variant's file only, with its
/// arguments: `src` is a folio of `mapping`, `dst` the folio the migration
/// core allocated for it, both locked and referenced.
unsafe extern "C" fn migrate_folio_callback<T: VariantOps>(
    mapping: *mut bindings::address_space,
    dst: *mut bindings::folio,
    src: *mut bindings::folio,
    mode: bindings::migrate_mode,
) -> crate::ffi::c_int {
    let Some(mode) = MigrateMode::from_raw(mode) else {
        return EINVAL.to_errno();
    };
    // SAFETY: the arguments of a `->migrate_folio` call, for its duration.
    let m = unsafe { FolioMigration::from_raw(mapping, dst, src, mode) };
    to_errno(T::migrate_folio(&m))
}

/// `->invalidate_range` of [`Variant<T>`].
///
/// # Safety
///
/// Called by shmem only, with a live inode of a variant's superblock.
unsafe extern "C" fn invalidate_range_callback<T: VariantOps>(
    inode: *mut bindings::inode,
    start: crate::ffi::c_ulong,
    end: crate::ffi::c_ulong,
) -> crate::ffi::c_int {
    // SAFETY: shmem passes a live inode, which its caller keeps alive for the
    // call; its `i_mapping` is its own, embedded page cache.
    let mapping = unsafe { AddressSpace::from_raw((*inode).i_mapping) };
    to_errno(T::invalidate_range(mapping, start, end))
}

/// `->error_remove_folio` of [`Variant<T>`].
///
/// # Safety
///
/// Called by shmem's `->error_remove_folio` only: `folio` is a locked,
/// referenced folio of `mapping`.
unsafe extern "C" fn error_remove_folio_callback<T: VariantOps>(
    mapping: *mut bindings::address_space,
    folio: *mut bindings::folio,
) -> crate::ffi::c_int {
    // SAFETY: memory failure holds the folio locked and referenced for the
    // call, and the folio's inode alive through it.
    let (mapping, folio) = unsafe {
        (
            AddressSpace::from_raw(mapping),
            LockedFolio::from_locked(folio),
        )
    };
    to_errno(T::error_remove_folio(mapping, &folio))
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
/// caller owns a reference to it. A folio with a poisoned page is refused
/// with `EIO`, as shmem's own reads, writes and faults refuse it.
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
    let folio: ARef<Folio> = unsafe { ARef::from_raw(NonNull::new_unchecked(f.cast())) };
    // SAFETY: the folio is referenced; the poison flags are atomic bits, and
    // once set stay set.
    if unsafe { bindings::folio_contain_hwpoisoned_page(folio.as_raw()) } {
        return Err(crate::error::code::EIO);
    }
    Ok(folio)
}

/// Drops the contents of bytes `[start, end]` (inclusive; `end == -1` for
/// "to the end of the file") of a shmem `file` from the page cache and swap
/// (`shmem_truncate_range()`); the file keeps its size and reads back zeros
/// there. Mapped pages are unmapped first. This is how a driver purges the
/// backing of an object whose contents userspace said it does not need.
///
/// A tmpfs variant's [`VariantOps::invalidate_range`] is not called: the
/// caller has dropped whatever references it handed out in the range.
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
