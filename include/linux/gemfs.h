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
 * Truncation, hole punching (fallocate(FALLOC_FL_PUNCH_HOLE), or
 * madvise(MADV_REMOVE) on a mapping of the object) and memory failure tell
 * the owner first (&gemfs_owner_ops.invalidate), so the device never keeps a folio the
 * file no longer has.
 *
 * The lock order, and which locks the callbacks run under, are in
 * Documentation/filesystems/gemfs.rst ("Lock order"). In short: the owner
 * must not call gemfs_object_get_folio() (which takes the mapping's
 * invalidate_lock and folio locks) while holding a lock that a callback
 * takes; lockdep checks this.
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
	/**
	 * @invalidate: drop every hold on folios overlapping pages @first to
	 * @last (inclusive) of @obj's file.
	 *
	 * Truncation or hole punching is about to remove or zero those pages,
	 * or memory failure found one of them poisoned. The owner unmaps the
	 * folios from its device (and flushes the device TLB) and puts its
	 * holds on them; it cannot refuse. Afterwards the device faults on the
	 * range again: gemfs_object_get_folio() then gives zero-filled folios
	 * in a hole, -EINVAL beyond the new end of file and -EIO for a
	 * poisoned folio.
	 *
	 * For truncation and hole punching it runs with the mapping's
	 * invalidate_lock held for writing, until the folios are gone; for
	 * memory failure, with the poisoned folio locked. It may sleep, but
	 * must not wait for anything that waits for gemfs_object_get_folio().
	 *
	 * A gemfs_object_get_folio() that returned before the call, but whose
	 * hold the owner records only after it, is the owner's to catch: count
	 * invalidations under the lock that ->invalidate() takes, and drop a
	 * hold that was got before the count changed (as with
	 * mmu_interval_read_retry()).
	 *
	 * Optional, but an owner without it cannot have its objects
	 * truncated or punched while it holds folios: those fail with
	 * -EBUSY, and memory failure of a held folio fails to recover.
	 */
	void (*invalidate)(struct gemfs_object *obj, pgoff_t first,
			   pgoff_t last, void *owner_data);
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

/*
 * Makes @ops and @owner_data the owner of @obj. The operations are copied:
 * @ops need not outlive the call, but the functions must stay callable until
 * gemfs_object_destroy() returns (the owner's module outlives its objects).
 * ->release is required. -EBUSY if @obj has an owner already.
 */
int gemfs_object_set_owner(struct gemfs_object *obj,
			   const struct gemfs_owner_ops *ops, void *owner_data);

/*
 * Returns the folio holding page @index of @obj with a hold on it, reading it
 * back from swap or allocating it as needed; -EINVAL beyond the end of the
 * file, -EIO for a poisoned folio. May sleep: takes the mapping's
 * invalidate_lock for reading, and folio locks.
 */
struct folio *gemfs_object_get_folio(struct gemfs_object *obj, pgoff_t index);
void gemfs_object_put_folio(struct gemfs_object *obj, struct folio *folio);
int gemfs_object_hold_locked_folio(struct gemfs_object *obj,
				   struct folio *folio);
unsigned long gemfs_object_holds(struct gemfs_object *obj);

#endif /* _LINUX_GEMFS_H */
