// SPDX-License-Identifier: GPL-2.0

//! softgpu: a DRM render driver for a software GPU.
//!
//! Execution is emulated (`engine.rs`); memory management is real. Buffer
//! objects live on a private gemfs mount (`bo.rs`), are mapped into a GPU
//! address space per file (`vm.rs`) with its own page table (`pt.rs`), and
//! give their folios back when migration asks. Documentation/gpu/softgpu.rst,
//! "Structure", shows which module uses which. The ioctls are in `file.rs`; the uAPI
//! is `include/uapi/drm/softgpu_drm.h`. See Documentation/gpu/softgpu.rst.

mod bo;
mod delay;
mod dmem;
mod engine;
mod file;
mod objects;
mod pt;
mod tbo;
mod userptr;
mod vm;
mod vram;

use kernel::{
    c_str, drm,
    drm::ioctl::{iow, iowr, RENDER_ALLOW},
    gemfs, pci, platform,
    prelude::*,
    shrinker,
    sync::Arc,
    uapi,
};

module! {
    type: SoftGpuModule,
    name: "softgpu",
    author: "gemfs developers",
    description: "DRM driver for a software GPU backed by gemfs",
    license: "GPL",
}

/// `MODULE_IMPORT_NS(DMA_BUF)`, which `module!` cannot say in this kernel:
/// the kernel crate's GEM code compiled into softgpu maps imported
/// dma-bufs (`dma_buf_mmap()`, in the `DMA_BUF` namespace).
#[cfg(MODULE)]
#[link_section = ".modinfo"]
#[used(compiler)]
static IMPORT_NS_DMA_BUF: [u8; 18] = *b"import_ns=DMA_BUF\0";

/// The driver.
pub(crate) struct SoftGpu;

/// Per-device data.
pub(crate) struct DevData {
    /// The private gemfs mount objects are created on.
    pub(crate) mount: gemfs::Mount,
    pub(crate) engine: Arc<engine::Engine>,
    pub(crate) objects: Arc<objects::Objects>,
    /// The VRAM, when a discrete device is bound (`vram.rs`).
    pub(crate) vram: Arc<vram::Slot>,
    _shrinker: shrinker::Registration<objects::Objects>,
}

const fn nr(n: u32) -> u32 {
    uapi::DRM_COMMAND_BASE + n
}

impl drm::Driver for SoftGpu {
    type Data = DevData;
    type File = file::SoftFile;
    type Object = bo::Bo;

    const INFO: drm::DriverInfo = drm::DriverInfo {
        major: 0,
        minor: 1,
        patchlevel: 0,
        name: c_str!("softgpu"),
        desc: c_str!("software GPU on gemfs"),
    };
    const MODULE: &'static ThisModule = &THIS_MODULE;
    const FEATURES: u32 = drm::FEAT_GEM | drm::FEAT_RENDER;

    // Foreign dma-bufs: see `bo::Bo::import`.
    const PRIME_IMPORT: bool = true;

    fn gem_prime_import(
        dev: &drm::Device<Self>,
        import: &drm::gem::Import<'_>,
    ) -> Result<kernel::types::ARef<bo::GemObject>> {
        bo::Bo::import(dev, import)
    }

    kernel::declare_drm_ioctls! {
        (SOFTGPU_GEM_CREATE, iowr::<uapi::drm_softgpu_gem_create>(nr(uapi::DRM_SOFTGPU_GEM_CREATE)),
            uapi::drm_softgpu_gem_create, RENDER_ALLOW, file::SoftFile::gem_create),
        (SOFTGPU_GEM_MMAP_OFFSET,
            iowr::<uapi::drm_softgpu_gem_mmap_offset>(nr(uapi::DRM_SOFTGPU_GEM_MMAP_OFFSET)),
            uapi::drm_softgpu_gem_mmap_offset, RENDER_ALLOW, file::SoftFile::gem_mmap_offset),
        (SOFTGPU_GEM_INFO, iowr::<uapi::drm_softgpu_gem_info>(nr(uapi::DRM_SOFTGPU_GEM_INFO)),
            uapi::drm_softgpu_gem_info, RENDER_ALLOW, file::SoftFile::gem_info),
        (SOFTGPU_GEM_MADVISE,
            iowr::<uapi::drm_softgpu_gem_madvise>(nr(uapi::DRM_SOFTGPU_GEM_MADVISE)),
            uapi::drm_softgpu_gem_madvise, RENDER_ALLOW, file::SoftFile::gem_madvise),
        (SOFTGPU_VM_BIND, iow::<uapi::drm_softgpu_vm_bind>(nr(uapi::DRM_SOFTGPU_VM_BIND)),
            uapi::drm_softgpu_vm_bind, RENDER_ALLOW, file::SoftFile::vm_bind),
        (SOFTGPU_VM_UNBIND, iow::<uapi::drm_softgpu_vm_unbind>(nr(uapi::DRM_SOFTGPU_VM_UNBIND)),
            uapi::drm_softgpu_vm_unbind, RENDER_ALLOW, file::SoftFile::vm_unbind),
        (SOFTGPU_EXEC, iowr::<uapi::drm_softgpu_exec>(nr(uapi::DRM_SOFTGPU_EXEC)),
            uapi::drm_softgpu_exec, RENDER_ALLOW, file::SoftFile::exec),
        (SOFTGPU_WAIT, iowr::<uapi::drm_softgpu_wait>(nr(uapi::DRM_SOFTGPU_WAIT)),
            uapi::drm_softgpu_wait, RENDER_ALLOW, file::SoftFile::wait),
        (SOFTGPU_USERPTR, iow::<uapi::drm_softgpu_userptr>(nr(uapi::DRM_SOFTGPU_USERPTR)),
            uapi::drm_softgpu_userptr, RENDER_ALLOW, file::SoftFile::userptr),
        (SOFTGPU_GEM_MOVE, iow::<uapi::drm_softgpu_gem_move>(nr(uapi::DRM_SOFTGPU_GEM_MOVE)),
            uapi::drm_softgpu_gem_move, RENDER_ALLOW, file::SoftFile::gem_move),
        (SOFTGPU_USERPTR_MIGRATE,
            iowr::<uapi::drm_softgpu_userptr_migrate>(nr(uapi::DRM_SOFTGPU_USERPTR_MIGRATE)),
            uapi::drm_softgpu_userptr_migrate, RENDER_ALLOW, file::SoftFile::userptr_migrate),
    }

