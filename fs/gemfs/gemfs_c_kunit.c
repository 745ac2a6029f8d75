// SPDX-License-Identifier: GPL-2.0
/*
 * KUnit tests of gemfs's C interface (include/linux/gemfs.h), written in C
 * as a C driver would use it: a private mount, objects, holds, an owner
 * whose ->release() and ->migrated() are C functions, and held folios
 * migrated through the migration core (isolation and migrate_pages()) to
 * the other NUMA node. The Rust suite (tests.rs) tests the same through
 * kernel::gemfs; this one proves the C ABI from C and keeps it compiling.
 */
#include <kunit/resource.h>
#include <kunit/test.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/gemfs.h>
#include <linux/gfp.h>
#include <linux/highmem.h>
#include <linux/migrate.h>
#include <linux/mm.h>
#include <linux/nodemask.h>
#include <linux/spinlock.h>
#include <linux/swap.h>

#define TEST_PAGES 4

/*
 * A driver stand-in: one hold per page at most, kept in @held like a
 * device page table would; counts the callbacks.
 */
struct test_owner {
	struct gemfs_object *obj;
	spinlock_t lock;		/* protects @held */
	struct folio *held[TEST_PAGES];
	bool busy;			/* ->release() refuses with -EBUSY */
	bool reacquire;			/* ->migrated() takes a new hold */
	atomic_t releases;
	atomic_t async_releases;
	atomic_t not_ours;
	atomic_t migrated_ok;
	atomic_t migrated_failed;
};

static int test_release(struct gemfs_object *obj, struct folio *folio,
			enum migrate_mode mode, void *owner_data)
{
	struct test_owner *o = owner_data;
	pgoff_t index = folio->index;

	spin_lock(&o->lock);
	if (index >= TEST_PAGES || o->held[index] != folio) {
		spin_unlock(&o->lock);
		atomic_inc(&o->not_ours);
		return -ENOENT;
	}
	atomic_inc(&o->releases);
	if (mode == MIGRATE_ASYNC)
		atomic_inc(&o->async_releases);
	if (READ_ONCE(o->busy)) {
		spin_unlock(&o->lock);
		return -EBUSY;
	}
	o->held[index] = NULL;
	spin_unlock(&o->lock);
	/* The device no longer uses it: drop the hold. */
	gemfs_object_put_folio(obj, folio);
	return 0;
}

static void test_migrated(struct gemfs_object *obj, struct folio *folio,
			  bool success, void *owner_data)
{
	struct test_owner *o = owner_data;

	atomic_inc(success ? &o->migrated_ok : &o->migrated_failed);
	if (!o->reacquire || folio->index >= TEST_PAGES)
		return;
	/* Under the folio lock: must not sleep. */
	if (gemfs_object_hold_locked_folio(obj, folio))
		return;
	spin_lock(&o->lock);
	o->held[folio->index] = folio;
	spin_unlock(&o->lock);
}

static const struct gemfs_owner_ops test_owner_ops = {
	.release = test_release,
	.migrated = test_migrated,
};

/* Drops every hold the owner keeps. */
static void test_owner_put_all(void *data)
{
	struct test_owner *o = data;
	int i;

	for (i = 0; i < TEST_PAGES; i++) {
		struct folio *folio;

		spin_lock(&o->lock);
		folio = o->held[i];
		o->held[i] = NULL;
		spin_unlock(&o->lock);
		if (folio)
			gemfs_object_put_folio(o->obj, folio);
	}
}

static void test_unmount(void *mnt)
{
	gemfs_kern_unmount(mnt);
}

static void test_destroy(void *obj)
{
	gemfs_object_destroy(obj);
}

/*
 * A private mount, an object of TEST_PAGES pages owned by a fresh test
 * owner; all torn down when the test ends, holds first.
 */
static struct test_owner *test_setup(struct kunit *test, bool reacquire)
{
	struct vfsmount *mnt;
	struct test_owner *o;

	o = kunit_kzalloc(test, sizeof(*o), GFP_KERNEL);
	KUNIT_ASSERT_NOT_NULL(test, o);
	spin_lock_init(&o->lock);
	o->reacquire = reacquire;

