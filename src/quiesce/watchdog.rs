//! The watchdog: a thread per quiescer that thaws any application frozen
//! longer than the profile's cap (`[watchdog] freeze`), whatever holds it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::app::AppRt;
use super::{AppState, Inner};

/// Starts the watchdog of `inner`; it ends with the quiescer.
pub(super) fn start(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    std::thread::Builder::new()
        .name("bkfs-watchdog".into())
        .spawn(move || run(weak))
        .expect("spawn watchdog thread");
}

/// The watchdog: thaws any application frozen longer than the cap. Runs
/// until the quiescer is gone.
pub(super) fn run(inner: Weak<Inner>) {
    loop {
        let tick = {
            let Some(inner) = inner.upgrade() else { return };
            let cap = inner.profile.read().watchdog.freeze;
            let apps: Vec<Arc<AppRt>> = inner.apps.read().clone();
            for a in apps {
                let over = {
                    let st = a.st.lock();
                    st.state == Some(AppState::Frozen)
                        && st.frozen_since.is_some_and(|t| t.elapsed() >= cap)
                };
                if over {
                    let note = format!(
                        "force-thawed by the watchdog after {:.1}s frozen (cap {:?})",
                        cap.as_secs_f64(),
                        cap
                    );
                    tracing::error!("quiesce: {}: {note}", a.spec.name);
                    let r = inner.thaw_one(&a, Some("by the watchdog"));
                    a.set(|st| {
                        st.watchdog = Some(match &r {
                            Ok(()) => note.clone(),
                            Err(e) => format!("{note}; thaw failed: {e}"),
                        });
                    });
                }
            }
            (cap / 20).clamp(Duration::from_millis(5), Duration::from_millis(250))
        };
        std::thread::sleep(tick);
    }
}
