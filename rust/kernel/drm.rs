// SPDX-License-Identifier: GPL-2.0

//! DRM drivers: device, driver, files, GEM objects and ioctls.
//!
//! The shape follows upstream's Rust DRM abstractions (Linux 6.15 and later)
//! adapted to 6.12: a driver implements [`Driver`] (its ioctl table, its
//! per-file state [`file::DriverFile`] and its GEM object type
//! [`gem::DriverObject`]) and registers a [`Registration`] on a parent
//! device. The C `struct drm_driver` and file operations are generated per
//! driver type.
//!
//! [`buddy`] is the buddy allocator of device memory, for drivers that
//! select `RUST_DRM_BUDDY`; [`ttm`] is TTM (devices and the VRAM resource
//! manager on [`buddy`]), for drivers that select `RUST_DRM_TTM`.
//!
//! C header: [`include/drm/drm_drv.h`](srctree/include/drm/drm_drv.h).

#[cfg(CONFIG_RUST_DRM_BUDDY)]
pub mod buddy;
pub mod file;
pub mod gem;
pub mod ioctl;
#[cfg(CONFIG_RUST_DRM_TTM)]
pub mod ttm;

use crate::{
    bindings, c_str, device,
    error::{from_err_ptr, to_result, Result},
    str::CStr,
    sync::{Arc, ArcBorrow},
    types::{ARef, AlwaysRefCounted, ForeignOwnable, Opaque},
};
use core::{marker::PhantomData, ptr::NonNull};

/// Driver identification, for `DRM_IOCTL_VERSION` and fdinfo.
pub struct DriverInfo {
    /// Major version.
    pub major: i32,
    /// Minor version.
    pub minor: i32,
    /// Patch level.
    pub patchlevel: i32,
    /// Driver name (`drm-driver` in fdinfo).
    pub name: &'static CStr,
    /// Description.
    pub desc: &'static CStr,
}

/// A DRM driver.
pub trait Driver: Sized + Send + Sync + 'static {
    /// Per-device data.
    type Data: Send + Sync;
    /// Per-file (per-open) state.
    type File: file::DriverFile<Driver = Self>;
    /// The driver's GEM object.
    type Object: gem::DriverObject<Driver = Self>;
    /// Identification.
    const INFO: DriverInfo;
    /// The driver's module (`&THIS_MODULE`, which `module!` defines). Its
    /// file operations name it as their owner, so an open file of the
    /// device, or a mapping or dma-buf of one of its objects, keeps the
    /// module loaded.
    const MODULE: &'static crate::ThisModule;
    /// `DRIVER_*` feature flags.
    const FEATURES: u32;
    /// The ioctl table, made with [`crate::declare_drm_ioctls`].
    const IOCTLS: &'static [bindings::drm_ioctl_desc];

    /// Prints the driver's fdinfo keys for `file`
    /// (`Documentation/gpu/drm-usage-stats.rst`) after the core's.
    fn show_fdinfo(_file: &file::File<Self::File>, _p: &Printer) {}

    /// The memory regions of fdinfo's memory keys (`drm-total-<region>`,
    /// `drm-resident-<region>`, ...; at most [`MAX_MEMORY_REGIONS`]), in
    /// the order printed: each object with a handle in the file counts in
    /// the one its [`gem::DriverObject::memory_info`] names. `None`, the
    /// default: the DRM core's keys, all objects in the one region `memory`
    /// (`drm_show_memory_stats()`).
    fn memory_regions(_dev: &Device<Self>) -> Option<&'static [&'static CStr]> {
        None
    }

    /// Files in the device's debugfs directories
    /// (`/sys/kernel/debug/dri/<minor>/`).
    const DEBUGFS_FILES: &'static [DebugfsFile<Self>] = &[];

    /// Whether the driver imports other devices' dma-bufs (PRIME): if so,
    /// `PRIME_FD_TO_HANDLE` of such a buffer calls
    /// [`Driver::gem_prime_import`]; if not, it fails with `EINVAL`.
    /// Importing one of the device's own exports gives back its object
    /// either way.
    const PRIME_IMPORT: bool = false;

    /// Creates the GEM object of a foreign dma-buf, with
    /// [`gem::Object::new_import`]. The DRM core has attached the device to
    /// the buffer, without `move_notify` (a static import: the exporter
    /// keeps the memory in place while attached), and mapped the
    /// attachment. A file that imports the buffer again gets the handle it
    /// has (the core's per-file PRIME lookup); another file gets an object
    /// of its own, with its own attachment.
    fn gem_prime_import(
        _dev: &Device<Self>,
        _import: &gem::Import<'_>,
    ) -> Result<ARef<gem::Object<Self::Object>>> {
        Err(crate::error::code::EINVAL)
    }
}

