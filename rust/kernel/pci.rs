// SPDX-License-Identifier: GPL-2.0

//! PCI drivers, devices and their memory BARs.
//!
//! Shaped like upstream's abstractions (Linux 6.13+): a [`Driver`] trait
//! with an ID table whose entries carry the driver's information about each
//! ID, `probe` returning the per-device data that `remove` drops, and a
//! [`Device`] that can be enabled and whose BARs can be mapped. Two
//! differences, both because 6.12 has no `driver`/`devres` core to build on:
//!
//!  - [`Registration`] owns the driver's [`Driver::Context`], given to every
//!    `probe`: what a driver that is also something else (softgpu is a
//!    platform device's driver too) shares between its parts.
//!  - A mapped BAR, [`Bar`], is owned by whoever mapped it instead of being
//!    revoked by devres when the driver unbinds: keep it in the per-device
//!    data (dropped at `remove`) and it never outlives the binding.
//!
//! Mappings are write-combined ([`Device::iomap_region_wc`]): the BARs this
//! is for hold memory (a GPU's VRAM), not registers with side effects.
//!
//! C header: [`include/linux/pci.h`](srctree/include/linux/pci.h).

use crate::{
    bindings, container_of, device,
    error::{from_result, to_result},
    ffi::{c_int, c_void},
    folio::Folio,
    prelude::*,
    str::CStr,
    types::{ARef, AlwaysRefCounted, ForeignOwnable, Opaque},
    ThisModule,
};
use core::{marker::PhantomPinned, ptr::NonNull};

/// The number of standard BARs of a device (BARs 0 to 5).
pub const NUM_BARS: u32 = bindings::PCI_STD_NUM_BARS;

/// A PCI vendor and device ID, matching any subsystem and class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceId {
    vendor: u16,
    device: u16,
}

impl DeviceId {
    /// The ID of device `device` of vendor `vendor`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::pci::DeviceId;
    ///
    /// let id = DeviceId::from_id(0x1af4, 0x1110);
    /// assert_eq!((id.vendor(), id.device()), (0x1af4, 0x1110));
    /// ```
    pub const fn from_id(vendor: u16, device: u16) -> Self {
        Self { vendor, device }
    }

    /// The vendor ID.
    pub const fn vendor(&self) -> u16 {
        self.vendor
    }

    /// The device ID.
    pub const fn device(&self) -> u16 {
        self.device
    }
}

/// The IDs a driver binds to, each with what the driver knows about it.
pub type IdTable<T> = &'static [(DeviceId, T)];

/// A PCI driver.
///
/// The value `probe` returns is the device's data while the driver is bound
/// to it; unbinding (`remove`) drops it, so releasing what probe acquired is
/// its `Drop`.
///
/// # Examples
///
/// ```
/// use kernel::{c_str, pci, prelude::*, ThisModule};
///
/// struct Sample {
///     _mem: pci::Bar,
/// }
///
/// impl pci::Driver for Sample {
///     type IdInfo = u32;
///     type Context = ();
///     const ID_TABLE: pci::IdTable<u32> = &[(pci::DeviceId::from_id(0x1af4, 0x1110), 2)];
///
///     fn probe(dev: &pci::Device, bar: &u32, _ctx: &()) -> Result<Pin<KBox<Self>>> {
///         dev.enable_device_mem()?;
///         let mem = dev.iomap_region_wc(*bar, c_str!("sample"))?;
///         mem.try_write32(0x1234_5678, 0)?;
///         Ok(KBox::pin(Self { _mem: mem }, GFP_KERNEL)?)
///     }
/// }
///
/// fn register(module: &'static ThisModule) -> Result<Pin<KBox<pci::Registration<Sample>>>> {
///     pci::Registration::new(c_str!("sample"), module, ())
/// }
/// # let _ = register;
/// ```
pub trait Driver: Send + Sync + Sized + 'static {
    /// What the driver knows about each ID of its table.
    type IdInfo: Send + Sync + 'static;

    /// What the registration shares with every probe.
    type Context: Send + Sync + 'static;

    /// The devices the driver binds to.
    const ID_TABLE: IdTable<Self::IdInfo>;

    /// Binds the driver to `dev`, whose ID is the table's entry `id_info`.
    fn probe(dev: &Device, id_info: &Self::IdInfo, ctx: &Self::Context) -> Result<Pin<KBox<Self>>>;
}

