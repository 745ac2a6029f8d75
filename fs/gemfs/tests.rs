// SPDX-License-Identifier: GPL-2.0

//! KUnit tests of gemfs: objects, holds, and the migration of held folios
//! through the kernel's migration core (isolation, `->migrate_folio`,
//! `migrate_pages()`), with a test owner standing in for a driver.

use kernel::kunit::kunit_tests;

#[kunit_tests(gemfs)]
mod tests {
    use super::super::STATS;
    use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use kernel::{
        bindings, c_str,
        folio::LockedFolio,
        gemfs::{Hold, Huge, Mount, Object, ObjectRef, Owner},
        impl_has_work,
        mm::migrate::{self, MigrateMode},
        new_condvar, new_spinlock, new_work,
        page::PAGE_SIZE,
        prelude::*,
        rbtree::{RBTree, RBTreeNode},
        sync::{Arc, ArcBorrow, CondVar, SpinLock},
        workqueue::{self, Work, WorkItem},
    };

    /// A driver stand-in: keeps holds like a device page table, reports
    /// busy on demand, counts the callbacks.
    #[pin_data]
    struct TestOwner {
        #[pin]
        /// One hold per folio, by folio address: like a device page table.
        holds: SpinLock<RBTree<usize, Hold>>,
        busy: AtomicBool,
        /// Re-acquire the folio in `migrated`, as an eager driver would.
        reacquire: bool,
        releases: AtomicUsize,
        /// Releases asked about folios it holds no reference to.
        not_ours: AtomicUsize,
        async_releases: AtomicUsize,
        migrated_ok: AtomicUsize,
        migrated_failed: AtomicUsize,
        /// `invalidate` calls, and the range of the last one.
        invalidations: AtomicUsize,
        inv_first: AtomicUsize,
        inv_last: AtomicUsize,
    }

    impl TestOwner {
        fn new(reacquire: bool) -> Result<Arc<Self>> {
            Arc::pin_init(
                pin_init!(Self {
                    holds <- new_spinlock!(RBTree::new()),
                    busy: AtomicBool::new(false),
                    reacquire,
                    releases: AtomicUsize::new(0),
                    not_ours: AtomicUsize::new(0),
                    async_releases: AtomicUsize::new(0),
                    migrated_ok: AtomicUsize::new(0),
                    migrated_failed: AtomicUsize::new(0),
                    invalidations: AtomicUsize::new(0),
                    inv_first: AtomicUsize::new(0),
                    inv_last: AtomicUsize::new(0),
                }),
                GFP_KERNEL,
            )
        }

        fn keep(&self, hold: Hold) -> Result {
            let node = RBTreeNode::new(hold.folio().as_raw() as usize, hold, GFP_KERNEL)?;
            self.holds.lock().insert(node);
            Ok(())
        }

        fn drop_all(&self) {
            let holds = core::mem::take(&mut *self.holds.lock());
            drop(holds);
        }

        /// Keeps `hold` unless an invalidation ran since the owner read
        /// `invalidations` as `seen`, before getting it: then the folio may
        /// have left the file, and the hold is dropped. The protocol
        /// `gemfs::Owner::invalidate` asks of owners.
        fn keep_unless_invalidated(&self, hold: Hold, seen: usize) -> Result<bool> {
            let node = RBTreeNode::new(hold.folio().as_raw() as usize, hold, GFP_KERNEL)?;
            let mut holds = self.holds.lock();
            if self.invalidations.load(Ordering::Relaxed) != seen {
                drop(holds);
                return Ok(false);
            }
            holds.insert(node);
            Ok(true)
        }

        /// Bit `i` set for each page `i < 64` whose folio the owner holds.
        fn held_mask(&self) -> u64 {
            let holds = self.holds.lock();
            let mut mask = 0u64;
            for (_, h) in holds.iter() {
                let f = h.folio();
                for i in f.index()..f.index() + f.nr_pages() {
                    mask |= 1u64.checked_shl(i as u32).unwrap_or(0);
                }
            }
            mask
        }

