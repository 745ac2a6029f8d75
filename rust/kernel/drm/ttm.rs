// SPDX-License-Identifier: GPL-2.0

//! TTM, the memory manager of discrete GPUs: devices, buffer objects,
//! placements and the VRAM resource manager.
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
//! and a full VRAM is `-ENOSPC`, which makes TTM evict and retry. The CPU
//! reaches the VRAM through an [`Aperture`] (a PCI BAR, [`pci::Bar`]).
//!
//! A [`Bo`] is a `struct ttm_buffer_object` with the driver's data: placed
//! by [`Placement`]s, moved by [`Reserved::validate`] (TTM's
//! `ttm_bo_validate()`) under its reservation, evicted by TTM when VRAM is
//! full. Moves between VRAM and system memory are copy jobs of the
//! driver's device when it takes them ([`Driver::copy_move`], a
//! [`CopyJob`] whose fence TTM waits for: `ttm_bo_move_accel_cleanup()`),
//! otherwise CPU copies in this module's `move` callback
//! (`ttm_move_memcpy()` over a VRAM iterator that follows the resource's
//! blocks, as i915's `ttm_kmap_iter_iomap` follows an sg table). System
//! memory is a `ttm_tt` of TTM's page pool (`ttm_pool`), or the driver's
//! folios.
//!
//! A pipelined move leaves the old memory to a *ghost object*, a copy of
//! the `ttm_buffer_object` that TTM frees once the move's fence signals
//! (`ttm_buffer_object_transfer()`). Ghosts are on TTM's LRU lists and
//! reach the device callbacks that take a BO; they are not [`Bo`]s, and
//! the callbacks tell them apart by their `destroy` function (as xe's
//! `xe_bo_is_xe_bo()` and i915's `i915_ttm_is_ghost_object()` do).
//!
//! A driver using this module selects `RUST_DRM_TTM`.
//!
//! C headers: [`include/drm/ttm/ttm_device.h`](srctree/include/drm/ttm/ttm_device.h),
//! [`include/drm/ttm/ttm_bo.h`](srctree/include/drm/ttm/ttm_bo.h),
//! [`include/drm/ttm/ttm_resource.h`](srctree/include/drm/ttm/ttm_resource.h).

use crate::ffi::c_ulong;
use crate::{
    bindings, device,
    dma_fence::{Fence, PendingFence, Resv, ResvUsage},
    drm::{
        self,
        buddy::{Allocation, Buddy, Request},
    },
    error::{code::*, to_result, Result},
    folio::Folio,
    init::{self, PinInit},
    new_mutex,
    page::PAGE_SIZE,
    pci,
    prelude::*,
    sync::{Arc, Mutex},
    task::cond_resched,
    types::{ARef, AlwaysRefCounted, Opaque},
    workqueue::{self, impl_has_work, new_work, Work, WorkItem},
};
use core::{
    ffi::c_int,
    marker::PhantomData,
    mem::ManuallyDrop,
    ops::Deref,
    ptr::{self, NonNull},
};

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
/// `TTM_PL_FLAG_DESIRED`: a place tried only while nothing has to be
/// evicted for it.
pub const PL_FLAG_DESIRED: u32 = bindings::TTM_PL_FLAG_DESIRED;
/// `TTM_PL_FLAG_FALLBACK`: a place used only when the others are full.
pub const PL_FLAG_FALLBACK: u32 = bindings::TTM_PL_FLAG_FALLBACK;

/// `TTM_TT_FLAG_SWAPPED` (`BIT(0)` in `ttm_tt.h`, which bindgen does not
/// evaluate): TTM swapped the tt's pages out to shmem.
const TT_FLAG_SWAPPED: u32 = 1 << 0;
/// `TTM_TT_FLAG_ZERO_ALLOC` (`BIT(1)`): the pool's pages are zeroed.
const TT_FLAG_ZERO_ALLOC: u32 = 1 << 1;
/// `TTM_TT_FLAG_EXTERNAL` (`BIT(2)`): the pages are not TTM's (no pool, no
/// accounting, no swapout, no `page->mapping` reset).
const TT_FLAG_EXTERNAL: u32 = 1 << 2;
/// `TTM_TT_FLAG_EXTERNAL_MAPPABLE` (`BIT(3)`): external pages that TTM's
/// fault handler may map.
const TT_FLAG_EXTERNAL_MAPPABLE: u32 = 1 << 3;

/// A driver of TTM devices.
pub trait Driver: Sized + Send + Sync + 'static {
    /// The DRM driver whose devices' objects TTM places.
    type Drm: drm::Driver;

    /// The driver's data in each of its [`Bo`]s.
    type BoData: Send + Sync + 'static;

    /// What keeps a folio of a BO's system memory in place while TTM's
    /// `ttm_tt` points to its pages: a gemfs hold for gemfs-backed objects.
    type Folio: TtFolio;

    /// The memory type an evicted object goes to (`evict_flags`).
    const EVICT_TO: u32 = PL_SYSTEM;

    /// Whether `bo`'s system memory is folios that the driver gives
    /// ([`Driver::system_folio`]) rather than TTM's page pool. Asked when
    /// TTM makes the object's `ttm_tt` (under its reservation).
    fn external_pages(_bo: &Bo<Self>) -> bool {
        false
    }

    /// The folio holding page `index` of `bo`'s system memory, taken for
    /// TTM, for an object with [`Driver::external_pages`]. Called under the
    /// object's reservation when TTM populates its `ttm_tt` (a move to
    /// system memory, a CPU fault or access); may sleep and lock folios.
    fn system_folio(_bo: &Bo<Self>, _index: usize) -> Result<Self::Folio> {
        Err(EINVAL)
    }

    /// The memory of `bo` is about to go: it moves to another memory type
    /// (`evict` if TTM evicts it to make room), or its system pages are
    /// given back ([`Reserved::release_system_pages`]). Called with `bo`
    /// reserved and idle (every fence of its reservation object signalled),
    /// before its contents are copied: the device must stop using the old
    /// memory here (clear its page table entries into it), as the CPU's
    /// mappings have been. Not called when a new object gets its first
    /// memory, nor when TTM frees a dead object's.
    fn move_notify(_bo: &Bo<Self>, _evict: bool) {}

    /// Whether TTM may evict `bo` (reserved, not pinned, overlapping the
    /// place TTM wants room in) to make room for another object: say no to
    /// an object a job is using or about to use, so that TTM takes an idle
    /// one, or fails the allocation (`ENOMEM`) if none is left, instead
    /// of waiting for the job. Default: every object may go.
    fn eviction_valuable(_bo: &Bo<Self>) -> bool {
        true
    }

    /// Offers the driver the copy of a move of `bo` between VRAM and
    /// system memory (or the clearing of a new object's VRAM), after
    /// [`Driver::move_notify`]: to have its device do it, the driver makes
    /// the job with a fence of its own ([`MoveCopy::into_job`]) and queues
    /// it, to be run ([`CopyJob::run`]) whenever the device gets to it.
    /// TTM then waits for that fence, not for the copy: CPU faults and
    /// moves of the object wait for it, and the old memory is freed when
    /// it signals (an eviction waits for it before it returns). Dropping
    /// `copy` instead leaves the copy to the CPU, now. Called with `bo`
    /// reserved and idle; may allocate (`GFP_KERNEL`), must not take a
    /// lock that is held while waiting for `bo`'s reservation. Default:
    /// the CPU copies.
    fn copy_move(_bo: &Bo<Self>, _copy: MoveCopy<'_>) {}
}

/// Whether `bo`, a BO of a device of `T` as TTM's callbacks get it, is a
/// [`Bo<T>`] rather than a ghost object (see the module's documentation).
///
/// # Safety
///
/// `bo` is a live `ttm_buffer_object` of a [`Device<T>`].
unsafe fn driver_bo<'a, T: Driver>(bo: *mut bindings::ttm_buffer_object) -> Option<&'a Bo<T>> {
    // SAFETY: a live BO's `destroy` is set at initialisation: ours for a
    // `Bo<T>` (`Bo::new`), TTM's `ttm_transfered_destroy` for a ghost.
    let its = unsafe { (*bo).destroy }.map(|f| f as *const () as usize);
    // Compared as addresses: the kernel builds each crate as one codegen
    // unit, so `destroy::<T>` has one address in the crate that uses it.
    if its != Some(destroy::<T> as *const () as usize) {
        return None;
    }
    // SAFETY: a BO of a `Device<T>` with our `destroy` is the first field
    // of a `Bo<T>` (invariant of `Device`), live while TTM holds it.
    Some(unsafe { &*bo.cast::<Bo<T>>() })
}

/// A reference that keeps a folio in place (in memory, at its page frames)
/// while a [`Bo`]'s `ttm_tt` points to its pages.
///
/// # Safety
///
/// [`TtFolio::folio`] gives the same live folio for as long as `self`
/// lives, and its pages stay allocated to it (a reference on it is held).
pub unsafe trait TtFolio: Send + Sync + 'static {
    /// The folio.
    fn folio(&self) -> &Folio;
}

// SAFETY: a hold is a counted folio reference that gemfs accounts to the
// owner: the folio stays, and migration asks the owner to drop the hold.
unsafe impl TtFolio for crate::gemfs::Hold {
    fn folio(&self) -> &Folio {
        crate::gemfs::Hold::folio(self)
    }
}

// SAFETY: a folio reference keeps the folio allocated (and unmovable).
unsafe impl TtFolio for ARef<Folio> {
    fn folio(&self) -> &Folio {
        self
    }
}

/// Memory the CPU reaches a [`VramManager`]'s VRAM through: offset `o` of
/// the VRAM is byte `o` of the aperture.
///
/// # Safety
///
/// [`Aperture::vaddr`] is a kernel mapping of [`Aperture::len`] bytes,
/// write-combined I/O memory or RAM, constant and valid for reads and
/// writes of any byte while `self` lives, used by nothing but the owner of
/// the manager that holds `self` (TTM moves objects through it).
/// [`Aperture::bus_start`], if some, is the physical address of byte 0,
/// with the following `len()` bytes physically contiguous: user mappings
/// of VRAM objects map those page frames.
pub unsafe trait Aperture: Send + Sync + 'static {
    /// The kernel mapping.
    fn vaddr(&self) -> *mut u8;
    /// Its size in bytes.
    fn len(&self) -> usize;
    /// Whether it has no bytes (an aperture a manager cannot use).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The physical address of the start, if user space may map it.
    fn bus_start(&self) -> Option<u64>;
}

// SAFETY: a `Bar` is an `ioremap_wc()` mapping of its whole BAR, valid
// while it lives, and the BAR's bus address range is physically contiguous
// (`pci_resource_start()` on).
unsafe impl Aperture for pci::Bar {
    fn vaddr(&self) -> *mut u8 {
        self.as_ptr()
    }

    fn len(&self) -> usize {
        pci::Bar::len(self)
    }

    fn bus_start(&self) -> Option<u64> {
        Some(pci::Bar::bus_start(self))
    }
}

// SAFETY: the same mapping as `A`'s, valid while this reference (and so
// the `A`) lives; the other references to it belong to the same owner
// (a driver that also reaches the memory itself, as softgpu's engine does
// through its own reference).
unsafe impl<A: Aperture> Aperture for crate::sync::Arc<A> {
    fn vaddr(&self) -> *mut u8 {
        A::vaddr(self)
    }

    fn len(&self) -> usize {
        A::len(self)
    }

    fn bus_start(&self) -> Option<u64> {
        A::bus_start(self)
    }
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
        ttm_tt_create: Some(tt_create::<T>),
        ttm_tt_populate: Some(tt_populate::<T>),
        ttm_tt_unpopulate: Some(tt_unpopulate::<T>),
        ttm_tt_destroy: Some(tt_destroy::<T>),
        eviction_valuable: Some(Self::eviction_valuable),
        evict_flags: Some(Self::evict_flags),
        move_: Some(bo_move::<T>),
        swap_notify: Some(Self::swap_notify),
        io_mem_reserve: Some(io_mem_reserve),
        io_mem_pfn: Some(io_mem_pfn),
        // SAFETY: all-zero is "no such operation" for the rest.
        ..unsafe { core::mem::zeroed() }
    };

    /// `ttm_device_funcs.eviction_valuable`: TTM's own test (the object's
    /// memory overlaps the place), then the driver's
    /// ([`Driver::eviction_valuable`]).
    ///
    /// # Safety
    ///
    /// Called by TTM's eviction walk only, with a `Bo<T>` of a device of
    /// `T`, reserved, and a live place.
    unsafe extern "C" fn eviction_valuable(
        bo: *mut bindings::ttm_buffer_object,
        place: *const bindings::ttm_place,
    ) -> bool {
        // SAFETY: the function's safety section.
        if !unsafe { bindings::ttm_bo_eviction_valuable(bo, place) } {
            return false;
        }
        // A ghost is TTM's: evicting it waits for its move and frees it.
        // SAFETY: TTM's walk holds `bo`, a BO of a device of `T`.
        unsafe { driver_bo::<T>(bo) }.map_or(true, T::eviction_valuable)
    }

    /// `ttm_device_funcs.swap_notify`: TTM is about to swap out the pool
    /// pages of an idle object in system memory (`ttm_bo_swapout()`, when
    /// TTM's pages exceed its limit): they go as in a move
    /// ([`Driver::move_notify`]).
    ///
    /// # Safety
    ///
    /// Called by TTM only, with a reserved, idle `Bo<T>` of a device of
    /// `T`.
    unsafe extern "C" fn swap_notify(bo: *mut bindings::ttm_buffer_object) {
        // TTM cleans ghosts up rather than swapping them out; a ghost has
        // no driver state to tell in any case.
        // SAFETY: TTM's walk holds `bo`, a BO of a device of `T`.
        if let Some(bo) = unsafe { driver_bo::<T>(bo) } {
            T::move_notify(bo, true);
        }
    }

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

