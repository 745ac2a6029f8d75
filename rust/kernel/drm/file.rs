// SPDX-License-Identifier: GPL-2.0

//! DRM files: one per open of a DRM node, with the driver's state.
//!
//! C header: [`include/drm/drm_file.h`](srctree/include/drm/drm_file.h).

use super::{Device, Driver};
use crate::{bindings, error::Result, prelude::*, types::Opaque};
use core::{marker::PhantomData, pin::Pin};

/// A driver's per-file state, created at open and dropped at the last close.
pub trait DriverFile: Sized + Send + Sync + 'static {
    /// The driver.
    type Driver: Driver;

    /// Creates the state of a new file of `dev`.
    fn open(dev: &Device<Self::Driver>) -> Result<Pin<KBox<Self>>>;
}

/// An open DRM file of a driver whose file state is `T`.
///
/// # Invariants
///
/// `driver_priv` is the `Pin<KBox<T>>` made by `T::open`, until postclose.
#[repr(transparent)]
pub struct File<T: DriverFile>(Opaque<bindings::drm_file>, PhantomData<T>);

impl<T: DriverFile> File<T> {
    /// # Safety
    ///
    /// `raw` must be a file opened through [`open_callback::<T>`], alive for
    /// `'a`.
    pub unsafe fn borrow<'a>(raw: *const bindings::drm_file) -> &'a Self {
        // SAFETY: transparent wrapper; the caller promises validity.
        unsafe { &*raw.cast() }
    }

    /// The raw file.
    pub fn as_raw(&self) -> *mut bindings::drm_file {
        self.0.get()
    }

    /// The driver's state for this file.
    pub fn inner(&self) -> Pin<&T> {
        // SAFETY: `driver_priv` is a pinned `KBox<T>` alive until postclose
        // (type invariant), after which no `File` exists.
        unsafe { Pin::new_unchecked(&*(*self.as_raw()).driver_priv.cast::<T>()) }
    }
}

/// `drm_driver.open`.
///
/// # Safety
///
/// Called by DRM with a live device of `T::Driver` and a new file.
pub(super) unsafe extern "C" fn open_callback<T: DriverFile>(
    dev: *mut bindings::drm_device,
    file: *mut bindings::drm_file,
) -> crate::ffi::c_int {
    // SAFETY: DRM passes a device of this driver.
    let dev = unsafe { Device::<T::Driver>::borrow(dev) };
    match T::open(dev) {
        Ok(state) => {
            // SAFETY: the file is new and ours to set up; the box stays
            // pinned: it is only turned back into a box at postclose.
            // INVARIANT: `driver_priv` now holds the state.
            unsafe {
                (*file).driver_priv = KBox::into_raw(Pin::into_inner_unchecked(state)).cast()
            };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// `drm_driver.postclose`.
///
/// # Safety
///
/// Called by DRM once, for a file whose open succeeded.
pub(super) unsafe extern "C" fn postclose_callback<T: DriverFile>(
    _dev: *mut bindings::drm_device,
    file: *mut bindings::drm_file,
) {
    // SAFETY: `driver_priv` is the box made in `open_callback`; the file is
    // going away and nothing else uses it.
    drop(unsafe { KBox::from_raw((*file).driver_priv.cast::<T>()) });
}