        /// Whether every folio the owner holds is still in `obj`'s file:
        /// none was orphaned by a truncation.
        fn holds_all_in_file(&self, obj: &ObjectRef) -> bool {
            let holds = self.holds.lock();
            holds.iter().all(|(_, h)| {
                let f = h.folio();
                // A page cache lookup takes no sleeping lock.
                obj.file()
                    .mapping()
                    .get_folio(f.index())
                    .is_some_and(|now| now.as_raw() == f.as_raw())
            })
        }
    }

    impl Owner for TestOwner {
        fn release(
            owner: ArcBorrow<'_, Self>,
            _obj: &ObjectRef,
            folio: &LockedFolio<'_>,
            mode: MigrateMode,
        ) -> Result {
            let key = folio.as_raw() as usize;
            if owner.holds.lock().get(&key).is_none() {
                owner.not_ours.fetch_add(1, Ordering::Relaxed);
                return Err(ENOENT);
            }
            owner.releases.fetch_add(1, Ordering::Relaxed);
            if mode == MigrateMode::Async {
                owner.async_releases.fetch_add(1, Ordering::Relaxed);
            }
            if owner.busy.load(Ordering::Relaxed) {
                return Err(EBUSY);
            }
            // Putting a hold takes gemfs's object lock: owner lock ->
            // object lock, never the other way round.
            drop(owner.holds.lock().remove(&key));
            Ok(())
        }

        fn migrated(
            owner: ArcBorrow<'_, Self>,
            obj: &ObjectRef,
            folio: &LockedFolio<'_>,
            migrated: bool,
        ) {
            if migrated {
                owner.migrated_ok.fetch_add(1, Ordering::Relaxed);
            } else {
                owner.migrated_failed.fetch_add(1, Ordering::Relaxed);
            }
            if owner.reacquire {
                // Under the folio lock: no sleeping allocation.
                if let Ok(h) = obj.hold_locked(folio) {
                    if let Ok(node) = RBTreeNode::new(folio.as_raw() as usize, h, GFP_ATOMIC) {
                        owner.holds.lock().insert(node);
                    }
                }
            }
        }

        fn invalidate(owner: ArcBorrow<'_, Self>, _obj: &ObjectRef, first: usize, last: usize) {
            let mut holds = owner.holds.lock();
            // Counted under the lock `keep_unless_invalidated` checks it
            // under.
            owner.invalidations.fetch_add(1, Ordering::Relaxed);
            owner.inv_first.store(first, Ordering::Relaxed);
            owner.inv_last.store(last, Ordering::Relaxed);
            loop {
                let key = holds
                    .iter()
                    .find(|(_, h)| {
                        let f = h.folio();
                        f.index() <= last && f.index() + f.nr_pages() > first
                    })
                    .map(|(k, _)| *k);
                let Some(key) = key else { break };
                // Putting a hold takes gemfs's object lock under ours, as in
                // `release`.
                drop(holds.remove(&key));
            }
        }
    }

    /// A node to migrate to: the other one when there are two.
    fn other_node(nid: i32) -> i32 {
        let other = if nid == 0 { 1 } else { 0 };
        if migrate::node_has_memory(other) {
            other
        } else {
            nid
        }
    }

    #[test]
    fn object_holds_and_data() -> Result {
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(false)?;
        let obj = mnt.create_object(c_str!("t"), 4 * PAGE_SIZE, owner.clone())?;
        assert_eq!(obj.file().size(), (4 * PAGE_SIZE) as i64);
        let h = obj.get_folio(3)?;
        h.folio().write(100, b"gemfs")?;
        let h2 = obj.get_folio(3)?;
        assert_eq!(h2.folio().as_raw(), h.folio().as_raw());
        assert_eq!(obj.holds(), 2);
        drop(h);
        drop(h2);
        assert_eq!(obj.holds(), 0);
        // The data stays in the page cache without holds.
        let h = obj.get_folio(3)?;
        let mut buf = [0u8; 5];
        h.folio().read(100, &mut buf)?;
        assert_eq!(&buf, b"gemfs");
        drop(h);
        Ok(())
    }