/// The C device, at a fixed address, and what it points to; finished by
/// `ttm_device_fini()` when dropped.
///
/// Not generic: its drop runs from a work item of the kernel crate (see
/// [`Device`]'s drop), never from a module's code.
///
/// # Invariants
///
/// `ttm` was initialised by `ttm_device_init()` with `dev`, which is kept
/// referenced, and is finished only by `drop`.
#[pin_data(PinnedDrop)]
struct RawDevice {
    #[pin]
    ttm: Opaque<bindings::ttm_device>,
    #[pin]
    work: Work<RawDevice>,
    dev: ARef<device::Device>,
}

// SAFETY: TTM's device is used from any thread under its own locks; the
// work item is queued once, by `Device::drop`.
unsafe impl Send for RawDevice {}
// SAFETY: as above.
unsafe impl Sync for RawDevice {}

impl_has_work! {
    impl HasWork<Self> for RawDevice { self.work }
}

impl WorkItem for RawDevice {
    type Pointer = Pin<KBox<Self>>;

    fn run(this: Pin<KBox<Self>>) {
        drop(this);
    }
}

#[pinned_drop]
impl PinnedDrop for RawDevice {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: initialised (type invariant) and finished once, here, on
        // a worker of the system's unbound queue: `ttm_device_fini()`
        // drains the device's own queue (delayed BO destruction), which it
        // could not do from one of that queue's workers.
        unsafe { bindings::ttm_device_fini(self.ttm.get()) };
    }
}

impl RawDevice {
    /// A TTM device with the device funcs `funcs`, for the DMA device
    /// `dev` and the DRM device `drm`.
    ///
    /// # Safety
    ///
    /// `funcs` is static; `drm` is a live DRM device of a GEM driver,
    /// which outlives every buffer object of the result.
    #[inline(never)]
    unsafe fn new(
        funcs: *const bindings::ttm_device_funcs,
        dev: &device::Device,
        drm: *mut bindings::drm_device,
    ) -> Result<Pin<KBox<Self>>> {
        let dev_raw = dev.as_raw();
        let init = move |slot: *mut Opaque<bindings::ttm_device>| {
            let raw = Opaque::raw_get(slot);
            // SAFETY: `slot` is the `ttm` field of the `Self` being
            // initialised, pinned and valid for writes; zeroed first, as
            // C callers' `kzalloc()` gives it. `funcs` is static (the
            // caller's promise). `dev` is live, kept alive by the field
            // initialised before this one; a DRM device's `anon_inode` and
            // `vma_offset_manager` are set when it is allocated (a GEM
            // driver's) and live as long as it does, which the caller
            // promises is longer than any object placed by this device.
            // `ttm_device_init()` leaves nothing to undo when it fails.
            to_result(unsafe {
                raw.write_bytes(0, 1);
                bindings::ttm_device_init(
                    raw,
                    funcs,
                    dev_raw,
                    (*(*drm).anon_inode).i_mapping,
                    (*drm).vma_offset_manager,
                    false,
                    false,
                )
            })
        };
        // INVARIANT: `ttm` is initialised by `ttm_device_init()` once the
        // initialiser succeeded; it comes last, so a failure before it has
        // nothing of TTM's to undo (and `drop` does not run).
        KBox::pin_init(
            try_pin_init!(Self {
                work <- new_work!("drm::ttm::Device::fini"),
                dev: ARef::from(dev),
                // SAFETY: the closure initialises the field completely when
                // it returns `Ok` and leaves nothing to undo when it fails;
                // the field is pinned.
                ttm <- unsafe { init::pin_init_from_closure(init) },
            }? Error),
            GFP_KERNEL,
        )
    }
}

/// A TTM device of driver `T`: the placements of the buffer objects of a
/// DRM device.
///
/// Each [`Bo`] of the device holds a reference to it, and each
/// [`VramManager`] registered on it; the last reference may thus go in a
/// BO's destruction, which TTM may run from the device's own work queue
/// (delayed destruction of a busy BO). So dropping the device finishes the
/// C device (`ttm_device_fini()`, which drains that queue) from a work item
/// on the system's unbound queue, after every BO of the device is gone.
///
/// # Invariants
///
/// `raw` is a [`RawDevice`] with `Vtable::<T>::FUNCS` for `dev` and `drm`.
/// Every resource manager of a driver type registered on it is the
/// `ManInner` of a [`VramManager<T>`] (only [`VramManager::new`] registers
/// one), and every BO placed by it is a [`Bo<T>`] or one of TTM's ghost
/// objects of a `Bo<T>` (a pipelined move's, see the module's
/// documentation), which TTM only frees, never moves or populates; the
/// callbacks that may see a ghost tell it apart ([`driver_bo`]).
pub struct Device<T: Driver> {
    /// Taken to register and unregister resource managers: TTM's
    /// `man_drv` array has no lock of its own.
    managers: Pin<KBox<Mutex<()>>>,
    /// The DRM device, whose address space and offset manager TTM uses.
    drm: ARef<drm::Device<T::Drm>>,
    raw: ManuallyDrop<Pin<KBox<RawDevice>>>,
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
        let managers = managers_lock()?;
        // SAFETY: `FUNCS` is a promoted constant, static; `drm` is a live
        // DRM device of a GEM driver (`drm::Driver`s are), which the
        // `ARef` below keeps alive as long as the device, and every BO
        // holds a reference to the device.
        let raw = unsafe { RawDevice::new(&Vtable::<T>::FUNCS, dev, drm.as_raw())? };
        Ok(Arc::new(
            Self {
                managers,
                drm: ARef::from(drm),
                raw: ManuallyDrop::new(raw),
            },
            GFP_KERNEL,
        )?)
    }

    /// The raw device.
    pub fn as_raw(&self) -> *mut bindings::ttm_device {
        self.raw.ttm.get()
    }

    /// The DRM device.
    pub fn drm(&self) -> &drm::Device<T::Drm> {
        &self.drm
    }

    /// The device the memory belongs to.
    pub fn dev(&self) -> &device::Device {
        &self.raw.dev
    }
}

impl<T: Driver> Drop for Device<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is taken once, here. No manager of ours is
        // registered (each holds a reference to `self`) and no BO is left
        // but, possibly, the one whose destruction dropped the last
        // reference, which returns to TTM's work queue only to end: the C
        // device is finished from another queue, which waits for it.
        let raw = unsafe { ManuallyDrop::take(&mut self.raw) };
        workqueue::system_unbound().enqueue(raw);
    }
}

