//! Store issue: `bkfs backup` shows a progress bar on a terminal (files, bytes, rate, ETA) and
//! one summary line at the end; without a terminal, no bar and no escape sequences.
//! The terminal is a pty from script(1).

mod common;

use common::*;
use std::fs;
use std::process::Command;

/// Sizes shown as "DONE/TOTAL" in the frames of a progress bar, e.g. "190.73 MiB/953.67 MiB".
fn progress_pairs(text: &str) -> Vec<(u64, u64)> {
    let toks: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    for i in 1..toks.len().saturating_sub(1) {
        let Some((u1, n2)) = toks[i].split_once('/') else {
            continue;
        };
        if let (Some(a), Some(b)) = (parse_size(toks[i - 1], u1), parse_size(n2, toks[i + 1])) {
            out.push((a, b));
        }
    }
    out
}

#[test]
fn progress_moves_within_a_large_file() {
    if !require(true, &["script"]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(0x9a);
    let total: u64 = 400 << 20;
    write_random(&src.join("one_big_file"), total, &mut rng);
    let store = Store::new();
    let line = format!(
        "{} backup {} --store {} --name p",
        bkfs_bin(),
        src.display(),
        store.path.display()
    );
    let mut c = Command::new("script");
    c.args(["-qfec", &line, "/dev/null"])
        .env_remove("BKFS_STORE");
    let o = run_cmd(c, TIMEOUT);
    o.ok("backup under a pty");
    let text = o.stdout_str().replace(['\r', '\x1b'], " ");
    let mut f = Failures::new();
    f.check(
        o.stdout_str().contains("snapshot p saved") || bytes_read(&text).is_some(),
        || format!("no summary line at the end\n{}", o.describe()),
    );
    let pairs = progress_pairs(&text);
    f.check(!pairs.is_empty(), || {
        format!(
            "no progress frames (DONE/TOTAL bytes) on a terminal\n{}",
            o.describe()
        )
    });
    let inside = pairs.iter().any(|(d, t)| *d > 0 && *d < *t);
    f.check(inside, || {
        format!(
            "while one {total}-byte file is read, the bar never moves: frames show {:?} (bytes \
             are counted only when a whole file is done)",
            pairs.iter().take(10).collect::<Vec<_>>()
        )
    });
    f.finish();
}

#[test]
fn no_bar_or_escapes_without_a_terminal() {
    if !require(true, &[]) {
        return;
    }
    let work = tempdir();
    let src = work.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut rng = Rng::new(0x9b);
    write_random(&src.join("f"), 30 << 20, &mut rng);
    let store = Store::new();
    let o = store.backup(&src, "p");
    o.ok("backup");
    let all = [o.stdout.clone(), o.stderr.clone()].concat();
    assert!(
        !all.contains(&0x1b) && !all.contains(&b'\r'),
        "backup into a pipe printed terminal control characters\n{}",
        o.describe()
    );
    let stdout = o.stdout_str();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one summary line\n{}",
        o.describe()
    );
    assert!(
        bytes_read(lines[0]).is_some(),
        "summary line without bytes read: {}",
        lines[0]
    );
}