    fn show_fdinfo(file: &drm::file::File<file::SoftFile>, p: &drm::Printer) {
        let ns = file
            .inner()
            .stats
            .busy_ns
            .load(core::sync::atomic::Ordering::Relaxed);
        p.print(format_args!("drm-engine-render:\t{ns} ns\n"));
    }

    /// fdinfo's memory keys by region: `system`, and `vram` with a VRAM
    /// device (`tbo::memory_regions`).
    fn memory_regions(dev: &drm::Device<Self>) -> Option<&'static [&'static kernel::str::CStr]> {
        Some(tbo::memory_regions(dev))
    }

    const DEBUGFS_FILES: &'static [drm::DebugfsFile<Self>] = &[
        drm::DebugfsFile {
            name: c_str!("objects"),
            show: show_objects,
        },
        drm::DebugfsFile {
            name: c_str!("shrinker"),
            show: show_shrinker,
        },
        drm::DebugfsFile {
            name: c_str!("vram"),
            show: show_vram,
        },
        drm::DebugfsFile {
            name: c_str!("vram_mm"),
            show: show_vram_mm,
        },
        drm::DebugfsFile {
            name: c_str!("ttm"),
            show: show_ttm,
        },
        drm::DebugfsFile {
            name: c_str!("devmem"),
            show: show_devmem,
        },
        drm::DebugfsFile {
            name: c_str!("engine"),
            show: show_engine,
        },
    ];
}

/// debugfs `engine`: the jobs the engine ran, and TTM's copy jobs
/// (`engine::Engine::show`).
fn show_engine(dev: &drm::Device<SoftGpu>, p: &drm::Printer) -> Result {
    dev.data().engine.show(p);
    Ok(())
}

/// debugfs `devmem`: the device private memory on the VRAM (userptr pages
/// migrated there), or `none`.
fn show_devmem(dev: &drm::Device<SoftGpu>, p: &drm::Printer) -> Result {
    match dev.data().vram.dmem() {
        Some(d) => d.show(p),
        None => p.print(format_args!("none\n")),
    }
    Ok(())
}

/// debugfs `objects`: every object of the device, a line each.
fn show_objects(dev: &drm::Device<SoftGpu>, p: &drm::Printer) -> Result {
    bo::show_header(p);
    dev.data().objects.for_each(|o| {
        o.show(p);
        Ok(())
    })
}

/// debugfs `shrinker`: what the shrinker may take back, and has.
fn show_shrinker(dev: &drm::Device<SoftGpu>, p: &drm::Printer) -> Result {
    dev.data().objects.show_shrinker(p);
    Ok(())
}

/// debugfs `vram`: the discrete device's VRAM, or `none`.
fn show_vram(dev: &drm::Device<SoftGpu>, p: &drm::Printer) -> Result {
    dev.data().vram.show(p);
    Ok(())
}

/// debugfs `vram_mm`: TTM's VRAM manager, or `none`.
fn show_vram_mm(dev: &drm::Device<SoftGpu>, p: &drm::Printer) -> Result {
    dev.data().vram.show_mm(p);
    Ok(())
}

/// debugfs `ttm`: every TTM object of the device, a line each, with where
/// its pages are (`tbo::show`).
fn show_ttm(dev: &drm::Device<SoftGpu>, p: &drm::Printer) -> Result {
    tbo::show_header(p);
    dev.data().objects.for_each(|o| match o.ttm() {
        Some(t) => tbo::show(o.id, t, p),
        None => Ok(()),
    })
}

struct SoftGpuModule {
    // Dropped in this order: the VRAM device unbound (its TTM device goes
    // with it, and the DRM device reference of its context), then the DRM
    // device before its parent.
    _pci: Pin<KBox<pci::Registration<vram::VramDriver>>>,
    _reg: drm::Registration<SoftGpu>,
    _pdev: platform::SimpleDevice,
}

impl kernel::Module for SoftGpuModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let vram = vram::Slot::new()?;
        let pdev = platform::SimpleDevice::register(c_str!("softgpu"))?;
        let objects = objects::Objects::new()?;
        let data = Arc::new(
            DevData {
                mount: gemfs::Mount::new(gemfs::Huge::WithinSize)?,
                engine: engine::Engine::new(vram.clone())?,
                _shrinker: shrinker::Registration::register(c_str!("softgpu"), objects.clone())?,
                objects,
                vram: vram.clone(),
            },
            GFP_KERNEL,
        )?;
        let reg = drm::Registration::new(pdev.device(), data)?;
        pr_info!(
            "softgpu: render node renderD{}\n",
            reg.device().render_index().unwrap_or(-1)
        );
        // After the DRM device, whose objects the VRAM's TTM device
        // places. A discrete device present now is probed before this
        // returns.
        let ctx = vram::VramContext {
            slot: vram,
            drm: reg.device().into(),
        };
        let pci = pci::Registration::new(c_str!("softgpu"), module, ctx)?;
        Ok(Self {
            _pci: pci,
            _reg: reg,
            _pdev: pdev,
        })
    }
}