/// The C manager and what its callbacks need, at a fixed address.
///
/// # Invariants
///
/// `man` was initialised by `ttm_resource_manager_init()` for the device
/// that the owning [`VramManager`] holds, with `VramManager::FUNCS`, and
/// `man.size` is `buddy.size()` (bytes), at most `aperture.len()`. Every
/// resource of `man` is a [`VramResource`] allocated from `buddy`.
#[repr(C)]
struct ManInner {
    man: Opaque<bindings::ttm_resource_manager>,
    buddy: Buddy,
    aperture: KBox<dyn Aperture>,
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
/// so an allocation fails only when nothing can be evicted (and then
/// `ttm_bo_validate()` reports `-ENOMEM`).
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
    /// use: TTM places objects in it from now on, and the CPU reaches them
    /// through `aperture` (offset `o` of the allocator is byte `o` of the
    /// aperture), which the manager keeps until it is dropped. `EBUSY` if
    /// `mem_type` has a manager already; `EINVAL` for `PL_SYSTEM` (TTM's
    /// own), a type out of range, another chunk size, or an aperture
    /// smaller than the allocator.
    pub fn new(
        dev: &Arc<Device<T>>,
        mem_type: u32,
        buddy: Buddy,
        aperture: impl Aperture,
    ) -> Result<Self> {
        if mem_type == PL_SYSTEM
            || mem_type >= bindings::TTM_NUM_MEM_TYPES
            || buddy.chunk_size() != PAGE_SIZE as u64
            || (aperture.len() as u64) < buddy.size()
        {
            return Err(EINVAL);
        }
        let size = buddy.size();
        let aperture = KBox::new(aperture, GFP_KERNEL)?;
        let aperture = KBox::into_raw(aperture) as *mut dyn Aperture;
        // SAFETY: `aperture` came from `KBox::into_raw` just above; the
        // pointer is only unsized (a raw pointer coercion).
        let aperture = unsafe { KBox::from_raw(aperture) };
        let inner = KBox::new(
            ManInner {
                man: Opaque::uninit(),
                buddy,
                aperture,
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
        // SAFETY: `raw` is a new, boxed resource; `base` is zeroed first,
        // as drivers `kzalloc()` theirs (`ttm_resource_init()` sets most
        // fields but not all: the LRU item's type, which TTM's LRU walks
        // read, must be `TTM_LRU_RESOURCE`, 0), then initialised for `bo`
        // and `place` and accounted to the manager. INVARIANT: a
        // `VramResource` of `inner.buddy`, handed to TTM, which gives it
        // back to `free`.
        unsafe {
            let base = (*raw).base.get();
            base.write_bytes(0, 1);
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

/// The manager of a VRAM resource's memory type.
///
/// # Safety
///
/// `man` is a manager of a driver type of a [`Device`] (a `ManInner`, by
/// the device's invariant), alive for `'a`: while one of its resources is.
unsafe fn man_inner<'a>(man: *mut bindings::ttm_resource_manager) -> &'a ManInner {
    // SAFETY: `man` is the first field of a `#[repr(C)]` `ManInner`.
    unsafe { &*man.cast::<ManInner>() }
}

/// A VRAM resource.
///
/// # Safety
///
/// `res` is a live resource of a [`VramManager`], alive for `'a`.
unsafe fn vram_resource<'a>(res: *mut bindings::ttm_resource) -> &'a VramResource {
    // SAFETY: the manager's resources are `VramResource`s (invariant of
    // `ManInner`), whose first field is `base` (`#[repr(C)]`).
    unsafe { &*res.cast::<VramResource>() }
}

/// The manager that `res` (of a driver memory type of `bdev`) came from.
///
/// # Safety
///
/// `bdev` is the C device of a [`Device`] and `res` a live resource of one
/// of its driver memory types, for `'a`.
unsafe fn resource_manager<'a>(
    bdev: *mut bindings::ttm_device,
    res: *mut bindings::ttm_resource,
) -> &'a ManInner {
    // SAFETY: the resource's memory type has a manager while it has
    // resources (`VramManager::drop` evicts them before unregistering);
    // a manager of a driver type of a `Device` is a `ManInner` (invariant
    // of `Device`).
    unsafe { man_inner(bindings::ttm_manager_type(bdev, (*res).mem_type as c_int)) }
}

/// The offset in VRAM of byte `at` of an object whose resource is `alloc`:
/// the object's bytes are the blocks' bytes in the order of the list (the
/// cursor `xe_res_cursor` is), `None` past their end.
fn vram_offset(alloc: &Allocation, at: u64) -> Option<u64> {
    let mut rest = at;
    for b in alloc.blocks() {
        if rest < b.size() {
            return Some(b.offset() + rest);
        }
        rest -= b.size();
    }
    None
}

/// A `ttm_kmap_iter` over a VRAM resource, page by page through the
/// aperture's kernel mapping, for `ttm_move_memcpy()`. Linear in the
/// object, not in VRAM: page `i` is where [`vram_offset`] puts it, so a
/// resource of several blocks is copied right (TTM's own
/// `ttm_kmap_iter_linear_io` assumes one extent).
///
/// # Invariants
///
/// `base.ops` is `&VRAM_ITER_OPS`; `vaddr` is the kernel mapping of the
/// aperture of the manager `alloc` came from, valid while `alloc` is.
#[repr(C)]
struct VramIter<'a> {
    base: bindings::ttm_kmap_iter,
    vaddr: *mut u8,
    alloc: &'a Allocation,
}

static VRAM_ITER_OPS: bindings::ttm_kmap_iter_ops = bindings::ttm_kmap_iter_ops {
    map_local: Some(vram_map_local),
    unmap_local: None,
    maps_tt: false,
};

impl<'a> VramIter<'a> {
    /// # Safety
    ///
    /// As for [`resource_manager`]: `res` a live VRAM resource of `bdev`,
    /// for `'a`.
    unsafe fn new(bdev: *mut bindings::ttm_device, res: *mut bindings::ttm_resource) -> Self {
        // SAFETY: the caller's promise.
        let (inner, vres) = unsafe { (resource_manager(bdev, res), vram_resource(res)) };
        // INVARIANT: the ops are ours; the aperture is the manager's.
        Self {
            base: bindings::ttm_kmap_iter {
                ops: &VRAM_ITER_OPS,
            },
            vaddr: inner.aperture.vaddr(),
            alloc: &vres.alloc,
        }
    }

    fn as_iter(&mut self) -> *mut bindings::ttm_kmap_iter {
        &mut self.base
    }
}

/// `ttm_kmap_iter_ops.map_local` of [`VramIter`]: page `i` of the object,
/// as I/O memory.
///
/// # Safety
///
/// Called by `ttm_move_memcpy()` only, with a `VramIter`'s `base` and a
/// page of the object.
unsafe extern "C" fn vram_map_local(
    iter: *mut bindings::ttm_kmap_iter,
    dmap: *mut bindings::iosys_map,
    i: c_ulong,
) {
    // SAFETY: `iter` is the first field of a live `VramIter` (only those
    // have these ops).
    let it = unsafe { &*iter.cast::<VramIter<'_>>() };
    // `ttm_move_memcpy()` maps the pages of the destination's size, the
    // object's, which both resources cover: `vram_offset` finds each.
    let off = vram_offset(it.alloc, i as u64 * PAGE_SIZE as u64).unwrap_or(0);
    // SAFETY: `off` is inside the manager's memory, which the aperture maps
    // (`man.size <= aperture.len()`, invariant of `ManInner`); TTM passes a
    // map to fill in.
    unsafe {
        (*dmap).__bindgen_anon_1.vaddr_iomem = it.vaddr.add(off as usize).cast();
        (*dmap).is_iomem = true;
    }
}

/// One side of a move's copy: the pages of a populated `ttm_tt`, or a VRAM
/// resource through its manager's aperture.
///
/// # Invariants
///
/// `Tt` is a populated tt of a [`Device`]; `Vram`'s `alloc` is the
/// allocation of a live [`VramResource`] and `vaddr` the kernel mapping of
/// its manager's aperture. Both while the move's fence has not signalled
/// (see [`CopyJob`]).
#[derive(Clone, Copy)]
enum CopyEnd {
    Tt(*mut bindings::ttm_tt),
    Vram {
        vaddr: *mut u8,
        alloc: *const Allocation,
    },
}

/// A page of a [`CopyEnd`], mapped for the CPU.
struct MappedPage {
    ptr: *mut u8,
    /// I/O memory (`memcpy_toio()` and friends), not RAM.
    io: bool,
    /// A `kmap_local_page()` mapping, to undo.
    kmapped: bool,
}

impl CopyEnd {
    /// # Safety
    ///
    /// `res` is a live VRAM resource of `bdev`, the C device of a
    /// [`Device`].
    unsafe fn vram(bdev: *mut bindings::ttm_device, res: *mut bindings::ttm_resource) -> Self {
        // SAFETY: the caller's promise.
        let (inner, vres) = unsafe { (resource_manager(bdev, res), vram_resource(res)) };
        // INVARIANT: the resource's allocation and its manager's aperture.
        CopyEnd::Vram {
            vaddr: inner.aperture.vaddr(),
            alloc: &vres.alloc,
        }
    }

    /// Maps page `i` of the side.
    ///
    /// # Safety
    ///
    /// The side's memory is live (type invariant) and has page `i`; the
    /// mapping is undone ([`CopyEnd::unmap`]) in the reverse order of
    /// mapping, as `kmap_local_page()` requires.
    unsafe fn map(&self, i: usize) -> MappedPage {
        match *self {
            CopyEnd::Tt(tt) => {
                // SAFETY: a populated tt has a page for each of its pages.
                let ptr = unsafe { bindings::kmap_local_page(*(*tt).pages.add(i)) }.cast();
                MappedPage {
                    ptr,
                    io: false,
                    kmapped: true,
                }
            }
            CopyEnd::Vram { vaddr, alloc } => {
                // SAFETY: a live allocation (type invariant).
                let off = vram_offset(unsafe { &*alloc }, (i * PAGE_SIZE) as u64).unwrap_or(0);
                MappedPage {
                    // SAFETY: the manager's memory is inside its aperture
                    // (invariant of `ManInner`).
                    ptr: unsafe { vaddr.add(off as usize) },
                    io: true,
                    kmapped: false,
                }
            }
        }
    }
}

impl MappedPage {
    /// # Safety
    ///
    /// As [`CopyEnd::map`]: the latest mapping still in place.
    unsafe fn unmap(self) {
        if self.kmapped {
            // SAFETY: the caller's promise.
            unsafe { bindings::kunmap_local(self.ptr.cast_const().cast()) };
        }
    }
}

/// Copies page `i` of `src` to `dst`, or clears it (`src` `None`).
///
/// # Safety
///
/// Both sides' memory is live, has page `i`, and is not written by anyone
/// else meanwhile.
unsafe fn copy_page(src: Option<&CopyEnd>, dst: &CopyEnd, i: usize) {
    // SAFETY: the caller's promise; unmapped in reverse order below.
    let d = unsafe { dst.map(i) };
    match src {
        None => {
            // SAFETY: `d` maps a whole page.
            unsafe {
                if d.io {
                    bindings::memset_io(d.ptr.cast(), 0, PAGE_SIZE);
                } else {
                    ptr::write_bytes(d.ptr, 0, PAGE_SIZE);
                }
            }
        }
        Some(src) => {
            // SAFETY: as above.
            let s = unsafe { src.map(i) };
            // SAFETY: `s` and `d` map whole, distinct pages (an object's old
            // and new memory do not overlap).
            unsafe {
                match (s.io, d.io) {
                    (false, false) => ptr::copy_nonoverlapping(s.ptr, d.ptr, PAGE_SIZE),
                    (true, false) => {
                        bindings::memcpy_fromio(d.ptr.cast(), s.ptr.cast_const().cast(), PAGE_SIZE)
                    }
                    (false, true) => {
                        bindings::memcpy_toio(d.ptr.cast(), s.ptr.cast_const().cast(), PAGE_SIZE)
                    }
                    (true, true) => {
                        // Through a small bounce buffer: no allocation here.
                        let mut buf = [0u8; 256];
                        for at in (0..PAGE_SIZE).step_by(buf.len()) {
                            bindings::memcpy_fromio(
                                buf.as_mut_ptr().cast(),
                                s.ptr.add(at).cast_const().cast(),
                                buf.len(),
                            );
                            bindings::memcpy_toio(
                                d.ptr.add(at).cast(),
                                buf.as_ptr().cast(),
                                buf.len(),
                            );
                        }
                    }
                }
                s.unmap();
            }
        }
    }
    // SAFETY: the only mapping left.
    unsafe { d.unmap() };
}

/// The copy of a move, offered to the driver ([`Driver::copy_move`]); it
/// becomes a [`CopyJob`] with the driver's fence.
pub struct MoveCopy<'a> {
    src: Option<CopyEnd>,
    dst: CopyEnd,
    pages: usize,
    /// Where the move callback learns the job's fence.
    fence: &'a mut Option<ARef<Fence>>,
}

impl MoveCopy<'_> {
    /// The number of pages to copy.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Whether this clears a new object's memory rather than copying.
    pub fn is_clear(&self) -> bool {
        self.src.is_none()
    }

    /// The job, which `fence` tells the completion of: TTM keeps both
    /// sides' memory until `fence` signals, which only the job does, once
    /// done ([`CopyJob::run`]).
    pub fn into_job(self, fence: PendingFence) -> CopyJob {
        *self.fence = Some(fence.fence().clone());
        // INVARIANT: the move callback hands this fence to TTM
        // (`ttm_bo_move_accel_cleanup()`), which keeps the old memory on a
        // ghost object until it signals; the new memory is the object's,
        // which TTM and this module free or unpopulate only once the
        // object is idle, after its fences, this one among them.
        CopyJob {
            src: self.src,
            dst: self.dst,
            pages: self.pages,
            fence,
        }
    }
}

/// A move's copy for the driver's device to run: from an object's old
/// memory to its new, page by page, or the clearing of a new object's.
/// Dropped without running, its fence signals `ECANCELED` and the object
/// keeps whatever its new memory held.
///
/// # Invariants
///
/// The memory of `src` and `dst` is live until `fence` signals, and
/// nothing but the job writes `dst` before then.
pub struct CopyJob {
    src: Option<CopyEnd>,
    dst: CopyEnd,
    pages: usize,
    fence: PendingFence,
}

// SAFETY: the job owns its access to the memory until its fence signals
// (type invariant), from whichever thread runs it.
unsafe impl Send for CopyJob {}

impl CopyJob {
    /// The number of pages it copies.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The fence the job signals.
    pub fn fence(&self) -> &ARef<Fence> {
        self.fence.fence()
    }

