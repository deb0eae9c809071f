//! The write barrier: fixes a point in time without stopping reads.
//!
//! Every write-class operation passes the barrier ([`Barrier::enter`]) for
//! as long as it runs. [`Barrier::hold`] stops admitting them and waits for
//! those in flight to finish; from then until the hold is released no change
//! reaches the source, so whatever is recorded meanwhile (an epoch) is a
//! point in time. Holding costs the same whatever the size of the tree.
//!
//! An operation that arrives while the barrier is held is not blocked on the
//! thread that received it (a FUSE worker must stay free to serve reads and
//! the request that releases the barrier): the caller hands it over with
//! [`Barrier::defer`], and it runs, in arrival order, once released.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Deferred = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    /// Write-class operations running now.
    active: u64,
    /// Holders (a snapshot commit, `.control/freeze`): while any, nothing new passes.
    holds: u32,
    /// When the barrier was last closed (holds went from 0 to 1).
    closed_at: Option<Instant>,
    deferred: VecDeque<Deferred>,
    /// A thread is running the deferred operations.
    draining: bool,
}

#[derive(Default)]
pub struct Barrier {
    state: Mutex<State>,
    /// Signalled when `active` drops to 0.
    idle: Condvar,
}

/// An admitted write-class operation; the barrier waits for it to drop.
pub struct Pass<'a> {
    barrier: &'a Barrier,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.barrier.leave();
    }
}

/// Why a hold failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// Operations still running when the wait ended.
    pub in_flight: u64,
}

impl Barrier {
    pub fn new() -> Arc<Barrier> {
        Arc::new(Barrier::default())
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Admits a write-class operation now, or `None` while the barrier is
    /// held (or operations deferred earlier wait: they go first).
    pub fn enter(&self) -> Option<Pass<'_>> {
        let mut s = self.lock();
        if s.holds > 0 || !s.deferred.is_empty() {
            return None;
        }
        s.active += 1;
        Some(Pass { barrier: self })
    }

    /// Admits an operation even while the barrier is held: a hold waits for
    /// it like for any other in flight. For operations that must not wait
    /// (see [`crate::snapshot::fence`]: an open of an inode fenced already).
    pub fn enter_anyway(&self) -> Pass<'_> {
        self.lock().active += 1;
        Pass { barrier: self }
    }

    fn leave(&self) {
        let mut s = self.lock();
        s.active -= 1;
        // Only a hold waits for the last one out (it counts itself in
        // `holds` before it waits, under this lock).
        if s.active == 0 && s.holds > 0 {
            self.idle.notify_all();
        }
    }

    /// Runs `op` once the barrier admits it: at once on this thread if it
    /// does now, else after the hold is released, on another thread.
    pub fn defer(self: &Arc<Self>, op: impl FnOnce() + Send + 'static) {
        {
            let mut s = self.lock();
            if s.holds > 0 || !s.deferred.is_empty() {
                s.deferred.push_back(Box::new(op));
                return;
            }
            s.active += 1;
        }
        let _pass = Pass { barrier: self };
        op();
    }

    /// Closes the barrier and waits up to `timeout` for the operations in
    /// flight to finish. On timeout the hold is given back and `Busy` says
    /// how many were still running.
    pub fn hold(self: &Arc<Self>, timeout: Duration) -> Result<Hold, Busy> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        s.holds += 1;
        if s.holds == 1 {
            s.closed_at = Some(Instant::now());
        }
        while s.active > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let in_flight = s.active;
                drop(s);
                self.release_one();
                return Err(Busy { in_flight });
            }
            let _ = self.idle.wait_for(&mut s, left);
        }
        Ok(Hold {
            barrier: self.clone(),
            released: false,
        })
    }

    /// Whether the barrier is closed, and since when.
    pub fn closed_since(&self) -> Option<Instant> {
        let s = self.lock();
        if s.holds > 0 {
            s.closed_at
        } else {
            None
        }
    }

    /// Operations waiting for the barrier to open.
    pub fn waiting(&self) -> usize {
        self.lock().deferred.len()
    }

    fn release_one(self: &Arc<Self>) {
        let mut s = self.lock();
        s.holds = s.holds.saturating_sub(1);
        if s.holds == 0 {
            s.closed_at = None;
            if !s.deferred.is_empty() && !s.draining {
                s.draining = true;
                let me = self.clone();
                std::thread::Builder::new()
                    .name("bkfs-deferred".into())
                    .spawn(move || me.drain())
                    .expect("spawn a thread");
            }
        }
    }

    /// Runs deferred operations in arrival order until none is left or the
    /// barrier closes again.
    fn drain(self: Arc<Self>) {
        loop {
            let op = {
                let mut s = self.lock();
                if s.holds > 0 {
                    s.draining = false;
                    return;
                }
                match s.deferred.pop_front() {
                    Some(op) => {
                        s.active += 1;
                        op
                    }
                    None => {
                        s.draining = false;
                        return;
                    }
                }
            };
            let _pass = Pass { barrier: &self };
            op();
        }
    }
}

