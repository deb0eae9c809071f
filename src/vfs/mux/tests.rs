//! The mux without a mount: flat test trees stand in for the live tree
//! and the virtual ones, and record what each was asked.
use super::*;
use crate::vfs::{Attr, Time};
use parking_lot::Mutex;
use std::time::Duration;

/// A tree of one directory (its root) holding named files, in namespace
/// `ns`; it records the requests it gets.
struct Flat {
    ns: Namespace,
    root: NodeId,
    names: Vec<&'static str>,
    seen: Mutex<Vec<String>>,
}

impl Flat {
    fn new(ns: Namespace, root: u64, names: &[&'static str]) -> Arc<Flat> {
        Arc::new(Flat {
            ns,
            root: NodeId(root),
            names: names.to_vec(),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn id_of(&self, k: usize) -> u64 {
        self.ns.bits() | (100 + k as u64)
    }

    fn attr(&self, id: u64) -> Attr {
        let kind = if id == self.root.0 {
            libc::S_IFDIR
        } else {
            libc::S_IFREG
        };
        Attr::synthetic(id, kind, 0o755, (0, 0), Time::default())
    }

    fn saw(&self, what: String) {
        self.seen.lock().push(what);
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().clone()
    }
}

impl Tree for Flat {
    fn lookup(&self, _ctx: &Ctx, parent: NodeId, name: &OsStr) -> Result<Entry> {
        self.saw(format!("lookup {parent} {}", name.to_string_lossy()));
        if parent != self.root {
            return Err(Errno::ENOTDIR);
        }
        let k = self
            .names
            .iter()
            .position(|n| n.as_bytes() == name.as_bytes())
            .ok_or(Errno::ENOENT)?;
        Ok(Entry {
            attr: self.attr(self.id_of(k)),
            ttl: Duration::from_secs(1),
        })
    }
    fn forget(&self, id: NodeId, n: u64) {
        self.saw(format!("forget {id} {n}"));
    }
    fn getattr(&self, id: NodeId, _fh: Option<u64>) -> Result<AttrOut> {
        Ok(AttrOut {
            attr: self.attr(id.0),
            ttl: Duration::from_secs(2),
        })
    }
    fn rename(
        &self,
        _ctx: &Ctx,
        parent: NodeId,
        name: &OsStr,
        _new_parent: NodeId,
        new_name: &OsStr,
        _flags: u32,
    ) -> Result<()> {
        self.saw(format!(
            "rename {parent} {} {}",
            name.to_string_lossy(),
            new_name.to_string_lossy()
        ));
        Ok(())
    }
    fn open(&self, _ctx: &Ctx, _id: NodeId, _flags: i32) -> Result<Opened> {
        Ok(Opened::plain(7))
    }
    fn read(&self, _id: NodeId, _fh: u64, _offset: u64, _buf: &mut [u8]) -> Result<usize> {
        Ok(0)
    }
    fn opendir(&self, _id: NodeId) -> Result<Opened> {
        Ok(Opened::plain(1))
    }
    fn readdir(
        &self,
        id: NodeId,
        _fh: u64,
        offset: u64,
        plus: bool,
        add: &mut AddEntry<'_>,
    ) -> Result<()> {
        for (k, name) in self.names.iter().enumerate().skip(offset as usize) {
            let ino = self.id_of(k);
            let e = DirEntry {
                name: OsStr::new(name),
                ino,
                kind: libc::S_IFREG,
                next: k as u64 + 1,
                attr: plus.then(|| self.attr(ino)),
                ttl: Duration::from_secs(1),
            };
            if !add(&e) {
                break;
            }
        }
        self.saw(format!("readdir {id}"));
        Ok(())
    }
    fn statfs(&self, id: NodeId) -> Result<Statfs> {
        self.saw(format!("statfs {id}"));
        Ok(crate::os::zeroed_statvfs())
    }
    fn getxattr(&self, _id: NodeId, _name: &OsStr, _size: u32) -> Result<Xattr> {
        Err(Errno::ENODATA)
    }
    fn listxattr(&self, _id: NodeId, _size: u32) -> Result<Xattr> {
        Ok(Xattr::Size(0))
    }
}

const CONTROL_DIR: u64 = (1 << 56) | 1;
const SNAPSHOTS_DIR: u64 = (2 << 56) | 1;

fn mux(visible: bool) -> (Mux, Arc<Flat>, Arc<Flat>, Arc<Flat>) {
    let live = Flat::new(Namespace::Live, 1, &["a", "b"]);
    let control = Flat::new(Namespace::Control, CONTROL_DIR, &["snapshot"]);
    let snaps = Flat::new(Namespace::Snapshots, SNAPSHOTS_DIR, &["nightly"]);
    let m = Mux::new(
        live.clone(),
        control.clone(),
        snaps.clone(),
        vec![
            Virtual {
                name: ".control".into(),
                id: NodeId(CONTROL_DIR),
            },
            Virtual {
                name: ".snapshots".into(),
                id: NodeId(SNAPSHOTS_DIR),
            },
        ],
        visible,
    );
    (m, live, control, snaps)
}

fn names(m: &Mux, id: NodeId, offset: u64, room: usize) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    m.readdir(id, 1, offset, false, &mut |e: &DirEntry<'_>| {
        if out.len() == room {
            return false;
        }
        out.push((e.name.to_string_lossy().into_owned(), e.next));
        true
    })
    .unwrap();
    out
}

#[test]
fn requests_go_to_the_tree_owning_the_namespace() {
    let (m, live, control, snaps) = mux(false);
    let ctx = Ctx::default();
    let e = m.lookup(&ctx, NodeId::ROOT, OsStr::new("a")).unwrap();
    assert!(Namespace::Live.owns(e.id()));
    let e = m
        .lookup(&ctx, NodeId(CONTROL_DIR), OsStr::new("snapshot"))
        .unwrap();
    assert!(Namespace::Control.owns(e.id()));
    m.forget(NodeId(e.id()), 1);
    let e = m
        .lookup(&ctx, NodeId(SNAPSHOTS_DIR), OsStr::new("nightly"))
        .unwrap();
    assert!(Namespace::Snapshots.owns(e.id()));
    assert_eq!(live.seen(), vec!["lookup 0x1 a"]);
    assert_eq!(control.seen().len(), 2, "{:?}", control.seen());
    assert_eq!(snaps.seen().len(), 1);
    // Pending-view ids go to the snapshots tree too.
    m.forget(NodeId(Namespace::Pending.bits() | 5), 2);
    assert_eq!(
        snaps.seen().last().unwrap(),
        &format!("forget {:#x} 2", Namespace::Pending.bits() | 5)
    );
}

#[test]
fn an_id_of_no_tree_is_stale() {
    let (m, ..) = mux(false);
    let stale = NodeId(9 << 56);
    assert_eq!(m.getattr(stale, None).err(), Some(Errno::ESTALE));
    assert_eq!(
        m.lookup(&Ctx::default(), stale, OsStr::new("x")).err(),
        Some(Errno::ESTALE)
    );
    assert_eq!(m.opendir(stale).err(), Some(Errno::ESTALE));
    // Forgetting one is harmless.
    m.forget(stale, 1);
}

#[test]
fn virtual_directories_are_found_by_name_and_listed_only_when_visible() {
    let (m, live, ..) = mux(false);
    let ctx = Ctx::default();
    let e = m
        .lookup(&ctx, NodeId::ROOT, OsStr::new(".snapshots"))
        .unwrap();
    assert_eq!(e.id(), SNAPSHOTS_DIR);
    assert_eq!(e.ttl, Duration::from_secs(2), "the owning tree's getattr");
    assert!(live.seen().is_empty(), "not asked of the live tree");
    // Only in the root.
    assert_eq!(
        m.lookup(&ctx, NodeId(CONTROL_DIR), OsStr::new(".snapshots"))
            .err(),
        Some(Errno::ENOENT)
    );
    let hidden: Vec<String> = names(&m, NodeId::ROOT, 0, 100)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(hidden, ["a", "b"]);

    let (m, ..) = mux(true);
    let all = names(&m, NodeId::ROOT, 0, 100);
    let listed: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(listed, ["a", "b", ".control", ".snapshots"]);
    // A listing resumed at any offset goes on where it stopped.
    for k in 0..all.len() {
        let first = names(&m, NodeId::ROOT, 0, k + 1);
        let rest = names(&m, NodeId::ROOT, first.last().unwrap().1, 100);
        let joined: Vec<String> = first.iter().chain(&rest).map(|(n, _)| n.clone()).collect();
        assert_eq!(joined, listed, "resumed after {}", k + 1);
    }
}

#[test]
fn the_live_tree_cannot_take_or_remove_a_virtual_name() {
    let (m, live, ..) = mux(false);
    let ctx = Ctx::default();
    let root = NodeId::ROOT;
    let name = OsStr::new(".control");
    assert_eq!(m.mkdir(&ctx, root, name, 0o755).err(), Some(Errno::EEXIST));
    assert_eq!(
        m.mknod(&ctx, root, name, 0o644, 0).err(),
        Some(Errno::EEXIST)
    );
    assert_eq!(
        m.symlink(&ctx, root, name, OsStr::new("x")).err(),
        Some(Errno::EEXIST)
    );
    assert_eq!(
        m.create(&ctx, root, name, 0o644, libc::O_WRONLY).err(),
        Some(Errno::EEXIST)
    );
    assert_eq!(m.unlink(&ctx, root, name).err(), Some(Errno::EPERM));
    assert_eq!(m.rmdir(&ctx, root, name).err(), Some(Errno::EPERM));
    assert_eq!(
        m.rename(&ctx, root, OsStr::new("a"), root, name, 0).err(),
        Some(Errno::EPERM)
    );
    assert_eq!(
        m.link(&ctx, NodeId(live.id_of(0)), root, name).err(),
        Some(Errno::EEXIST)
    );
    assert!(live.seen().is_empty(), "{:?}", live.seen());
    // Elsewhere the name is an ordinary one.
    m.rename(&ctx, root, OsStr::new("a"), root, OsStr::new("c"), 0)
        .unwrap();
    assert_eq!(live.seen(), vec!["rename 0x1 a c"]);
}

#[test]
fn renames_and_links_between_trees_are_cross_device_or_read_only() {
    let (m, ..) = mux(false);
    let ctx = Ctx::default();
    let (root, snaps) = (NodeId::ROOT, NodeId(SNAPSHOTS_DIR));
    let n = OsStr::new("x");
    assert_eq!(
        m.rename(&ctx, root, n, snaps, n, 0).err(),
        Some(Errno::EXDEV)
    );
    assert_eq!(
        m.rename(&ctx, snaps, n, root, n, 0).err(),
        Some(Errno::EXDEV)
    );
    assert_eq!(
        m.rename(&ctx, snaps, n, NodeId(CONTROL_DIR), n, 0).err(),
        Some(Errno::EROFS)
    );
    assert_eq!(
        m.link(&ctx, NodeId(SNAPSHOTS_DIR), root, n).err(),
        Some(Errno::EXDEV)
    );
    assert_eq!(
        m.copy_file_range(root, 1, 0, snaps, 1, 0, 10, 0).err(),
        Some(Errno::EXDEV)
    );
}

#[test]
fn statfs_is_the_live_roots_whatever_is_asked() {
    let (m, live, ..) = mux(false);
    m.statfs(NodeId(SNAPSHOTS_DIR)).unwrap();
    assert_eq!(live.seen(), vec!["statfs 0x1"]);
}
