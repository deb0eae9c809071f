//! `bkfs quiesce --dry-run` and `bkfs thaw [--force]`.

use std::path::{Path, PathBuf};

use crate::quiesce::{self, AppState, Consistency, Profile, Quiescer};

/// Where markers live unless told otherwise; `bkfs thaw --force` without
/// `--marker` thaws every marker here.
pub const MARKER_DIR: &str = "/run/bkfs/quiesce";

#[derive(clap::Args)]
pub struct QuiesceArgs {
    /// The profile (TOML, see docs/PROFILES.md).
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,
    /// Run the plug-ins' identify, prepare, freeze, thaw and post without a
    /// snapshot, and print each one's timing.
    #[arg(long)]
    pub dry_run: bool,
    /// Frozen marker for the run (default: /run/bkfs/quiesce/dry-run.json).
    #[arg(long, value_name = "FILE")]
    pub marker: Option<PathBuf>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct ThawArgs {
    /// Thaw what frozen markers name, whatever state the daemon is in
    /// (always safe: thawing what is not frozen does nothing).
    #[arg(long)]
    pub force: bool,
    /// A frozen marker (repeatable; default with --force: every marker in /run/bkfs/quiesce/).
    #[arg(long, value_name = "FILE")]
    pub marker: Vec<PathBuf>,
    /// Release the mount's write barrier (writes to MOUNT/.control/thaw).
    #[arg(long, value_name = "M")]
    pub mount: Option<PathBuf>,
}

pub fn quiesce(a: &QuiesceArgs) -> i32 {
    if !a.dry_run {
        eprintln!("bkfs quiesce: only --dry-run is supported; a snapshot through a mount quiesces by itself");
        return 2;
    }
    let profile = match Profile::load(&a.profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bkfs quiesce: {e}");
            return 2;
        }
    };
    let marker = a
        .marker
        .clone()
        .unwrap_or_else(|| Path::new(MARKER_DIR).join("dry-run.json"));
    if let Some(d) = marker.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let q = Quiescer::new(profile, marker);
    let (outcome, err) = match q.freeze() {
        Ok(f) => (Some(f.thaw()), None),
        Err(e) => (None, Some(e)),
    };
    let failed = err.is_some()
        || q.apps().iter().any(|s| s.state == AppState::Failed)
        || outcome
            .as_ref()
            .is_some_and(|o| o.consistency == Consistency::CrashConsistent);
    if a.json {
        let v = serde_json::json!({
            "ok": !failed,
            "error": err.as_ref().map(|e| e.to_string()),
            "outcome": outcome,
            "apps": q.apps().iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        for s in q.apps() {
            let t = |k: &str| {
                s.timings_ms
                    .get(k)
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<16} {:<10} {:<8} identify {} ms, prepare {} ms, freeze {} ms, thaw {} ms, post {} ms",
                s.name,
                s.plugin,
                s.state.as_str(),
                t("identify"),
                t("prepare"),
                t("freeze"),
                t("thaw"),
                t("post")
            );
            if s.result != "ok" && s.result != "none" {
                println!("{:<16} result: {}", "", s.result);
            }
            for (k, v) in &s.positions {
                if k != "commands" {
                    let v = v
                        .as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string());
                    println!(
                        "{:<16} {k}: {}",
                        "",
                        v.replace('\n', "\n                   ")
                    );
                }
            }
        }
        if let Some(o) = &outcome {
            println!("consistency: {}", o.consistency);
            println!("why: {}", o.why);
            if let Some(ms) = o.frozen_ms {
                println!("frozen_ms: {ms:.1}");
            }
        }
        if let Some(e) = &err {
            println!("consistency: none (require = app: the snapshot would be refused)");
            eprintln!("bkfs quiesce: {e}");
        }
    }
    i32::from(failed)
}

pub fn thaw(a: &ThawArgs) -> i32 {
    let mut status = 0;
    if let Some(m) = &a.mount {
        let f = m.join(".control/thaw");
        if let Err(e) = std::fs::write(&f, "thaw\n") {
            eprintln!("bkfs thaw: {}: {e}", f.display());
            status = 1;
        }
    }
    if !a.force {
        if a.mount.is_none() {
            eprintln!("bkfs thaw: give --mount M to release a mount's barrier, or --force to thaw what frozen markers name");
            return 2;
        }
        return status;
    }
    let markers: Vec<PathBuf> = if a.marker.is_empty() {
        std::fs::read_dir(MARKER_DIR)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        a.marker.clone()
    };
    for m in markers {
        match quiesce::thaw_marker(&m) {
            Ok(results) => {
                if results.is_empty() {
                    println!("{}: nothing frozen", m.display());
                }
                for (name, r) in results {
                    match r {
                        Ok(()) => println!("{}: {name}: thawed", m.display()),
                        Err(e) => {
                            println!("{}: {name}: thaw failed: {e}", m.display());
                            status = 1;
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("bkfs thaw: {}: {e}", m.display());
                status = 1;
            }
        }
    }
    status
}