/// The most memory regions a driver's fdinfo may have
/// ([`Driver::memory_regions`]).
pub const MAX_MEMORY_REGIONS: usize = 4;

/// A read-only debugfs file of a DRM device: `show` prints its contents
/// each time it is read.
pub struct DebugfsFile<T: Driver> {
    /// File name.
    pub name: &'static CStr,
    /// Prints the contents.
    pub show: fn(&Device<T>, &Printer) -> Result,
}

/// `DRIVER_GEM`.
pub const FEAT_GEM: u32 = bindings::drm_driver_feature_DRIVER_GEM;
/// `DRIVER_RENDER`.
pub const FEAT_RENDER: u32 = bindings::drm_driver_feature_DRIVER_RENDER;

/// A DRM device of driver `T`.
///
/// # Invariants
///
/// The device was allocated by [`Registration::new`] for `T`: its
/// `dev_private` is an `Arc<T::Data>` in foreign form, released with the
/// device. References are counted with `drm_dev_get()`/`drm_dev_put()`.
#[repr(transparent)]
pub struct Device<T: Driver>(Opaque<bindings::drm_device>, PhantomData<T>);

// SAFETY: drm_device is reference counted and thread-safe; `T::Data` is
// `Send + Sync`.
unsafe impl<T: Driver> Send for Device<T> {}
// SAFETY: as above.
unsafe impl<T: Driver> Sync for Device<T> {}

// SAFETY: `drm_dev_get()`/`drm_dev_put()` keep the device alive.
unsafe impl<T: Driver> AlwaysRefCounted for Device<T> {
    fn inc_ref(&self) {
        // SAFETY: the device is alive while `self` is.
        unsafe { bindings::drm_dev_get(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up a reference it owns.
        unsafe { bindings::drm_dev_put(obj.cast().as_ptr()) };
    }
}

impl<T: Driver> Device<T> {
    /// # Safety
    ///
    /// `raw` must be a device of driver `T`, alive for `'a`.
    pub unsafe fn borrow<'a>(raw: *const bindings::drm_device) -> &'a Self {
        // SAFETY: transparent wrapper; the caller promises validity.
        unsafe { &*raw.cast() }
    }

    /// The raw device.
    pub fn as_raw(&self) -> *mut bindings::drm_device {
        self.0.get()
    }

    /// The driver's per-device data.
    pub fn data(&self) -> ArcBorrow<'_, T::Data> {
        // SAFETY: `dev_private` is the device's `Arc<T::Data>` (type
        // invariant), released only when the device is.
        unsafe { <Arc<T::Data> as ForeignOwnable>::borrow((*self.as_raw()).dev_private) }
    }

    /// The render node's minor index (`renderD<index>`), if registered.
    pub fn render_index(&self) -> Option<i32> {
        // SAFETY: `render` is set at allocation and never changes.
        let minor = unsafe { (*self.as_raw()).render };
        // SAFETY: a non-null minor lives as long as its device.
        (!minor.is_null()).then(|| unsafe { (*minor).index })
    }
}

/// Per-driver-type C tables.
struct Vtable<T: Driver>(PhantomData<T>);

impl<T: Driver> Vtable<T> {
    const FOPS: bindings::file_operations = bindings::file_operations {
        // The VFS takes a reference on the owner for every open file (and
        // DRM's PRIME export gives it to the dma-buf): the module cannot go
        // while its code may still be called. Null for built-in code.
        owner: T::MODULE.as_ptr(),
        open: Some(bindings::drm_open),
        release: Some(bindings::drm_release),
        unlocked_ioctl: Some(bindings::drm_ioctl),
        #[cfg(CONFIG_COMPAT)]
        compat_ioctl: Some(bindings::drm_compat_ioctl),
        poll: Some(bindings::drm_poll),
        read: Some(bindings::drm_read),
        llseek: Some(bindings::noop_llseek),
        mmap: Some(bindings::drm_gem_mmap),
        show_fdinfo: Some(bindings::drm_show_fdinfo),
        fop_flags: bindings::FOP_UNSIGNED_OFFSET,
        // SAFETY: all-zero is "no such operation" for the rest.
        ..unsafe { core::mem::zeroed() }
    };

    const DRIVER: bindings::drm_driver = bindings::drm_driver {
        open: Some(file::open_callback::<T::File>),
        postclose: Some(file::postclose_callback::<T::File>),
        release: Some(Self::release),
        show_fdinfo: Some(Self::show_fdinfo),
        major: T::INFO.major,
        minor: T::INFO.minor,
        patchlevel: T::INFO.patchlevel,
        name: T::INFO.name.as_char_ptr().cast_mut(),
        desc: T::INFO.desc.as_char_ptr().cast_mut(),
        driver_features: T::FEATURES,
        ioctls: T::IOCTLS.as_ptr(),
        num_ioctls: T::IOCTLS.len() as i32,
        fops: &Self::FOPS,
        gem_prime_import_sg_table: if T::PRIME_IMPORT {
            Some(gem::prime_import_sg_table_callback::<T>)
        } else {
            None
        },
        // SAFETY: all-zero is "use the core's default" for the rest.
        ..unsafe { core::mem::zeroed() }
    };