	mnt = gemfs_kern_mount(GEMFS_HUGE_NEVER);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, mnt);
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, test_unmount, mnt));
	o->obj = gemfs_object_create(mnt, "c-abi", TEST_PAGES * PAGE_SIZE, 0);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, o->obj);
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, test_destroy, o->obj));
	KUNIT_ASSERT_EQ(test, 0, gemfs_object_set_owner(o->obj, &test_owner_ops, o));
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, test_owner_put_all, o));
	return o;
}

/* Takes a hold on page @index for the owner to keep. */
static struct folio *test_hold(struct kunit *test, struct test_owner *o,
			       pgoff_t index)
{
	struct folio *folio = gemfs_object_get_folio(o->obj, index);
	struct folio *old;

	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, folio);
	spin_lock(&o->lock);
	old = o->held[index];
	o->held[index] = folio;
	spin_unlock(&o->lock);
	/* Each test holds a page once. */
	KUNIT_ASSERT_NULL(test, old);
	return folio;
}

static struct folio *test_held(struct test_owner *o, pgoff_t index)
{
	struct folio *folio;

	spin_lock(&o->lock);
	folio = o->held[index];
	spin_unlock(&o->lock);
	return folio;
}

static struct folio *alloc_on_node(struct folio *src, unsigned long nid)
{
	return __folio_alloc_node(GFP_HIGHUSER_MOVABLE | __GFP_THISNODE |
				  __GFP_NOWARN, folio_order(src), nid);
}

/*
 * Migrates @folio to node @nid as move_pages() does: isolate it from the
 * LRU, then migrate_pages(). Consumes the caller's reference to @folio
 * once isolation has taken its own (an extra reference would make the
 * migration fail). 0 if it moved, -EBUSY if it could not be isolated,
 * -EAGAIN if migrate_pages() did not move it.
 */
static int migrate_to_node(struct folio *folio, int nid, enum migrate_mode mode)
{
	unsigned int succeeded = 0;
	LIST_HEAD(list);
	bool isolated;
	int ret;

	/* Newly added folios may still be in per-CPU LRU batches. */
	lru_add_drain_all();
	isolated = isolate_folio_to_list(folio, &list);
	folio_put(folio);
	if (!isolated)
		return -EBUSY;
	ret = migrate_pages(&list, alloc_on_node, NULL, nid, mode, MR_SYSCALL,
			    &succeeded);
	if (ret)
		putback_movable_pages(&list);
	return ret < 0 ? ret : ret ? -EAGAIN : 0;
}

/* The other node if it has memory (the test guest has two), else @nid. */
static int other_node(int nid)
{
	int other = nid ? 0 : 1;

	return node_state(other, N_MEMORY) ? other : nid;
}

static void gemfs_c_holds_and_data(struct kunit *test)
{
	struct test_owner *o = test_setup(test, false);
	struct folio *a, *b;
	char buf[6] = {};

	KUNIT_EXPECT_EQ(test, i_size_read(file_inode(gemfs_object_file(o->obj))),
			(loff_t)(TEST_PAGES * PAGE_SIZE));
	a = gemfs_object_get_folio(o->obj, 3);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, a);
	memcpy_to_folio(a, 100, "gemfs", 5);
	b = gemfs_object_get_folio(o->obj, 3);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, b);
	KUNIT_EXPECT_PTR_EQ(test, a, b);
	KUNIT_EXPECT_EQ(test, gemfs_object_holds(o->obj), 2UL);
	gemfs_object_put_folio(o->obj, a);
	gemfs_object_put_folio(o->obj, b);
	KUNIT_EXPECT_EQ(test, gemfs_object_holds(o->obj), 0UL);

	/* The data stays in the page cache without holds. */
	a = gemfs_object_get_folio(o->obj, 3);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, a);
	memcpy_from_folio(buf, a, 100, 5);
	KUNIT_EXPECT_STREQ(test, buf, "gemfs");
	gemfs_object_put_folio(o->obj, a);
	KUNIT_EXPECT_EQ(test, gemfs_object_holds(o->obj), 0UL);
}

