//! The text of the control files, made from the typed status of the parts
//! they show (docs/CONTROL.md), with the codec of [`super::text`].

use std::time::{Duration, SystemTime};

use super::text;
use crate::quiesce::{AppStatus, Phase};
use crate::snapshot::requester::ProfileStatus;
use crate::snapshot::status::{rfc3339, CopyFigures, MountStatus, OpState, OpStatus};
use crate::store::Consistency;

/// `.control/snapshot`: the latest snapshot operation and its copy.
pub fn snapshot(latest: Option<(OpStatus, CopyFigures)>) -> String {
    let Some((op, fig)) = latest else {
        return text::Encoder::new()
            .bare("name")
            .pair("state", "none")
            .finish();
    };
    let copying = matches!(
        op.state,
        OpState::Copying | OpState::Sealed | OpState::Interrupted | OpState::Failed
    );
    let total = |n: u64| {
        if fig.totals_known {
            n.to_string()
        } else {
            "?".to_string()
        }
    };
    let opt_time = |t: Option<SystemTime>| t.map(rfc3339).unwrap_or_default();
    let opt_ms = |m: Option<f64>| m.map(|m| format!("{m:.3}")).unwrap_or_default();
    let mut e = text::Encoder::new();
    e.pair("name", &op.name)
        .pair("state", op.state)
        .pair(
            "consistency",
            op.consistency.map(Consistency::as_str).unwrap_or_default(),
        )
        .pair("why", &op.why)
        .pair("requested", opt_time(op.requested))
        .pair("committed", opt_time(op.committed))
        .pair("sealed", opt_time(op.sealed))
        .pair("barrier_ms", opt_ms(op.barrier_ms))
        .pair("fence_ms", opt_ms(op.fence_ms))
        .pair(
            "fenced_files",
            op.fenced_files.map(|n| n.to_string()).unwrap_or_default(),
        )
        .pair("frozen_ms", opt_ms(op.frozen_ms))
        .pair("copy", &op.incremental);
    if copying {
        let rate = if fig.seconds > 0.0 {
            fig.bytes as f64 / fig.seconds / 1e6
        } else {
            0.0
        };
        e.pair("files", format!("{}/{}", fig.files, total(fig.total_files)))
            .pair("bytes", format!("{}/{}", fig.bytes, total(fig.total_bytes)))
            .pair("rate_mb_s", format!("{rate:.1}"))
            .pair("seconds", format!("{:.3}", fig.seconds));
    } else {
        e.pair("files", "")
            .pair("bytes", "")
            .pair("rate_mb_s", "")
            .pair("seconds", "");
    }
    e.pair("error", op.error.replace('\n', " "));
    for app in &op.apps {
        let field = |k: &str| {
            app.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let mut line = format!(
            "{} plugin={} state={} result={}",
            field("name"),
            field("plugin"),
            field("state"),
            field("result").replace('\n', " ")
        );
        if let Some(t) = app.get("timings_ms").and_then(|v| v.as_object()) {
            for (phase, v) in t {
                line.push_str(&format!(" {phase}_ms={:.1}", v.as_f64().unwrap_or(0.0)));
            }
        }
        e.pair("app", line);
    }
    e.finish()
}

/// `.control/status`: mount, store and provider figures.
pub fn status(m: &MountStatus) -> String {
    let mut e = text::Encoder::new();
    e.pair("source", m.source.display())
        .pair("store", m.store.display())
        .pair("mounted", rfc3339(m.mounted))
        .pair("snapshots", m.snapshots)
        .pair("latest", m.latest.as_deref().unwrap_or_default())
        .pair("store_bytes", m.store_bytes)
        .pair("content_bytes", m.content_bytes)
        .pair(
            "dedup_ratio",
            if m.store_bytes > 0 {
                format!("{:.2}", m.content_bytes as f64 / m.store_bytes as f64)
            } else {
                String::new()
            },
        )
        .pair("new_bytes_stored", m.new_bytes_stored)
        .pair("pending", m.pending.as_deref().unwrap_or_default())
        .pair(
            "operation",
            m.operation
                .as_ref()
                .map(|(name, state)| format!("{name} {state}"))
                .unwrap_or_default(),
        )
        .pair(
            "barrier",
            if m.barrier_held.is_some() {
                "held"
            } else {
                "open"
            },
        )
        .pair(
            "barrier_held_ms",
            m.barrier_held
                .map(|d| format!("{:.1}", ms(d)))
                .unwrap_or_default(),
        )
        .pair("deferred_ops", m.deferred_ops)
        .pair("waiting_opens", m.waiting_opens)
        .pair("notes", m.notes.len());
    for n in &m.notes {
        e.pair("note", n);
    }
    e.finish()
}

/// `.control/freeze`: whether the barrier is held by hand, for how long,
/// and the cap.
pub fn freeze(held: Option<Duration>, cap: Duration) -> String {
    let mut e = text::Encoder::new();
    match held {
        Some(d) => e
            .pair("frozen", "yes")
            .pair("held_ms", format!("{:.1}", ms(d))),
        None => e.pair("frozen", "no").bare("held_ms"),
    };
    e.pair("cap_s", cap.as_secs()).finish()
}

/// `.control/profile`: the profile file, its `require` and applications.
pub fn profile(p: &ProfileStatus) -> String {
    let mut e = text::Encoder::new();
    e.pair(
        "path",
        p.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    match &p.loaded {
        Some((require, apps)) => {
            e.pair("require", format!("{require:?}").to_lowercase())
                .pair("apps", apps.join(" "));
        }
        None => {
            e.bare("require").bare("apps");
        }
    }
    e.finish()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The content of `.quiesce/APP/FILE`, one of [`AppStatus::FILES`], newline-terminated; None
/// for a name that is not one (or `request` of a non-handshake app).
/// `status` is `key: value` lines, stable: name, plugin, state, result,
/// description, frozen_ms, watchdog, then `PHASE_ms` per phase run and
/// `position.KEY` per recorded position (multi-line values on one line,
/// newlines as `\n`).
pub fn app_file(st: &AppStatus, file: &str) -> Option<String> {
    Some(match file {
        "state" => format!("{}\n", st.state.as_str()),
        "result" => format!("{}\n", st.result),
        "status.json" => format!("{}\n", st.to_json()),
        "request" => format!("{}\n", st.request?),
        "status" => {
            let mut e = text::Encoder::new();
            e.pair("name", &st.name)
                .pair("plugin", st.plugin)
                .pair("state", st.state.as_str())
                .pair("result", &st.result)
                .pair("description", &st.description)
                .pair(
                    "frozen_ms",
                    st.frozen_for_ms
                        .map(|m| format!("{m:.1}"))
                        .unwrap_or_default(),
                )
                .pair("watchdog", st.watchdog.as_deref().unwrap_or(""));
            for p in Phase::ALL {
                if let Some(ms) = st.timings_ms.get(p.as_str()) {
                    e.pair(&format!("{p}_ms"), format!("{ms:.1}"));
                }
            }
            for (k, v) in &st.positions {
                if k == "commands" {
                    continue;
                }
                let v = v
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string());
                e.pair(&format!("position.{k}"), v);
            }
            e.finish()
        }
        _ => return None,
    })
}
