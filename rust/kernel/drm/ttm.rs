// SPDX-License-Identifier: GPL-2.0

//! TTM, the memory manager of discrete GPUs: devices and the VRAM
//! resource manager.
//!
//! A [`Device`] is a `struct ttm_device`: the placements of a DRM device's
//! buffer objects, with one resource manager per memory type (TTM's own for
//! `TTM_PL_SYSTEM`). Its `ttm_device_funcs` are generated per driver type
//! from [`Driver`], as [`drm::Driver`] generates the `drm_driver`.
//!
//! A [`VramManager`] is the resource manager of a device's VRAM on the
//! kernel's buddy allocator ([`drm::buddy`]), modelled on i915's
//! `i915_ttm_buddy_manager.c`: each resource is an [`Allocation`] of
//! blocks, placed as the `ttm_place` asks (range, top-down, contiguous),
//! and a full VRAM is `-ENOSPC`, which makes TTM evict and retry.
//!
//! This module has no buffer object type yet: nothing in it creates BOs,
//! so TTM calls a device's BO callbacks only for BOs that C code (none in
//! this tree) would create on it.
//!
//! A driver using this module selects `RUST_DRM_TTM`.
//!
//! C headers: [`include/drm/ttm/ttm_device.h`](srctree/include/drm/ttm/ttm_device.h),
//! [`include/drm/ttm/ttm_resource.h`](srctree/include/drm/ttm/ttm_resource.h).

use crate::{
    bindings, device,
    drm::{
        self,
        buddy::{Allocation, Buddy, Request},
    },
    error::{code::*, to_result, Result},
    init, new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    sync::{Arc, Mutex},
    types::{ARef, Opaque},
};
use core::{ffi::c_int, marker::PhantomData, mem::ManuallyDrop, ptr};

/// `TTM_PL_SYSTEM`: system memory, TTM's own manager.
pub const PL_SYSTEM: u32 = bindings::TTM_PL_SYSTEM;
/// `TTM_PL_TT`: system memory the device reaches through a GART.
pub const PL_TT: u32 = bindings::TTM_PL_TT;
/// `TTM_PL_VRAM`: the device's own memory.
pub const PL_VRAM: u32 = bindings::TTM_PL_VRAM;

/// `TTM_PL_FLAG_CONTIGUOUS`: the placement is one extent.
pub const PL_FLAG_CONTIGUOUS: u32 = bindings::TTM_PL_FLAG_CONTIGUOUS;
/// `TTM_PL_FLAG_TOPDOWN`: from the top of the memory down.
pub const PL_FLAG_TOPDOWN: u32 = bindings::TTM_PL_FLAG_TOPDOWN;

/// A driver of TTM devices.
pub trait Driver: Sized + Send + Sync + 'static {
    /// The DRM driver whose devices' objects TTM places.
    type Drm: drm::Driver;

    /// The memory type an evicted object goes to (`evict_flags`).
    const EVICT_TO: u32 = PL_SYSTEM;
}

/// Per-driver-type C tables.
struct Vtable<T: Driver>(PhantomData<T>);

impl<T: Driver> Vtable<T> {
    /// Where evicted objects go.
    const EVICT_PLACE: bindings::ttm_place = bindings::ttm_place {
        fpfn: 0,
        lpfn: 0,
        mem_type: T::EVICT_TO,
        flags: 0,
    };

    const FUNCS: bindings::ttm_device_funcs = bindings::ttm_device_funcs {
        eviction_valuable: Some(bindings::ttm_bo_eviction_valuable),
        evict_flags: Some(Self::evict_flags),
        // SAFETY: all-zero is "no such operation" for the rest. TTM calls
        // `ttm_tt_create` and `move` for buffer objects only, which this
        // module does not create (see the module documentation).
        ..unsafe { core::mem::zeroed() }
    };

    /// `ttm_device_funcs.evict_flags`: an evicted object goes to
    /// [`Driver::EVICT_TO`].
    ///
    /// # Safety
    ///
    /// Called by TTM only, with a placement to fill in.
    unsafe extern "C" fn evict_flags(
        _bo: *mut bindings::ttm_buffer_object,
        placement: *mut bindings::ttm_placement,
    ) {
        // SAFETY: TTM passes a placement it reads after the call; the place
        // pointed to is a promoted constant, static.
        unsafe {
            (*placement).num_placement = 1;
            (*placement).placement = &Self::EVICT_PLACE;
        }
    }
}