    /// `drm_driver.release`: the last device reference is gone.
    ///
    /// # Safety
    ///
    /// Called by DRM only, when the last reference to a device of `T` is gone.
    unsafe extern "C" fn release(dev: *mut bindings::drm_device) {
        // SAFETY: `dev_private` holds the `Arc<T::Data>` given in
        // `Registration::new`; nothing can use it any more.
        drop(unsafe { <Arc<T::Data> as ForeignOwnable>::from_foreign((*dev).dev_private) });
    }

    /// `drm_driver.show_fdinfo`.
    ///
    /// # Safety
    ///
    /// Called by DRM only, with a live printer and a file of this driver.
    unsafe extern "C" fn show_fdinfo(p: *mut bindings::drm_printer, f: *mut bindings::drm_file) {
        // SAFETY: DRM passes a live printer and a file of this driver,
        // opened through `open_callback`.
        let (p, file) = unsafe { (Printer::from_raw(p), file::File::<T::File>::borrow(f)) };
        // SAFETY: a live file's minor and its device outlive the file; the
        // device is of this driver.
        let dev = unsafe { Device::<T>::borrow((*(*f).minor).dev) };
        match T::memory_regions(dev) {
            Some(regions) => Self::show_memory_stats(file, &p, regions),
            // SAFETY: as above; the core's memory keys (drm-total-memory,
            // drm-resident-memory, ...) from the GEM objects' status.
            None => unsafe { bindings::drm_show_memory_stats(p.0, f) },
        }
        T::show_fdinfo(file, &p);
    }

    /// fdinfo's memory keys by region ([`Driver::memory_regions`]): the
    /// core's `drm_show_memory_stats()` with each object counted in its
    /// region. The same rules: `total` every object's size, `shared` those
    /// with handles in other files or exported, `resident` the resident
    /// bytes of objects with `STATUS_RESIDENT`, `active` the resident bytes
    /// of objects with unsignalled fences (readers or writers),
    /// `purgeable` those of idle resident objects with `STATUS_PURGEABLE`.
    /// Unlike the core, which asks each object under the file's handle
    /// table lock (a spinlock), each object is referenced under that lock
    /// and asked outside it, so that it may take its own locks. Prints no
    /// memory key if an object fails to answer.
    fn show_memory_stats(file: &file::File<T::File>, p: &Printer, regions: &[&CStr]) {
        const ZERO: bindings::drm_memory_stats = bindings::drm_memory_stats {
            shared: 0,
            private: 0,
            resident: 0,
            purgeable: 0,
            active: 0,
        };
        let regions = &regions[..regions.len().min(MAX_MEMORY_REGIONS)];
        let mut stats = [ZERO; MAX_MEMORY_REGIONS];
        let raw = file.as_raw();
        let mut id: crate::ffi::c_int = 0;
        loop {
            // SAFETY: the file is live (the caller's), so are its lock and
            // handle table. An object in the table under the lock has a
            // handle, which holds a reference (`drm_gem_handle_delete()`
            // empties the slot under the lock before it drops the handle's
            // reference; `idr_get_next()` skips empty slots): taking one
            // more there is what `drm_gem_object_lookup()` does.
            let obj = unsafe {
                bindings::spin_lock(&raw mut (*raw).table_lock);
                let obj = bindings::idr_get_next(&raw mut (*raw).object_idr, &mut id);
                if !obj.is_null() {
                    bindings::drm_gem_object_get(obj.cast());
                }
                bindings::spin_unlock(&raw mut (*raw).table_lock);
                obj
            };
            let Some(obj) = NonNull::new(obj) else {
                break;
            };
            // SAFETY: every object with a handle in a file of `T` is a
            // `gem::Object<T::Object>` (see `gem::Object::lookup_handle`);
            // the reference taken above is ours.
            let obj: ARef<gem::Object<T::Object>> = unsafe { ARef::from_raw(obj.cast()) };
            let Ok(info) = gem::DriverObject::memory_info(&**obj) else {
                return;
            };
            let s = &mut stats[if info.region < regions.len() {
                info.region
            } else {
                0
            }];
            let (size, resident) = (obj.size() as u64, info.resident as u64);
            if obj.is_shared_for_memory_stats() {
                s.shared += size;
            } else {
                s.private += size;
            }
            let is_resident = info.status & gem::STATUS_RESIDENT != 0;
            let mut purgeable = is_resident && info.status & gem::STATUS_PURGEABLE != 0;
            if is_resident {
                s.resident += resident;
            }
            if !obj.resv().test_signaled(crate::dma_fence::ResvUsage::Read) {
                s.active += resident;
                purgeable = false;
            }
            if purgeable {
                s.purgeable += resident;
            }
            drop(obj);
            let Some(next) = id.checked_add(1) else {
                break;
            };
            id = next;
        }
        for (s, name) in stats.iter().zip(regions) {
            // SAFETY: the printer is live (type invariant); the name is a C
            // string; `resident` and `purgeable` are supported, as they are
            // for the core's region.
            unsafe {
                bindings::drm_print_memory_stats(
                    p.0,
                    s,
                    gem::STATUS_RESIDENT | gem::STATUS_PURGEABLE,
                    name.as_char_ptr(),
                )
            };
        }
    }
}

impl<T: Driver> Vtable<T> {
    /// The `show` of every [`DebugfsFile`].
    ///
    /// # Safety
    ///
    /// Called by DRM's debugfs only, for an entry added by
    /// [`Registration::new`]: `m->private` is a `drm_debugfs_entry` of a
    /// device of `T` whose data is a `DebugfsFile<T>`.
    #[cfg(CONFIG_DEBUG_FS)]
    unsafe extern "C" fn debugfs_show(
        m: *mut bindings::seq_file,
        _data: *mut core::ffi::c_void,
    ) -> core::ffi::c_int {
        // SAFETY: see the function's safety section; the entry and its
        // device live while the file is open, and the `DebugfsFile` is static.
        let (dev, f) = unsafe {
            let entry = (*m).private.cast::<bindings::drm_debugfs_entry>();
            (
                Device::<T>::borrow((*entry).dev),
                &*(*entry).file.data.cast::<DebugfsFile<T>>(),
            )
        };
        // SAFETY: `m` is the seq_file being read, valid during the call.
        let mut raw = unsafe { bindings::drm_seq_file_printer(m) };
        // SAFETY: `raw` outlives `p`.
        let p = unsafe { Printer::from_raw(&mut raw) };
        match (f.show)(dev, &p) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }
}

/// Output of fdinfo and debugfs (`struct drm_printer`).
pub struct Printer(*mut bindings::drm_printer);

impl Printer {
    /// # Safety
    ///
    /// `p` must be a live printer for the lifetime of the value.
    unsafe fn from_raw(p: *mut bindings::drm_printer) -> Self {
        Self(p)
    }