static void gemfs_c_bad_arguments(struct kunit *test)
{
	static const struct gemfs_owner_ops no_release = {};
	struct test_owner *o = test_setup(test, false);
	struct gemfs_object *obj2;
	struct vfsmount *mnt;

	KUNIT_EXPECT_EQ(test, PTR_ERR(gemfs_object_get_folio(o->obj, TEST_PAGES)),
			-EINVAL);
	KUNIT_EXPECT_EQ(test, PTR_ERR(gemfs_object_get_folio(o->obj, ULONG_MAX)),
			-EINVAL);
	KUNIT_EXPECT_EQ(test, gemfs_object_holds(o->obj), 0UL);
	/* One owner per object. */
	KUNIT_EXPECT_EQ(test, gemfs_object_set_owner(o->obj, &test_owner_ops, o),
			-EBUSY);
	KUNIT_EXPECT_EQ(test, PTR_ERR(gemfs_kern_mount((enum gemfs_huge)42)), -EINVAL);

	mnt = gemfs_kern_mount(GEMFS_HUGE_NEVER);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, mnt);
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, test_unmount, mnt));
	KUNIT_EXPECT_EQ(test, PTR_ERR(gemfs_object_create(mnt, "zero", 0, 0)),
			-EINVAL);
	obj2 = gemfs_object_create(mnt, "no-owner", PAGE_SIZE, 0);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, obj2);
	KUNIT_ASSERT_EQ(test, 0, kunit_add_action_or_reset(test, test_destroy, obj2));
	/* ->release is mandatory. */
	KUNIT_EXPECT_EQ(test, gemfs_object_set_owner(obj2, NULL, NULL), -EINVAL);
	KUNIT_EXPECT_EQ(test, gemfs_object_set_owner(obj2, &no_release, NULL),
			-EINVAL);
}

/*
 * A held folio migrates: the owner is asked once to release it, told it
 * migrated, re-acquires the new folio, and the data moved with it.
 */
static void gemfs_c_held_folio_migrates_with_release(struct kunit *test)
{
	struct test_owner *o = test_setup(test, true);
	char pattern[64], buf[64];
	unsigned long old_pfn;
	struct folio *folio;
	int old_nid, target;

	memset(pattern, 0xa5, sizeof(pattern));
	folio = test_hold(test, o, 1);
	memcpy_to_folio(folio, PAGE_SIZE - sizeof(pattern), pattern, sizeof(pattern));
	old_pfn = folio_pfn(folio);
	old_nid = folio_nid(folio);
	target = other_node(old_nid);
	KUNIT_EXPECT_NE_MSG(test, target, old_nid, "the test guest has two NUMA nodes");

	folio_get(folio);
	KUNIT_ASSERT_EQ(test, migrate_to_node(folio, target, MIGRATE_SYNC), 0);

	KUNIT_EXPECT_EQ(test, atomic_read(&o->releases), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&o->not_ours), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&o->migrated_ok), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&o->migrated_failed), 0);
	/* ->migrated() re-acquired the new folio: one hold, on it. */
	KUNIT_EXPECT_EQ(test, gemfs_object_holds(o->obj), 1UL);
	folio = test_held(o, 1);
	KUNIT_ASSERT_NOT_NULL(test, folio);
	KUNIT_EXPECT_NE(test, folio_pfn(folio), old_pfn);
	KUNIT_EXPECT_EQ(test, folio_nid(folio), target);
	memcpy_from_folio(buf, folio, PAGE_SIZE - sizeof(buf), sizeof(buf));
	KUNIT_EXPECT_MEMEQ(test, buf, pattern, sizeof(buf));

	test_owner_put_all(o);
	KUNIT_EXPECT_EQ(test, gemfs_object_holds(o->obj), 0UL);
}

/*
 * A busy owner refuses: an async migration fails and leaves the hold; a
 * sync one once the owner is idle succeeds. Without re-acquiring, no hold
 * is left.
 */
