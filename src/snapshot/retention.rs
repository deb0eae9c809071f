//! Retention at the mount: after each sealed snapshot, the snapshots of
//! this source that the profile's `[keep]` rules do not keep are forgotten
//! (the rules themselves are [`crate::store::retention::Keep`]).

use super::requester::Snapshotter;

impl Snapshotter {
    /// Forgets the snapshots of this source the profile's `keep` rules do
    /// not keep (after each sealed snapshot).
    pub(super) fn apply_retention(&self) {
        let Some(q) = self.quiescer() else { return };
        let keep = q.keep();
        if keep.is_empty() {
            return;
        }
        let source = self.source.to_string_lossy();
        let snaps: Vec<(String, i64)> = match self.store.snapshots() {
            Ok(v) => v
                .into_iter()
                .filter(|s| s.source == source)
                .filter_map(|s| {
                    let t = humantime::parse_rfc3339(&s.time).ok()?;
                    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
                    Some((s.name.clone(), secs))
                })
                .collect(),
            Err(e) => {
                self.note(format!("retention: cannot list snapshots: {e}"));
                return;
            }
        };
        let kept = keep.select(&snaps);
        for (name, _) in snaps.iter().filter(|(n, _)| !kept.contains(n)) {
            match self.forget(name) {
                Ok(()) => tracing::info!("retention: forgot snapshot {name}"),
                Err(e) => self.note(format!("retention: cannot forget {name}: {e}")),
            }
        }
    }
}