    /// Does the copy, a page at a time with a scheduling point after each
    /// (jobs may be GiBs, on kernels that do not preempt), then signals the
    /// fence. Allocates nothing and takes no lock, so it may run in a
    /// fence's signalling critical section, as a device's job does.
    pub fn run(self) {
        for i in 0..self.pages {
            // SAFETY: both sides are live until the fence signals, below
            // (type invariant), and cover the object's pages.
            unsafe { copy_page(self.src.as_ref(), &self.dst, i) };
            cond_resched();
        }
        if matches!(self.dst, CopyEnd::Vram { .. }) {
            // Write-combined writes reach the memory before the fence says
            // they have.
            // SAFETY: a barrier.
            unsafe { bindings::wmb() };
        }
        self.fence.signal(Ok(()));
    }
}

/// The `ttm_tt` of a [`Bo<T>`]: its system pages, from TTM's page pool
/// (`ttm_pool_alloc()`: unmovable while the object is in system memory, as
/// amdgpu's) or, for an object with [`Driver::external_pages`], the
/// driver's folios ([`Driver::system_folio`], say a gemfs file's, which
/// migration can move once the driver lets them go).
///
/// # Invariants
///
/// `tt` was initialised by `ttm_tt_init()` for `bo`, the BO whose `ttm` it
/// is, or after a pipelined move out of system memory the ghost object's
/// that keeps it until the move's fence signals; TTM destroys it before
/// the BO (a ghost holds a reference to its BO). It is populated only
/// while it is `bo`'s. With `TTM_TT_FLAG_EXTERNAL` and
/// `TTM_TT_FLAG_EXTERNAL_MAPPABLE` if `external`. When populated and
/// external, every page in `tt.pages` belongs to a folio of `folios`;
/// otherwise `folios` is empty.
#[repr(C)]
struct Tt<T: Driver> {
    tt: Opaque<bindings::ttm_tt>,
    bo: *const Bo<T>,
    external: bool,
    folios: KVVec<T::Folio>,
}

impl<T: Driver> Tt<T> {
    /// # Safety
    ///
    /// `tt` is a live `ttm_tt` of a `Device<T>` (all are `Tt<T>`s, made by
    /// `tt_create`), not otherwise referenced for `'a` (TTM calls under the
    /// BO's reservation).
    unsafe fn from_raw<'a>(tt: *mut bindings::ttm_tt) -> &'a mut Self {
        // SAFETY: `tt` is the first field of a `#[repr(C)]` `Tt<T>`.
        unsafe { &mut *tt.cast::<Self>() }
    }
}

/// `ttm_device_funcs.ttm_tt_create`: a [`Tt`], cached, external if the
/// driver says so.
///
/// # Safety
///
/// Called by TTM only, with a reserved BO of a `Device<T>`.
unsafe extern "C" fn tt_create<T: Driver>(
    bo: *mut bindings::ttm_buffer_object,
    page_flags: u32,
) -> *mut bindings::ttm_tt {
    // SAFETY: every BO of a `Device<T>` is a `Bo<T>` but ghosts, which
    // TTM never gives a tt (invariant of `Device`); live while TTM uses
    // it.
    let external = T::external_pages(unsafe { &*bo.cast::<Bo<T>>() });
    // Zeroed pool pages for every object (TTM zeroes only user objects'
    // new pages): a new object reads zeroes wherever it is placed.
    let flags = if external {
        page_flags | TT_FLAG_EXTERNAL | TT_FLAG_EXTERNAL_MAPPABLE
    } else {
        page_flags | TT_FLAG_ZERO_ALLOC
    };
    let Ok(b) = KBox::new(
        Tt::<T> {
            tt: Opaque::uninit(),
            bo: bo.cast(),
            external,
            folios: KVVec::new(),
        },
        GFP_KERNEL,
    ) else {
        return ptr::null_mut();
    };
    let raw = KBox::into_raw(b);
    // SAFETY: `raw` is a new box; its `tt` is zeroed, then initialised for
    // `bo` (live, TTM's) by `ttm_tt_init()`, which allocates the page
    // array; on failure nothing of it is left to undo and the box is freed.
    // INVARIANT: initialised for `bo` with the flags of `external`.
    unsafe {
        let tt = (*raw).tt.get();
        tt.write_bytes(0, 1);
        if bindings::ttm_tt_init(tt, bo, flags, bindings::ttm_caching_ttm_cached, 0) != 0 {
            drop(KBox::from_raw(raw));
            return ptr::null_mut();
        }
        tt
    }
}

/// `ttm_device_funcs.ttm_tt_populate`: pages from TTM's pool, or the
/// driver's folios, each folio taken once for all its pages. On failure
/// the folios taken so far are given back.
///
/// # Safety
///
/// Called by TTM only (`ttm_tt_populate()`), with an unpopulated `Tt<T>`
/// of a reserved BO and a live context.
unsafe extern "C" fn tt_populate<T: Driver>(
    bdev: *mut bindings::ttm_device,
    tt: *mut bindings::ttm_tt,
    ctx: *mut bindings::ttm_operation_ctx,
) -> c_int {
    // SAFETY: the function's safety section.
    let this = unsafe { Tt::<T>::from_raw(tt) };
    if !this.external {
        // SAFETY: TTM's pool of the device, for a tt of it.
        return unsafe { bindings::ttm_pool_alloc(&raw mut (*bdev).pool, tt, ctx) };
    }
    // SAFETY: the BO outlives its tt (type invariant of `Tt`).
    let bo = unsafe { &*this.bo };
    // SAFETY: the tt is initialised: its page count is set.
    let pages = unsafe { (*tt).num_pages } as usize;
    let mut index = 0;
    while index < pages {
        let f = match T::system_folio(bo, index) {
            Ok(f) => f,
            Err(e) => {
                this.folios = KVVec::new();
                return e.to_errno();
            }
        };
        let folio = f.folio();
        let (first, nr) = (folio.index(), folio.nr_pages());
        if first > index || first + nr <= index {
            // Not the folio of that page: a driver bug.
            this.folios = KVVec::new();
            return EINVAL.to_errno();
        }
        let end = (first + nr).min(pages);
        for i in index..end {
            // SAFETY: `i` is below the page count, so inside the page
            // array; page `i - first` is inside the folio.
            unsafe {
                *(*tt).pages.add(i) = bindings::folio_page(folio.as_raw(), (i - first) as _);
            }
        }
        if this.folios.push(f, GFP_KERNEL).is_err() {
            this.folios = KVVec::new();
            return ENOMEM.to_errno();
        }
        index = end;
    }
    // INVARIANT: every page is in a folio of `folios`.
    0
}

/// `ttm_device_funcs.ttm_tt_unpopulate`: the pages go back to the pool, or
/// the driver's folios are given back (their holds dropped).
///
/// # Safety
///
/// Called by TTM only (`ttm_tt_unpopulate()`), with a populated `Tt<T>`
/// of a reserved (or dying) BO, whose pages nothing maps any more.
unsafe extern "C" fn tt_unpopulate<T: Driver>(
    bdev: *mut bindings::ttm_device,
    tt: *mut bindings::ttm_tt,
) {
    // SAFETY: the function's safety section.
    let this = unsafe { Tt::<T>::from_raw(tt) };
    if !this.external {
        // SAFETY: pages of the device's pool, given back once.
        unsafe { bindings::ttm_pool_free(&raw mut (*bdev).pool, tt) };
        return;
    }
    // SAFETY: the page array has `num_pages` entries; cleared so that no
    // stale page is reachable through it.
    unsafe {
        let n = (*tt).num_pages as usize;
        ptr::write_bytes((*tt).pages, 0, n);
    }
    this.folios = KVVec::new();
}

/// `ttm_device_funcs.ttm_tt_destroy`.
///
/// # Safety
///
/// Called by TTM only, with an unpopulated `Tt<T>`, once.
unsafe extern "C" fn tt_destroy<T: Driver>(
    _bdev: *mut bindings::ttm_device,
    tt: *mut bindings::ttm_tt,
) {
    // SAFETY: `tt` is the first field of a boxed `Tt<T>` (`tt_create`),
    // initialised; TTM unpopulated it and never uses it again.
    unsafe {
        bindings::ttm_tt_fini(tt);
        drop(KBox::from_raw(tt.cast::<Tt<T>>()));
    }
}

/// `ttm_device_funcs.io_mem_reserve`: a VRAM resource is I/O memory of the
/// aperture, write-combined, from the bus address of its first block
/// (TTM's faults ask `io_mem_pfn` for each page). System memory needs
/// nothing. `EINVAL` if the aperture cannot be mapped to user space.
///
/// # Safety
///
/// Called by TTM only, with a live resource of `bdev`.
unsafe extern "C" fn io_mem_reserve(
    bdev: *mut bindings::ttm_device,
    mem: *mut bindings::ttm_resource,
) -> c_int {
    // SAFETY: TTM passes a live resource.
    if unsafe { (*mem).mem_type } == PL_SYSTEM {
        return 0;
    }
    // SAFETY: a live resource of a driver memory type of `bdev`.
    let (inner, vres) = unsafe { (resource_manager(bdev, mem), vram_resource(mem)) };
    let Some(bus) = inner.aperture.bus_start() else {
        return EINVAL.to_errno();
    };
    let first = vram_offset(&vres.alloc, 0).unwrap_or(0);
    // SAFETY: the resource is TTM's, which calls this under the BO's
    // reservation (or for a resource being set up).
    unsafe {
        (*mem).bus.offset = bus + first;
        (*mem).bus.is_iomem = true;
        (*mem).bus.caching = bindings::ttm_caching_ttm_write_combined;
    }
    0
}

/// `ttm_device_funcs.io_mem_pfn`: the page frame of page `page_offset` of
/// a VRAM object, the aperture's bus address plus the offset of that page
/// in its resource's blocks.
///
/// # Safety
///
/// Called by TTM's fault handler only, with the BO reserved, in VRAM, its
/// resource reserved for I/O (so the aperture has a bus address), and a
/// page inside the object.
unsafe extern "C" fn io_mem_pfn(
    bo: *mut bindings::ttm_buffer_object,
    page_offset: c_ulong,
) -> c_ulong {
    // SAFETY: the BO is reserved and in VRAM: its resource is live.
    let (inner, vres) = unsafe {
        let res = (*bo).resource;
        (resource_manager((*bo).bdev, res), vram_resource(res))
    };
    let bus = inner.aperture.bus_start().unwrap_or(0);
    let off = vram_offset(&vres.alloc, page_offset as u64 * PAGE_SIZE as u64).unwrap_or(0);
    ((bus + off) >> crate::page::PAGE_SHIFT) as c_ulong
}

/// `ttm_device_funcs.move`: waits for the object to be idle
/// (`ttm_bo_wait_ctx()`, as the context allows: TTM's own
/// `ttm_bo_move_memcpy()` leaves that to its callers, amdgpu and nouveau
/// wait before they fall back to it), tells the driver
/// ([`Driver::move_notify`]), then has the object copied between VRAM and
/// system memory: by the driver's device if it takes the job
/// ([`Driver::copy_move`], see [`finish_copy_job`]), else by the CPU
/// (`ttm_move_memcpy()`, then `ttm_bo_move_sync_cleanup()` puts the new
/// resource in place). A new object placed in VRAM is cleared the same
/// way: VRAM keeps what its last object left. Moves within system memory
/// (a new object, or one whose pages TTM keeps) change nothing but the
/// resource. TTM has unmapped the CPU (`ttm_bo_unmap_virtual()`) before
/// calling.
///
/// The wait for idleness before the copy is nouveau's (`nouveau_bo_move()`
/// waits, then queues its copy with `pipeline` false): the driver's
/// device page tables are updated by the CPU under the reservation
/// ([`Driver::move_notify`]), not in the device's queue, so a move may not
/// start while a job of the device may still use the old memory.
///
/// # Safety
///
/// Called by TTM only (`ttm_bo_handle_move_mem()`), with a reserved BO of
/// a `Device<T>`, a live context and the new resource.
unsafe extern "C" fn bo_move<T: Driver>(
    bo: *mut bindings::ttm_buffer_object,
    evict: bool,
    ctx: *mut bindings::ttm_operation_ctx,
    new_mem: *mut bindings::ttm_resource,
    _hop: *mut bindings::ttm_place,
) -> c_int {
    // SAFETY: TTM calls `move` with the BO reserved, so its device, resource
    // and tt are stable, and with `new_mem` a live resource it allocated for
    // this move, which it does not free before `move` returns.
    let (bdev, old, tt, new_type) =
        unsafe { ((*bo).bdev, (*bo).resource, (*bo).ttm, (*new_mem).mem_type) };
    // SAFETY: TTM moves only `Bo<T>`s, never ghosts (it frees those once
    // idle instead), of a device of `T`, live while TTM moves them.
    let Some(this) = (unsafe { driver_bo::<T>(bo) }) else {
        return EINVAL.to_errno();
    };
    // SAFETY: a non-null resource of a reserved BO is live.
    let old_type = (!old.is_null()).then(|| unsafe { (*old).mem_type });
    if new_type == PL_SYSTEM && old_type.map_or(true, |t| t == PL_SYSTEM) {
        // SAFETY: the BO is reserved; `new_mem` is TTM's new resource,
        // which the BO takes over (the old one, if any, is freed).
        unsafe { bindings::ttm_bo_move_null(bo, new_mem) };
        return 0;
    }
    if old_type.is_some() {
        // The old memory may be in use by the device until the object's
        // fences signal: wait (or `EBUSY` if the context may not), then the
        // driver stops using it, before anything is copied.
        // SAFETY: the BO is reserved; `ctx` is TTM's.
        let ret = unsafe { bindings::ttm_bo_wait_ctx(bo, ctx) };
        if ret != 0 {
            return ret;
        }
        T::move_notify(this, evict);
    }
    let mut dst_tt = core::mem::MaybeUninit::<bindings::ttm_kmap_iter_tt>::uninit();
    let mut src_tt = core::mem::MaybeUninit::<bindings::ttm_kmap_iter_tt>::uninit();
    let mut dst_vram;
    let mut src_vram;
    let (dst, dst_end) = if new_type == PL_SYSTEM {
        // Into system memory: TTM made the tt (system memory uses one)
        // but does not populate it for `TTM_PL_SYSTEM`.
        // SAFETY: the BO's tt, live while it is reserved; `ctx` is TTM's.
        let ret = unsafe { bindings::ttm_tt_populate(bdev, tt, ctx) };
        if ret != 0 {
            return ret;
        }
        // SAFETY: `dst_tt` is storage for the iterator, which lives until
        // the copy is done; `tt` is populated.
        let it = unsafe { bindings::ttm_kmap_iter_tt_init(dst_tt.as_mut_ptr(), tt) };
        // INVARIANT (`CopyEnd`): a populated tt of the device.
        (it, CopyEnd::Tt(tt))
    } else {
        // SAFETY: `new_mem` is a live resource of the driver type.
        dst_vram = unsafe { VramIter::new(bdev, new_mem) };
        // SAFETY: as above.
        (dst_vram.as_iter(), unsafe { CopyEnd::vram(bdev, new_mem) })
    };
    let (src, src_end) = match old_type {
        // A new object: cleared.
        None => (dst, None),
        Some(PL_SYSTEM) => {
            // SAFETY: the BO's tt (system memory has one), live while it
            // is reserved. Swapped out by TTM: read back first.
            unsafe {
                if !tt.is_null() && (*tt).page_flags & TT_FLAG_SWAPPED != 0 {
                    let ret = bindings::ttm_tt_populate(bdev, tt, ctx);
                    if ret != 0 {
                        return ret;
                    }
                }
            }
            // SAFETY: as above.
            if tt.is_null() || !unsafe { bindings::ttm_tt_is_populated(tt) } {
                // Never written: zeroes.
                (dst, None)
            } else {
                // SAFETY: `src_tt` lives until the copy is done; `tt` is
                // populated.
                (
                    unsafe { bindings::ttm_kmap_iter_tt_init(src_tt.as_mut_ptr(), tt) },
                    Some(CopyEnd::Tt(tt)),
                )
            }
        }
        Some(_) => {
            // SAFETY: the BO's live resource, of the driver type.
            src_vram = unsafe { VramIter::new(bdev, old) };
            // SAFETY: as above.
            let end = unsafe { CopyEnd::vram(bdev, old) };
            (src_vram.as_iter(), Some(end))
        }
    };
    // SAFETY: TTM's new resource, the object's size.
    let pages = unsafe { (*new_mem).size }.div_ceil(PAGE_SIZE);
    let mut fence = None;
    T::copy_move(
        this,
        MoveCopy {
            src: src_end,
            dst: dst_end,
            pages,
            fence: &mut fence,
        },
    );
    if let Some(fence) = fence {
        // SAFETY: the BO is reserved; the job of `fence` copies into
        // `new_mem`, from the old memory.
        unsafe { finish_copy_job(bo, &fence, evict, old.is_null(), new_mem) };
        return 0;
    }
    // SAFETY: both iterators cover the object's pages (each resource is
    // the object's size); `clear` only writes `dst`. Then the BO, reserved,
    // takes `new_mem`: the old resource is freed (and, into VRAM, the tt
    // destroyed) once the BO is idle; a new object has nothing to free.
    unsafe {
        bindings::ttm_move_memcpy(src_end.is_none(), pages as u32, dst, src);
        if old.is_null() {
            bindings::ttm_bo_move_null(bo, new_mem);
        } else {
            bindings::ttm_bo_move_sync_cleanup(bo, new_mem);
        }
    }
    0
}

/// Puts `new_mem` in place for a move whose copy the driver's device does,
/// the job of `fence`, queued (maybe running, maybe done):
///
/// - a move (`evict` false): `ttm_bo_move_accel_cleanup()` with
///   `pipeline` false; the object's fences gain `fence` (CPU faults and
///   the next move wait for it, `DMA_RESV_USAGE_KERNEL`) and its old
///   memory goes to a ghost object, freed when `fence` signals;
/// - an eviction: waits for `fence`, then frees the old memory
///   (`ttm_bo_move_sync_cleanup()`), so that TTM finds the room it evicted
///   for. Not with `ttm_bo_move_accel_cleanup(.., evict = true, pipeline =
///   false, ..)`, whose wait gives up after 15 s with `EBUSY` and leaves
///   the job writing into memory that TTM then frees; a device's jobs all
///   end, so this waits without a timeout (a move whose ghost could not be
///   made waits the same way);
/// - a new object (`new_object`): nothing to free; `fence` joins its
///   fences, in the slot `ttm_bo_mem_space()` reserved.
///
/// # Safety
///
/// `bo` is a reserved, idle BO of a [`Device`], `new_mem` the resource it
/// is moving to, with `fence` signalled only once the job is done with it
/// and with the BO's current memory.
unsafe fn finish_copy_job(
    bo: *mut bindings::ttm_buffer_object,
    fence: &Fence,
    evict: bool,
    new_object: bool,
    new_mem: *mut bindings::ttm_resource,
) {
    if new_object {
        // SAFETY: the BO is reserved, with a fence slot reserved by TTM for
        // its move; it takes `new_mem` (it had no memory to free).
        unsafe {
            bindings::dma_resv_add_fence(
                (*bo).base.resv,
                fence.as_raw(),
                bindings::dma_resv_usage_DMA_RESV_USAGE_KERNEL,
            );
            bindings::ttm_bo_move_null(bo, new_mem);
        }
        return;
    }
    if !evict {
        // SAFETY: the BO is reserved and TTM reserved a fence slot;
        // `fence` signals once the old and new memory are no longer used.
        let ret = unsafe {
            bindings::ttm_bo_move_accel_cleanup(bo, fence.as_raw(), false, false, new_mem)
        };
        if ret == 0 {
            return;
        }
    }
    let _ = fence.wait_timeout(usize::MAX);
    // SAFETY: reserved, and idle now: the copy is done, and no fence was
    // added since the object was found idle (that takes the reservation).
    unsafe { bindings::ttm_bo_move_sync_cleanup(bo, new_mem) };
}

/// A user-mappable BO ([`BoType::Device`]), as the CPU mappings of the GEM
/// object whose memory it is see it: they are TTM's (`ttm_bo_vm_ops`), and
/// each fault inserts the page where the BO is at that moment, a VRAM page
/// through the aperture (write-combined) or a page of its `ttm_tt`, under
/// the BO's reservation (`ttm_bo_vm_reserve()`); every move unmaps them
/// first. Such mappings are `VM_PFNMAP`: the pages are not in rmap, which
/// is why a driver whose system pages migration can move unmaps them
/// itself ([`Reserved::release_system_pages`]). `ptrace` access to a VRAM
/// object is `-EIO` (no `access_memory`).
///
/// # Invariants
///
/// A live, initialised `ttm_buffer_object` of type `ttm_bo_type_device` of
/// a [`Device`], while borrowed.
#[repr(transparent)]
pub struct MmapBo(Opaque<bindings::ttm_buffer_object>);

impl MmapBo {
    /// Sets up `vma` as a mapping of the BO from its page `pgoff` on
    /// (`ttm_bo_mmap_obj()`, which takes a reference to the BO for the
    /// mapping): `EINVAL` for a copy-on-write mapping or one past the BO's
    /// end.
    ///
    /// # Safety
    ///
    /// `vma` is being set up by `mmap()` of a DRM file of the BO's DRM
    /// device (its address space is the TTM device's `dev_mapping`), with no
    /// `vm_ops` or private data of anyone else's.
    pub unsafe fn mmap(&self, vma: *mut bindings::vm_area_struct, pgoff: usize) -> Result {
        let bo = self.0.get();
        // SAFETY: the BO is live (type invariant); `vma` is the caller's.
        unsafe {
            let span = &(*vma).__bindgen_anon_1.__bindgen_anon_1;
            let pages = (span.vm_end - span.vm_start) >> crate::page::PAGE_SHIFT;
            let end = pgoff.checked_add(pages).ok_or(EINVAL)?;
            if end > (*bo).base.size / PAGE_SIZE {
                return Err(EINVAL);
            }
            // The BO's own offset range, which TTM's faults and
            // `ttm_bo_unmap_virtual()` count from.
            (*vma).vm_pgoff = (pgoff
                + bindings::drm_vma_node_start(&raw const (*bo).base.vma_node) as usize)
                as _;
            to_result(bindings::ttm_bo_mmap_obj(vma, bo))
        }
    }
}

/// Unmaps a BO from the CPU and unpopulates its tt: `ttm_tt_unpopulate()`
/// is TTM's own, for the built-in kernel crate (modules cannot call it).
///
/// # Safety
///
/// `bo` is reserved, with a populated tt.
#[inline(never)]
unsafe fn unpopulate(bo: *mut bindings::ttm_buffer_object) {
    // SAFETY: the caller's promise.
    unsafe {
        bindings::ttm_bo_unmap_virtual(bo);
        bindings::ttm_tt_unpopulate((*bo).bdev, (*bo).ttm);
    }
}

/// A place for an object: a memory type and `TTM_PL_FLAG_*` flags, in a
/// [`Placement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The memory type: [`PL_VRAM`], [`PL_SYSTEM`].
    pub mem_type: u32,
    /// `PL_FLAG_*`.
    pub flags: u32,
}