/// A registered PCI driver; unregistered (each device unbound) on drop.
///
/// # Invariants
///
/// If `registered`, `drv` is registered with the PCI core until `self` is
/// dropped, with
/// `ids` as its (zero-terminated) ID table and [`Registration::probe_cb`]
/// and [`Registration::remove_cb`] as its callbacks. `self` is pinned.
pub struct Registration<T: Driver> {
    drv: Opaque<bindings::pci_driver>,
    ids: KVec<bindings::pci_device_id>,
    ctx: T::Context,
    registered: bool,
    _pin: PhantomPinned,
}

// SAFETY: the registration only gives `&T::Context`, which is `Sync`, and is
// unregistered from any thread.
unsafe impl<T: Driver> Send for Registration<T> {}
// SAFETY: as above; `&Registration` gives nothing but `&T::Context`.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers driver `name` of `module`, binding it to each device of
    /// [`Driver::ID_TABLE`] present now or later; `ctx` is shared with
    /// every probe. Devices present now are probed before this returns.
    pub fn new(
        name: &'static CStr,
        module: &'static ThisModule,
        ctx: T::Context,
    ) -> Result<Pin<KBox<Self>>> {
        let mut ids = KVec::with_capacity(T::ID_TABLE.len() + 1, GFP_KERNEL)?;
        for (i, (id, _)) in T::ID_TABLE.iter().enumerate() {
            ids.push(
                bindings::pci_device_id {
                    vendor: id.vendor.into(),
                    device: id.device.into(),
                    subvendor: !0,
                    subdevice: !0,
                    // The index of the entry, for probe to find its IdInfo.
                    driver_data: i as _,
                    // SAFETY: all-zero is "any" for the class and mask.
                    ..unsafe { core::mem::zeroed() }
                },
                GFP_KERNEL,
            )?;
        }
        // SAFETY: the all-zero entry terminates the table.
        ids.push(unsafe { core::mem::zeroed() }, GFP_KERNEL)?;

        let mut reg = KBox::pin(
            Self {
                drv: Opaque::uninit(),
                ids,
                ctx,
                // Unset below if registering fails: once registered, a
                // probe may share `reg` at any time.
                registered: true,
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        let drv = reg.drv.get();
        // SAFETY: `drv` is ours and not registered yet; all-zero is a valid
        // `pci_driver` (no callbacks) that the fields below complete.
        unsafe {
            core::ptr::write_bytes(drv, 0, 1);
            (*drv).name = name.as_char_ptr();
            (*drv).id_table = reg.ids.as_ptr();
            (*drv).probe = Some(Self::probe_cb);
            (*drv).remove = Some(Self::remove_cb);
        }
        // SAFETY: `drv` is initialised above and pinned in `reg`, which
        // unregisters it on drop; `name` is static.
        let ret =
            unsafe { bindings::__pci_register_driver(drv, module.as_ptr(), name.as_char_ptr()) };
        if ret != 0 {
            // SAFETY: setting a flag moves nothing out of the pinned box;
            // not registered, so no probe shares it.
            // INVARIANT: not registered.
            unsafe { reg.as_mut().get_unchecked_mut() }.registered = false;
            return Err(Error::from_errno(ret));
        }
        Ok(reg)
    }

    /// The context shared with every probe.
    pub fn context(&self) -> &T::Context {
        &self.ctx
    }

    /// # Safety
    ///
    /// Called by the PCI core to bind `pdev`, a device it holds, to a
    /// driver registered by [`Registration::new`], with `id` an entry of
    /// that driver's table.
    unsafe extern "C" fn probe_cb(
        pdev: *mut bindings::pci_dev,
        id: *const bindings::pci_device_id,
    ) -> c_int {
        from_result(|| {
            // SAFETY: the core sets the device's driver before probing; it
            // is the `driver` of our `pci_driver`, which is the `drv` of a
            // `Registration<T>` (the callbacks are only ever ours), alive
            // while it is registered, so while the core probes with it.
            let reg = unsafe {
                let ddrv = (*pdev).dev.driver;
                let pdrv = container_of!(ddrv, bindings::pci_driver, driver);
                &*container_of!(pdrv.cast::<Opaque<bindings::pci_driver>>(), Self, drv)
            };
            // SAFETY: `id` is the core's match, valid during probe: an
            // entry of `reg.ids`, whose `driver_data` is the index of its
            // entry in `T::ID_TABLE`, or an ID added through sysfs
            // `new_id`, whose `driver_data` is one of those (the core
            // refuses others); `get` checks it all the same.
            let index: usize = unsafe { (*id).driver_data };
            let info = &T::ID_TABLE.get(index).ok_or(EINVAL)?.1;
            // SAFETY: the core holds `pdev` during probe.
            let dev = unsafe { Device::from_raw(pdev) };
            let data = T::probe(dev, info, &reg.ctx)?;
            // SAFETY: `pdev` is valid; its drvdata is the driver's to set
            // while bound. Taken back by `remove_cb`.
            unsafe { bindings::pci_set_drvdata(pdev, data.into_foreign() as *mut c_void) };
            Ok(0)
        })
    }

    /// # Safety
    ///
    /// Called by the PCI core to unbind `pdev`, which [`Self::probe_cb`]
    /// bound.
    unsafe extern "C" fn remove_cb(pdev: *mut bindings::pci_dev) {
        // SAFETY: `pdev` is valid and bound: its drvdata is what probe_cb
        // stored, taken back once, here.
        let data = unsafe { Pin::<KBox<T>>::from_foreign(bindings::pci_get_drvdata(pdev)) };
        drop(data);
    }
}

impl<T: Driver> Drop for Registration<T> {
    fn drop(&mut self) {
        if self.registered {
            // SAFETY: registered (type invariant); unbinds every device
            // first, so no callback runs after this returns.
            unsafe { bindings::pci_unregister_driver(self.drv.get()) };
        }
    }
}

/// A PCI device.
///
/// # Invariants
///
/// The wrapped `pci_dev` is valid while a reference to `Device` exists; an
/// [`ARef<Device>`] holds a reference count on it.
#[repr(transparent)]
pub struct Device(Opaque<bindings::pci_dev>);

// SAFETY: `pci_dev` is usable from any thread; what `&Device` offers takes
// the core's locks where it needs them.
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

// SAFETY: `pci_dev_get`/`pci_dev_put` count references to the device.
unsafe impl AlwaysRefCounted for Device {
    fn inc_ref(&self) {
        // SAFETY: the device is valid (type invariant).
        unsafe { bindings::pci_dev_get(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up a reference it holds.
        unsafe { bindings::pci_dev_put(obj.cast::<bindings::pci_dev>().as_ptr()) };
    }
}

impl Device {
    /// # Safety
    ///
    /// `pdev` is valid for `'a`.
    unsafe fn from_raw<'a>(pdev: *mut bindings::pci_dev) -> &'a Self {
        // SAFETY: `Device` is a transparent wrapper; valid per the caller.
        unsafe { &*pdev.cast() }
    }

    fn as_raw(&self) -> *mut bindings::pci_dev {
        self.0.get()
    }

    /// The generic device.
    pub fn as_dev(&self) -> &device::Device {
        // SAFETY: `dev` is embedded in the valid `pci_dev`.
        unsafe { device::Device::as_ref(&mut (*self.as_raw()).dev) }
    }

    /// The vendor ID.
    pub fn vendor_id(&self) -> u16 {
        // SAFETY: the device is valid; the ID never changes.
        unsafe { (*self.as_raw()).vendor }
    }

    /// The device ID.
    pub fn device_id(&self) -> u16 {
        // SAFETY: as above.
        unsafe { (*self.as_raw()).device }
    }

    /// Enables the device's memory BARs; they are disabled again when the
    /// driver unbinds. For [`Driver::probe`].
    pub fn enable_device_mem(&self) -> Result {
        // SAFETY: the device is valid.
        to_result(unsafe { bindings::pci_enable_device_mem(self.as_raw()) })?;
        // SAFETY: `disable` balances the enable above, once, when the
        // driver unbinds (or now, if the action cannot be added).
        to_result(unsafe {
            bindings::devm_add_action_or_reset(
                &mut (*self.as_raw()).dev,
                Some(disable),
                self.as_raw().cast(),
            )
        })
    }

    /// Enables bus mastering (DMA by the device).
    pub fn set_master(&self) {
        // SAFETY: the device is valid.
        unsafe { bindings::pci_set_master(self.as_raw()) };
    }

    fn resource(&self, bar: u32) -> Result<&bindings::resource> {
        if bar >= NUM_BARS {
            return Err(EINVAL);
        }
        // SAFETY: the device is valid and `bar` one of its standard BARs;
        // the core fixes resources before drivers see the device.
        Ok(unsafe { &(*self.as_raw()).resource[bar as usize] })
    }

    /// The bus address where BAR `bar` starts (0 if not present).
    pub fn resource_start(&self, bar: u32) -> Result<bindings::resource_size_t> {
        Ok(self.resource(bar)?.start)
    }

    /// The size of BAR `bar` in bytes (0 if not present).
    pub fn resource_len(&self, bar: u32) -> Result<bindings::resource_size_t> {
        let r = self.resource(bar)?;
        Ok(if r.start == 0 && r.end == 0 {
            0
        } else {
            r.end - r.start + 1
        })
    }

    /// Reserves memory BAR `bar` for the driver (as `name`) and maps it
    /// write-combined; the mapping and the reservation end when the
    /// returned [`Bar`] is dropped.
    pub fn iomap_region_wc(&self, bar: u32, name: &'static CStr) -> Result<Bar> {
        let r = self.resource(bar)?;
        let len = self.resource_len(bar)?;
        if len == 0 || r.flags & bindings::IORESOURCE_MEM as usize == 0 {
            return Err(ENODEV);
        }
        let len = usize::try_from(len).map_err(|_| E2BIG)?;
        // SAFETY: the device is valid, `bar` a standard BAR; `name` is
        // static (the resource tree keeps the pointer).
        to_result(unsafe {
            bindings::pci_request_region(self.as_raw(), bar as c_int, name.as_char_ptr())
        })?;
        // SAFETY: the region is ours (requested above); mapping it has no
        // other precondition.
        let addr = unsafe { bindings::ioremap_wc(r.start, len as _) };
        let Some(addr) = NonNull::new(addr) else {
            // SAFETY: requested above, not mapped.
            unsafe { bindings::pci_release_region(self.as_raw(), bar as c_int) };
            return Err(ENOMEM);
        };
        // INVARIANT: requested and mapped above, `len` bytes.
        Ok(Bar {
            pdev: self.into(),
            addr: addr.cast(),
            len,
            num: bar as c_int,
        })
    }
}

/// `offset`, if `[offset, offset + size)` is inside `[0, len)` and `offset`
/// is a multiple of `align`: what every access of a [`Bar`] checks.
fn checked_range(len: usize, offset: usize, size: usize, align: usize) -> Result<usize> {
    let end = offset.checked_add(size).ok_or(EINVAL)?;
    if end > len || offset % align != 0 {
        return Err(EINVAL);
    }
    Ok(offset)
}

/// Balances `pci_enable_device_mem` when the driver unbinds.
///
/// # Safety
///
/// `pdev` is a `pci_dev` enabled by [`Device::enable_device_mem`], once for
/// each call of it.
unsafe extern "C" fn disable(pdev: *mut c_void) {
    // SAFETY: registered by `enable_device_mem` with its valid device.
    unsafe { bindings::pci_disable_device(pdev.cast()) };
}

/// A memory BAR reserved for the driver and mapped write-combined, with
/// accessors at offsets checked against its size.
///
/// Accesses are MMIO: each `try_read*`/`try_write*` is one access of its
/// width; writes may be combined and reordered with each other until
/// [`Bar::flush_wc`].
///
/// # Invariants
///
/// `addr` is an `ioremap_wc()` mapping of the whole of BAR `num` of `pdev`,
/// `len` bytes, which `pdev`'s driver has requested; both are undone on
/// drop.
pub struct Bar {
    pdev: ARef<Device>,
    addr: NonNull<u8>,
    len: usize,
    num: c_int,
}

// SAFETY: MMIO through the mapping is valid from any thread.
unsafe impl Send for Bar {}
// SAFETY: every access is a single MMIO access or a copy the caller owns
// the buffer of; none needs exclusion for memory safety.
unsafe impl Sync for Bar {}

impl Bar {
    /// The size of the BAR in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the BAR has no bytes (never: a mapped BAR has some).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bus (physical) address where the BAR starts: what a CPU mapping
    /// of its memory maps (`pci_resource_start()`).
    pub fn bus_start(&self) -> u64 {
        // SAFETY: the device is live (`pdev` is referenced) and `num` one
        // of its standard BARs (type invariant); the core fixed its
        // resources before the driver saw it.
        unsafe { (*self.pdev.as_raw()).resource[self.num as usize].start }
    }

    /// The start of the kernel's write-combined mapping of the whole BAR,
    /// valid for `len()` bytes while `self` lives: for abstractions that
    /// copy to and from it (TTM's moves), never dereferenced here.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    /// The mapping at `offset`, if `[offset, offset + size)` is inside the
    /// BAR and `offset` is a multiple of `align`.
    fn at(&self, offset: usize, size: usize, align: usize) -> Result<*mut c_void> {
        let offset = checked_range(self.len, offset, size, align)?;
        // The result is inside the mapping (checked above).
        Ok(self.addr.as_ptr().wrapping_add(offset).cast())
    }

    /// Reads the 32-bit value at `offset` (4-byte aligned).
    pub fn try_read32(&self, offset: usize) -> Result<u32> {
        let p = self.at(offset, 4, 4)?;
        // SAFETY: `p` is an aligned address inside the mapping.
        Ok(unsafe { bindings::readl(p) })
    }

    /// Writes `value` at `offset` (4-byte aligned).
    pub fn try_write32(&self, value: u32, offset: usize) -> Result {
        let p = self.at(offset, 4, 4)?;
        // SAFETY: `p` is an aligned address inside the mapping.
        unsafe { bindings::writel(value, p) };
        Ok(())
    }

    /// Reads the 64-bit value at `offset` (8-byte aligned).
    pub fn try_read64(&self, offset: usize) -> Result<u64> {
        let p = self.at(offset, 8, 8)?;
        // SAFETY: `p` is an aligned address inside the mapping.
        Ok(unsafe { bindings::readq(p) })
    }

    /// Writes `value` at `offset` (8-byte aligned).
    pub fn try_write64(&self, value: u64, offset: usize) -> Result {
        let p = self.at(offset, 8, 8)?;
        // SAFETY: `p` is an aligned address inside the mapping.
        unsafe { bindings::writeq(value, p) };
        Ok(())
    }

    /// Copies `buf.len()` bytes of the BAR from `offset` into `buf`.
    pub fn try_copy_from(&self, offset: usize, buf: &mut [u8]) -> Result {
        let p = self.at(offset, buf.len(), 1)?;
        // SAFETY: `[p, p + len)` is inside the mapping; `buf` is ours.
        unsafe { bindings::memcpy_fromio(buf.as_mut_ptr().cast(), p, buf.len()) };
        Ok(())
    }

    /// Copies `buf` into the BAR at `offset`.
    pub fn try_copy_to(&self, offset: usize, buf: &[u8]) -> Result {
        let p = self.at(offset, buf.len(), 1)?;
        // SAFETY: `[p, p + len)` is inside the mapping; `buf` is ours.
        unsafe { bindings::memcpy_toio(p, buf.as_ptr().cast(), buf.len()) };
        Ok(())
    }

    /// Copies `len` bytes of `folio` from byte `folio_offset` on into the
    /// BAR at `offset` (`memcpy_toio()`, a page at a time): `EINVAL` if
    /// either range is out of bounds, and nothing is copied then.
    pub fn try_copy_from_folio(
        &self,
        offset: usize,
        folio: &Folio,
        folio_offset: usize,
        len: usize,
    ) -> Result {
        let p = self.at(offset, len, 1)?.cast::<u8>();
        folio.for_each_chunk(folio_offset, len, |map, done, n| {
            // SAFETY: `[p, p + len)` is inside the mapping (checked above)
            // and `done + n <= len`; `map` is `n` mapped bytes of the folio.
            unsafe { bindings::memcpy_toio(p.wrapping_add(done).cast(), map.cast(), n) }
        })
    }

    /// Copies `len` bytes of the BAR from `offset` on into `folio` at byte
    /// `folio_offset` (`memcpy_fromio()`): `EINVAL` as for
    /// [`Bar::try_copy_from_folio`]. The caller marks the folio dirty if it
    /// belongs to a mapping.
    pub fn try_copy_to_folio(
        &self,
        offset: usize,
        folio: &Folio,
        folio_offset: usize,
        len: usize,
    ) -> Result {
        let p = self.at(offset, len, 1)?.cast::<u8>();
        folio.for_each_chunk(folio_offset, len, |map, done, n| {
            // SAFETY: As in `try_copy_from_folio`, the other way round.
            unsafe { bindings::memcpy_fromio(map.cast(), p.wrapping_add(done).cast(), n) }
        })
    }

    /// Sets `len` bytes of the BAR from `offset` to `byte`.
    pub fn try_fill(&self, offset: usize, len: usize, byte: u8) -> Result {
        let p = self.at(offset, len, 1)?;
        // SAFETY: `[p, p + len)` is inside the mapping.
        unsafe { bindings::memset_io(p, byte.into(), len) };
        Ok(())
    }

    /// Makes the writes before it reach the device before any access after
    /// it (write-combining buffers drained).
    pub fn flush_wc(&self) {
        // SAFETY: a barrier, no precondition.
        unsafe { bindings::wmb() };
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: mapped and requested (type invariant), undone once, here.
        unsafe {
            bindings::iounmap(self.addr.as_ptr().cast());
            bindings::pci_release_region(self.pdev.as_raw(), self.num);
        }
    }
}

#[cfg(CONFIG_KUNIT)]
#[crate::kunit::kunit_tests(rust_kernel_pci)]
mod tests {
    use super::checked_range;
    use crate::prelude::*;

    const LEN: usize = 1 << 20;

    #[test]
    fn inside() {
        assert_eq!(checked_range(LEN, 0, 4, 4), Ok(0));
        assert_eq!(checked_range(LEN, LEN - 8, 8, 8), Ok(LEN - 8));
        assert_eq!(checked_range(LEN, 3, LEN - 3, 1), Ok(3));
        // An empty copy at the very end touches nothing.
        assert_eq!(checked_range(LEN, LEN, 0, 1), Ok(LEN));
    }

    #[test]
    fn outside() {
        assert_eq!(checked_range(LEN, LEN - 4, 8, 4), Err(EINVAL));
        assert_eq!(checked_range(LEN, LEN, 4, 4), Err(EINVAL));
        assert_eq!(checked_range(LEN, 0, LEN + 1, 1), Err(EINVAL));
        assert_eq!(checked_range(LEN, LEN + 1, 0, 1), Err(EINVAL));
    }

    #[test]
    fn overflow() {
        assert_eq!(checked_range(LEN, usize::MAX - 3, 8, 4), Err(EINVAL));
        assert_eq!(checked_range(usize::MAX, usize::MAX, 1, 1), Err(EINVAL));
    }

    #[test]
    fn misaligned() {
        assert_eq!(checked_range(LEN, 2, 4, 4), Err(EINVAL));
        assert_eq!(checked_range(LEN, 4, 8, 8), Err(EINVAL));
        assert_eq!(checked_range(LEN, 1, 1, 1), Ok(1));
    }
}
