//! Commands on a mounted bkfs: they talk to the daemon through the control
//! files (docs/CONTROL.md), so they need nothing but the mount.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::control::text;
use crate::store::Error;

/// The mount `given`, or the one the current directory is in.
pub fn find_mount(given: Option<PathBuf>) -> Result<PathBuf, Error> {
    let is_mount = |p: &Path| p.join(".control/snapshot").is_file();
    if let Some(m) = given {
        return if is_mount(&m) {
            Ok(m)
        } else {
            Err(Error::Other(format!(
                "{}: not a bkfs mount with snapshots (no .control/snapshot)",
                m.display()
            )))
        };
    }
    let cwd = std::env::current_dir().map_err(|e| Error::io("current directory", e))?;
    cwd.ancestors()
        .find(|p| is_mount(p))
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::Other("not inside a bkfs mount; name one with --mount M".to_string()))
}

/// A control file's `key: value` lines as a map (one value per key).
fn parse(text: &str) -> BTreeMap<String, String> {
    text::decode(text).into_map()
}

fn read(mount: &Path, file: &str) -> Result<String, Error> {
    let p = mount.join(".control").join(file);
    std::fs::read_to_string(&p).map_err(|e| Error::io(p.display().to_string(), e))
}

/// Writes to a control file; a refusal comes back with the reason the
/// daemon left in `.control/snapshot`.
fn write(mount: &Path, file: &str, text: &str) -> Result<(), Error> {
    let p = mount.join(".control").join(file);
    std::fs::write(&p, text).map_err(|e| {
        let why = read(mount, "snapshot")
            .ok()
            .map(|t| parse(&t).get("error").cloned().unwrap_or_default())
            .filter(|w| !w.is_empty());
        match why {
            Some(w) => Error::Other(format!("{w} ({e})")),
            None => Error::io(p.display().to_string(), e),
        }
    })
}

/// `bkfs snapshot [NAME] [--wait]`; returns the exit status.
pub fn snapshot(mount: &Path, name: Option<&str>, wait: bool) -> Result<i32, Error> {
    write(mount, "snapshot", &format!("{}\n", name.unwrap_or("")))?;
    let s = parse(&read(mount, "snapshot")?);
    let name = s.get("name").cloned().unwrap_or_default();
    println!(
        "snapshot {name}: point in time fixed (barrier {} ms)",
        s.get("barrier_ms").map(String::as_str).unwrap_or("?")
    );
    if !wait {
        return Ok(0);
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} copying {msg} [{bar:30}] {bytes}/{total_bytes}",
            )
            .expect("a valid template"),
        );
        b.set_message(name.clone());
        b
    });
    loop {
        let s = parse(&read(mount, "snapshot")?);
        if s.get("name") != Some(&name) {
            return Err(Error::Other(format!(
                "snapshot {name}: no longer the latest operation"
            )));
        }
        if let Some(b) = &bar {
            let (done, total) = s
                .get("bytes")
                .and_then(|v| v.split_once('/'))
                .unwrap_or(("0", "0"));
            b.set_length(total.parse().unwrap_or(0));
            b.set_position(done.parse().unwrap_or(0));
        }
        match s.get("state").map(String::as_str) {
            Some("sealed") => {
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                println!(
                    "snapshot {name}: sealed ({} files, {} s)",
                    s.get("files").map(String::as_str).unwrap_or("?"),
                    s.get("seconds").map(String::as_str).unwrap_or("?")
                );
                return Ok(0);
            }
            Some("failed") | Some("interrupted") => {
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
                return Err(Error::Other(format!(
                    "snapshot {name}: {}",
                    s.get("error").cloned().unwrap_or_default()
                )));
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `bkfs status [--json]`.
pub fn status(mount: &Path, json: bool) -> Result<i32, Error> {
    let status = read(mount, "status")?;
    let snapshot = read(mount, "snapshot")?;
    if json {
        // `note:` and `app:` lines repeat: lists in JSON.
        let (status, snapshot) = (text::decode(&status), text::decode(&snapshot));
        let notes: Vec<String> = status.all("note").into_iter().map(String::from).collect();
        let apps: Vec<String> = snapshot.all("app").into_iter().map(String::from).collect();
        let mut st = status.into_map();
        st.remove("note");
        let mut snap = snapshot.into_map();
        snap.remove("app");
        let v = serde_json::json!({
            "mount": mount,
            "status": st,
            "notes": notes,
            "snapshot": snap,
            "apps": apps,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
    } else {
        print!("{status}");
        println!();
        print!("{snapshot}");
    }
    Ok(0)
}

/// `bkfs freeze` / `bkfs thaw` of a mount's barrier.
pub fn barrier(mount: &Path, freeze: bool) -> Result<i32, Error> {
    write(mount, if freeze { "freeze" } else { "thaw" }, "\n")?;
    Ok(0)
}