/// A TTM device of driver `T`: the placements of the buffer objects of a
/// DRM device.
///
/// # Invariants
///
/// `raw` was initialised by `ttm_device_init()` with `Vtable::<T>::FUNCS`,
/// `dev` and the address space and offset manager of `drm`, and is
/// finished only by `drop`. Every [`VramManager`] registered on it holds
/// an `Arc` to it, so it is finished after all of them are unregistered.
#[pin_data(PinnedDrop)]
pub struct Device<T: Driver> {
    /// Taken to register and unregister resource managers: TTM's
    /// `man_drv` array has no lock of its own.
    managers: Pin<KBox<Mutex<()>>>,
    /// The device the memory belongs to (DMA), kept alive.
    dev: ARef<device::Device>,
    /// The DRM device, whose address space and offset manager TTM uses.
    drm: ARef<drm::Device<T::Drm>>,
    #[pin]
    raw: Opaque<bindings::ttm_device>,
}

// SAFETY: TTM's device is used from any thread, under its own locks (the
// LRU lock); manager registration is under `managers`.
unsafe impl<T: Driver> Send for Device<T> {}
// SAFETY: as above.
unsafe impl<T: Driver> Sync for Device<T> {}

/// The lock of a [`Device`]'s managers.
///
/// Not generic, and never inlined: its lock class (a static key and a name)
/// is the kernel crate's, the same for every driver type, where a generic
/// function's would have its name once in each module that instantiates it
/// (which lockdep reports).
#[inline(never)]
fn managers_lock() -> Result<Pin<KBox<Mutex<()>>>> {
    KBox::pin_init(new_mutex!((), "drm::ttm::Device::managers"), GFP_KERNEL)
}

impl<T: Driver> Device<T> {
    /// A TTM device for the DRM device `drm`, whose memory belongs to
    /// `dev` (its DMA device), with TTM's system manager and page pool (no
    /// DMA-coherent pool, no DMA32 restriction).
    pub fn new(dev: &device::Device, drm: &drm::Device<T::Drm>) -> Result<Arc<Self>> {
        let (dev_raw, drm_raw) = (dev.as_raw(), drm.as_raw());
        let init = move |slot: *mut Opaque<bindings::ttm_device>| {
            let raw = Opaque::raw_get(slot);
            // SAFETY: `slot` is the `raw` field of the `Self` being
            // initialised, pinned and valid for writes; zeroed first, as
            // C callers' `kzalloc()` gives it. `FUNCS` is static. `dev` and
            // `drm` are live (borrowed for the call) and kept alive by the
            // fields initialised before this one; a DRM device's
            // `anon_inode` and `vma_offset_manager` are set when it is
            // allocated (a GEM driver's) and live as long as it does.
            // `ttm_device_init()` leaves nothing to undo when it fails.
            to_result(unsafe {
                raw.write_bytes(0, 1);
                bindings::ttm_device_init(
                    raw,
                    &Vtable::<T>::FUNCS,
                    dev_raw,
                    (*(*drm_raw).anon_inode).i_mapping,
                    (*drm_raw).vma_offset_manager,
                    false,
                    false,
                )
            })
        };
        // INVARIANT: `raw` is initialised by `ttm_device_init()` once the
        // initialiser succeeded; it comes last, so a failure before it has
        // nothing of TTM's to undo.
        Arc::pin_init(
            try_pin_init!(Self {
                managers: managers_lock()?,
                dev: ARef::from(dev),
                drm: ARef::from(drm),
                // SAFETY: the closure initialises the field completely when
                // it returns `Ok` and leaves nothing to undo when it fails;
                // the field is pinned.
                raw <- unsafe { init::pin_init_from_closure(init) },
            }? Error),
            GFP_KERNEL,
        )
    }

    /// The raw device.
    pub fn as_raw(&self) -> *mut bindings::ttm_device {
        self.raw.get()
    }

    /// The DRM device.
    pub fn drm(&self) -> &drm::Device<T::Drm> {
        &self.drm
    }

    /// The device the memory belongs to.
    pub fn dev(&self) -> &device::Device {
        &self.dev
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for Device<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: initialised (type invariant), and no manager of ours is
        // registered: each holds an `Arc` to `self`. TTM's own system
        // manager is finished here.
        unsafe { bindings::ttm_device_fini(self.as_raw()) };
    }
}

/// The C manager and what its callbacks need, at a fixed address.
///
/// # Invariants
///
/// `man` was initialised by `ttm_resource_manager_init()` for the device
/// that the owning [`VramManager`] holds, with `VramManager::FUNCS`, and
/// `man.size` is `buddy.size()` (bytes). Every resource of `man` is a
/// [`VramResource`] allocated from `buddy`.
#[repr(C)]
struct ManInner {
    man: Opaque<bindings::ttm_resource_manager>,
    buddy: Buddy,
}

/// A resource of a [`VramManager`]: what TTM sees, and its blocks.
///
/// Boxed by `alloc`, freed by `free`; TTM holds `&base`, from which
/// `container_of` gives the resource back.
#[repr(C)]
struct VramResource {
    base: Opaque<bindings::ttm_resource>,
    alloc: Allocation,
}