static void gemfs_c_busy_owner_refuses_then_releases(struct kunit *test)
{
	struct test_owner *o = test_setup(test, false);
	struct folio *folio;
	unsigned long pfn;
	char buf[4];
	int target;

	folio = test_hold(test, o, 0);
	memcpy_to_folio(folio, 0, "busy", 4);
	pfn = folio_pfn(folio);
	target = other_node(folio_nid(folio));

	WRITE_ONCE(o->busy, true);
	folio_get(folio);
	KUNIT_EXPECT_NE(test, migrate_to_node(folio, target, MIGRATE_ASYNC), 0);
	KUNIT_EXPECT_GE(test, atomic_read(&o->async_releases), 1);
	KUNIT_EXPECT_EQ(test, atomic_read(&o->migrated_ok), 0);
	KUNIT_EXPECT_EQ(test, gemfs_object_holds(o->obj), 1UL);
	KUNIT_EXPECT_PTR_EQ(test, test_held(o, 0), folio);
	KUNIT_EXPECT_EQ(test, folio_pfn(folio), pfn);

	WRITE_ONCE(o->busy, false);
	folio_get(folio);
	KUNIT_ASSERT_EQ(test, migrate_to_node(folio, target, MIGRATE_SYNC), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&o->migrated_ok), 1);
	KUNIT_EXPECT_EQ(test, gemfs_object_holds(o->obj), 0UL);
	KUNIT_EXPECT_NULL(test, test_held(o, 0));

	/* The data is at its new place. */
	folio = gemfs_object_get_folio(o->obj, 0);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, folio);
	KUNIT_EXPECT_NE(test, folio_pfn(folio), pfn);
	memcpy_from_folio(buf, folio, 0, 4);
	KUNIT_EXPECT_MEMEQ(test, buf, "busy", 4);
	gemfs_object_put_folio(o->obj, folio);
}

/* A folio nobody holds migrates without asking the owner. */
static void gemfs_c_unheld_folio_migrates_without_the_owner(struct kunit *test)
{
	struct test_owner *o = test_setup(test, false);
	struct folio *folio;
	unsigned long pfn;
	int target;

	folio = gemfs_object_get_folio(o->obj, 2);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, folio);
	pfn = folio_pfn(folio);
	target = other_node(folio_nid(folio));
	/* A reference of ours instead of the hold, for migrate_to_node(). */
	folio_get(folio);
	gemfs_object_put_folio(o->obj, folio);
	KUNIT_EXPECT_EQ(test, gemfs_object_holds(o->obj), 0UL);
	KUNIT_EXPECT_EQ(test, migrate_to_node(folio, target, MIGRATE_SYNC), 0);

	KUNIT_EXPECT_EQ(test, atomic_read(&o->releases), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&o->not_ours), 0);
	KUNIT_EXPECT_EQ(test, atomic_read(&o->migrated_ok), 0);
	folio = gemfs_object_get_folio(o->obj, 2);
	KUNIT_ASSERT_NOT_ERR_OR_NULL(test, folio);
	KUNIT_EXPECT_NE(test, folio_pfn(folio), pfn);
	gemfs_object_put_folio(o->obj, folio);
}

static struct kunit_case gemfs_c_abi_cases[] = {
	KUNIT_CASE(gemfs_c_holds_and_data),
	KUNIT_CASE(gemfs_c_bad_arguments),
	KUNIT_CASE(gemfs_c_held_folio_migrates_with_release),
	KUNIT_CASE(gemfs_c_busy_owner_refuses_then_releases),
	KUNIT_CASE(gemfs_c_unheld_folio_migrates_without_the_owner),
	{}
};

static struct kunit_suite gemfs_c_abi_suite = {
	.name = "gemfs_c_abi",
	.test_cases = gemfs_c_abi_cases,
};

kunit_test_suite(gemfs_c_abi_suite);

MODULE_DESCRIPTION("KUnit tests of gemfs's C interface, from C");
/* lru_add_drain_all(), isolate_folio_to_list(), migrate_pages(), putback_movable_pages() */
MODULE_IMPORT_NS(EXPORTED_FOR_KUNIT_TESTING);
MODULE_LICENSE("GPL");
