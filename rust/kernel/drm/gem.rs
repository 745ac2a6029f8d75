// SPDX-License-Identifier: GPL-2.0

//! GEM buffer objects whose memory is a shmem-backed file.
//!
//! A driver object embeds the C `struct drm_gem_object` and gives its backing
//! file (a shmem or gemfs file). CPU mappings through the object's fake
//! offset map that file directly: the pages are ordinary rmap-visible file
//! pages, faulted in by the filesystem, which migration and reclaim can
//! unmap. The object's memory is freed when the last reference (handles,
//! mappings' files, dma-bufs, driver references) is gone.
//!
//! An object may instead be imported from another driver's dma-buf
//! ([`Object::new_import`], from the driver's [`Driver::gem_prime_import`]):
//! it then has no backing file; its memory is the buffer's, described by the
//! scatter-gather table of the attachment, which stays mapped (and the
//! buffer referenced) until the object is freed. This is a static import:
//! the DRM core attaches without `move_notify` (`dma_buf_attach()`), so the
//! exporter keeps the buffer pinned in place while attached. CPU mappings of
//! an imported object are the exporter's (`dma_buf_mmap()`).
//!
//! C header: [`include/drm/drm_gem.h`](srctree/include/drm/drm_gem.h).

use super::{
    file::{DriverFile, File},
    Device, Driver,
};
use crate::{
    bindings,
    dma_buf::{Attachment, SgTable},
    dma_fence::{Resv, ResvUsage},
    error::{to_result, Result},
    fs,
    init::PinInit,
    prelude::*,
    types::{ARef, AlwaysRefCounted, Opaque},
};
use core::{marker::PhantomData, ops::Deref, ptr::NonNull};

/// `DRM_GEM_OBJECT_RESIDENT`: fdinfo counts the object as resident.
pub const STATUS_RESIDENT: u32 = bindings::drm_gem_object_status_DRM_GEM_OBJECT_RESIDENT;
/// `DRM_GEM_OBJECT_PURGEABLE`: fdinfo counts the object as purgeable.
pub const STATUS_PURGEABLE: u32 = bindings::drm_gem_object_status_DRM_GEM_OBJECT_PURGEABLE;

/// Where a GEM object's memory is now, for fdinfo's memory keys by region
/// ([`DriverObject::memory_info`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryInfo {
    /// The region the object is in: an index into the names
    /// [`Driver::memory_regions`] gives (out of range counts as the first).
    pub region: usize,
    /// Bytes of the object in memory there: `drm-resident-<region>`, and
    /// what `drm-active-<region>` and `drm-purgeable-<region>` add.
    pub resident: usize,
    /// `STATUS_*` bits, as [`DriverObject::status`] gives them.
    pub status: u32,
}

/// A driver's GEM object.
pub trait DriverObject: Sized + Send + Sync + 'static {
    /// The driver.
    type Driver: Driver;

    /// `DRM_GEM_OBJECT_*` status bits for fdinfo.
    fn status(&self) -> u32 {
        0
    }

    /// Resident bytes, for fdinfo's `drm-resident-*`.
    fn resident_size(&self) -> usize {
        0
    }

    /// Where the object's memory is, for fdinfo's memory keys by region,
    /// when the driver has regions ([`Driver::memory_regions`]). Called in
    /// process context with no lock held, once per object and read of
    /// fdinfo: it may sleep (and take the object's locks). An error (a wait
    /// interrupted by a signal, say) leaves the memory keys out of that
    /// read. The default: the first region, with [`Self::status`] and
    /// [`Self::resident_size`].
    fn memory_info(&self) -> Result<MemoryInfo> {
        Ok(MemoryInfo {
            region: 0,
            resident: self.resident_size(),
            status: self.status(),
        })
    }

    /// The TTM buffer object whose memory this object is, if it is one:
    /// CPU mappings of the object are then TTM's, faulted in page by page
    /// from wherever the BO is at the time ([`super::ttm::MmapBo`]),
    /// instead of mappings of the backing file.
    #[cfg(CONFIG_RUST_DRM_TTM)]
    fn ttm_bo(&self) -> Option<&super::ttm::MmapBo> {
        None
    }
}