/// A hold on the barrier; dropping it releases the barrier.
pub struct Hold {
    barrier: Arc<Barrier>,
    released: bool,
}

impl Hold {
    /// How long the barrier has been closed.
    pub fn held_for(&self) -> Duration {
        self.barrier
            .closed_since()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    pub fn release(mut self) {
        self.released = true;
        self.barrier.release_one();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.released {
            self.barrier.release_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn hold_waits_for_operations_in_flight_and_defers_new_ones() {
        let b = Barrier::new();
        let pass = b.enter().unwrap();
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.hold(Duration::from_secs(5)).map(|_| ()));
        std::thread::sleep(Duration::from_millis(50));
        assert!(b.enter().is_none(), "closed while a hold waits");
        drop(pass);
        t.join().unwrap().unwrap();
        // The hold was dropped with the thread: open again.
        assert!(b.enter().is_some());
    }

    #[test]
    fn hold_times_out_and_reopens() {
        let b = Barrier::new();
        let _pass = b.enter().unwrap();
        let r = b.hold(Duration::from_millis(20));
        assert_eq!(r.err(), Some(Busy { in_flight: 1 }));
        assert!(b.closed_since().is_none());
    }

    #[test]
    fn deferred_operations_run_in_order_after_release() {
        let b = Barrier::new();
        let hold = b.hold(Duration::from_secs(1)).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for i in 0..5 {
            let seen = seen.clone();
            b.defer(move || seen.lock().push(i));
        }
        assert!(seen.lock().is_empty());
        assert_eq!(b.waiting(), 5);
        hold.release();
        let start = Instant::now();
        while seen.lock().len() < 5 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*seen.lock(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_hold_waits_for_operations_admitted_anyway() {
        let b = Barrier::new();
        let pass = b.enter_anyway();
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.hold(Duration::from_millis(50)).map(|_| ()));
        assert_eq!(t.join().unwrap(), Err(Busy { in_flight: 1 }));
        drop(pass);
        let h = b.hold(Duration::from_secs(1)).unwrap();
        // Held: still admitted, and counted.
        let late = b.enter_anyway();
        assert!(b.enter().is_none());
        drop(late);
        h.release();
        assert!(b.enter().is_some());
    }

    #[test]
    fn nested_holds_keep_it_closed() {
        let b = Barrier::new();
        let h1 = b.hold(Duration::from_secs(1)).unwrap();
        let h2 = b.hold(Duration::from_secs(1)).unwrap();
        h1.release();
        assert!(b.enter().is_none());
        drop(h2);
        assert!(b.enter().is_some());
    }

    #[test]
    fn no_operation_runs_while_held() {
        let b = Barrier::new();
        let running = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (b, running, stop) = (b.clone(), running.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let running = running.clone();
                        b.defer(move || {
                            running.fetch_add(1, Ordering::SeqCst);
                            std::thread::yield_now();
                            running.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                })
            })
            .collect();
        for _ in 0..50 {
            let h = b.hold(Duration::from_secs(5)).unwrap();
            assert_eq!(running.load(Ordering::SeqCst), 0);
            h.release();
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
    }
}
