/* SPDX-License-Identifier: GPL-2.0 */
/*
 * gemfs: a tmpfs variant for device drivers whose folios can be held by a
 * device without blocking migration.
 *
 * A driver creates objects (unlinked files on a gemfs mount), takes
 * references on their folios for device use with gemfs_object_get_folio()
 * and drops them with gemfs_object_put_folio(). gemfs counts those "holds".
 * When compaction, move_pages(), NUMA balancing or memory offlining wants to
 * migrate a held folio, gemfs asks the object's owner to release it
 * (&gemfs_owner_ops.release: unmap it from the device, drop its holds),
 * migrates it through the standard path, then tells the owner where the data
 * now lives (&gemfs_owner_ops.migrated). Folios nobody holds migrate and
 * swap exactly like shmem's.
 *
 * Lock order (see Documentation/filesystems/gemfs.rst):
 *
 *   folio lock  ->  owner's object lock  ->  owner's device locks
 *
 * ->release() and ->migrated() run with the folio locked. The owner must not
 * call gemfs_object_get_folio() (which may lock folios) while holding a lock
 * that its ->release() takes; lockdep checks this through the
 * "gemfs_folio_lock" map.
 */
#ifndef _LINUX_GEMFS_H
#define _LINUX_GEMFS_H

#include <linux/migrate_mode.h>
#include <linux/types.h>

struct file;
struct folio;
struct vfsmount;
struct gemfs_object;

/**
 * struct gemfs_owner_ops - what gemfs asks of the driver holding folios
 */
struct gemfs_owner_ops {
	/**
	 * @release: stop using @folio and drop every hold on it.
	 *
	 * Called with @folio locked, from migration. The owner unmaps the
	 * folio from its device (and flushes the device TLB), then calls
	 * gemfs_object_put_folio() once per hold it has on @folio.
	 *
	 * With @mode == MIGRATE_ASYNC it must not sleep: if the device is
	 * using the folio, return -EBUSY and a later synchronous pass will
	 * retry. In the sync modes it may wait for the device, for a bounded
	 * time, and returns -EBUSY if the device stays busy.
	 *
	 * Returns 0 when released, a negative errno otherwise (the folio is
	 * then not migrated and the owner keeps its holds).
	 *
	 * gemfs keeps no per-folio record of holds: it calls ->release()
	 * for any folio of an object with holds that has references beyond
	 * the page cache's. The owner returns -ENOENT for a folio it does not
	 * hold (the references are someone else's); gemfs then migrates it
	 * like any shmem folio, which fails if those references remain.
	 */
	int (*release)(struct gemfs_object *obj, struct folio *folio,
		       enum migrate_mode mode, void *owner_data);
	/**
	 * @migrated: the migration after a successful ->release() finished.
	 *
	 * @folio is the folio now holding the data at @folio->index: the new
	 * one if migration succeeded, the old one if it failed. It is locked;
	 * the owner may take holds on it with gemfs_object_hold_locked_folio()
	 * but must not sleep. Optional: an owner that re-faults lazily can
	 * leave it NULL.
	 */
	void (*migrated)(struct gemfs_object *obj, struct folio *folio,
			 bool success, void *owner_data);
};

/* Per-mount transparent huge page policy, as tmpfs's huge= option. */
enum gemfs_huge {
	GEMFS_HUGE_NEVER = 0,
	GEMFS_HUGE_ALWAYS = 1,
	GEMFS_HUGE_WITHIN_SIZE = 2,
	GEMFS_HUGE_ADVISE = 3,
};

struct vfsmount *gemfs_kern_mount(enum gemfs_huge huge);
void gemfs_kern_unmount(struct vfsmount *mnt);

struct gemfs_object *gemfs_object_create(struct vfsmount *mnt, const char *name,
					 loff_t size, unsigned long vm_flags);
/*
 * Destroys @obj; the owner must have put all its holds. Waits for owner
 * callbacks already running, so no callback runs once it returns: do not
 * call it holding a lock that ->release() or ->migrated() takes.
 */
void gemfs_object_destroy(struct gemfs_object *obj);
struct file *gemfs_object_file(struct gemfs_object *obj);

int gemfs_object_set_owner(struct gemfs_object *obj,
			   const struct gemfs_owner_ops *ops, void *owner_data);

struct folio *gemfs_object_get_folio(struct gemfs_object *obj, pgoff_t index);
void gemfs_object_put_folio(struct gemfs_object *obj, struct folio *folio);
int gemfs_object_hold_locked_folio(struct gemfs_object *obj,
				   struct folio *folio);
unsigned long gemfs_object_holds(struct gemfs_object *obj);

#endif /* _LINUX_GEMFS_H */