/// A GEM object of driver data `T`.
///
/// # Invariants
///
/// `obj` is initialised with `FUNCS` of `T` on a device of `T::Driver`, and
/// reference counted by `drm_gem_object_get()`/`put()`; the allocation is a
/// `KBox<Self>` freed by the `free` callback. Either `obj.filp` is a
/// referenced file and `import_sgt` is null, or `obj.filp` is null and
/// `import_sgt` is the mapping of the attachment that the DRM core stores
/// in `obj.import_attach` once [`Driver::gem_prime_import`] returns; both
/// are released by the `free` callback only.
#[repr(C)]
#[pin_data]
pub struct Object<T: DriverObject> {
    obj: Opaque<bindings::drm_gem_object>,
    import_sgt: *mut bindings::sg_table,
    #[pin]
    data: T,
}

/// What the DRM core's PRIME import gives a driver for a foreign dma-buf:
/// the buffer attached to the device and mapped for it.
pub struct Import<'a> {
    attach: &'a Attachment,
    sgt: &'a SgTable,
}

impl Import<'_> {
    /// The attachment of the device to the buffer.
    pub fn attachment(&self) -> &Attachment {
        self.attach
    }

    /// The mapping of the attachment: the buffer's memory.
    pub fn sg_table(&self) -> &SgTable {
        self.sgt
    }
}

/// `drm_driver.gem_prime_import_sg_table` of driver `D`, called by the
/// DRM core's default PRIME import for a dma-buf of another device, once it
/// has attached `attach` (without `move_notify`: a static import) and
/// mapped it to `sgt`. On success the core stores `attach` in the object,
/// which then owns the attachment and mapping; on failure the core undoes
/// them.
///
/// # Safety
///
/// Called by DRM only, with a live device of `D` and a live attachment and
/// mapping.
pub(super) unsafe extern "C" fn prime_import_sg_table_callback<D: Driver>(
    dev: *mut bindings::drm_device,
    attach: *mut bindings::dma_buf_attachment,
    sgt: *mut bindings::sg_table,
) -> *mut bindings::drm_gem_object {
    // SAFETY: DRM passes a device of `D`; the attachment and its mapping
    // live at least until the object made here is freed, or until the core
    // undoes them after a failure (after this call).
    let (dev, import) = unsafe {
        (
            Device::<D>::borrow(dev),
            Import {
                attach: Attachment::from_raw(attach),
                sgt: SgTable::from_raw(sgt),
            },
        )
    };
    match D::gem_prime_import(dev, &import) {
        Ok(obj) => {
            // The core takes over our reference.
            let raw = ARef::into_raw(obj).as_ptr();
            // SAFETY: `raw` is a live `Object` of `D`; `obj` is at offset 0.
            unsafe { (*raw).obj.get() }
        }
        Err(e) => e.to_ptr(),
    }
}

// SAFETY: GEM objects are reference counted and thread-safe; `T` is too;
// `import_sgt` is set at creation and only read (and passed to the C side
// once, when the object is freed).
unsafe impl<T: DriverObject> Send for Object<T> {}
// SAFETY: as above.
unsafe impl<T: DriverObject> Sync for Object<T> {}