/// The resource manager of a TTM device's VRAM, on a buddy allocator.
///
/// Each resource is a list of blocks of the allocator, of at least a page
/// (the allocator's chunk size), each aligned to the object's page
/// alignment, inside the place's range (`fpfn`, `lpfn`; `lpfn == 0`: the
/// whole VRAM), top-down with `TTM_PL_FLAG_TOPDOWN` and one extent with
/// `TTM_PL_FLAG_CONTIGUOUS` (then `ttm_resource::start` is its first
/// page). A size above the range is `-E2BIG`; a full VRAM is the
/// allocator's `-ENOSPC`, passed through, which makes TTM evict and retry,
/// so an allocation fails with `-ENOSPC` only when nothing can be evicted.
/// `ttm_resource_manager_debug()` prints TTM's accounting, then the
/// allocator's state ([`Buddy::print`]).
///
/// The manager's size and usage are in bytes, as amdgpu's, i915's and
/// xe's VRAM managers count them (`ttm_resource_init()` adds a resource's
/// size in bytes).
///
/// # Invariants
///
/// `inner.man` is registered as the manager of `mem_type` of `dev`, and
/// in use, from the end of [`VramManager::new`] until `drop`.
pub struct VramManager<T: Driver> {
    dev: ManuallyDrop<Arc<Device<T>>>,
    inner: ManuallyDrop<KBox<ManInner>>,
    mem_type: u32,
}

// SAFETY: the C manager is used under TTM's locks (the device's LRU lock)
// and the allocator under its mutex; registration under the device's
// `managers` lock.
unsafe impl<T: Driver> Send for VramManager<T> {}
// SAFETY: `&VramManager` only reads the manager's accounting, under TTM's
// lock.
unsafe impl<T: Driver> Sync for VramManager<T> {}

impl<T: Driver> VramManager<T> {
    const FUNCS: bindings::ttm_resource_manager_func = bindings::ttm_resource_manager_func {
        alloc: Some(Self::alloc),
        free: Some(Self::free),
        intersects: Some(Self::intersects),
        compatible: Some(Self::compatible),
        debug: Some(Self::debug),
    };

    /// Registers a manager of `buddy` (chunk size `PAGE_SIZE`) as the
    /// manager of memory type `mem_type` (say [`PL_VRAM`]) of `dev`, in
    /// use: TTM places objects in it from now on. `EBUSY` if `mem_type`
    /// has a manager already; `EINVAL` for `PL_SYSTEM` (TTM's own), a type
    /// out of range, or another chunk size.
    pub fn new(dev: &Arc<Device<T>>, mem_type: u32, buddy: Buddy) -> Result<Self> {
        if mem_type == PL_SYSTEM
            || mem_type >= bindings::TTM_NUM_MEM_TYPES
            || buddy.chunk_size() != PAGE_SIZE as u64
        {
            return Err(EINVAL);
        }
        let size = buddy.size();
        let inner = KBox::new(
            ManInner {
                man: Opaque::uninit(),
                buddy,
            },
            GFP_KERNEL,
        )?;
        let man = inner.man.get();
        let _guard = dev.managers.lock();
        // SAFETY: the device is initialised (invariant of `Device`); its
        // `man_drv` changes only under `managers`, which is held.
        if !unsafe { bindings::ttm_manager_type(dev.as_raw(), mem_type as c_int) }.is_null() {
            return Err(EBUSY);
        }
        // SAFETY: `man` is boxed (it never moves) and zeroed first, as a C
        // driver's embedding structure would be; `FUNCS` is static. The
        // device lives while `self` does (the `Arc` in `self`). The
        // registration is under `managers`, and `mem_type` is a valid
        // driver type without a manager (checked above).
        unsafe {
            man.write_bytes(0, 1);
            (*man).use_tt = false;
            (*man).func = &Self::FUNCS;
            bindings::ttm_resource_manager_init(man, dev.as_raw(), size);
            bindings::ttm_set_driver_manager(dev.as_raw(), mem_type as c_int, man);
            bindings::ttm_resource_manager_set_used(man, true);
        }
        // INVARIANT: registered and in use just above; `man` was
        // initialised with `FUNCS` and the allocator's size.
        Ok(Self {
            dev: ManuallyDrop::new(dev.clone()),
            inner: ManuallyDrop::new(inner),
            mem_type,
        })
    }

    /// The memory managed, in bytes.
    pub fn size(&self) -> u64 {
        self.inner.buddy.size()
    }

    /// The memory TTM's resources take, in bytes
    /// (`ttm_resource_manager_usage()`).
    pub fn usage(&self) -> u64 {
        // SAFETY: registered (type invariant); the function takes the
        // device's LRU lock.
        unsafe { bindings::ttm_resource_manager_usage(self.inner.man.get()) }
    }