    #[test]
    fn bad_arguments_are_refused() -> Result {
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(false)?;
        assert!(mnt.create_object(c_str!("t"), 0, owner.clone()).is_err());
        let obj = mnt.create_object(c_str!("t"), PAGE_SIZE, owner.clone())?;
        assert_eq!(obj.get_folio(1).err(), Some(EINVAL));
        assert_eq!(obj.get_folio(usize::MAX).err(), Some(EINVAL));
        assert_eq!(obj.holds(), 0);
        Ok(())
    }

    #[test]
    fn held_folio_migrates_with_release() -> Result {
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(true)?;
        let obj = mnt.create_object(c_str!("t"), 2 * PAGE_SIZE, owner.clone())?;
        let h = obj.get_folio(1)?;
        let pattern = [0xa5u8; 64];
        h.folio().write(PAGE_SIZE - 64, &pattern)?;
        let (old_pfn, old_nid) = (h.folio().pfn(), h.folio().nid());
        let folio: kernel::types::ARef<_> = h.folio().into();
        owner.keep(h)?;
        let before = STATS.released_migrated.load(Ordering::Relaxed);

        let target = other_node(old_nid);
        migrate::migrate_to_node(folio, target, MigrateMode::Sync)?;

        assert_eq!(owner.releases.load(Ordering::Relaxed), 1);
        assert_eq!(owner.migrated_ok.load(Ordering::Relaxed), 1);
        assert_eq!(owner.migrated_failed.load(Ordering::Relaxed), 0);
        assert_eq!(STATS.released_migrated.load(Ordering::Relaxed), before + 1);
        // The owner re-acquired the new folio in `migrated`.
        assert_eq!(obj.holds(), 1);
        let h = obj.get_folio(1)?;
        assert!(h.folio().pfn() != old_pfn);
        assert_eq!(h.folio().nid(), target);
        let mut buf = [0u8; 64];
        h.folio().read(PAGE_SIZE - 64, &mut buf)?;
        assert_eq!(buf, pattern);
        drop(h);
        owner.drop_all();
        assert_eq!(obj.holds(), 0);
        Ok(())
    }

    #[test]
    fn busy_owner_refuses_then_sync_retry_succeeds() -> Result {
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(false)?;
        let obj = mnt.create_object(c_str!("t"), PAGE_SIZE, owner.clone())?;
        let h = obj.get_folio(0)?;
        let folio: kernel::types::ARef<_> = h.folio().into();
        let old_pfn = folio.pfn();
        owner.keep(h)?;
        owner.busy.store(true, Ordering::Relaxed);
        let refused = STATS.refused_busy.load(Ordering::Relaxed);

        let target = other_node(folio.nid());
        assert!(migrate::migrate_to_node(folio, target, MigrateMode::Async).is_err());
        assert!(owner.async_releases.load(Ordering::Relaxed) >= 1);
        assert!(STATS.refused_busy.load(Ordering::Relaxed) > refused);
        assert_eq!(owner.migrated_ok.load(Ordering::Relaxed), 0);
        assert_eq!(obj.holds(), 1);

        owner.busy.store(false, Ordering::Relaxed);
        let folio = obj.file().mapping().get_folio(0).ok_or(ENOENT)?;
        assert_eq!(folio.pfn(), old_pfn);
        migrate::migrate_to_node(folio, target, MigrateMode::Sync)?;
        assert_eq!(owner.migrated_ok.load(Ordering::Relaxed), 1);
        // Not re-acquired: the owner re-faults on next use.
        assert_eq!(obj.holds(), 0);
        let h = obj.get_folio(0)?;
        assert!(h.folio().pfn() != old_pfn);
        Ok(())
    }

