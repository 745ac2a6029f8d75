// SPDX-License-Identifier: GPL-2.0
/*
 * gemfs is written in Rust (gemfs_main.rs) and exports a C interface for drivers,
 * C and Rust alike (include/linux/gemfs.h). Rust cannot place symbols in the
 * export table itself in this kernel, so this file does.
 */
#include <linux/export.h>
#include <linux/gemfs.h>

EXPORT_SYMBOL_GPL(gemfs_kern_mount);
EXPORT_SYMBOL_GPL(gemfs_kern_unmount);
EXPORT_SYMBOL_GPL(gemfs_object_create);
EXPORT_SYMBOL_GPL(gemfs_object_destroy);
EXPORT_SYMBOL_GPL(gemfs_object_file);
EXPORT_SYMBOL_GPL(gemfs_object_set_owner);
EXPORT_SYMBOL_GPL(gemfs_object_get_folio);
EXPORT_SYMBOL_GPL(gemfs_object_put_folio);
EXPORT_SYMBOL_GPL(gemfs_object_hold_locked_folio);
EXPORT_SYMBOL_GPL(gemfs_object_holds);