    /// The allocator.
    pub fn buddy(&self) -> &Buddy {
        &self.inner.buddy
    }

    /// Prints TTM's view of the manager (`ttm_resource_manager_debug()`:
    /// in use, size and usage in bytes), then the allocator's state.
    pub fn print(&self, p: &drm::Printer) {
        // SAFETY: registered (type invariant); the printer is live
        // (invariant of `Printer`). May sleep (the allocator's mutex), as
        // a debugfs show may.
        unsafe { bindings::ttm_resource_manager_debug(self.inner.man.get(), p.0) };
    }

    /// # Safety
    ///
    /// `man` must be the manager of a `ManInner` (`FUNCS` are only
    /// installed on those), alive for `'a`.
    unsafe fn inner<'a>(man: *mut bindings::ttm_resource_manager) -> &'a ManInner {
        // SAFETY: `man` is the first field of a `#[repr(C)]` `ManInner`
        // (the caller's promise).
        unsafe { &*man.cast::<ManInner>() }
    }

    /// # Safety
    ///
    /// `res` must be a resource of a manager with `FUNCS`, alive for `'a`.
    unsafe fn resource<'a>(res: *mut bindings::ttm_resource) -> &'a VramResource {
        // SAFETY: the manager's resources are `VramResource`s (invariant of
        // `ManInner`), whose first field is `base` (`#[repr(C)]`).
        unsafe { &*res.cast::<VramResource>() }
    }

    /// The byte range `[start, end)` that `place` allows in memory of
    /// `size` bytes: `lpfn == 0` is the end of the memory.
    fn range(place: &bindings::ttm_place, size: u64) -> (u64, u64) {
        let start = u64::from(place.fpfn) * PAGE_SIZE as u64;
        let end = match place.lpfn {
            0 => size,
            lpfn => (u64::from(lpfn) * PAGE_SIZE as u64).min(size),
        };
        (start, end)
    }

    /// The request for an object of `size` bytes with an alignment of
    /// `align_pages` pages in `place`, in memory of `mem_size` bytes;
    /// `E2BIG` when the size exceeds the range.
    fn request(
        place: &bindings::ttm_place,
        size: u64,
        align_pages: u32,
        mem_size: u64,
    ) -> Result<Request> {
        let (start, end) = Self::range(place, mem_size);
        if start >= end {
            return Err(EINVAL);
        }
        let page = PAGE_SIZE as u64;
        let size = size.div_ceil(page) * page;
        if size > end - start {
            return Err(E2BIG);
        }
        let mut req = Request::new(size);
        if align_pages > 1 {
            req = req.min_block_size(u64::from(align_pages) * page);
        }
        if start != 0 || end != mem_size {
            req = req.range(start, end);
        }
        if place.flags & PL_FLAG_TOPDOWN != 0 {
            req = req.top_down();
        }
        if place.flags & PL_FLAG_CONTIGUOUS != 0 {
            req = req.contiguous();
        }
        Ok(req)
    }

    /// `ttm_resource_manager_func.alloc`.
    ///
    /// # Safety
    ///
    /// Called by TTM only (`ttm_resource_alloc()`), for a manager with
    /// `FUNCS`, a live BO of its device and a place of its memory type.
    unsafe extern "C" fn alloc(
        man: *mut bindings::ttm_resource_manager,
        bo: *mut bindings::ttm_buffer_object,
        place: *const bindings::ttm_place,
        res: *mut *mut bindings::ttm_resource,
    ) -> c_int {
        // SAFETY: see the function's safety section: the manager lives
        // while TTM allocates from it (it is unregistered before it goes).
        let inner = unsafe { Self::inner(man) };
        // SAFETY: TTM passes a live BO and place for the call.
        let (bo_size, align, place) =
            unsafe { ((*bo).base.size as u64, (*bo).page_alignment, &*place) };
        let req = match Self::request(place, bo_size, align, inner.buddy.size()) {
            Ok(req) => req,
            Err(e) => return e.to_errno(),
        };
        // Allocated before the resource is initialised, as i915 does:
        // `ttm_resource_init()` puts it on the LRU, where eviction sees it.
        let alloc = match inner.buddy.alloc(&req) {
            Ok(alloc) => alloc,
            // `ENOSPC` as is: TTM evicts and retries.
            Err(e) => return e.to_errno(),
        };
        // Freeing `alloc` if this fails.
        let Ok(boxed) = KBox::new(
            VramResource {
                base: Opaque::uninit(),
                alloc,
            },
            GFP_KERNEL,
        ) else {
            return ENOMEM.to_errno();
        };
        let first = boxed.alloc.blocks().map(|b| b.offset()).min().unwrap_or(0);
        let raw = KBox::into_raw(boxed);
        // SAFETY: `raw` is a new, boxed resource; `ttm_resource_init()`
        // initialises `base` for `bo` and `place` and accounts it to the
        // manager. INVARIANT: a `VramResource` of `inner.buddy`, handed to
        // TTM, which gives it back to `free`.
        unsafe {
            let base = (*raw).base.get();
            bindings::ttm_resource_init(bo, place, base);
            if place.flags & PL_FLAG_CONTIGUOUS != 0 {
                (*base).start = (first / PAGE_SIZE as u64) as _;
            }
            *res = base;
        }
        0
    }

