//! The text of the control files, made from the typed status of the parts
//! they show (docs/CONTROL.md), with the codec of [`super::text`].

use super::text;
use crate::quiesce::{AppStatus, Phase};

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