// SAFETY: the GEM refcount keeps the object alive.
unsafe impl<T: DriverObject> AlwaysRefCounted for Object<T> {
    fn inc_ref(&self) {
        // SAFETY: the object is alive while `self` is.
        unsafe { bindings::drm_gem_object_get(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up a reference it owns; `obj` is at
        // offset 0.
        unsafe { bindings::drm_gem_object_put(obj.cast().as_ptr()) };
    }
}

struct Funcs<T: DriverObject>(PhantomData<T>);

impl<T: DriverObject> Funcs<T> {
    const FUNCS: bindings::drm_gem_object_funcs = bindings::drm_gem_object_funcs {
        free: Some(Self::free),
        mmap: Some(Self::mmap),
        status: Some(Self::status),
        rss: Some(Self::rss),
        // SAFETY: all-zero is "core default" for the rest (PRIME export
        // and import within the device use the core's helpers).
        ..unsafe { core::mem::zeroed() }
    };

    /// # Safety
    ///
    /// `obj` must be the `obj` field of a live `Object<T>`.
    unsafe fn data<'a>(obj: *const bindings::drm_gem_object) -> &'a T {
        // SAFETY: `obj` is at offset 0 of `Object<T>` (repr(C)).
        unsafe { &(*obj.cast::<Object<T>>()).data }
    }

    /// `drm_gem_object_funcs.free`.
    ///
    /// # Safety
    ///
    /// Called by DRM only, when the last reference to an `Object<T>` is gone.
    unsafe extern "C" fn free(obj: *mut bindings::drm_gem_object) {
        let this = obj.cast::<Object<T>>();
        // SAFETY: the last reference is gone. The driver data is dropped
        // first, while the C part (its reservation object, backing file)
        // is still whole: the driver's callbacks from elsewhere (a
        // filesystem's, say) may use it until the data's `Drop` has waited
        // for them. Then, for an import whose attachment the core stored,
        // unmap and detach it and drop the buffer reference; release the C
        // part, and free the box made in `Object::new`/`new_import` without
        // dropping anything again (`ManuallyDrop` has the layout of what it
        // wraps). Nothing maps the buffer's memory for the device any more:
        // every user of the memory (a driver binding) holds an object
        // reference.
        unsafe {
            core::ptr::drop_in_place(core::ptr::addr_of_mut!((*this).data));
            if !(*obj).import_attach.is_null() {
                bindings::drm_prime_gem_destroy(obj, (*this).import_sgt);
            }
            bindings::drm_gem_object_release(obj);
            drop(KBox::from_raw(
                this.cast::<core::mem::ManuallyDrop<Object<T>>>(),
            ));
        }
    }

    /// `drm_gem_object_funcs.mmap`: maps the backing file instead, or for
    /// an imported object, the dma-buf (the exporter's CPU mapping).
    ///
    /// # Safety
    ///
    /// Called by DRM only, from `drm_gem_mmap()`, for an `Object<T>`.
    unsafe extern "C" fn mmap(
        obj: *mut bindings::drm_gem_object,
        vma: *mut bindings::vm_area_struct,
    ) -> crate::ffi::c_int {
        // SAFETY: DRM calls this for our live object; `import_attach` is set
        // before the object is published and never changes.
        let attach = unsafe { (*obj).import_attach };
        if !attach.is_null() {
            // SAFETY: as above; the attachment, and its reference to the
            // buffer, live as long as the object, which DRM holds across
            // this call. `dma_buf_mmap()` checks the range against the
            // buffer, points the vma at the buffer's file (which the mapping
            // references from then on) and calls the exporter; DRM's vm_ops
            // and private data would outlive the object reference dropped
            // below, so they go first, as drm_gem_shmem does.
            return unsafe {
                let pgoff =
                    (*vma).vm_pgoff - bindings::drm_vma_node_start(&raw const (*obj).vma_node);
                (*vma).vm_ops = core::ptr::null();
                (*vma).vm_private_data = core::ptr::null_mut();
                let ret = bindings::dma_buf_mmap((*attach).dmabuf, vma, pgoff);
                if ret == 0 {
                    bindings::vm_flags_set(vma, bindings::VM_DONTEXPAND as _);
                    bindings::drm_gem_object_put(obj);
                }
                ret
            };
        }
        // SAFETY: as for this function.
        if let Some(ret) = unsafe { Self::ttm_mmap(obj, vma) } {
            return ret;
        }
        // SAFETY: DRM calls this for our object, with the vma being set up
        // by `drm_gem_mmap()`, which checked its range against the object.
        unsafe {
            let file = (*obj).filp;
            let fops = (*file).f_op;
            let Some(file_mmap) = (*fops).mmap else {
                return ENODEV.to_errno();
            };
            // Map the backing file itself from the object's start, like
            // dma_buf_mmap(): drop DRM's vm_ops and private data, which
            // would otherwise outlive the object reference dropped below.
            (*vma).vm_pgoff -= bindings::drm_vma_node_start(&raw const (*obj).vma_node);
            (*vma).vm_ops = core::ptr::null();
            (*vma).vm_private_data = core::ptr::null_mut();
            bindings::vma_set_file(vma, file);
            let ret = file_mmap(file, vma);
            if ret == 0 {
                // The mapping references the file, not the object (and no
                // mremap() growth past the object, which DRM expects).
                bindings::vm_flags_set(vma, bindings::VM_DONTEXPAND as _);
                bindings::drm_gem_object_put(obj);
            }
            ret
        }
    }

    /// For an object whose memory is a TTM BO: maps the BO (TTM's faults);
    /// `None` for any other object.
    ///
    /// # Safety
    ///
    /// As for [`Self::mmap`].
    #[cfg(CONFIG_RUST_DRM_TTM)]
    unsafe fn ttm_mmap(
        obj: *mut bindings::drm_gem_object,
        vma: *mut bindings::vm_area_struct,
    ) -> Option<crate::ffi::c_int> {
        // SAFETY: DRM calls `mmap` for our live object.
        let bo = unsafe { Self::data(obj) }.ttm_bo()?;
        // SAFETY: the vma is being set up by `drm_gem_mmap()` for this
        // object (a DRM file of its device), which checked its range
        // against the object, whose size is the BO's. TTM's vm_ops and
        // private data replace DRM's, whose object reference goes: the
        // mapping holds a reference to the BO instead.
        Some(unsafe {
            let pgoff = (*vma).vm_pgoff - bindings::drm_vma_node_start(&raw const (*obj).vma_node);
            (*vma).vm_ops = core::ptr::null();
            (*vma).vm_private_data = core::ptr::null_mut();
            match bo.mmap(vma, pgoff) {
                Ok(()) => {
                    bindings::drm_gem_object_put(obj);
                    0
                }
                Err(e) => e.to_errno(),
            }
        })
    }

    /// Without TTM, no object is a TTM BO.
    ///
    /// # Safety
    ///
    /// None needed; the signature of the TTM variant.
    #[cfg(not(CONFIG_RUST_DRM_TTM))]
    unsafe fn ttm_mmap(
        _obj: *mut bindings::drm_gem_object,
        _vma: *mut bindings::vm_area_struct,
    ) -> Option<crate::ffi::c_int> {
        None
    }

    /// # Safety
    ///
    /// Called by DRM only, for a live `Object<T>`.
    unsafe extern "C" fn status(
        obj: *mut bindings::drm_gem_object,
    ) -> bindings::drm_gem_object_status {
        // SAFETY: DRM passes our live object.
        unsafe { Self::data(obj) }.status() as _
    }

    /// # Safety
    ///
    /// Called by DRM only, for a live `Object<T>`.
    unsafe extern "C" fn rss(obj: *mut bindings::drm_gem_object) -> usize {
        // SAFETY: DRM passes our live object.
        unsafe { Self::data(obj) }.resident_size()
    }
}

impl<T: DriverObject> Object<T> {
    /// Creates an object of `size` bytes (page aligned) on `dev`, whose
    /// memory is `file` (a shmem or gemfs file): CPU mappings map it.
    pub fn new(
        dev: &Device<T::Driver>,
        size: usize,
        file: ARef<fs::File>,
        init: impl PinInit<T, Error>,
    ) -> Result<ARef<Self>>
    where
        T::Driver: Driver<Object = T>,
    {
        Self::create(dev, size, Some(file), core::ptr::null_mut(), init)
    }

    /// Allocates an object of `size` bytes (page aligned) on `dev` and sets
    /// up its C part with our funcs. Its memory is `file` (with a null
    /// `import_sgt`), or, without a file, the attachment mapping
    /// `import_sgt`: one or the other, as the type invariant requires.
    fn create(
        dev: &Device<T::Driver>,
        size: usize,
        file: Option<ARef<fs::File>>,
        import_sgt: *mut bindings::sg_table,
        init: impl PinInit<T, Error>,
    ) -> Result<ARef<Self>>
    where
        T::Driver: Driver<Object = T>,
    {
        if size == 0 || size % crate::page::PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let obj = KBox::pin_init(
            try_pin_init!(Self {
                // SAFETY: all-zero is the state drm_gem_private_object_init()
                // expects (drivers kzalloc() their objects).
                obj: Opaque::new(unsafe { core::mem::zeroed() }),
                import_sgt,
                data <- init,
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: the object stays pinned: the box is only rebuilt in `free`.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(obj) });
        // SAFETY: `raw` is a new object; set up its C part with our funcs.
        // Without a file, `filp` stays null; until the core records the
        // attachment of an import, `free` leaves the attachment alone.
        // INVARIANT: from here the refcount owns the allocation.
        unsafe {
            let gem = (*raw).obj.get();
            (*gem).funcs = &Self::FUNCS_REF;
            bindings::drm_gem_private_object_init(dev.as_raw(), gem, size);
            if let Some(file) = file {
                // `drm_gem_object_release()` puts this reference.
                (*gem).filp = ARef::into_raw(file).as_ptr().cast();
            }
            Ok(ARef::from_raw(NonNull::new_unchecked(raw)))
        }
    }

    /// Creates the object of a foreign dma-buf for `import`, from the
    /// driver's [`Driver::gem_prime_import`]: its size is the buffer's, its
    /// memory the mapping's (`import.sg_table()`), and it has no backing
    /// file. The attachment and mapping are the object's once the DRM core
    /// has recorded the attachment in it, after the driver returns.
    pub fn new_import(
        dev: &Device<T::Driver>,
        import: &Import<'_>,
        init: impl PinInit<T, Error>,
    ) -> Result<ARef<Self>>
    where
        T::Driver: Driver<Object = T>,
    {
        let size = import.attach.dma_buf().size();
        Self::create(dev, size, None, import.sgt.as_raw(), init)
    }

    /// Whether the object was imported from another driver's dma-buf.
    pub fn is_import(&self) -> bool {
        !self.import_sgt.is_null()
    }

    const FUNCS_REF: bindings::drm_gem_object_funcs = Funcs::<T>::FUNCS;

    /// The raw object.
    pub fn as_raw(&self) -> *mut bindings::drm_gem_object {
        self.obj.get()
    }

    /// Its size in bytes.
    pub fn size(&self) -> usize {
        // SAFETY: `size` is set at creation and never changes.
        unsafe { (*self.as_raw()).size }
    }

    /// Whether fdinfo counts the object as shared (`drm-shared-*`): it has
    /// handles in more than one file, or is exported as a dma-buf.
    pub fn is_shared_for_memory_stats(&self) -> bool {
        // SAFETY: the object is live. Like the DRM core's own fdinfo, this
        // reads the handle count without its lock: a snapshot.
        unsafe { bindings::drm_gem_object_is_shared_for_memory_stats(self.as_raw()) }
    }

    /// Takes a new reference to an object whose last reference may be going
    /// away concurrently: `None` if it has gone (the object is being freed).
    ///
    /// For drivers that keep objects in their own list (for a shrinker) and
    /// remove them from it when their data is dropped.
    ///
    /// # Safety
    ///
    /// The memory of `*obj` must stay valid for the call: for example, `obj`
    /// was found in such a list, under the lock that `T`'s `Drop` takes to
    /// remove it.
    pub unsafe fn try_get(obj: *const Self) -> Option<ARef<Self>> {
        // SAFETY: the memory is valid (caller); the refcount is set up by
        // `new` and, once zero, never raised again: a successful increment
        // means the object was live and the new reference is ours.
        let live = unsafe { bindings::kref_get_unless_zero(&raw mut (*(*obj).as_raw()).refcount) };
        // SAFETY: as above.
        live.then(|| unsafe { ARef::from_raw(NonNull::new_unchecked(obj.cast_mut())) })
    }

    /// Adds `fence` to the object's reservation object, for a write
    /// (`DMA_RESV_USAGE_WRITE`) or read (`DMA_RESV_USAGE_READ`) access by
    /// the device. The core then reports the object in fdinfo's
    /// `drm-active-*` until the fence signals, and importers of a PRIME
    /// export wait for it.
    pub fn add_fence(&self, fence: &crate::dma_fence::Fence, write: bool) -> Result {
        let usage = if write {
            ResvUsage::Write
        } else {
            ResvUsage::Read
        };
        self.resv().add_fence(fence, usage)
    }

    /// The object's reservation object: its own, or for an import, the
    /// dma-buf's (shared with the exporter).
    pub fn resv(&self) -> &Resv {
        // SAFETY: `resv` is set up by `drm_gem_private_object_init()` (or
        // the core's import) and stays initialised as long as the object's
        // C part, which outlives `&self`: `free` finalises it only after
        // the driver data is dropped, and the object is live here.
        unsafe { Resv::from_raw((*self.as_raw()).resv) }
    }

    /// The backing file; `None` for an imported object.
    pub fn backing_file(&self) -> Option<&fs::File> {
        // SAFETY: `filp` is set at creation and referenced until release.
        let filp = unsafe { (*self.as_raw()).filp };
        // SAFETY: as above: a non-null `filp` is a live file.
        (!filp.is_null()).then(|| unsafe { fs::File::from_raw(filp.cast()) })
    }

    /// Creates a handle for the object in `file`.
    pub fn create_handle<F: DriverFile<Driver = T::Driver>>(&self, file: &File<F>) -> Result<u32> {
        let mut handle = 0u32;
        // SAFETY: both are live; the handle takes its own reference.
        to_result(unsafe {
            bindings::drm_gem_handle_create(file.as_raw(), self.as_raw(), &mut handle)
        })?;
        Ok(handle)
    }

    /// Looks up `handle` in `file`: `ENOENT` if there is no such object.
    pub fn lookup_handle<F: DriverFile<Driver = T::Driver>>(
        file: &File<F>,
        handle: u32,
    ) -> Result<ARef<Self>>
    where
        T::Driver: Driver<Object = T>,
    {
        // SAFETY: the file is live; a found object comes with a reference.
        let raw = unsafe { bindings::drm_gem_object_lookup(file.as_raw(), handle) };
        let raw = NonNull::new(raw).ok_or(ENOENT)?;
        // SAFETY: every object of a file of `T::Driver` is an `Object<T>`:
        // `T` is the driver's only object type, made by `new`, or by
        // `new_import` for the PRIME import of a foreign buffer (the
        // driver's `gem_prime_import_sg_table`); re-importing one of our own
        // exports gives the object back. The reference is ours.
        Ok(unsafe { ARef::from_raw(raw.cast()) })
    }

    /// The fake offset to `mmap()` the object through its DRM file.
    pub fn mmap_offset(&self) -> Result<u64> {
        // SAFETY: the object is live; creating the offset is idempotent.
        to_result(unsafe { bindings::drm_gem_create_mmap_offset(self.as_raw()) })?;
        // SAFETY: the offset node was set up above.
        Ok(unsafe { bindings::drm_vma_node_offset_addr(&raw mut (*self.as_raw()).vma_node) })
    }
}

impl<T: DriverObject> Deref for Object<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.data
    }
}