    /// `ttm_resource_manager_func.free`.
    ///
    /// # Safety
    ///
    /// Called by TTM only, with a resource `alloc` gave it, never again.
    unsafe extern "C" fn free(
        man: *mut bindings::ttm_resource_manager,
        res: *mut bindings::ttm_resource,
    ) {
        // SAFETY: `res` is the `base` of a boxed `VramResource` from
        // `alloc` (its first field), given back for good: taken off TTM's
        // lists and accounting, then freed with its blocks.
        unsafe {
            bindings::ttm_resource_fini(man, res);
            drop(KBox::from_raw(res.cast::<VramResource>()));
        }
    }

    /// Whether the blocks of `res` meet (`any`) or lie inside (`!any`)
    /// `place`'s range.
    ///
    /// # Safety
    ///
    /// As for the callbacks: a live manager with `FUNCS`, one of its
    /// resources and a place.
    unsafe fn in_range(
        man: *mut bindings::ttm_resource_manager,
        res: *mut bindings::ttm_resource,
        place: *const bindings::ttm_place,
        any: bool,
    ) -> bool {
        // SAFETY: the caller's promise.
        let (inner, res, place) = unsafe { (Self::inner(man), Self::resource(res), &*place) };
        if place.fpfn == 0 && place.lpfn == 0 {
            return true;
        }
        let (start, end) = Self::range(place, inner.buddy.size());
        let mut blocks = res.alloc.blocks();
        if any {
            blocks.any(|b| b.offset() < end && b.end() > start)
        } else {
            blocks.all(|b| b.offset() >= start && b.end() <= end)
        }
    }

    /// `ttm_resource_manager_func.intersects`: whether evicting `res`
    /// frees memory in `place`'s range.
    ///
    /// # Safety
    ///
    /// Called by TTM only, with a live resource of the manager.
    unsafe extern "C" fn intersects(
        man: *mut bindings::ttm_resource_manager,
        res: *mut bindings::ttm_resource,
        place: *const bindings::ttm_place,
        _size: usize,
    ) -> bool {
        // SAFETY: the function's safety section.
        unsafe { Self::in_range(man, res, place, true) }
    }

    /// `ttm_resource_manager_func.compatible`: whether `res` lies in
    /// `place`'s range (the object need not move).
    ///
    /// # Safety
    ///
    /// Called by TTM only, with a live resource of the manager.
    unsafe extern "C" fn compatible(
        man: *mut bindings::ttm_resource_manager,
        res: *mut bindings::ttm_resource,
        place: *const bindings::ttm_place,
        _size: usize,
    ) -> bool {
        // SAFETY: the function's safety section.
        unsafe { Self::in_range(man, res, place, false) }
    }

    /// `ttm_resource_manager_func.debug`: the allocator's state.
    ///
    /// # Safety
    ///
    /// Called by TTM only (`ttm_resource_manager_debug()`), in process
    /// context, with a live printer.
    unsafe extern "C" fn debug(
        man: *mut bindings::ttm_resource_manager,
        p: *mut bindings::drm_printer,
    ) {
        // SAFETY: the function's safety section; `p` outlives the printer.
        let (inner, p) = unsafe { (Self::inner(man), drm::Printer::from_raw(p)) };
        p.print(format_args!("  allocator:\n"));
        inner.buddy.print(&p);
    }
}

impl<T: Driver> Drop for VramManager<T> {
    fn drop(&mut self) {
        let man = self.inner.man.get();
        let bdev = self.dev.as_raw();
        // SAFETY: registered (type invariant). The objects in it are
        // evicted (to `Driver::EVICT_TO`), then it is taken out of use
        // (which expects its LRU lists empty) and its move fence is put.
        // The driver places no new objects while tearing its VRAM down.
        let ret = unsafe {
            let ret = bindings::ttm_resource_manager_evict_all(bdev, man);
            bindings::ttm_resource_manager_set_used(man, false);
            bindings::ttm_resource_manager_cleanup(man);
            ret
        };
        let left = self.usage();
        {
            let _guard = self.dev.managers.lock();
            // SAFETY: `man` is this type's manager (type invariant),
            // unregistered under `managers`.
            unsafe {
                bindings::ttm_set_driver_manager(bdev, self.mem_type as c_int, ptr::null_mut())
            };
        }
        if ret != 0 || left != 0 {
            // Pinned objects are left (a driver bug): TTM still points to
            // their resources, this manager and the device. Leak them
            // rather than free what TTM may use.
            pr_warn!("drm::ttm: VRAM manager torn down with {left} bytes in use ({ret})\n");
            return;
        }
        // SAFETY: unregistered, with no resource left: nothing of TTM's
        // points to the manager any more. Each field is dropped once:
        // first the manager, then the device it pointed to.
        unsafe {
            ManuallyDrop::drop(&mut self.inner);
            ManuallyDrop::drop(&mut self.dev);
        }
    }
}