impl Place {
    /// A place in `mem_type` with `flags`.
    pub const fn new(mem_type: u32, flags: u32) -> Self {
        Self { mem_type, flags }
    }
}

/// The most places in a [`Placement`].
pub const MAX_PLACES: usize = 4;

/// Where an object may be, in order of preference: a `ttm_placement`.
pub struct Placement {
    places: [bindings::ttm_place; MAX_PLACES],
    len: usize,
}

impl Placement {
    /// The places `places`, preferred first. `EINVAL` for none, more than
    /// [`MAX_PLACES`], or a memory type out of range.
    pub fn new(places: &[Place]) -> Result<Self> {
        if places.is_empty()
            || places.len() > MAX_PLACES
            || places
                .iter()
                .any(|p| p.mem_type >= bindings::TTM_NUM_MEM_TYPES)
        {
            return Err(EINVAL);
        }
        let none = bindings::ttm_place {
            fpfn: 0,
            lpfn: 0,
            mem_type: 0,
            flags: 0,
        };
        let mut this = Self {
            places: [none; MAX_PLACES],
            len: places.len(),
        };
        for (raw, p) in this.places.iter_mut().zip(places) {
            raw.mem_type = p.mem_type;
            raw.flags = p.flags;
        }
        Ok(this)
    }

    /// Whether one of the places is in memory type `mem_type`.
    pub fn allows(&self, mem_type: u32) -> bool {
        self.places[..self.len]
            .iter()
            .any(|p| p.mem_type == mem_type)
    }

    /// The C placement, pointing into `self`.
    fn raw(&self) -> bindings::ttm_placement {
        bindings::ttm_placement {
            num_placement: self.len as u32,
            placement: self.places.as_ptr(),
        }
    }
}

/// A TTM buffer object of driver `T`, with its own reservation object,
/// placed by TTM; the driver's GEM object (with the handles) holds a
/// reference to it and, for a [`BoType::Device`] BO, maps it through
/// [`Bo::mmap_bo`].
///
/// Its memory is where its resource is: VRAM (a [`VramManager`]'s blocks)
/// or system memory (a `ttm_tt`). It moves under its reservation
/// ([`Bo::reserve`], [`Reserved::validate`]), and TTM evicts it, idle and
/// unreserved, when VRAM is full.
///
/// # Invariants
///
/// `bo` was initialised by `ttm_bo_init_validate()` on `dev` with
/// `destroy::<T>`, after `drm_gem_private_object_init()` of its `base`
/// with `BO_GEM_FUNCS`; it is reference counted by its GEM refcount, whose
/// end puts TTM's initial reference, and the box made in [`Bo::new`] is
/// freed by `destroy::<T>` only.
#[repr(C)]
#[pin_data]
pub struct Bo<T: Driver> {
    bo: Opaque<bindings::ttm_buffer_object>,
    dev: ManuallyDrop<Arc<Device<T>>>,
    #[pin]
    data: T::BoData,
}

// SAFETY: TTM's BO is used under its reservation and TTM's locks, from any
// thread; the data is `Send + Sync`.
unsafe impl<T: Driver> Send for Bo<T> {}
// SAFETY: as above; `&Bo` gives only `&T::BoData` and reservation-guarded
// access.
unsafe impl<T: Driver> Sync for Bo<T> {}

// SAFETY: the GEM refcount keeps the object alive: its last put gives
// TTM's own reference back (`bo_gem_free`), and TTM's last `ttm_bo_put()`
// destroys the object, now or after its fences signal.
unsafe impl<T: Driver> AlwaysRefCounted for Bo<T> {
    fn inc_ref(&self) {
        // SAFETY: the object is alive while `self` is.
        unsafe { bindings::drm_gem_object_get(&raw mut (*self.as_raw()).base) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up a reference it owns; `bo`, and its
        // `base` with it, is at offset 0.
        unsafe { bindings::drm_gem_object_put(obj.cast().as_ptr()) };
    }
}

/// The GEM functions of a [`Bo`]'s embedded GEM object.
///
/// References to a BO are GEM references, as amdgpu's, xe's and every
/// TTM driver's with GEM objects are, so that what finds a BO through its
/// GEM object (an mmap offset lookup, a handle) takes a reference only
/// while the object is live (`kref_get_unless_zero()` of the GEM
/// refcount). TTM's own `kref` counts TTM's users (CPU mappings, eviction
/// walks, delayed destruction) besides one for all GEM references.
const BO_GEM_FUNCS: bindings::drm_gem_object_funcs = bindings::drm_gem_object_funcs {
    free: Some(bo_gem_free),
    // SAFETY: all-zero is "none" for the rest: nothing of the DRM core's
    // but `free` is reached for a BO with no handle and no mmap offset.
    ..unsafe { core::mem::zeroed() }
};

/// `drm_gem_object_funcs.free` of a [`Bo`]: the last GEM reference is
/// gone; TTM's reference for them goes too.
///
/// # Safety
///
/// Called by DRM only, once, for the `base` of a BO's `ttm_buffer_object`.
unsafe extern "C" fn bo_gem_free(obj: *mut bindings::drm_gem_object) {
    // SAFETY: `obj` is the first field of a live `ttm_buffer_object`,
    // whose initial TTM reference the GEM references share; it is put
    // once, here.
    unsafe { bindings::ttm_bo_put(obj.cast()) };
}

/// `ttm_buffer_object.destroy` of a [`Bo<T>`]: TTM is done with it.
///
/// # Safety
///
/// Called by TTM only, once, after the last reference of a `Bo<T>` is gone
/// and its memory released.
unsafe extern "C" fn destroy<T: Driver>(bo: *mut bindings::ttm_buffer_object) {
    let this = bo.cast::<Bo<T>>();
    // SAFETY: `bo` is the first field of a `Bo<T>` boxed by `Bo::new`
    // (invariant), which TTM no longer uses. The driver data goes first,
    // then the GEM part (its own reservation object), then the box, without
    // dropping anything again (`ManuallyDrop` has the layout of what it
    // wraps), and last the device reference: if it is the last one, the
    // device is finished from another work queue (see `Device`).
    unsafe {
        ptr::drop_in_place(&raw mut (*this).data);
        bindings::drm_gem_object_release(&raw mut (*bo).base);
        let dev = ManuallyDrop::take(&mut (*this).dev);
        drop(KBox::from_raw(this.cast::<ManuallyDrop<Bo<T>>>()));
        drop(dev);
    }
}

/// What a [`Bo`] is for: `ttm_bo_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoType {
    /// Mapped by user space (through a GEM object's mmap, see
    /// [`MmapBo`]): it gets a range of the DRM device's mmap offsets, which
    /// `ttm_bo_unmap_virtual()` unmaps before every move. No file may map
    /// the range directly: none is allowed on its offset node.
    Device,
    /// The kernel's only.
    Kernel,
}