    #[test]
    fn unheld_folio_migrates_without_owner() -> Result {
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(false)?;
        let obj = mnt.create_object(c_str!("t"), PAGE_SIZE, owner.clone())?;
        let h = obj.get_folio(0)?;
        let folio: kernel::types::ARef<_> = h.folio().into();
        drop(h);
        let unheld = STATS.unheld_migrated.load(Ordering::Relaxed);
        let target = other_node(folio.nid());
        migrate::migrate_to_node(folio, target, MigrateMode::Sync)?;
        assert_eq!(owner.releases.load(Ordering::Relaxed), 0);
        assert_eq!(STATS.unheld_migrated.load(Ordering::Relaxed), unheld + 1);
        Ok(())
    }

    #[test]
    fn someone_elses_reference_is_not_the_owners_to_release() -> Result {
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(false)?;
        let obj = mnt.create_object(c_str!("t"), 2 * PAGE_SIZE, owner.clone())?;
        // The owner holds page 0; page 1 gets a plain extra reference, as a
        // GUP pin or a transient lookup would.
        owner.keep(obj.get_folio(0)?)?;
        drop(obj.get_folio(1)?);
        let folio = obj.file().mapping().get_folio(1).ok_or(ENOENT)?;
        let extra = folio.clone();
        let target = other_node(folio.nid());
        let (other, busy) = (
            STATS.refused_other.load(Ordering::Relaxed),
            STATS.refused_busy.load(Ordering::Relaxed),
        );
        assert_eq!(
            migrate::migrate_to_node(folio, target, MigrateMode::Sync).err(),
            Some(EAGAIN)
        );
        assert!(owner.not_ours.load(Ordering::Relaxed) >= 1);
        assert_eq!(owner.releases.load(Ordering::Relaxed), 0);
        // ENOENT is not a refusal: gemfs went on with the default path,
        // whose reference count check failed (the EAGAIN above), and counted
        // no refusal. (`migrate_to_node` reports any failure as EAGAIN.)
        assert_eq!(STATS.refused_other.load(Ordering::Relaxed), other);
        assert_eq!(STATS.refused_busy.load(Ordering::Relaxed), busy);
        // Without the extra reference it migrates, and nobody is asked.
        let old_pfn = extra.pfn();
        drop(extra);
        let asked = owner.not_ours.load(Ordering::Relaxed);
        let folio = obj.file().mapping().get_folio(1).ok_or(ENOENT)?;
        migrate::migrate_to_node(folio, target, MigrateMode::Sync)?;
        assert_eq!(owner.not_ours.load(Ordering::Relaxed), asked);
        assert_eq!(owner.releases.load(Ordering::Relaxed), 0);
        let now = obj.file().mapping().get_folio(1).ok_or(ENOENT)?;
        assert!(now.pfn() != old_pfn);
        owner.drop_all();
        Ok(())
    }

    /// The bytes page `index` of the racing test's object starts and ends with.
    fn tag(index: usize) -> [u8; 64] {
        let mut t = [0u8; 64];
        for (k, b) in t.iter_mut().enumerate() {
            *b = (index * 64 + k) as u8 ^ 0x5a;
        }
        t
    }