#[cfg(CONFIG_KUNIT)]
#[crate::kunit::kunit_tests(rust_drm_ttm)]
mod tests {
    //! The VRAM manager through TTM's own entry points: a DRM device of a
    //! test driver, a TTM device for it, a manager over 16 MiB of a buddy
    //! allocator, and resources allocated and freed by
    //! `ttm_resource_alloc()` and `ttm_resource_free()` for a kernel BO
    //! that has what they read of it (its device, size and alignment;
    //! unpinned, priority 0, no bulk move), as `ttm_bo_mem_space()` calls
    //! them.

    use super::*;
    use crate::{c_str, drm::buddy::Block, platform, sync::Arc, ThisModule};

    const MIB: u64 = 1 << 20;
    const PAGE: u64 = PAGE_SIZE as u64;

    struct TestDrm;
    struct TestFile;
    struct TestObject;

    impl drm::file::DriverFile for TestFile {
        type Driver = TestDrm;
        fn open(_dev: &drm::Device<TestDrm>) -> Result<Pin<KBox<Self>>> {
            Ok(KBox::pin(TestFile, GFP_KERNEL)?)
        }
    }

    impl drm::gem::DriverObject for TestObject {
        type Driver = TestDrm;
    }

    impl drm::Driver for TestDrm {
        type Data = ();
        type File = TestFile;
        type Object = TestObject;
        const INFO: drm::DriverInfo = drm::DriverInfo {
            major: 0,
            minor: 0,
            patchlevel: 0,
            name: c_str!("rust_drm_ttm"),
            desc: c_str!("kernel::drm::ttm KUnit test"),
        };
        // SAFETY: the kernel crate is built in: no module.
        const MODULE: &'static ThisModule = &unsafe { ThisModule::from_ptr(ptr::null_mut()) };
        const FEATURES: u32 = drm::FEAT_GEM | drm::FEAT_RENDER;
        const IOCTLS: &'static [bindings::drm_ioctl_desc] = &[];
    }

    struct TestTtm;

    impl Driver for TestTtm {
        type Drm = TestDrm;
    }

    /// A kernel BO as far as `ttm_resource_alloc()` and
    /// `ttm_resource_free()` read it.
    ///
    /// # Invariants
    ///
    /// `bo` is zeroed but for `bdev` (the device of the `Arc`), `base.size`
    /// and `page_alignment`; boxed, so the resources' `bo` pointers stay
    /// valid.
    struct Bo {
        bo: KBox<Opaque<bindings::ttm_buffer_object>>,
        dev: Arc<Device<TestTtm>>,
    }

    impl Bo {
        fn new(dev: &Arc<Device<TestTtm>>, size: u64, align_pages: u32) -> Result<Self> {
            let bo = KBox::new(Opaque::<bindings::ttm_buffer_object>::uninit(), GFP_KERNEL)?;
            // SAFETY: `bo` is valid memory for a BO, written only here.
            unsafe {
                bo.get().write_bytes(0, 1);
                (*bo.get()).bdev = dev.as_raw();
                (*bo.get()).base.size = size as usize;
                (*bo.get()).page_alignment = align_pages;
            }
            Ok(Self {
                bo,
                dev: dev.clone(),
            })
        }

