//! Seal forwarding: who shows snapshots (the mount's views of the store
//! and of pending snapshots) is told when one is sealed, failed or
//! forgotten, so it refreshes and retires what no longer serves.

use parking_lot::Mutex;

/// Told the name of a snapshot sealed or forgotten.
type OnChange = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub(super) struct Forward {
    on_change: Mutex<Option<OnChange>>,
}

impl Forward {
    pub(super) fn set(&self, f: impl Fn(&str) + Send + Sync + 'static) {
        *self.on_change.lock() = Some(Box::new(f));
    }

    /// Tells the views that snapshot `name` changed.
    pub(super) fn changed(&self, name: &str) {
        if let Some(f) = &*self.on_change.lock() {
            f(name);
        }
    }
}
