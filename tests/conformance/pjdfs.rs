//! pjdfstest as a child process: its configuration, its output parsed into one outcome per
//! test case, and the comparison of a bkfs run with the native baseline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::setup::{self, Ran};

/// The longest one pjdfstest run may take (natively it takes seconds).
const LIMIT: Duration = Duration::from_secs(900);

/// pjdfstest's words for a test case's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// FAILED, with what the test printed (its panic message).
    Fail(String),
    /// skipped, with pjdfstest's reason.
    Skip(String),
    /// Listed in `expected_failures` (our configuration lists none).
    ExpectedFail,
    UnexpectedPass,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Fail(_) | Outcome::UnexpectedPass)
    }
}

/// One test case name to its outcome.
pub type Results = BTreeMap<String, Outcome>;

/// Counts, as pjdfstest's closing line has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub failed: usize,
    pub skipped: usize,
    pub passed: usize,
    pub total: usize,
}

impl Counts {
    pub fn of(results: &Results) -> Counts {
        let mut c = Counts {
            total: results.len(),
            ..Counts::default()
        };
        for o in results.values() {
            match o {
                Outcome::Pass | Outcome::ExpectedFail => c.passed += 1,
                Outcome::Fail(_) | Outcome::UnexpectedPass => c.failed += 1,
                Outcome::Skip(_) => c.skipped += 1,
            }
        }
        c
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped of {}",
            self.passed, self.failed, self.skipped, self.total
        )
    }
}

/// Removes terminal colour sequences (pjdfstest colours its output on a terminal).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `NAME   ok` and the like: a test case's line. Everything else belongs to the case before.
fn case_line(line: &str) -> Option<(&str, &str)> {
    const WORDS: [&str; 5] = [
        "ok",
        "FAILED",
        "skipped",
        "failed as expected",
        "PASSED UNEXPECTEDLY",
    ];
    if line.starts_with(char::is_whitespace) {
        return None;
    }
    let (name, rest) = line.split_once(char::is_whitespace)?;
    let word = rest.trim();
    let name_ok = name.contains("::")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    (name_ok && WORDS.contains(&word)).then_some((name, word))
}

/// Parses pjdfstest's output into outcomes and the counts of its closing `Summary:` line.
pub fn parse(output: &str) -> Result<(Results, Counts), String> {
    let output = strip_ansi(output);
    let mut results = Results::new();
    let mut current: Option<(String, String, Vec<String>)> = None;
    let mut summary = None;
    // Backtraces (with RUST_BACKTRACE set) are long and say nothing about the filesystem.
    let mut in_backtrace = false;
    let finish = |results: &mut Results, c: Option<(String, String, Vec<String>)>| {
        if let Some((name, word, detail)) = c {
            let detail = detail.join("\n").trim().to_string();
            let o = match word.as_str() {
                "ok" => Outcome::Pass,
                "FAILED" => Outcome::Fail(detail),
                "skipped" => Outcome::Skip(detail),
                "failed as expected" => Outcome::ExpectedFail,
                _ => Outcome::UnexpectedPass,
            };
            results.insert(name, o);
        }
    };
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("Summary: ") {
            finish(&mut results, current.take());
            summary = Some(parse_summary(rest)?);
        } else if let Some((name, word)) = case_line(line) {
            finish(&mut results, current.take());
            in_backtrace = false;
            if results.contains_key(name) {
                return Err(format!("test case {name} reported twice"));
            }
            current = Some((name.to_string(), word.to_string(), Vec::new()));
        } else if line.starts_with("Backtrace:") {
            in_backtrace = true;
        } else if let Some((_, _, detail)) = current.as_mut() {
            if !in_backtrace && !line.trim().is_empty() {
                detail.push(line.trim_end().to_string());
            }
        }
    }
    finish(&mut results, current.take());
    let summary = summary.ok_or("no `Summary:` line: pjdfstest did not finish")?;
    let counted = Counts::of(&results);
    if counted != summary {
        return Err(format!(
            "pjdfstest's summary ({summary}) does not match the lines read ({counted})"
        ));
    }
    if results.is_empty() {
        return Err("pjdfstest ran no test case".into());
    }
    Ok((results, summary))
}