impl<T: Driver> Bo<T> {
    /// An object of `size` bytes (a multiple of the page size) on `dev`,
    /// placed as `placement` says (TTM evicts other objects to make room):
    /// `ENOMEM` when none of its places has room even so (TTM's errno for
    /// it, `ttm_bo_validate()` turns `-ENOSPC` into `-ENOMEM`) or memory
    /// ran out, `EINVAL` for a bad size. Its contents are zeroes.
    pub fn new(
        dev: &Arc<Device<T>>,
        kind: BoType,
        size: usize,
        placement: &Placement,
        data: impl PinInit<T::BoData, Error>,
    ) -> Result<ARef<Self>> {
        if size == 0 || size % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let b = KBox::pin_init(
            try_pin_init!(Self {
                // SAFETY: all-zero is the state `drm_gem_private_object_init()`
                // and `ttm_bo_init_validate()` expect (drivers kzalloc()
                // their objects).
                bo: Opaque::new(unsafe { core::mem::zeroed() }),
                dev: ManuallyDrop::new(dev.clone()),
                data <- data,
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: the object stays pinned: the box is only rebuilt by
        // `destroy`.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(b) });
        let mut placement = placement.raw();
        // SAFETY: `raw` is a new object; its GEM part is set up for the DRM
        // device (which outlives the TTM device), then TTM initialises and
        // places it. From `ttm_bo_init_validate()` on, TTM's refcount owns
        // the box: on failure TTM has put the object, which `destroy`
        // freed. The placement lives for the call.
        // INVARIANT: initialised as the type requires.
        unsafe {
            let bo = (*raw).bo.get();
            (*bo).base.funcs = &BO_GEM_FUNCS;
            bindings::drm_gem_private_object_init(dev.drm().as_raw(), &raw mut (*bo).base, size);
            to_result(bindings::ttm_bo_init_validate(
                dev.as_raw(),
                bo,
                match kind {
                    BoType::Device => bindings::ttm_bo_type_ttm_bo_type_device,
                    BoType::Kernel => bindings::ttm_bo_type_ttm_bo_type_kernel,
                },
                &mut placement,
                0,
                true,
                ptr::null_mut(),
                ptr::null_mut(),
                Some(destroy::<T>),
            ))?;
            Ok(ARef::from_raw(NonNull::new_unchecked(raw)))
        }
    }

    /// The raw object.
    pub fn as_raw(&self) -> *mut bindings::ttm_buffer_object {
        self.bo.get()
    }

    /// The object's size in bytes.
    pub fn size(&self) -> usize {
        // SAFETY: set at creation, never changed.
        unsafe { (*self.as_raw()).base.size }
    }

    /// The TTM device.
    pub fn device(&self) -> &Arc<Device<T>> {
        &self.dev
    }

    /// The BO as CPU mappings see it, for a GEM object's mmap
    /// ([`drm::gem::DriverObject::ttm_bo`]); `None` for a kernel BO.
    pub fn mmap_bo(&self) -> Option<&MmapBo> {
        // SAFETY: the type is set at creation and never changed.
        if unsafe { (*self.as_raw()).type_ } != bindings::ttm_bo_type_ttm_bo_type_device {
            return None;
        }
        // SAFETY: `MmapBo` is a transparent `Opaque` of the BO, which is a
        // live, initialised BO of type device while `self` is borrowed.
        Some(unsafe { &*self.bo.get().cast::<MmapBo>() })
    }

    /// Reserves the object (locks its reservation object), waiting for it,
    /// interruptibly: `ERESTARTSYS` or `EINTR` on a signal.
    pub fn reserve(&self) -> Result<Reserved<'_, T>> {
        // SAFETY: the object is live; no acquire context, so this is a
        // plain (interruptible) lock of the reservation.
        to_result(unsafe {
            bindings::ttm_bo_reserve(self.as_raw(), true, false, ptr::null_mut())
        })?;
        // INVARIANT: reserved just above.
        Ok(Reserved { bo: self })
    }

    /// Reserves the object, waiting for it, not interruptible: for paths
    /// that cannot fail (teardown, unbinding).
    pub fn reserve_uninterruptible(&self) -> Reserved<'_, T> {
        // SAFETY: the object is live; without an acquire context an
        // uninterruptible lock of the reservation cannot fail
        // (`-EDEADLK`/`-EALREADY` need one).
        let ret = unsafe { bindings::ttm_bo_reserve(self.as_raw(), false, false, ptr::null_mut()) };
        debug_assert_eq!(ret, 0);
        // INVARIANT: reserved just above.
        Reserved { bo: self }
    }

    /// The object's reservation object, where the fences of the jobs using
    /// it go (and TTM's of its moves).
    pub fn resv(&self) -> &Resv {
        // SAFETY: `base.resv` is set up by `drm_gem_private_object_init()`
        // (the object's own) and stays initialised while the object lives,
        // which it does while `self` is borrowed.
        unsafe { Resv::from_raw((*self.as_raw()).base.resv) }
    }

    /// Reserves the object if nobody has it reserved, without waiting.
    pub fn try_reserve(&self) -> Option<Reserved<'_, T>> {
        // SAFETY: as in `reserve`; `no_wait` makes it a trylock.
        let ret = unsafe { bindings::ttm_bo_reserve(self.as_raw(), false, true, ptr::null_mut()) };
        // INVARIANT: reserved if it returned 0. Lazily: a guard made when
        // the trylock failed would unreserve someone else's reservation
        // when dropped.
        (ret == 0).then(|| Reserved { bo: self })
    }
}

impl<T: Driver> Deref for Bo<T> {
    type Target = T::BoData;

    fn deref(&self) -> &T::BoData {
        &self.data
    }
}

/// The operation context of a move or populate on a user's behalf: a
/// signal interrupts the waits, and the GPU may be waited for.
fn interruptible_ctx() -> bindings::ttm_operation_ctx {
    bindings::ttm_operation_ctx {
        interruptible: true,
        no_wait_gpu: false,
        gfp_retry_mayfail: false,
        allow_res_evict: false,
        force_alloc: false,
        resv: ptr::null_mut(),
        bytes_moved: 0,
    }
}

/// A reserved [`Bo`]: its placement and memory may be used and changed.
/// Unreserved (`ttm_bo_unreserve()`) when dropped.
///
/// # Invariants
///
/// The guard holds `bo`'s reservation.
pub struct Reserved<'a, T: Driver> {
    bo: &'a Bo<T>,
}

impl<T: Driver> Reserved<'_, T> {
    /// The memory type the object is in.
    pub fn mem_type(&self) -> u32 {
        // SAFETY: reserved (type invariant): the resource is stable, and
        // an initialised object always has one.
        unsafe { (*(*self.bo.as_raw()).resource).mem_type }
    }

    /// Moves the object to the first place of `placement` that has room
    /// (`ttm_bo_validate()`; nothing moves if it is in one already),
    /// evicting idle objects to make room, after unmapping it from the CPU.
    /// `ENOMEM` if no place has room even so (TTM's errno for it) or memory
    /// ran out; `ERESTARTSYS`/`EINTR` on a signal. On error the object is
    /// where it was.
    pub fn validate(&mut self, placement: &Placement) -> Result {
        let mut placement = placement.raw();
        let mut ctx = interruptible_ctx();
        // SAFETY: reserved (type invariant); the placement and context
        // live for the call.
        to_result(unsafe { bindings::ttm_bo_validate(self.bo.as_raw(), &mut placement, &mut ctx) })
    }

    /// Where byte `offset` of the object is in VRAM, if the object is in
    /// VRAM.
    pub fn vram_offset(&self, offset: usize) -> Option<u64> {
        if self.mem_type() == PL_SYSTEM || offset >= self.bo.size() {
            return None;
        }
        // SAFETY: reserved, in a driver memory type: a live VRAM resource.
        let vres = unsafe { vram_resource((*self.bo.as_raw()).resource) };
        vram_offset(&vres.alloc, offset as u64)
    }

    /// The page frame of page `index` of the object, if it is in system
    /// memory and populated (its pages allocated or taken).
    pub fn system_pfn(&self, index: usize) -> Option<usize> {
        let bo = self.bo.as_raw();
        // SAFETY: reserved: the tt is stable.
        let tt = unsafe { (*bo).ttm };
        if self.mem_type() != PL_SYSTEM
            || tt.is_null()
            // SAFETY: a live tt of the reserved object.
            || !unsafe { bindings::ttm_tt_is_populated(tt) }
            || index >= self.bo.size() / PAGE_SIZE
        {
            return None;
        }
        // SAFETY: populated: `pages` has a live page for each page.
        Some(unsafe { bindings::page_to_pfn(*(*tt).pages.add(index)) } as usize)
    }

    /// Whether the object is in system memory with its pages allocated or
    /// taken.
    pub fn is_populated(&self) -> bool {
        self.system_pfn(0).is_some()
    }

    /// Makes sure an object in system memory has its pages (allocates them,
    /// or takes the driver's folios): what a device access to them needs
    /// first. Nothing to do in VRAM or if populated. May sleep and
    /// allocate; `ERESTARTSYS`/`EINTR` on a signal.
    pub fn populate(&self) -> Result {
        if self.mem_type() != PL_SYSTEM {
            return Ok(());
        }
        let bo = self.bo.as_raw();
        // SAFETY: reserved: the device and tt are stable.
        let (bdev, tt) = unsafe { ((*bo).bdev, (*bo).ttm) };
        if tt.is_null() {
            return Err(EINVAL);
        }
        let mut ctx = interruptible_ctx();
        // SAFETY: the reserved object's tt; a populated one is left as it
        // is.
        to_result(unsafe { bindings::ttm_tt_populate(bdev, tt, &mut ctx) })
    }

    /// Gives the object's system pages back (`ttm_tt_unpopulate()`: the
    /// driver's folios, see [`Driver::external_pages`], or the pool's
    /// pages) after unmapping them from the CPU (`ttm_bo_unmap_virtual()`):
    /// what a driver does when migration asks for one of its folios. The
    /// contents stay in the folios (a gemfs file keeps them); the next
    /// access, CPU fault or move takes them again. Nothing to do if the
    /// object is not in system memory or not populated. `EINVAL` for an
    /// object whose system pages are TTM's pool: their contents would be
    /// lost; `EBUSY` while a fence of the object has not signalled (the
    /// device may be using the pages). The driver is told first
    /// ([`Driver::move_notify`]).
    pub fn release_system_pages(&mut self) -> Result {
        if !self.is_populated() {
            return Ok(());
        }
        let bo = self.bo.as_raw();
        // SAFETY: reserved and populated: the tt is a live `Tt<T>`.
        if !unsafe { Tt::<T>::from_raw((*bo).ttm) }.external {
            return Err(EINVAL);
        }
        if !self.bo.resv().test_signaled(ResvUsage::Bookkeep) {
            return Err(EBUSY);
        }
        T::move_notify(self.bo, false);
        // SAFETY: reserved, in system memory with a populated tt: CPU
        // mappings go first (faults then wait for the reservation and
        // populate again), then the pages. The object's memory is not
        // used by anything else while it is reserved.
        unsafe { unpopulate(bo) };
        Ok(())
    }

    /// Copies the object's bytes from `offset` on into `buf`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result {
        self.access(offset, buf.as_mut_ptr(), buf.len(), false)
    }

    /// Copies `buf` into the object from `offset` on.
    pub fn write(&self, offset: usize, buf: &[u8]) -> Result {
        self.access(offset, buf.as_ptr().cast_mut(), buf.len(), true)
    }

    /// Copies `len` bytes between `buf` and the object from `offset`, page
    /// by page, where the object is: through the aperture in VRAM, through
    /// a temporary kernel mapping of each page in system memory (populated
    /// first). `EINVAL` out of range.
    fn access(&self, offset: usize, buf: *mut u8, len: usize, write: bool) -> Result {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > self.bo.size() {
            return Err(EINVAL);
        }
        // A move's or a clear's copy job may still be writing the memory:
        // wait for it, as TTM's faults do (`ttm_bo_vm_fault_idle()`).
        self.bo.resv().wait_timeout(ResvUsage::Kernel, usize::MAX)?;
        let bo = self.bo.as_raw();
        // SAFETY: reserved: the resource and tt are stable.
        let (bdev, res, tt) = unsafe { ((*bo).bdev, (*bo).resource, (*bo).ttm) };
        let system = self.mem_type() == PL_SYSTEM;
        if system {
            self.populate()?;
        }
        let mut done = 0;
        while done < len {
            let at = offset + done;
            let n = (PAGE_SIZE - at % PAGE_SIZE).min(len - done);
            // SAFETY: `buf` has `len` bytes (a slice of the caller's).
            let b = unsafe { buf.add(done) };
            if system {
                // SAFETY: the tt is populated: `pages` has a page for
                // each page of the object, mapped for the copy only; `n`
                // bytes from `at % PAGE_SIZE` stay inside it.
                unsafe {
                    let page = *(*tt).pages.add(at / PAGE_SIZE);
                    let va = bindings::kmap_local_page(page)
                        .cast::<u8>()
                        .add(at % PAGE_SIZE);
                    if write {
                        ptr::copy_nonoverlapping(b, va, n);
                    } else {
                        ptr::copy_nonoverlapping(va, b, n);
                    }
                    bindings::kunmap_local(va.cast_const().cast());
                }
            } else {
                // SAFETY: a live VRAM resource of the reserved object.
                let (inner, vres) = unsafe { (resource_manager(bdev, res), vram_resource(res)) };
                let off = vram_offset(&vres.alloc, at as u64).ok_or(EINVAL)? as usize;
                // SAFETY: `[off, off + n)` is inside one page of the
                // object's blocks (blocks are whole pages), which the
                // aperture maps; nothing else uses the object's memory
                // while it is reserved but the device.
                unsafe {
                    let va = inner.aperture.vaddr().add(off);
                    if write {
                        bindings::memcpy_toio(va.cast(), b.cast_const().cast(), n);
                    } else {
                        bindings::memcpy_fromio(b.cast(), va.cast_const().cast(), n);
                    }
                }
            }
            done += n;
        }
        Ok(())
    }
}

