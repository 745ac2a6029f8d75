// SPDX-License-Identifier: GPL-2.0

//! Memory management.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h).

pub mod migrate;