    /// Prints formatted text.
    pub fn print(&self, args: core::fmt::Arguments<'_>) {
        if let Ok(s) = crate::str::CString::try_from_fmt(args) {
            // SAFETY: the printer is live (type invariant); `s` is a C
            // string printed with "%s".
            unsafe { bindings::drm_printf(self.0, c_str!("%s").as_char_ptr(), s.as_char_ptr()) };
        }
    }
}

/// A registered DRM device; unregistered on drop. Open files keep the
/// device (and its data) alive after that.
///
/// # Invariants
///
/// `dev` is registered and one reference to it is owned by this value.
pub struct Registration<T: Driver> {
    dev: ARef<Device<T>>,
}

impl<T: Driver> Registration<T> {
    /// Allocates a device of driver `T` under `parent`, with `data`, and
    /// registers it (its nodes appear in `/dev/dri`).
    pub fn new(parent: &device::Device, data: Arc<T::Data>) -> Result<Self> {
        // SAFETY: the driver table is static; `parent` is a live device.
        let raw = from_err_ptr(unsafe {
            bindings::drm_dev_alloc(&Vtable::<T>::DRIVER, parent.as_raw())
        })?;
        // SAFETY: the new device is ours; `release` frees `dev_private`.
        unsafe { (*raw).dev_private = data.into_foreign().cast_mut() };
        // SAFETY: `raw` is a new device with one reference, now owned.
        // INVARIANT: `dev_private` was set just above.
        let dev: ARef<Device<T>> = unsafe { ARef::from_raw(NonNull::new_unchecked(raw.cast())) };
        #[cfg(CONFIG_DEBUG_FS)]
        for f in T::DEBUGFS_FILES {
            // SAFETY: before registration, as required; `name` and `f` are
            // static, so they outlive the device's debugfs entries.
            unsafe {
                bindings::drm_debugfs_add_file(
                    raw,
                    f.name.as_char_ptr(),
                    Some(Vtable::<T>::debugfs_show),
                    core::ptr::from_ref(f).cast_mut().cast(),
                )
            };
        }
        // SAFETY: the device is fully set up.
        to_result(unsafe { bindings::drm_dev_register(raw, 0) })?;
        Ok(Self { dev })
    }

    /// The device.
    pub fn device(&self) -> &Device<T> {
        &self.dev
    }
}

impl<T: Driver> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: registered (type invariant).
        unsafe { bindings::drm_dev_unregister(self.dev.as_raw()) };
    }
}