impl<T: Driver> Drop for Reserved<'_, T> {
    fn drop(&mut self) {
        // SAFETY: reserved (type invariant), unreserved once, here.
        unsafe { bindings::ttm_bo_unreserve(self.bo.as_raw()) };
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
    use crate::{
        c_str,
        dma_fence::FenceContext,
        drm::buddy::Block,
        fs, new_spinlock, platform, shmem,
        sync::{Arc, SpinLock},
        ThisModule,
    };
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

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

    /// A test BO's data: the shmem file whose folios are its system
    /// memory, or none for TTM's page pool.
    struct TestData {
        file: Option<ARef<fs::File>>,
        /// `eviction_valuable` says no while set.
        keep: AtomicBool,
        /// `move_notify` calls, and those of them for an eviction.
        notified: AtomicU32,
        evicted: AtomicU32,
        /// Who runs the object's copy jobs; the CPU copies without.
        copier: Option<Arc<Copier>>,
    }

    fn data(file: Option<ARef<fs::File>>) -> TestData {
        TestData {
            file,
            keep: AtomicBool::new(false),
            notified: AtomicU32::new(0),
            evicted: AtomicU32::new(0),
            copier: None,
        }
    }

    /// Runs the copy jobs of the objects that have it, each on a work item
    /// `delay_ms` after the move queued it: the move returns with the copy
    /// still to run, as a device's would.
    struct Copier {
        fences: FenceContext,
        delay_ms: u32,
        queued: AtomicU32,
    }

    /// A copy job waiting for its work item.
    #[pin_data]
    struct Deferred {
        #[pin]
        work: Work<Deferred>,
        #[pin]
        job: SpinLock<Option<CopyJob>>,
        delay_ms: u32,
    }

    impl_has_work! {
        impl HasWork<Self> for Deferred { self.work }
    }

    impl WorkItem for Deferred {
        type Pointer = Pin<KBox<Self>>;

        fn run(this: Pin<KBox<Self>>) {
            // SAFETY: sleeping is fine in a work item.
            unsafe { bindings::msleep(this.delay_ms) };
            let job = this.job.lock().take();
            if let Some(job) = job {
                job.run();
            }
        }
    }

    fn pool() -> TestData {
        data(None)
    }

    impl Driver for TestTtm {
        type Drm = TestDrm;
        type BoData = TestData;
        type Folio = ARef<Folio>;

        fn external_pages(bo: &Bo<Self>) -> bool {
            bo.file.is_some()
        }

        fn system_folio(bo: &Bo<Self>, index: usize) -> Result<ARef<Folio>> {
            shmem::read_folio(bo.file.as_ref().ok_or(EINVAL)?.mapping(), index)
        }

        fn move_notify(bo: &Bo<Self>, evict: bool) {
            bo.notified.fetch_add(1, Ordering::Relaxed);
            if evict {
                bo.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }

        fn eviction_valuable(bo: &Bo<Self>) -> bool {
            !bo.keep.load(Ordering::Relaxed)
        }

        fn copy_move(bo: &Bo<Self>, copy: MoveCopy<'_>) {
            let Some(c) = bo.copier.as_ref() else {
                return;
            };
            let Ok(d) = KBox::pin_init(
                pin_init!(Deferred {
                    work <- new_work!("rust_drm_ttm_copy"),
                    job <- new_spinlock!(None, "rust_drm_ttm_copy_job"),
                    delay_ms: c.delay_ms,
                }),
                GFP_KERNEL,
            ) else {
                return;
            };
            let Ok(fence) = c.fences.new_fence() else {
                return;
            };
            *d.job.lock() = Some(copy.into_job(fence));
            c.queued.fetch_add(1, Ordering::Relaxed);
            workqueue::system_unbound().enqueue(d);
        }
    }

    /// VRAM for the tests: vmalloc'ed RAM, which the CPU copies to and
    /// from like a write-combined BAR; user space cannot map it.
    ///
    /// # Invariants
    ///
    /// `ptr` is `buf`'s buffer, taken once by `as_mut_ptr()` at creation;
    /// `buf` is never touched again but to be dropped.
    struct RamAperture {
        buf: VVec<u8>,
        ptr: *mut u8,
    }

    // SAFETY: the buffer is plain memory, usable from any thread.
    unsafe impl Send for RamAperture {}
    // SAFETY: as above.
    unsafe impl Sync for RamAperture {}

    impl RamAperture {
        /// `size` bytes, all `fill` (what an earlier user left).
        fn new(size: u64, fill: u8) -> Result<Self> {
            let mut buf = VVec::from_elem(fill, size as usize, GFP_KERNEL)?;
            let ptr = buf.as_mut_ptr();
            Ok(Self { buf, ptr })
        }
    }

    // SAFETY: `ptr` maps `buf.len()` bytes of vmalloc memory, constant and
    // valid while `self` lives (invariant); it has no contiguous physical
    // address, so no bus address.
    unsafe impl Aperture for RamAperture {
        fn vaddr(&self) -> *mut u8 {
            self.ptr
        }
        fn len(&self) -> usize {
            self.buf.len()
        }
        fn bus_start(&self) -> Option<u64> {
            None
        }
    }

    /// A kernel BO as far as `ttm_resource_alloc()` and
    /// `ttm_resource_free()` read it.
    ///
    /// # Invariants
    ///
    /// `bo` is zeroed but for `bdev` (the device of the `Arc`), `base.size`
    /// and `page_alignment`; boxed, so the resources' `bo` pointers stay
    /// valid.
    struct FakeBo {
        bo: KBox<Opaque<bindings::ttm_buffer_object>>,
        dev: Arc<Device<TestTtm>>,
    }

    impl FakeBo {
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

    /// A resource of a [`FakeBo`]; freed by `ttm_resource_free()` on drop.
    struct Res<'a> {
        bo: &'a FakeBo,
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

    /// What [`setup`] makes.
    type Setup = (
        VramManager<TestTtm>,
        Arc<Device<TestTtm>>,
        drm::Registration<TestDrm>,
        platform::SimpleDevice,
    );

    /// A platform device `name`, a DRM device on it, its TTM device and a
    /// VRAM manager of `size` bytes. (Each case names its own device: a
    /// failed assertion ends a case without dropping what it made.)
    fn setup(name: &'static crate::str::CStr, size: u64) -> Result<Setup> {
        let pdev = platform::SimpleDevice::register(name)?;
        let reg = drm::Registration::<TestDrm>::new(pdev.device(), Arc::new((), GFP_KERNEL)?)?;
        let ttm = Device::<TestTtm>::new(pdev.device(), reg.device())?;
        let aperture = RamAperture::new(size, 0xa5)?;
        let man = VramManager::new(&ttm, PL_VRAM, Buddy::new(size, PAGE)?, aperture)?;
        Ok((man, ttm, reg, pdev))
    }

    #[test]
    fn sizes_usage_and_enospc() -> Result {
        let (man, ttm, _reg, _pdev) = setup(c_str!("rust_drm_ttm_sizes"), 16 * MIB)?;
        assert_eq!((man.size(), man.usage()), (16 * MIB, 0));
        // A second manager of VRAM, or one of TTM's system memory: refused.
        assert_eq!(
            VramManager::new(
                &ttm,
                PL_VRAM,
                Buddy::new(MIB, PAGE)?,
                RamAperture::new(MIB, 0)?
            )
            .err(),
            Some(EBUSY)
        );
        assert_eq!(
            VramManager::new(
                &ttm,
                PL_SYSTEM,
                Buddy::new(MIB, PAGE)?,
                RamAperture::new(MIB, 0)?
            )
            .err(),
            Some(EINVAL)
        );
        // An aperture smaller than the memory it would map: refused.
        assert_eq!(
            VramManager::new(
                &ttm,
                PL_TT,
                Buddy::new(MIB, PAGE)?,
                RamAperture::new(MIB / 2, 0)?
            )
            .err(),
            Some(EINVAL)
        );

        // Several sizes: TTM accounts each object's size, the allocator
        // gives blocks that add up to it.
        let sizes = [PAGE, 3 * PAGE, 64 * 1024, MIB, 5 * MIB + PAGE];
        let mut bos = KVec::new();
        for &s in &sizes {
            bos.push(FakeBo::new(&ttm, s, 0)?, GFP_KERNEL)?;
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
        let rest = FakeBo::new(&ttm, 16 * MIB - total, 0)?;
        let r_rest = rest.alloc(0, 0, 0)?;
        assert_eq!((man.usage(), man.buddy().avail()), (16 * MIB, 0));
        let one = FakeBo::new(&ttm, PAGE, 0)?;
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
        let big = FakeBo::new(&ttm, 32 * MIB, 0)?;
        assert_eq!(big.alloc(0, 0, 0).err(), Some(E2BIG));
        let two = FakeBo::new(&ttm, 2 * MIB, 0)?;
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
        let bo = FakeBo::new(&ttm, MIB + 4 * PAGE, 0)?;
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
        let c = FakeBo::new(&ttm, 3 * PAGE, 0)?;
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
        let a = FakeBo::new(&ttm, 32 * PAGE, 16)?;
        let r = a.alloc(0, 0, 0)?;
        assert!(r
            .blocks()
            .iter()
            .all(|b| b.size() >= 16 * PAGE && b.offset() % (16 * PAGE) == 0));
        drop(r);
        assert_eq!(man.usage(), 0);

        // Contiguous when memory is fragmented: ENOSPC though enough is
        // free in pieces.
        let lo = FakeBo::new(&ttm, 4 * MIB, 0)?;
        let hi = FakeBo::new(&ttm, 4 * MIB, 0)?;
        let r_lo = lo.alloc(0, 4 * ppm, 0)?;
        let r_hi = hi.alloc(8 * ppm, 12 * ppm, 0)?;
        let eight = FakeBo::new(&ttm, 8 * MIB, 0)?;
        assert_eq!(eight.alloc(0, 0, PL_FLAG_CONTIGUOUS).err(), Some(ENOSPC));
        let pieces = eight.alloc(0, 0, 0)?;
        assert_eq!(man.buddy().avail(), 0);
        drop((pieces, r_lo, r_hi));
        assert_eq!((man.usage(), man.buddy().avail()), (0, 16 * MIB));
        Ok(())
    }

    /// Byte `i` of the contents numbered `seed`: differs from page to page
    /// and from object to object.
    fn pattern(seed: u32, i: usize) -> u8 {
        ((i as u32)
            .wrapping_mul(2_654_435_761)
            .wrapping_add(seed.wrapping_mul(0x9e37))
            >> 11) as u8
    }

    fn fill(r: &Reserved<'_, TestTtm>, seed: u32, size: usize) -> Result {
        let mut buf = KVec::from_elem(0u8, size, GFP_KERNEL)?;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = pattern(seed, i);
        }
        r.write(0, &buf)
    }

    /// Whether the object holds contents `seed` (or zeroes for `None`).
    fn holds(r: &Reserved<'_, TestTtm>, seed: Option<u32>, size: usize) -> Result<bool> {
        let mut buf = KVec::from_elem(0u8, size, GFP_KERNEL)?;
        r.read(0, &mut buf)?;
        Ok(buf
            .iter()
            .enumerate()
            .all(|(i, &b)| b == seed.map_or(0, |s| pattern(s, i))))
    }

    fn only(mem_type: u32) -> Placement {
        Placement::new(&[Place::new(mem_type, 0)]).unwrap()
    }

    #[test]
    fn bo_moves_keep_contents() -> Result {
        let (man, ttm, _reg, _pdev) = setup(c_str!("rust_drm_ttm_bo_moves"), 16 * MIB)?;
        // 19 pages: blocks of 16, 2 and 1 pages, so the copies and the
        // accessors follow a resource of several blocks.
        let size = 19 * PAGE_SIZE;
        let bo = Bo::new(&ttm, BoType::Kernel, size, &only(PL_VRAM), pool())?;
        assert!(bo.file.is_none());
        assert_eq!(bo.size(), size);
        assert_eq!(man.usage(), size as u64);
        let mut r = bo.reserve()?;
        assert_eq!(r.mem_type(), PL_VRAM);
        // The VRAM was all 0xa5: a new object reads zeroes.
        assert!(holds(&r, None, size)?);
        // Page n of the object is in the block that holds it.
        let blocks = {
            // SAFETY: reserved, in VRAM: a live VRAM resource.
            let v = unsafe { vram_resource((*bo.as_raw()).resource) };
            v.alloc.blocks().count()
        };
        assert!(blocks > 1);
        fill(&r, 1, size)?;

        // To system memory and back, twice: the contents go with it; in
        // system memory it takes no VRAM.
        for round in 0..2u32 {
            r.validate(&only(PL_SYSTEM))?;
            assert_eq!(r.mem_type(), PL_SYSTEM);
            assert_eq!(r.vram_offset(0), None);
            assert_eq!(man.usage(), 0);
            assert!(holds(&r, Some(1 + round), size)?);
            fill(&r, 2 + round, size)?;
            r.validate(&only(PL_VRAM))?;
            assert_eq!(r.mem_type(), PL_VRAM);
            assert_eq!(man.usage(), size as u64);
            assert!(holds(&r, Some(2 + round), size)?);
        }
        // Validating where it is moves nothing.
        let at = r.vram_offset(PAGE_SIZE);
        r.validate(&only(PL_VRAM))?;
        assert_eq!(r.vram_offset(PAGE_SIZE), at);
        // Out of range accesses: refused.
        let mut two = [0u8; 2];
        assert_eq!(r.read(size - 1, &mut two), Err(EINVAL));
        assert_eq!(r.write(usize::MAX, &two), Err(EINVAL));
        drop(r);

        // A new object in system memory reads zeroes, and into VRAM it is
        // cleared (not what the VRAM held).
        let sys = Bo::new(
            &ttm,
            BoType::Kernel,
            3 * PAGE_SIZE,
            &only(PL_SYSTEM),
            pool(),
        )?;
        let mut r = sys.reserve()?;
        assert_eq!(r.mem_type(), PL_SYSTEM);
        assert!(holds(&r, None, 3 * PAGE_SIZE)?);
        r.validate(&only(PL_VRAM))?;
        assert!(holds(&r, None, 3 * PAGE_SIZE)?);
        drop(r);

        // Bad sizes and placements.
        assert_eq!(
            Bo::new(&ttm, BoType::Kernel, 0, &only(PL_VRAM), pool()).err(),
            Some(EINVAL)
        );
        assert_eq!(
            Bo::new(&ttm, BoType::Kernel, 100, &only(PL_VRAM), pool()).err(),
            Some(EINVAL)
        );
        assert_eq!(Placement::new(&[]).err(), Some(EINVAL));
        assert_eq!(
            Placement::new(&[Place::new(bindings::TTM_NUM_MEM_TYPES, 0)]).err(),
            Some(EINVAL)
        );
        // Larger than the VRAM: TTM passes the manager's E2BIG on.
        assert_eq!(
            Bo::new(
                &ttm,
                BoType::Kernel,
                32 * MIB as usize,
                &only(PL_VRAM),
                pool()
            )
            .err(),
            Some(E2BIG)
        );
        drop((bo, sys));
        assert_eq!(man.usage(), 0);
        Ok(())
    }

    #[test]
    fn bo_eviction() -> Result {
        // Room for four objects of 256 KiB.
        let (man, ttm, _reg, _pdev) = setup(c_str!("rust_drm_ttm_bo_evict"), MIB)?;
        let size = 256 * 1024;
        let mut bos = KVec::new();
        for i in 0..4u32 {
            let bo = Bo::new(&ttm, BoType::Kernel, size, &only(PL_VRAM), pool())?;
            fill(&bo.reserve()?, i, size)?;
            bos.push(bo, GFP_KERNEL)?;
        }
        assert_eq!(man.usage(), MIB);
        // Object 0 is reserved (busy) while four more are made in VRAM:
        // TTM evicts the least recently used of the others (1, 2, 3, then
        // the new 4), never 0.
        {
            let first = bos[0].clone();
            let busy = first.try_reserve().ok_or(EBUSY)?;
            for _ in 4..8 {
                bos.push(
                    Bo::new(&ttm, BoType::Kernel, size, &only(PL_VRAM), pool())?,
                    GFP_KERNEL,
                )?;
            }
            assert_eq!(busy.mem_type(), PL_VRAM);
        }
        assert_eq!(man.usage(), MIB);
        let expect = [
            PL_VRAM, PL_SYSTEM, PL_SYSTEM, PL_SYSTEM, PL_SYSTEM, PL_VRAM, PL_VRAM, PL_VRAM,
        ];
        for (i, bo) in bos.iter().enumerate() {
            let r = bo.reserve()?;
            assert_eq!(r.mem_type(), expect[i]);
            // Evicted objects kept their contents; the new ones are zeroes.
            let seed = (i < 4).then_some(i as u32);
            assert!(holds(&r, seed, size)?);
        }
        // Back into VRAM: evicts the least recently used again (object 0,
        // which the loop above reserved first); contents kept everywhere.
        {
            let mut r = bos[1].reserve()?;
            r.validate(&only(PL_VRAM))?;
            assert_eq!(r.mem_type(), PL_VRAM);
            assert!(holds(&r, Some(1), size)?);
        }
        let r = bos[0].reserve()?;
        assert_eq!(r.mem_type(), PL_SYSTEM);
        assert!(holds(&r, Some(0), size)?);
        drop(r);
        // A preference with a fallback: VRAM is full, the object goes to
        // system memory without evicting anything.
        let pref = Placement::new(&[
            Place::new(PL_VRAM, PL_FLAG_DESIRED),
            Place::new(PL_SYSTEM, PL_FLAG_FALLBACK),
        ])?;
        let p = Bo::new(&ttm, BoType::Kernel, size, &pref, pool())?;
        assert_eq!(p.reserve()?.mem_type(), PL_SYSTEM);
        assert_eq!(man.usage(), MIB);
        assert_eq!(bos[1].reserve()?.mem_type(), PL_VRAM);
        // Forced into VRAM, it evicts (the least recently used: 5).
        p.reserve()?.validate(&only(PL_VRAM))?;
        assert_eq!(p.reserve()?.mem_type(), PL_VRAM);
        assert_eq!(bos[5].reserve()?.mem_type(), PL_SYSTEM);
        drop((p, bos));
        assert_eq!(man.usage(), 0);
        Ok(())
    }

    #[test]
    fn bo_try_reserve() -> Result {
        let (_man, ttm, _reg, _pdev) = setup(c_str!("rust_drm_ttm_bo_try"), MIB)?;
        let bo = Bo::new(&ttm, BoType::Kernel, PAGE_SIZE, &only(PL_VRAM), pool())?;
        let r = bo.try_reserve().ok_or(EBUSY)?;
        // Reserved: a trylock fails, and leaves the reservation held, so
        // the next one fails too.
        assert!(bo.try_reserve().is_none());
        assert!(bo.try_reserve().is_none());
        drop(r);
        // Free again.
        assert!(bo.try_reserve().is_some());
        drop(bo);
        Ok(())
    }

    #[test]
    fn bo_driver_hooks() -> Result {
        // Room for four objects of 256 KiB.
        let (man, ttm, _reg, _pdev) = setup(c_str!("rust_drm_ttm_bo_hooks"), MIB)?;
        let size = 256 * 1024;
        let mut bos = KVec::new();
        for _ in 0..4 {
            bos.push(
                Bo::new(&ttm, BoType::Kernel, size, &only(PL_VRAM), pool())?,
                GFP_KERNEL,
            )?;
        }
        let notified = |i: usize| bos[i].notified.load(Ordering::Relaxed);
        let evicted = |i: usize| bos[i].evicted.load(Ordering::Relaxed);
        // A new object's first memory is no move.
        assert!((0..4).all(|i| notified(i) == 0));
        // A move: told once, not as an eviction; a move to where it is, or
        // within system memory, tells nothing.
        bos[3].reserve()?.validate(&only(PL_SYSTEM))?;
        bos[3].reserve()?.validate(&only(PL_SYSTEM))?;
        assert_eq!((notified(3), evicted(3)), (1, 0));
        bos[3].reserve()?.validate(&only(PL_VRAM))?;
        assert_eq!((notified(3), evicted(3)), (2, 0));
        // The driver keeps 0 and 1 (the least recently used): TTM evicts 2,
        // then 3, and tells each as an eviction.
        bos[0].keep.store(true, Ordering::Relaxed);
        bos[1].keep.store(true, Ordering::Relaxed);
        let n = Bo::new(&ttm, BoType::Kernel, 2 * size, &only(PL_VRAM), pool())?;
        assert_eq!(n.reserve()?.mem_type(), PL_VRAM);
        for (i, want) in [(0, PL_VRAM), (1, PL_VRAM), (2, PL_SYSTEM), (3, PL_SYSTEM)] {
            assert_eq!(bos[i].reserve()?.mem_type(), want);
        }
        assert_eq!((notified(0), notified(1)), (0, 0));
        assert_eq!((evicted(2), evicted(3)), (1, 1));
        // Nothing the driver lets go: no room (TTM's ENOMEM), nothing
        // moved.
        n.keep.store(true, Ordering::Relaxed);
        assert_eq!(
            Bo::new(&ttm, BoType::Kernel, size, &only(PL_VRAM), pool()).err(),
            Some(ENOMEM)
        );
        assert_eq!(man.usage(), MIB);
        assert_eq!((notified(0), notified(1)), (0, 0));
        // Let go of 0: it is evicted for the next one.
        bos[0].keep.store(false, Ordering::Relaxed);
        let m = Bo::new(&ttm, BoType::Kernel, size, &only(PL_VRAM), pool())?;
        assert_eq!(bos[0].reserve()?.mem_type(), PL_SYSTEM);
        assert_eq!((notified(0), evicted(0)), (1, 1));
        drop((m, n, bos));
        assert_eq!(man.usage(), 0);
        Ok(())
    }

    /// Moves whose copies are jobs that run later (500 ms after each
    /// move): the contents follow every move all the same, because each
    /// access waits for the move's fence, and a move out of VRAM leaves the
    /// old memory to one of TTM's ghost objects until its copy is done.
    /// Placing an object that needs that memory then has TTM's eviction
    /// walk ask `eviction_valuable` about the ghost, which is no `Bo<T>`:
    /// it must be told apart (KASAN reports the read past the ghost
    /// otherwise), and waited for. A clear of a new object in VRAM is a job
    /// too; an eviction waits for its copy.
    #[test]
    fn bo_moves_by_copy_jobs() -> Result {
        let (man, ttm, _reg, _pdev) = setup(c_str!("rust_drm_ttm_bo_copies"), MIB)?;
        let copier = Arc::new(
            Copier {
                fences: FenceContext::new(c_str!("rust_drm_ttm"), c_str!("copy"))?,
                delay_ms: 500,
                queued: AtomicU32::new(0),
            },
            GFP_KERNEL,
        )?;
        let copied = || TestData {
            copier: Some(copier.clone()),
            ..pool()
        };
        let queued = || copier.queued.load(Ordering::Relaxed);
        let size = 256 * 1024;
        let a = Bo::new(&ttm, BoType::Kernel, size, &only(PL_VRAM), copied())?;
        assert_eq!(queued(), 1);
        let mut r = a.reserve()?;
        assert!(holds(&r, None, size)?);
        fill(&r, 1, size)?;
        for round in 0..2u32 {
            r.validate(&only(PL_SYSTEM))?;
            assert_eq!(r.mem_type(), PL_SYSTEM);
            assert!(holds(&r, Some(1 + round), size)?);
            fill(&r, 2 + round, size)?;
            r.validate(&only(PL_VRAM))?;
            assert_eq!(r.mem_type(), PL_VRAM);
            assert!(holds(&r, Some(2 + round), size)?);
        }
        assert_eq!(queued(), 5);
        // Out of VRAM: the ghost keeps A's VRAM until the copy is done.
        r.validate(&only(PL_SYSTEM))?;
        assert_eq!(r.mem_type(), PL_SYSTEM);
        assert!(!a.resv().test_signaled(ResvUsage::Kernel));
        // (Earlier ghosts, their copies done, may not be freed yet.)
        assert!(man.usage() >= size as u64);
        drop(r);
        // All of VRAM: TTM's walk meets the ghost, waits for it and frees
        // its memory.
        let b = Bo::new(&ttm, BoType::Kernel, MIB as usize, &only(PL_VRAM), pool())?;
        assert_eq!(man.usage(), MIB);
        assert!(holds(&a.reserve()?, Some(3), size)?);
        drop(b);
        // An eviction of an object with copy jobs waits for its copy.
        let mut r = a.reserve()?;
        r.validate(&only(PL_VRAM))?;
        fill(&r, 9, size)?;
        drop(r);
        let before = queued();
        let c = Bo::new(&ttm, BoType::Kernel, MIB as usize, &only(PL_VRAM), pool())?;
        assert_eq!(queued(), before + 1);
        assert_eq!(man.usage(), MIB);
        assert_eq!(a.evicted.load(Ordering::Relaxed), 1);
        let r = a.reserve()?;
        assert_eq!(r.mem_type(), PL_SYSTEM);
        assert!(holds(&r, Some(9), size)?);
        drop(r);
        drop((c, a));
        assert_eq!(man.usage(), 0);
        Ok(())
    }

    #[test]
    fn bo_external_pages() -> Result {
        let (man, ttm, _reg, _pdev) = setup(c_str!("rust_drm_ttm_bo_external"), 4 * MIB)?;
        let size = 8 * PAGE_SIZE;
        let norsv = bindings::VM_NORESERVE as usize;
        let file = shmem::file_setup_internal(c_str!("rust_drm_ttm"), size as i64, norsv)?;
        let data = data(Some(file.clone()));
        let bo = Bo::new(&ttm, BoType::Kernel, size, &only(PL_VRAM), data)?;
        let mut r = bo.reserve()?;
        fill(&r, 5, size)?;
        assert!(!r.is_populated());
        // Evicted to system memory: its pages are the file's folios, which
        // hold the contents.
        r.validate(&only(PL_SYSTEM))?;
        assert_eq!(man.usage(), 0);
        assert!(r.is_populated());
        for i in 0..size / PAGE_SIZE {
            let f = shmem::read_folio(file.mapping(), i)?;
            let in_folio = i - f.index();
            assert_eq!(r.system_pfn(i), Some(f.pfn() + in_folio));
            let mut b = [0u8; 64];
            f.read(in_folio * PAGE_SIZE + 100, &mut b)?;
            assert!(b
                .iter()
                .enumerate()
                .all(|(k, &x)| x == pattern(5, i * PAGE_SIZE + 100 + k)));
        }
        assert_eq!(r.system_pfn(size / PAGE_SIZE), None);
        // Given back, as for migration: the tt's folio references go, the
        // contents stay in the file, and the next access takes them again.
        let f0 = shmem::read_folio(file.mapping(), 0)?;
        // New folios' references from the per-CPU LRU batches go first, so
        // that only ours change the count from here on.
        // SAFETY: process context; takes no lock of ours.
        unsafe { bindings::lru_add_drain_all() };
        let refs = f0.ref_count();
        r.release_system_pages()?;
        assert!(!r.is_populated());
        assert_eq!(f0.ref_count(), refs - 1);
        assert!(holds(&r, Some(5), size)?);
        assert!(r.is_populated());
        assert_eq!(f0.ref_count(), refs);
        // Back to VRAM with the contents; the folios are given back.
        r.validate(&only(PL_VRAM))?;
        assert!(holds(&r, Some(5), size)?);
        assert_eq!(r.system_pfn(0), None);
        assert_eq!(f0.ref_count(), refs - 1);
        drop(r);

        // A pool object's pages cannot be given back: they hold the only
        // copy.
        let p = Bo::new(&ttm, BoType::Kernel, size, &only(PL_SYSTEM), pool())?;
        let mut r = p.reserve()?;
        fill(&r, 6, size)?;
        assert_eq!(r.release_system_pages(), Err(EINVAL));
        assert!(r.is_populated());
        assert!(holds(&r, Some(6), size)?);
        drop(r);
        drop((bo, p));
        assert_eq!(man.usage(), 0);
        Ok(())
    }
}