/// `0 failed, 13 skipped, 385 passed, 0 expected failures, 398 total`
fn parse_summary(s: &str) -> Result<Counts, String> {
    let mut c = Counts::default();
    let mut expected = 0;
    for part in s.split(',') {
        let mut words = part.split_whitespace();
        let n: usize = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| format!("cannot read the summary {s:?}"))?;
        match words.next() {
            Some("failed") => c.failed = n,
            Some("skipped") => c.skipped = n,
            Some("passed") => c.passed = n,
            Some("expected") => expected = n,
            Some("total") => c.total = n,
            _ => return Err(format!("cannot read the summary {s:?}")),
        }
    }
    c.passed += expected;
    Ok(c)
}

/// The configuration file: the project's, with `allow_remount` set as asked.
pub fn config(dir: &Path, allow_remount: bool) -> PathBuf {
    let text = std::fs::read_to_string(setup::here().join("pjdfstest.toml")).unwrap();
    assert!(text.contains("allow_remount = false"));
    let text = text.replace(
        "allow_remount = false",
        &format!("allow_remount = {allow_remount}"),
    );
    let name = if allow_remount {
        "pjdfstest-remount.toml"
    } else {
        "pjdfstest.toml"
    };
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// One pjdfstest run and what came of it.
pub struct Run {
    pub ran: Ran,
    pub results: Results,
}

/// Runs pjdfstest in `dir` with `config`, `secondary` as the other filesystem of the EXDEV
/// tests, on the test cases whose names contain one of `patterns` (all if empty).
pub fn run(bin: &Path, config: &Path, dir: &Path, secondary: &Path, patterns: &[&str]) -> Run {
    // The erofs cases remount with `mount -o remount,ro` (and `rw`) from PATH: mount(8) then
    // runs the helper of the mount's type, for bkfs this worktree's mount.fuse.bkfs, laid
    // over /sbin in a mount namespace of pjdfstest's own.
    let mut cmd = if patterns == ["erofs"] {
        crate::common::with_mount_helper(config.parent().unwrap(), bin)
    } else {
        Command::new(bin)
    };
    cmd.arg("-c")
        .arg(config)
        .arg("-p")
        .arg(dir)
        .arg("-s")
        .arg(secondary)
        .args(patterns)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1");
    let ran = setup::run(cmd, LIMIT);
    let results = match parse(&ran.stdout) {
        Ok((results, _)) => results,
        Err(e) => panic!(
            "`{}` ({}): {e}\n--- stdout (end) ---\n{}\n--- stderr ---\n{}",
            ran.line,
            ran.status(),
            setup::tail(&ran.stdout, 40),
            setup::tail(&ran.stderr, 40)
        ),
    };
    // pjdfstest exits 1 when a test case failed; anything else is its own trouble.
    let any_failed = results.values().any(Outcome::failed);
    if ran.timed_out || !(ran.code == Some(0) || (ran.code == Some(1) && any_failed)) {
        panic!(
            "`{}`: {}\n--- stderr ---\n{}",
            ran.line,
            ran.status(),
            setup::tail(&ran.stderr, 40)
        );
    }
    Run { ran, results }
}

/// `mount -o remount,ro MNT` and `mount -o remount,rw MNT` through mount(8) and this
/// worktree's helper ([`crate::common::with_mount_helper`], with `work` for its files), as a
/// user makes a mount read-only and writable again: in between, a write must fail with EROFS
/// and a read work; after, a write must work. What went wrong, as readable lines (the mount
/// is put back read-write with the kernel's remount if mount(8) could not).
pub fn remount_through_mount8(work: &Path, mnt: &Path) -> Vec<String> {
    let mount8 = |opts: &str| {
        crate::common::with_mount_helper(work, "mount")
            .args(["-o", opts])
            .arg(mnt)
            .output()
            .unwrap()
    };
    let failed = |opts: &str, out: &std::process::Output| {
        format!(
            "`mount -o {opts} {}` fails ({}): {}",
            mnt.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    };
    let mut problems = Vec::new();
    let probe = mnt.join("remount-probe");
    let ro = mount8("remount,ro");
    if ro.status.success() {
        match std::fs::write(&probe, b"x") {
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
            other => problems.push(format!(
                "after `mount -o remount,ro`, a write gave {other:?}, not EROFS"
            )),
        }
        if let Err(e) = std::fs::read_dir(mnt).and_then(|mut d| d.next().transpose()) {
            problems.push(format!("after `mount -o remount,ro`, a read failed: {e}"));
        }
    } else {
        problems.push(failed("remount,ro", &ro));
    }
    let rw = mount8("remount,rw");
    if rw.status.success() {
        match std::fs::write(&probe, b"x").and_then(|()| std::fs::remove_file(&probe)) {
            Ok(()) => {}
            Err(e) => problems.push(format!("after `mount -o remount,rw`, a write failed: {e}")),
        }
    } else {
        problems.push(failed("remount,rw", &rw));
        let back = Command::new("mount")
            .args(["-i", "-o", "remount,rw"])
            .arg(mnt)
            .output()
            .unwrap();
        assert!(back.status.success(), "mount -i -o remount,rw: {back:?}");
    }
    problems
}

/// Whether pjdfstest skipped `outcome` only because remounts are off in its configuration.
pub fn skipped_for_remount(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Skip(why) if why.contains("allow_remount"))
}

/// Runs the whole suite in two parts: every test case with remounts off, `rounds` times in a
/// row (a case fails if it fails in any round), then the `erofs` ones alone with remounts on,
/// in `erofs_dir` (which must be on a filesystem of its own: pjdfstest remounts it read-only).
/// Apart, because some cases leave a file open for writing in pjdfstest's process, and a
/// filesystem with a writer cannot be remounted read-only. `between` runs before the second
/// part and what it returns is held during it.
pub fn run_suite<G>(
    bin: &Path,
    work: &Path,
    dir: &Path,
    secondary: &Path,
    erofs_dir: &Path,
    rounds: usize,
    between: impl FnOnce() -> G,
) -> (Results, Duration) {
    let mut results = Results::new();
    let mut elapsed = Duration::ZERO;
    for round in 1..=rounds {
        let main = run(bin, &config(work, false), dir, secondary, &[]);
        elapsed += main.ran.elapsed;
        if rounds > 1 {
            println!(
                "pjdfstest round {round} of {rounds}: {} in {:.1} s",
                Counts::of(&main.results),
                main.ran.elapsed.as_secs_f64()
            );
        }
        for (name, o) in main.results {
            let o = match o {
                Outcome::Fail(detail) if rounds > 1 => {
                    Outcome::Fail(format!("{detail}\n(in round {round} of {rounds})"))
                }
                o => o,
            };
            match results.get(&name) {
                Some(before) if before.failed() || !o.failed() => {}
                _ => {
                    results.insert(name, o);
                }
            }
        }
    }
    {
        let _held = between();
        let erofs = run(bin, &config(work, true), erofs_dir, secondary, &["erofs"]);
        elapsed += erofs.ran.elapsed;
        for (name, o) in erofs.results {
            results.insert(name, o);
        }
    }
    let left: Vec<&String> = results
        .iter()
        .filter(|(_, o)| skipped_for_remount(o))
        .map(|(n, _)| n)
        .collect();
    assert!(
        left.is_empty(),
        "cases skipped for want of remounts that the erofs run did not run: {left:?}"
    );
    (results, elapsed)
}

/// Test cases that cannot apply to a bkfs mount, with the reason (docs/CONFORMANCE.md).
/// A bkfs run may skip these; it may skip no other case that ran natively.
pub const CANNOT_APPLY_TO_FUSE: &[(&str, &str)] = &[(
    "link::link_count_max",
    "glibc's pathconf(_PC_LINK_MAX) knows a link limit only by the filesystem's statfs \
     magic and answers 127 (\"unknown\") for FUSE, and pjdfstest skips a limit it cannot know; \
     the backing ext4's EMLINK (65000 links) passes through unchanged",
)];

/// The test cases that fail on bkfs but not natively, and those skipped on bkfs but not
/// natively without a reason listed in [`CANNOT_APPLY_TO_FUSE`], as readable lines.
pub fn regressions(native: &Results, bkfs: &Results) -> Vec<String> {
    let mut out = Vec::new();
    for (name, n) in native {
        let Some(b) = bkfs.get(name) else {
            out.push(format!("{name}: ran natively but not on bkfs"));
            continue;
        };
        match b {
            b if b.failed() && !n.failed() => out.push(format!(
                "{name}: FAILED on bkfs, {n:?} natively\n{}",
                indent(b)
            )),
            Outcome::Skip(why)
                if !matches!(n, Outcome::Skip(_))
                    && !CANNOT_APPLY_TO_FUSE.iter().any(|(c, _)| c == name) =>
            {
                out.push(format!(
                    "{name}: skipped on bkfs ({why}), {n:?} natively, and not listed as \
                     one that cannot apply to FUSE"
                ))
            }
            _ => {}
        }
    }
    for name in bkfs.keys().filter(|n| !native.contains_key(*n)) {
        out.push(format!("{name}: ran on bkfs but not natively"));
    }
    out
}

fn indent(o: &Outcome) -> String {
    let text = match o {
        Outcome::Fail(t) => t.as_str(),
        _ => "(passed, but listed as an expected failure)",
    };
    let mut s = String::new();
    for l in text.lines() {
        let _ = writeln!(s, "        {l}");
    }
    s.trim_end().to_string()
}

/// Every failed or skipped case of `results`, one per line, for the log.
pub fn report(results: &Results) -> String {
    let mut s = String::new();
    for (name, o) in results {
        match o {
            Outcome::Fail(_) | Outcome::UnexpectedPass => {
                let _ = writeln!(s, "    FAILED  {name}\n{}", indent(o));
            }
            Outcome::Skip(why) => {
                let _ = writeln!(s, "    skipped {name}: {}", why.replace('\n', " "));
            }
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
unlink::remove_type::symlink                                                  ok
unlink::open_file_not_freed                                               FAILED
\tassertion `left == right` failed
  left: 1
 right: 0
Backtrace:
   0: std::backtrace::Backtrace::create
link::link_count_max                                                     skipped
\tCannot get value for LINK_MAX: filesystem limit is unknown
\x1b[34mopen::eisdir\x1b[0m                                                                  \x1b[32mok\x1b[0m

Summary: 1 failed, 1 skipped, 2 passed, 0 expected failures, 4 total
";

    #[test]
    fn pjdfstest_output_is_read_case_by_case() {
        let (r, c) = parse(SAMPLE).unwrap();
        assert_eq!(
            c,
            Counts {
                failed: 1,
                skipped: 1,
                passed: 2,
                total: 4
            }
        );
        assert_eq!(r["unlink::remove_type::symlink"], Outcome::Pass);
        assert_eq!(r["open::eisdir"], Outcome::Pass);
        assert_eq!(
            r["unlink::open_file_not_freed"],
            Outcome::Fail("assertion `left == right` failed\n  left: 1\n right: 0".into())
        );
        assert!(matches!(&r["link::link_count_max"], Outcome::Skip(w) if w.contains("LINK_MAX")));
    }

    #[test]
    fn a_run_cut_short_or_miscounted_is_an_error() {
        assert!(parse("open::eisdir   ok\n").is_err());
        assert!(parse(&SAMPLE.replace("2 passed", "3 passed")).is_err());
    }

    #[test]
    fn only_new_failures_and_unlisted_skips_are_regressions() {
        let native: Results = [
            ("a::x", Outcome::Pass),
            ("a::y", Outcome::Fail("native too".into())),
            ("a::z", Outcome::Pass),
            ("link::link_count_max", Outcome::Pass),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut bkfs = native.clone();
        bkfs.insert("a::y".into(), Outcome::Fail("still".into()));
        bkfs.insert("link::link_count_max".into(), Outcome::Skip("127".into()));
        assert!(regressions(&native, &bkfs).is_empty());
        bkfs.insert("a::x".into(), Outcome::Fail("boom".into()));
        bkfs.insert("a::z".into(), Outcome::Skip("why".into()));
        let r = regressions(&native, &bkfs);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].starts_with("a::x: FAILED") && r[0].contains("boom"));
        assert!(r[1].starts_with("a::z: skipped"));
    }
}
