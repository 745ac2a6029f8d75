// SPDX-License-Identifier: GPL-2.0

//! Discrete mode: VRAM on a PCI BAR.
//!
//! QEMU's `ivshmem-plain` device (1af4:1110, `VRAM=` of `scripts/run-vm.sh`)
//! stands in for a discrete GPU's memory: its BAR 2 is the VRAM, mapped
//! write-combined as a GPU driver maps its VRAM aperture. softgpu drives it
//! as a PCI driver besides its platform device; the DRM device is the same
//! either way and reports the VRAM in debugfs (`vram`). Without the device
//! softgpu is the integrated GPU it always was.
//!
//! The VRAM is TTM's: probe makes a TTM device for the DRM device and
//! registers the VRAM resource manager of `kernel::drm::ttm` as its
//! `TTM_PL_VRAM`, on the kernel's buddy allocator (drm_buddy, as amdgpu,
//! i915 and xe manage theirs) over the whole BAR, in blocks of at least a
//! page, with the BAR as the manager's aperture. Discrete-mode objects
//! (`tbo.rs`) are placed there (see "Discrete mode" in
//! Documentation/gpu/softgpu.rst).

use kernel::{
    c_str, drm,
    drm::{buddy::Buddy, ttm},
    new_mutex, new_spinlock,
    page::PAGE_SIZE,
    pci,
    prelude::*,
    sync::{Arc, Mutex, SpinLock},
    types::ARef,
};

use crate::{
    dmem::{Aperture, Dmem},
    SoftGpu,
};

/// The BAR of `ivshmem-plain` that is its memory.
const VRAM_BAR: u32 = 2;

/// The VRAM of the bound device, if one is bound.
///
/// Shared by the DRM device, which reports it, and the PCI driver, which
/// fills it at probe and empties it at remove: the mapping is only reached
/// under the lock, so it never outlives the binding.
#[pin_data]
pub(crate) struct Slot {
    #[pin]
    vram: Mutex<Option<Vram>>,
    /// The BAR's mapping again, for the engine ([`Slot::with_bar`]): it
    /// reaches VRAM pages under the page table's spinlock, in a fence's
    /// signalling critical section, where `vram` (held around allocations
    /// at probe) cannot be taken. Filled after `vram` at probe, emptied
    /// before it at remove, so the reference the VRAM manager holds as its
    /// aperture is the last one and the mapping goes with the binding,
    /// outside this lock.
    #[pin]
    bar: SpinLock<Option<Arc<pci::Bar>>>,
    /// The device private memory on the VRAM (`dmem.rs`), for the
    /// migration ioctl, submissions (whose HMM faults report its pages)
    /// and TTM placements (which make room in it): under a spinlock of
    /// its own, since the migration paths take the mmap lock and folio
    /// locks, which `vram` is held outside of at unbind. Filled last at
    /// probe, emptied (and everything migrated back) first at remove.
    #[pin]
    dmem: SpinLock<Option<Arc<Dmem>>>,
}

/// Mapped VRAM, its TTM device and resource manager.
///
/// Dropped in field order: the manager (evicting what is in VRAM, then
/// unmapping the BAR, which it holds as its aperture), then the TTM
/// device.
pub(crate) struct Vram {
    /// `TTM_PL_VRAM` of `ttm`: offsets in the BAR, allocated from a buddy
    /// allocator in blocks of at least `PAGE_SIZE`; the BAR is its
    /// aperture, through which TTM copies and maps objects.
    manager: ttm::VramManager<SoftGpu>,
    ttm: Arc<ttm::Device<SoftGpu>>,
}

impl Slot {
    /// An empty slot.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                vram <- new_mutex!(None, "softgpu::vram::Slot"),
                bar <- new_spinlock!(None, "softgpu::vram::Slot::bar"),
                dmem <- new_spinlock!(None, "softgpu::vram::Slot::dmem"),
            }),
            GFP_KERNEL,
        )
    }

    /// debugfs `vram`: the VRAM's size, its use by TTM objects (`used`)
    /// and by device private pages (`devmem`: the chunks lent to them), what
    /// is free, then the allocator's state (`drm_buddy_print()`: free
    /// blocks by order), or `none`.
    pub(crate) fn show(&self, p: &drm::Printer) {
        match &*self.vram.lock() {
            Some(v) => {
                let buddy = v.manager.buddy();
                let (size, free) = (buddy.size(), buddy.avail());
                let devmem = self.dmem().map_or(0, |d| d.vram_bytes());
                p.print(format_args!(
                    "bar: {VRAM_BAR}\nsize: {size}\nused: {}\ndevmem: {devmem}\nfree: {free}\n\
                     allocator:\n",
                    (size - free).saturating_sub(devmem)
                ));
                buddy.print(p);
            }
            None => p.print(format_args!("none\n")),
        }
    }

    /// debugfs `vram_mm`: TTM's view of the VRAM manager
    /// (`ttm_resource_manager_debug()`: in use, size and usage in bytes,
    /// then the allocator's state), or `none`.
    pub(crate) fn show_mm(&self, p: &drm::Printer) {
        match &*self.vram.lock() {
            Some(v) => {
                p.print(format_args!("vram:\n"));
                v.manager.print(p);
            }
            None => p.print(format_args!("none\n")),
        }
    }

    /// Calls `f` on the mapping of the VRAM BAR, if a VRAM device is bound;
    /// under a spinlock, which unbinding takes before it unmaps the BAR. For
    /// the engine, which reaches VRAM pages through it: `f` must not sleep.
    pub(crate) fn with_bar<R>(&self, f: impl FnOnce(&pci::Bar) -> R) -> Option<R> {
        self.bar.lock().as_deref().map(f)
    }

    /// The device private memory, when the VRAM device is bound.
    pub(crate) fn dmem(&self) -> Option<Arc<Dmem>> {
        self.dmem.lock().clone()
    }

    /// The TTM device, when the VRAM device is bound.
    pub(crate) fn ttm(&self) -> Option<Arc<ttm::Device<SoftGpu>>> {
        self.vram.lock().as_ref().map(|v| v.ttm.clone())
    }
}

