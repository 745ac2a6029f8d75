/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Emit gemfs's tracepoints (include/trace/events/gemfs.h) from gemfs_main.rs,
 * which declares these two itself: nothing else calls them.
 */
#ifndef _FS_GEMFS_TRACE_H
#define _FS_GEMFS_TRACE_H

#include <linux/types.h>

struct folio;

void gemfs_trace_release(struct folio *folio, int mode, int ret, u64 ns);
void gemfs_trace_migrate(struct folio *src, struct folio *dst, bool held,
			 int ret);

#endif /* _FS_GEMFS_TRACE_H */