    /// One round of a racer's work on its object, run again and again by
    /// a work item ([`Racer`]) while the test thread migrates, punches or
    /// truncates the same pages.
    trait Round: Send + Sync + 'static {
        /// Runs one round over the object's first `pages` pages; counts
        /// a failed owner or object call in `errors`.
        fn round(&self, obj: &Object<TestOwner>, pages: usize, errors: &AtomicUsize);
    }

    /// A work item that runs `R`'s rounds on an object until stopped: the
    /// racing side of the tests that race holds against migration and
    /// hole punching.
    #[pin_data]
    struct Racer<R: Round> {
        #[pin]
        work: Work<Racer<R>>,
        obj: Object<TestOwner>,
        pages: usize,
        what: R,
        stop: AtomicBool,
        rounds: AtomicUsize,
        /// `get_folio` or owner call failures.
        errors: AtomicUsize,
        #[pin]
        done: SpinLock<bool>,
        #[pin]
        done_cv: CondVar,
    }

    impl_has_work! {
        impl{R: Round} HasWork<Self> for Racer<R> { self.work }
    }

    impl<R: Round> Racer<R> {
        /// Starts racing on `obj`'s first `pages` pages; the returned guard
        /// stops the racer and waits for it.
        fn start(obj: Object<TestOwner>, pages: usize, what: R) -> Result<StopRacer<R>> {
            let racer = Arc::pin_init(
                pin_init!(Racer::<R> {
                    work <- new_work!("gemfs_test_racer"),
                    obj,
                    pages,
                    what,
                    stop: AtomicBool::new(false),
                    rounds: AtomicUsize::new(0),
                    errors: AtomicUsize::new(0),
                    done <- new_spinlock!(false),
                    done_cv <- new_condvar!(),
                }),
                GFP_KERNEL,
            )?;
            workqueue::system_unbound()
                .enqueue(racer.clone())
                .map_err(|_| EBUSY)?;
            Ok(StopRacer(racer))
        }
    }

    impl<R: Round> WorkItem for Racer<R> {
        type Pointer = Arc<Racer<R>>;

        fn run(this: Arc<Racer<R>>) {
            while !this.stop.load(Ordering::Acquire) {
                this.what.round(&this.obj, this.pages, &this.errors);
                this.rounds.fetch_add(1, Ordering::Relaxed);
                // Without preemption (PREEMPT_NONE), the test thread and
                // the per-CPU LRU drains of `migrate_to_node` need this
                // CPU now and then.
                kernel::task::cond_resched();
            }
            *this.done.lock() = true;
            this.done_cv.notify_all();
        }
    }

    /// Stops the racer when told or dropped, also on an early return from
    /// the test, and drops the holds the owner still has (those it
    /// re-acquired in `migrated`, say), so that the object never goes with
    /// holds left.
    struct StopRacer<R: Round>(Arc<Racer<R>>);

    impl<R: Round> core::ops::Deref for StopRacer<R> {
        type Target = Racer<R>;

        fn deref(&self) -> &Racer<R> {
            &self.0
        }
    }

    impl<R: Round> StopRacer<R> {
        /// Stops the racer, waits for it to finish its round, then drops
        /// the holds the owner still has. Stopping again does nothing more.
        fn stop(&self) {
            self.0.stop.store(true, Ordering::Release);
            let mut done = self.0.done.lock();
            while !*done {
                self.0.done_cv.wait(&mut done);
            }
            drop(done);
            self.0.obj.owner().drop_all();
        }
    }

    impl<R: Round> Drop for StopRacer<R> {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// The round of `holds_race_migration`: gets a hold on every folio of
    /// the object through the owner API, checks the folio's data, hands the
    /// hold to the owner (as a driver fills its device page table), then
    /// has the owner put them all.
    struct GetCheckKeepPut {
        /// Holds whose folio did not have the data written before.
        bad_data: AtomicUsize,
    }

    impl Round for GetCheckKeepPut {
        fn round(&self, obj: &Object<TestOwner>, pages: usize, errors: &AtomicUsize) {
            let owner = obj.owner();
            for i in 0..pages {
                let h = match obj.get_folio(i) {
                    Ok(h) => h,
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                // Read through our own hold, before the owner has it: a
                // release cannot take it from under us.
                let (mut head, mut tail) = ([0u8; 64], [0u8; 64]);
                let read = h.folio().read(0, &mut head).is_ok()
                    && h.folio().read(PAGE_SIZE - 64, &mut tail).is_ok();
                if !read || head != tag(i) || tail != tag(i) {
                    self.bad_data.fetch_add(1, Ordering::Relaxed);
                }
                if owner.keep(h).is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            kernel::task::cond_resched();
            owner.drop_all();
        }
    }

    /// Holds taken and put through the owner API while the object's folios
    /// migrate back and forth: every get either finds the folio before or
    /// after its migration (never a freed or half-copied one), a release
    /// races the racer's own put of the same hold without losing or
    /// doubling it, and no hold is left at the end.
    #[test]
    fn holds_race_migration() -> Result {
        const PAGES: usize = 8;
        // Successful migrations wanted, and the bound on attempts.
        const MIGRATIONS: usize = 64;
        const ATTEMPTS: usize = 2000;
        let mnt = Mount::new(Huge::Never)?;
        // Re-acquiring in `migrated` too: the racer then also replaces and
        // puts holds that `hold_locked` took.
        let owner = TestOwner::new(true)?;
        let obj = mnt.create_object(c_str!("t"), PAGES * PAGE_SIZE, owner.clone())?;
        for i in 0..PAGES {
            let h = obj.get_folio(i)?;
            h.folio().write(0, &tag(i))?;
            h.folio().write(PAGE_SIZE - 64, &tag(i))?;
        }
        assert_eq!(obj.holds(), 0);
        let released0 = STATS.released_migrated.load(Ordering::Relaxed);
        let racer = Racer::start(
            obj,
            PAGES,
            GetCheckKeepPut {
                bad_data: AtomicUsize::new(0),
            },
        )?;
        while racer.rounds.load(Ordering::Relaxed) == 0 {
            // SAFETY: process context, no lock held: may sleep.
            unsafe { bindings::msleep(1) };
        }

        let (mut migrated, mut refused) = (0, 0);
        for attempt in 0..ATTEMPTS {
            if migrated >= MIGRATIONS && owner.releases.load(Ordering::Relaxed) > 0 {
                break;
            }
            let i = attempt % PAGES;
            let folio = racer.obj.file().mapping().get_folio(i).ok_or(ENOENT)?;
            let target = other_node(folio.nid());
            match migrate::migrate_to_node(folio, target, MigrateMode::Sync) {
                Ok(()) => migrated += 1,
                // A hold the racer has not handed to the owner yet, or a
                // folio it has locked: a later attempt moves it.
                Err(e) if e == EAGAIN || e == EBUSY => refused += 1,
                Err(e) => {
                    pr_err!("migrating page {i}: {e:?} ({migrated} moved, {refused} refused)\n");
                    return Err(e);
                }
            }
        }
        racer.stop();
        let rounds = racer.rounds.load(Ordering::Relaxed);
        pr_info!(
            "holds_race_migration: {migrated} migrated, {refused} refused, {rounds} racer rounds, {} releases\n",
            owner.releases.load(Ordering::Relaxed)
        );

        assert_eq!(racer.what.bad_data.load(Ordering::Relaxed), 0);
        assert_eq!(racer.errors.load(Ordering::Relaxed), 0);
        assert!(rounds > 1);
        assert!(migrated >= MIGRATIONS);
        // Held folios were among those moved: the owner released them.
        assert!(owner.releases.load(Ordering::Relaxed) > 0);
        assert!(owner.migrated_ok.load(Ordering::Relaxed) > 0);
        assert!(STATS.released_migrated.load(Ordering::Relaxed) > released0);
        // The racer put its holds, and the stopper those `migrated`
        // re-acquired since: none may be left.
        assert_eq!(racer.obj.holds(), 0);
        // The data survived every migration.
        for i in 0..PAGES {
            let h = racer.obj.get_folio(i)?;
            let (mut head, mut tail) = ([0u8; 64], [0u8; 64]);
            h.folio().read(0, &mut head)?;
            h.folio().read(PAGE_SIZE - 64, &mut tail)?;
            assert_eq!(head, tag(i));
            assert_eq!(tail, tag(i));
        }
        assert_eq!(racer.obj.holds(), 0);
        Ok(())
    }

    /// An object of `pages` pages whose owner holds every page, each page
    /// starting with `tag(index)`.
    fn held_object(mnt: &Mount, owner: &Arc<TestOwner>, pages: usize) -> Result<Object<TestOwner>> {
        let obj = mnt.create_object(c_str!("t"), pages * PAGE_SIZE, owner.clone())?;
        for i in 0..pages {
            let h = obj.get_folio(i)?;
            h.folio().write(0, &tag(i))?;
            owner.keep(h)?;
        }
        Ok(obj)
    }

    /// The first 64 bytes of page `index`, read through a hold.
    fn head_of(obj: &ObjectRef, index: usize) -> Result<[u8; 64]> {
        let h = obj.get_folio(index)?;
        let mut buf = [0u8; 64];
        h.folio().read(0, &mut buf)?;
        Ok(buf)
    }

    /// A hole punched in held pages, as `MADV_REMOVE` of a mapping of the
    /// object does: the owner is asked about exactly those pages first and
    /// drops its holds there, no folio it holds has left the file, and the
    /// hole reads zeros while the rest keeps its data and holds.
    #[test]
    fn hole_punch_asks_the_owner_first() -> Result {
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(false)?;
        let obj = held_object(&mnt, &owner, 4)?;
        let invalidated = STATS.invalidated.load(Ordering::Relaxed);
        obj.file()
            .punch_hole(PAGE_SIZE as i64, 2 * PAGE_SIZE as i64)?;
        assert_eq!(owner.invalidations.load(Ordering::Relaxed), 1);
        assert_eq!(owner.inv_first.load(Ordering::Relaxed), 1);
        assert_eq!(owner.inv_last.load(Ordering::Relaxed), 2);
        assert_eq!(STATS.invalidated.load(Ordering::Relaxed), invalidated + 1);
        assert_eq!(owner.held_mask(), 0b1001);
        assert_eq!(obj.holds(), 2);
        assert!(owner.holds_all_in_file(&obj));
        assert!(obj.file().mapping().get_folio(1).is_none());
        assert!(obj.file().mapping().get_folio(2).is_none());
        assert_eq!(obj.file().size(), (4 * PAGE_SIZE) as i64);
        assert_eq!(head_of(&obj, 0)?, tag(0));
        assert_eq!(head_of(&obj, 1)?, [0u8; 64]);
        assert_eq!(head_of(&obj, 2)?, [0u8; 64]);
        assert_eq!(head_of(&obj, 3)?, tag(3));
        owner.drop_all();
        Ok(())
    }

    /// Truncation (`truncate(2)` of the object's file) into held pages: the
    /// owner is asked about everything from the new end on first, keeps the
    /// holds before it, and pages beyond the end can no longer be held.
    #[test]
    fn truncation_asks_the_owner_first() -> Result {
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(false)?;
        let obj = held_object(&mnt, &owner, 4)?;
        // Into page 1: its first 32 bytes stay.
        obj.file().truncate(PAGE_SIZE as i64 + 32)?;
        assert_eq!(owner.invalidations.load(Ordering::Relaxed), 1);
        assert_eq!(owner.inv_first.load(Ordering::Relaxed), 1);
        assert_eq!(owner.inv_last.load(Ordering::Relaxed), usize::MAX);
        assert_eq!(owner.held_mask(), 0b0001);
        assert_eq!(obj.holds(), 1);
        assert!(owner.holds_all_in_file(&obj));
        assert_eq!(obj.get_folio(2).err(), Some(EINVAL));
        let head = head_of(&obj, 1)?;
        assert_eq!(&head[..32], &tag(1)[..32]);
        assert_eq!(&head[32..], &[0u8; 32][..]);
        assert_eq!(head_of(&obj, 0)?, tag(0));
        // Growing the file again asks nobody.
        obj.file().truncate(4 * PAGE_SIZE as i64)?;
        assert_eq!(owner.invalidations.load(Ordering::Relaxed), 1);
        assert_eq!(head_of(&obj, 3)?, [0u8; 64]);
        owner.drop_all();
        Ok(())
    }

    /// A driver purging its own object (`shmem::truncate_range`) does not
    /// ask its owner: the driver has dropped its holds itself.
    #[test]
    fn a_drivers_own_purge_does_not_ask_the_owner() -> Result {
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(false)?;
        let obj = held_object(&mnt, &owner, 2)?;
        owner.drop_all();
        kernel::shmem::truncate_range(obj.file(), 0, -1)?;
        assert_eq!(owner.invalidations.load(Ordering::Relaxed), 0);
        assert_eq!(obj.file().mapping().nr_pages(), 0);
        Ok(())
    }

    /// Memory failure of a held folio: the owner drops its hold first, so the
    /// failure is recovered (shmem keeps the poisoned folio in the file) and
    /// the folio can no longer be held.
    #[cfg(CONFIG_MEMORY_FAILURE)]
    #[test]
    fn memory_failure_asks_the_owner_first() -> Result {
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(false)?;
        let obj = held_object(&mnt, &owner, 2)?;
        let pfn = obj.file().mapping().get_folio(1).ok_or(ENOENT)?.pfn();
        // SAFETY: `pfn` is a page of our own object, which no process maps:
        // poisoning it kills nobody. The page stays poisoned (it is never
        // reused), as after `madvise(MADV_HWPOISON)`.
        let ret =
            unsafe { bindings::memory_failure(pfn as _, bindings::mf_flags_MF_SW_SIMULATED as _) };
        assert_eq!(ret, 0);
        assert_eq!(owner.invalidations.load(Ordering::Relaxed), 1);
        assert_eq!(owner.inv_first.load(Ordering::Relaxed), 1);
        assert_eq!(owner.inv_last.load(Ordering::Relaxed), 1);
        assert_eq!(owner.held_mask(), 0b01);
        assert_eq!(obj.get_folio(1).err(), Some(EIO));
        assert_eq!(head_of(&obj, 0)?, tag(0));
        owner.drop_all();
        Ok(())
    }

    /// The round of `holds_race_hole_punches`: gets holds on every page and
    /// has the owner keep them as a driver would, checking for
    /// invalidations between getting and keeping
    /// (`keep_unless_invalidated`), then has the owner put them all.
    struct GetKeepUnlessInvalidated {
        /// Holds dropped because an invalidation came between get and keep.
        dropped: AtomicUsize,
    }

    impl Round for GetKeepUnlessInvalidated {
        fn round(&self, obj: &Object<TestOwner>, pages: usize, errors: &AtomicUsize) {
            let owner = obj.owner();
            for i in 0..pages {
                let seen = owner.invalidations.load(Ordering::Relaxed);
                match obj.get_folio(i) {
                    Ok(h) => match owner.keep_unless_invalidated(h, seen) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            owner.drop_all();
        }
    }

    /// Holds taken while holes are punched in the same pages again and
    /// again: after every punch, no folio the owner holds has left the file.
    #[test]
    fn holds_race_hole_punches() -> Result {
        const PAGES: usize = 8;
        const PUNCHES: usize = 200;
        let mnt = Mount::new(Huge::Never)?;
        let owner = TestOwner::new(false)?;
        let obj = mnt.create_object(c_str!("t"), PAGES * PAGE_SIZE, owner.clone())?;
        let racer = Racer::start(
            obj,
            PAGES,
            GetKeepUnlessInvalidated {
                dropped: AtomicUsize::new(0),
            },
        )?;
        let mut orphans = 0;
        for n in 0..PUNCHES {
            let first = n % PAGES;
            let pages = 1 + n % 3;
            let len = (pages.min(PAGES - first) * PAGE_SIZE) as i64;
            racer
                .obj
                .file()
                .punch_hole((first * PAGE_SIZE) as i64, len)?;
            if !owner.holds_all_in_file(&racer.obj) {
                orphans += 1;
            }
            if n % 16 == 0 {
                // SAFETY: process context, no lock held: may sleep.
                unsafe { bindings::msleep(1) };
            }
        }
        racer.stop();
        pr_info!(
            "holds_race_hole_punches: {} racer rounds, {} holds dropped as invalidated\n",
            racer.rounds.load(Ordering::Relaxed),
            racer.what.dropped.load(Ordering::Relaxed)
        );
        assert_eq!(orphans, 0);
        assert_eq!(racer.errors.load(Ordering::Relaxed), 0);
        assert!(racer.rounds.load(Ordering::Relaxed) > 1);
        assert!(owner.invalidations.load(Ordering::Relaxed) > 0);
        assert_eq!(racer.obj.holds(), 0);
        Ok(())
    }
}
