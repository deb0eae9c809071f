//! Presentation: summaries, tables, listings.

use std::fmt::Write;

use crate::store::check::Report as CheckReport;
use crate::store::gc::Report as GcReport;
use crate::store::{Kind, Node, Result, Snapshot, StoreReader};

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// The one line a backup prints at the end.
pub fn backup_summary(s: &Snapshot) -> String {
    let st = &s.stats;
    format!(
        "snapshot {} saved: {} files, {} dirs, {}; read {}, new {}, stored {}; dedup {:.2}x, compression {:.2}x; {:.2} s, {}/s",
        s.name,
        st.files,
        st.dirs,
        bytes(st.bytes),
        bytes(st.bytes_read),
        bytes(st.bytes_new),
        bytes(st.bytes_stored),
        ratio(st.bytes_read, st.bytes_new),
        ratio(st.bytes_new, st.bytes_stored),
        st.seconds,
        bytes((st.bytes as f64 / st.seconds.max(1e-9)) as u64),
    )
}

pub fn snapshot_table(snaps: &[Snapshot]) -> String {
    let w = snaps.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:w$}  {:30}  {:>9}  {:>10}  {:16}  SOURCE\n",
        "NAME", "TIME", "FILES", "SIZE", "CONSISTENCY"
    );
    for s in snaps {
        // A backup of a plain directory is "as read", not a point in time.
        let consistency = s
            .capture
            .as_ref()
            .map(|c| c.consistency.as_str())
            .unwrap_or("as_read");
        let _ = writeln!(
            out,
            "{:w$}  {:30}  {:>9}  {:>10}  {:16}  {}",
            s.name,
            s.time,
            s.stats.files,
            bytes(s.stats.bytes),
            consistency,
            s.source
        );
    }
    out
}

/// Names as shell-safe text: printable UTF-8 as is, other bytes as `\xNN`.
pub fn escape(name: &[u8]) -> String {
    let mut out = String::new();
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut b = [0; 4];
                    for x in c.encode_utf8(&mut b).bytes() {
                        let _ = write!(out, "\\x{x:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        Kind::File => '-',
        Kind::Dir => 'd',
        Kind::Symlink => 'l',
        Kind::Fifo => 'p',
        Kind::Chr => 'c',
        Kind::Blk => 'b',
    };
    let m = n.mode;
    let bit = |b: u32, c: char| if m & b != 0 { c } else { '-' };
    let special = |x: bool, s: bool, lower: char, upper: char| match (x, s) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        _ => '-',
    };
    format!(
        "{t}{}{}{}{}{}{}{}{}{}",
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(m & 0o100 != 0, m & 0o4000 != 0, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(m & 0o010 != 0, m & 0o2000 != 0, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(m & 0o001 != 0, m & 0o1000 != 0, 't', 'T'),
    )
}

fn ls_line(n: &Node, path: &str, long: bool) -> String {
    if !long {
        return path.to_string();
    }
    let mtime =
        std::time::UNIX_EPOCH + std::time::Duration::new(n.mtime.sec.max(0) as u64, n.mtime.nsec);
    let mut line = format!(
        "{} {:>5} {:>5} {:>12} {} {}",
        mode_string(n),
        n.uid,
        n.gid,
        n.size,
        humantime::format_rfc3339_nanos(mtime),
        path
    );
    if let Some(t) = &n.target {
        let _ = write!(line, " -> {}", escape(t));
    }
    line
}

pub fn ls(
    reader: &StoreReader,
    node: &Node,
    path: &str,
    long: bool,
    recursive: bool,
) -> Result<()> {
    let Some(sub) = node.subtree else {
        println!("{}", ls_line(node, &escape(&node.name), long));
        return Ok(());
    };
    let prefix = path.trim_matches('/');
    let tree = reader.tree(&sub)?;
    for n in &tree.nodes {
        let p = if prefix.is_empty() {
            escape(&n.name)
        } else {
            format!("{prefix}/{}", escape(&n.name))
        };
        println!("{}", ls_line(n, &p, long));
        if recursive && n.kind == Kind::Dir {
            ls(reader, n, &p, long, recursive)?;
        }
    }
    Ok(())
}

/// `+ path` added, `- path` removed, `M path` content or metadata changed.
/// Identical subtrees (same id) are skipped without being read.
pub fn diff(reader: &StoreReader, a: &Snapshot, b: &Snapshot) -> Result<()> {
    let ta = reader.tree(&a.tree)?;
    let tb = reader.tree(&b.tree)?;
    diff_nodes(reader, ta.nodes.first(), tb.nodes.first(), "")
}

fn same_meta(x: &Node, y: &Node) -> bool {
    x.kind == y.kind
        && x.mode == y.mode
        && x.uid == y.uid
        && x.gid == y.gid
        && x.size == y.size
        && x.mtime == y.mtime
        && x.target == y.target
        && x.xattrs == y.xattrs
        && x.content == y.content
        && x.rdev == y.rdev
}

fn diff_nodes(reader: &StoreReader, a: Option<&Node>, b: Option<&Node>, path: &str) -> Result<()> {
    match (a, b) {
        (Some(x), Some(y)) => {
            if x.kind != Kind::Dir || y.kind != Kind::Dir {
                if !same_meta(x, y) {
                    println!("M {path}");
                }
                return Ok(());
            }
            if !path.is_empty()
                && !same_meta(
                    &Node {
                        subtree: None,
                        ..x.clone()
                    },
                    &Node {
                        subtree: None,
                        ..y.clone()
                    },
                )
            {
                println!("M {path}/");
            }
            if x.subtree == y.subtree {
                return Ok(());
            }
            let (ta, tb) = (
                reader.tree(&x.subtree.unwrap_or_default())?,
                reader.tree(&y.subtree.unwrap_or_default())?,
            );
            let mut names: Vec<&[u8]> = ta
                .nodes
                .iter()
                .chain(&tb.nodes)
                .map(|n| n.name.as_slice())
                .collect();
            names.sort_unstable();
            names.dedup();
            for n in names {
                let p = if path.is_empty() {
                    escape(n)
                } else {
                    format!("{path}/{}", escape(n))
                };
                diff_nodes(reader, ta.find(n), tb.find(n), &p)?;
            }
        }
        (None, Some(y)) => println!("+ {path}{}", if y.kind == Kind::Dir { "/" } else { "" }),
        (Some(x), None) => println!("- {path}{}", if x.kind == Kind::Dir { "/" } else { "" }),
        (None, None) => {}
    }
    Ok(())
}

pub fn gc_summary(r: &GcReport) -> String {
    format!(
        "gc: {} packs deleted, {} repacked ({} moved), {} unused blobs removed, {} freed",
        r.packs_deleted,
        r.packs_repacked,
        bytes(r.bytes_repacked),
        r.blobs_deleted,
        bytes(r.bytes_freed)
    )
}

pub fn check_report(r: &CheckReport) -> String {
    let mut out = String::new();
    for w in &r.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for e in &r.errors {
        let _ = writeln!(out, "error: {e}");
    }
    for d in &r.damaged {
        let _ = writeln!(out, "damaged: pack {} chunk {}: {}", d.pack, d.id, d.reason);
        for f in &d.files {
            let _ = writeln!(out, "  used by {f}");
        }
    }
    let verified = if r.bytes_verified > 0 {
        format!(", {} verified", bytes(r.bytes_verified))
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "check: {} snapshots, {} packs, {} blobs{verified}: {}",
        r.snapshots,
        r.packs,
        r.blobs,
        if r.ok() { "no errors" } else { "ERRORS FOUND" }
    );
    out
}