        /// `ttm_resource_alloc()` in `place` (the memory type is VRAM's).
        fn alloc(&self, fpfn: u32, lpfn: u32, flags: u32) -> Result<Res<'_>> {
            let place = bindings::ttm_place {
                fpfn,
                lpfn,
                mem_type: PL_VRAM,
                flags,
            };
            let mut res = ptr::null_mut();
            // SAFETY: the BO has what the function reads (type invariant);
            // VRAM has a manager (the test registers it before any BO).
            to_result(unsafe { bindings::ttm_resource_alloc(self.bo.get(), &place, &mut res) })?;
            Ok(Res { bo: self, res })
        }
    }

    /// A resource of a [`Bo`]; freed by `ttm_resource_free()` on drop.
    struct Res<'a> {
        bo: &'a Bo,
        res: *mut bindings::ttm_resource,
    }

    impl Res<'_> {
        fn blocks(&self) -> KVec<Block> {
            let mut v = KVec::new();
            // SAFETY: a live resource of the VRAM manager: a `VramResource`.
            let r = unsafe { VramManager::<TestTtm>::resource(self.res) };
            for b in r.alloc.blocks() {
                v.push(b, GFP_KERNEL).unwrap();
            }
            v
        }

        /// `ttm_resource::start`, `size` and `placement`.
        fn fields(&self) -> (u64, u64, u32) {
            // SAFETY: a live resource.
            unsafe {
                (
                    (*self.res).start as u64,
                    (*self.res).size as u64,
                    (*self.res).placement,
                )
            }
        }

        /// TTM's `ttm_resource_intersects()` and `ttm_resource_compatible()`
        /// for the place `[fpfn, lpfn)` of VRAM.
        fn in_place(&self, fpfn: u32, lpfn: u32) -> (bool, bool) {
            let place = bindings::ttm_place {
                fpfn,
                lpfn,
                mem_type: PL_VRAM,
                flags: 0,
            };
            let mut placement = bindings::ttm_placement {
                num_placement: 1,
                placement: &place,
            };
            // SAFETY: a live resource of the BO, whose `bo` pointer TTM set;
            // the place and placement live for the calls.
            unsafe {
                (
                    bindings::ttm_resource_intersects(self.bo.dev.as_raw(), self.res, &place, 0),
                    bindings::ttm_resource_compatible(self.res, &mut placement, false),
                )
            }
        }
    }

    impl Drop for Res<'_> {
        fn drop(&mut self) {
            // SAFETY: the resource was allocated for this BO and is freed
            // once.
            unsafe { bindings::ttm_resource_free(self.bo.bo.get(), &mut self.res) };
        }
    }

    /// A platform device `name`, a DRM device on it, its TTM device and a
    /// VRAM manager of `size` bytes. (Each case names its own device: a
    /// failed assertion ends a case without dropping what it made.)
    fn setup(
        name: &'static crate::str::CStr,
        size: u64,
    ) -> Result<(
        VramManager<TestTtm>,
        Arc<Device<TestTtm>>,
        drm::Registration<TestDrm>,
        platform::SimpleDevice,
    )> {
        let pdev = platform::SimpleDevice::register(name)?;
        let reg = drm::Registration::<TestDrm>::new(pdev.device(), Arc::new((), GFP_KERNEL)?)?;
        let ttm = Device::<TestTtm>::new(pdev.device(), reg.device())?;
        let man = VramManager::new(&ttm, PL_VRAM, Buddy::new(size, PAGE)?)?;
        Ok((man, ttm, reg, pdev))
    }

    #[test]
    fn sizes_usage_and_enospc() -> Result {
        let (man, ttm, _reg, _pdev) = setup(c_str!("rust_drm_ttm_sizes"), 16 * MIB)?;
        assert_eq!((man.size(), man.usage()), (16 * MIB, 0));
        // A second manager of VRAM, or one of TTM's system memory: refused.
        assert_eq!(
            VramManager::new(&ttm, PL_VRAM, Buddy::new(MIB, PAGE)?).err(),
            Some(EBUSY)
        );
        assert_eq!(
            VramManager::new(&ttm, PL_SYSTEM, Buddy::new(MIB, PAGE)?).err(),
            Some(EINVAL)
        );

        // Several sizes: TTM accounts each object's size, the allocator
        // gives blocks that add up to it.
        let sizes = [PAGE, 3 * PAGE, 64 * 1024, MIB, 5 * MIB + PAGE];
        let mut bos = KVec::new();
        for &s in &sizes {
            bos.push(Bo::new(&ttm, s, 0)?, GFP_KERNEL)?;
        }
        let mut res = KVec::new();
        let mut total = 0;
        for (bo, &s) in bos.iter().zip(sizes.iter()) {
            let r = bo.alloc(0, 0, 0)?;
            assert_eq!(r.fields().1, s);
            assert_eq!(r.blocks().iter().map(|b| b.size()).sum::<u64>(), s);
            total += s;
            assert_eq!(man.usage(), total);
            assert_eq!(man.buddy().avail(), 16 * MIB - total);
            res.push(r, GFP_KERNEL)?;
        }
        // No two resources share memory.
        let mut all = KVec::new();
        for r in res.iter() {
            for b in r.blocks().iter() {
                all.push((b.offset(), b.end()), GFP_KERNEL)?;
            }
        }
        all.sort_unstable();
        assert!(all.windows(2).all(|w| w[0].1 <= w[1].0));

        // Fill what is left; then VRAM is full: ENOSPC, which TTM's
        // `ttm_bo_mem_space()` answers by evicting; nothing changes.
        let rest = Bo::new(&ttm, 16 * MIB - total, 0)?;
        let r_rest = rest.alloc(0, 0, 0)?;
        assert_eq!((man.usage(), man.buddy().avail()), (16 * MIB, 0));
        let one = Bo::new(&ttm, PAGE, 0)?;
        assert_eq!(one.alloc(0, 0, 0).err(), Some(ENOSPC));
        assert_eq!(man.usage(), 16 * MIB);

        // Freeing makes room again, exactly what was freed.
        drop(r_rest);
        assert_eq!(man.usage(), total);
        let again = one.alloc(0, 0, 0)?;
        assert_eq!(man.usage(), total + PAGE);
        drop(again);
        drop(res);
        assert_eq!((man.usage(), man.buddy().avail()), (0, 16 * MIB));

        // Larger than the VRAM, or than the place's range: E2BIG.
        let big = Bo::new(&ttm, 32 * MIB, 0)?;
        assert_eq!(big.alloc(0, 0, 0).err(), Some(E2BIG));
        let two = Bo::new(&ttm, 2 * MIB, 0)?;
        let pages_per_mib = (MIB / PAGE) as u32;
        assert_eq!(two.alloc(0, pages_per_mib, 0).err(), Some(E2BIG));
        assert_eq!(man.usage(), 0);
        Ok(())
    }

    #[test]
    fn placement_flags_ranges_and_compatibility() -> Result {
        let (man, ttm, _reg, _pdev) = setup(c_str!("rust_drm_ttm_placement"), 16 * MIB)?;
        let ppm = (MIB / PAGE) as u32;

        // A range: every block in [4 MiB, 6 MiB); TTM finds it compatible
        // with that range and intersecting it, not with [8 MiB, 16 MiB).
        let bo = Bo::new(&ttm, MIB + 4 * PAGE, 0)?;
        let r = bo.alloc(4 * ppm, 6 * ppm, 0)?;
        assert!(r
            .blocks()
            .iter()
            .all(|b| b.offset() >= 4 * MIB && b.end() <= 6 * MIB));
        assert_eq!(r.in_place(4 * ppm, 6 * ppm), (true, true));
        assert_eq!(r.in_place(0, 0), (true, true));
        assert_eq!(r.in_place(8 * ppm, 16 * ppm), (false, false));
        // Partly inside: intersects, not compatible.
        assert_eq!(r.in_place(5 * ppm, 16 * ppm).1, false);
        assert!(r.in_place(0, 5 * ppm).0 || r.in_place(5 * ppm, 6 * ppm).0);
        drop(r);

        // Top-down: ends at the top of VRAM.
        let r = bo.alloc(0, 0, PL_FLAG_TOPDOWN)?;
        assert_eq!(r.blocks().iter().map(|b| b.end()).max(), Some(16 * MIB));
        drop(r);

        // Contiguous: one extent, which `start` (in pages) gives, and the
        // flag is kept in the resource's placement.
        let c = Bo::new(&ttm, 3 * PAGE, 0)?;
        let r = c.alloc(0, 0, PL_FLAG_CONTIGUOUS)?;
        let mut ext = r.blocks();
        ext.sort_unstable_by_key(|b| b.offset());
        assert!(ext.windows(2).all(|w| w[0].end() == w[1].offset()));
        let (start, size, placement) = r.fields();
        assert_eq!(start * PAGE, ext[0].offset());
        assert_eq!(ext[ext.len() - 1].end() - ext[0].offset(), size);
        assert_ne!(placement & PL_FLAG_CONTIGUOUS, 0);
        drop(r);

        // Page alignment: blocks of at least, and aligned to, 16 pages.
        let a = Bo::new(&ttm, 32 * PAGE, 16)?;
        let r = a.alloc(0, 0, 0)?;
        assert!(r
            .blocks()
            .iter()
            .all(|b| b.size() >= 16 * PAGE && b.offset() % (16 * PAGE) == 0));
        drop(r);
        assert_eq!(man.usage(), 0);

        // Contiguous when memory is fragmented: ENOSPC though enough is
        // free in pieces.
        let lo = Bo::new(&ttm, 4 * MIB, 0)?;
        let hi = Bo::new(&ttm, 4 * MIB, 0)?;
        let r_lo = lo.alloc(0, 4 * ppm, 0)?;
        let r_hi = hi.alloc(8 * ppm, 12 * ppm, 0)?;
        let eight = Bo::new(&ttm, 8 * MIB, 0)?;
        assert_eq!(eight.alloc(0, 0, PL_FLAG_CONTIGUOUS).err(), Some(ENOSPC));
        let pieces = eight.alloc(0, 0, 0)?;
        assert_eq!(man.buddy().avail(), 0);
        drop((pieces, r_lo, r_hi));
        assert_eq!((man.usage(), man.buddy().avail()), (0, 16 * MIB));
        Ok(())
    }
}
