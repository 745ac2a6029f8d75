// SPDX-License-Identifier: GPL-2.0

//! Platform devices registered by a driver for itself.
//!
//! Software devices (vgem, softgpu) have no bus to be found on: they
//! register a platform device as the parent of what they expose.
//!
//! C header: [`include/linux/platform_device.h`](srctree/include/linux/platform_device.h).

use crate::{bindings, device, error::from_err_ptr, prelude::*, str::CStr};
use core::ptr::NonNull;

/// A platform device with no resources, unregistered on drop.
///
/// # Invariants
///
/// `pdev` was registered by [`SimpleDevice::register`] and is owned here.
pub struct SimpleDevice {
    pdev: NonNull<bindings::platform_device>,
}

// SAFETY: the device may be used and unregistered from any thread.
unsafe impl Send for SimpleDevice {}
// SAFETY: `&SimpleDevice` only gives the device, which is thread-safe.
unsafe impl Sync for SimpleDevice {}

impl SimpleDevice {
    /// Registers device `name` (id -1: the only one of its name).
    ///
    /// Its DMA mask covers all memory: a software device reaches memory
    /// through the CPU, so what the DMA API maps for it (a dma-buf mapping
    /// of an importer) must never bounce through swiotlb.
    pub fn register(name: &'static CStr) -> Result<Self> {
        let info = bindings::platform_device_info {
            name: name.as_char_ptr(),
            id: -1,
            dma_mask: u64::MAX,
            // SAFETY: all-zero is "none" for the other fields.
            ..unsafe { core::mem::zeroed() }
        };
        // SAFETY: `name` is a static C string; no resources.
        let pdev = from_err_ptr(unsafe { bindings::platform_device_register_full(&info) })?;
        // INVARIANT: registered above.
        Ok(Self {
            pdev: NonNull::new(pdev).ok_or(ENOMEM)?,
        })
    }

    /// The generic device.
    pub fn device(&self) -> &device::Device {
        // SAFETY: the platform device lives while `self` does; `dev` is its
        // embedded struct device.
        unsafe { device::Device::as_ref(&raw mut (*self.pdev.as_ptr()).dev) }
    }
}

impl Drop for SimpleDevice {
    fn drop(&mut self) {
        // SAFETY: registered and owned (type invariant).
        unsafe { bindings::platform_device_unregister(self.pdev.as_ptr()) };
    }
}