impl Aperture for Slot {
    fn with_bar_mut(&self, f: &mut dyn FnMut(&pci::Bar) -> Result) -> Result {
        self.with_bar(f).unwrap_or(Err(ENODEV))
    }
}

/// Writes patterns through the mapping at its start, middle and end, by
/// each accessor, and reads them back: VRAM that does not keep what is
/// written is not VRAM. Leaves the bytes it used zeroed.
fn check(bar: &pci::Bar) -> Result {
    let len = bar.len();
    if len < 4096 {
        return Err(ENODEV);
    }
    let pattern = |off: usize| 0x5afe_c0de_0000_0000u64 ^ off as u64;
    let mut block = [0u8; 64];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0xa5;
    }
    let offsets = [0, len / 2, len - 64];
    for &off in &offsets {
        bar.try_write64(pattern(off), off)?;
        bar.try_write32(pattern(off) as u32 ^ 0xffff_ffff, off + 8)?;
        bar.try_copy_to(off + 16, &block[..48])?;
    }
    bar.flush_wc();
    for &off in &offsets {
        let mut back = [0u8; 48];
        bar.try_copy_from(off + 16, &mut back)?;
        let (q, l) = (bar.try_read64(off)?, bar.try_read32(off + 8)?);
        if q != pattern(off) || l != pattern(off) as u32 ^ 0xffff_ffff || back != block[..48] {
            pr_err!("VRAM at {off:#x} does not read back what was written\n");
            return Err(EIO);
        }
        bar.try_fill(off, 64, 0)?;
    }
    bar.flush_wc();
    Ok(())
}

/// The PCI driver of the VRAM device; unbinding it empties the slot.
pub(crate) struct VramDriver {
    slot: Arc<Slot>,
}

/// What every probe gets: the slot, and the DRM device whose objects the
/// VRAM's TTM device places. (The registration holds the DRM device
/// reference, so that it goes when the driver is unregistered.)
pub(crate) struct VramContext {
    pub(crate) slot: Arc<Slot>,
    pub(crate) drm: ARef<drm::Device<SoftGpu>>,
}

impl pci::Driver for VramDriver {
    type IdInfo = u32;
    type Context = VramContext;

    const ID_TABLE: pci::IdTable<u32> = &[(pci::DeviceId::from_id(0x1af4, 0x1110), VRAM_BAR)];

    fn probe(dev: &pci::Device, bar: &u32, ctx: &VramContext) -> Result<Pin<KBox<Self>>> {
        let slot = &ctx.slot;
        dev.enable_device_mem()?;
        let bar = dev.iomap_region_wc(*bar, c_str!("softgpu VRAM"))?;
        check(&bar)?;
        // Shared with the engine (see `Slot::bar`); declared before the
        // manager, so that a failure below drops the manager first.
        let bar = Arc::new(bar, GFP_KERNEL)?;
        let mut vram = slot.vram.lock();
        // One device's VRAM: a second device is not ours.
        if vram.is_some() {
            return Err(EBUSY);
        }
        let buddy = Buddy::new(bar.len() as u64, PAGE_SIZE as u64)?;
        let ttm = ttm::Device::new(dev.as_dev(), &ctx.drm)?;
        let mib = bar.len() >> 20;
        let manager = ttm::VramManager::new(&ttm, ttm::PL_VRAM, buddy, bar.clone())?;
        let dmem = Dmem::new(slot.clone(), manager.buddy())?;
        // Nothing fails after this: dropping `this` would empty the slot.
        let this = match KBox::pin(Self { slot: slot.clone() }, GFP_KERNEL) {
            Ok(this) => this,
            Err(e) => {
                // The map holds a reference to its `Dmem` until closed.
                dmem.close();
                return Err(e.into());
            }
        };
        pr_info!("VRAM: {mib} MiB (BAR {VRAM_BAR})\n");
        *slot.bar.lock() = Some(bar);
        *vram = Some(Vram { manager, ttm });
        *slot.dmem.lock() = Some(dmem);
        Ok(this)
    }
}

impl Drop for VramDriver {
    fn drop(&mut self) {
        // Device private pages back to system memory while the BAR is
        // there to copy them out of; then no more are handed out.
        // (Migrations and submissions may still hold the `Dmem` for a
        // moment: they find its map closed.)
        let dmem = self.slot.dmem.lock().take();
        if let Some(d) = dmem {
            d.close();
        }
        // The engine's reference first (dropped outside its spinlock), then
        // the last one, the VRAM manager's, with the rest: unmapped here,
        // before the device is disabled.
        let bar = self.slot.bar.lock().take();
        drop(bar);
        drop(self.slot.vram.lock().take());
    }
}
