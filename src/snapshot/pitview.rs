//! The view of a snapshot whose copy is not sealed yet: `.snapshots/NAME/`
//! served from its point in time (live objects and preserved pre-images,
//! through [`AsOf`]), read-only.
//!
//! Ids are the sealed view's ([`crate::snapview::ids::hashed`] of the
//! snapshot's name and the object's source `(dev, ino)`), so hard links
//! share a number, numbers are stable across remounts, and a tool reading
//! the snapshot across its seal sees every object under one number. The
//! `.snapshots/` tree ([`super::tree`]) tells this view's nodes from the sealed view's by asking the view
//! ([`PitView::knows`]). Should two objects hash alike, the newcomer gets
//! an id of [`Namespace::Pending`] from a table instead.
//!
//! Nodes keep their objects while the kernel caches them, which may be
//! far longer than the daemon has descriptors: an object holding a
//! descriptor of its own takes a share of the daemon's budget
//! ([`FdBudget`]), and past it is parked as a file handle (or found again
//! from its parent by name). Once the snapshot is sealed, new lookups go to
//! the store's view and this one only routes what the kernel still holds
//! ([`PitView::retire`] drops every object and open file).

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::ingest::asof::{AsOf, AsOfFile, Key};
use crate::live::nodes::{FdBudget, FdShare};
use crate::live::Xattr;
use crate::os::{self, Errno};
use crate::snapview::{ids, Attr};
use crate::vfs::Namespace;

pub type Result<T> = std::result::Result<T, Errno>;

/// The ids an unsealed view gives where the hashed one is taken (a
/// collision) are in this namespace.
const NS: u64 = Namespace::Pending.bits();

fn errno(e: io::Error) -> Errno {
    os::errno_of(&e)
}

/// The id `(dev, ino)` has in snapshot `name`, in this view and, once
/// sealed, in the store's (barring collisions).
pub fn id_of(name: &str, key: (u64, u64)) -> u64 {
    ids::hashed(name, key.0, key.1)
}

/// The attributes of `st`, shown with id `id` (and the views' I/O size).
pub fn attr_of(id: u64, st: &libc::stat) -> Attr {
    Attr {
        blksize: crate::vfs::BLKSIZE,
        ..Attr::from_stat(st, id)
    }
}

/// How a node keeps its object.
enum Held<O> {
    /// The object; with a share of the budget if it holds a descriptor
    /// (given back with it).
    Obj(O, #[allow(dead_code)] Option<FdShare>),
    /// Parked ([`AsOf::park`]): made usable again at each use.
    Parked(O),
    /// Found again from its parent by its name (past the budget, where it
    /// cannot be parked).
    ByName,
    /// The snapshot is sealed or gone: `.snapshots/` serves the node from the
    /// store's view.
    Retired,
}

struct PitNode<O> {
    key: Key,
    held: Held<O>,
    kind: u32,
    parent: u64,
    /// Its name in `parent` (empty for the root): once the snapshot is
    /// sealed, the node is found again by path in the store's view. For a
    /// file with several names, the last one it was found by.
    name: Vec<u8>,
    lookups: u64,
}

/// One entry of a listing as handed to the adapter.
pub struct Listed {
    pub name: Vec<u8>,
    pub id: u64,
    pub kind: u32,
    /// With `plus`, the attributes (and the id then carries one lookup).
    pub attr: Option<Attr>,
}

/// Ids handed out where the hashed id was another object's.
#[derive(Default)]
struct Table {
    ids: HashMap<Key, u64>,
    next: u64,
}

pub struct PitView<A: AsOf> {
    name: String,
    src: Arc<A>,
    root_id: u64,
    nodes: RwLock<HashMap<u64, PitNode<A::Obj>>>,
    table: Mutex<Table>,
    files: Mutex<HashMap<u64, Arc<A::File>>>,
    dirs: Mutex<HashMap<u64, Arc<Vec<Vec<u8>>>>>,
    next_fh: Mutex<u64>,
    budget: Arc<FdBudget>,
    retired: AtomicBool,
}

impl<A: AsOf> PitView<A> {
    /// The view of `src`, snapshot `name`, whose root's parent is
    /// `parent_id`; nodes holding descriptors share `budget`.
    pub fn new(
        name: String,
        src: Arc<A>,
        parent_id: u64,
        budget: Arc<FdBudget>,
    ) -> io::Result<PitView<A>> {
        let root = src.root()?;
        let key = src.key(&root);
        let view = PitView {
            name,
            src,
            root_id: 0,
            nodes: RwLock::new(HashMap::new()),
            table: Mutex::new(Table::default()),
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: Mutex::new(1),
            budget,
            retired: AtomicBool::new(false),
        };
        let root_id = view.id_for(&HashMap::new(), key);
        let held = view.hold(root);
        view.nodes.write().insert(
            root_id,
            PitNode {
                key,
                held,
                kind: libc::S_IFDIR,
                parent: parent_id,
                name: Vec::new(),
                // The adapter's lookup of the root takes lookups as they come.
                lookups: 0,
            },
        );
        Ok(PitView { root_id, ..view })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn root_id(&self) -> u64 {
        self.root_id
    }

    /// The id of `key`: its hashed id, unless that is taken by another
    /// object among `nodes` (or reserved), then one of the table.
    fn id_for(&self, nodes: &HashMap<u64, PitNode<A::Obj>>, key: Key) -> u64 {
        let mut table = self.table.lock();
        if let Some(&id) = table.ids.get(&key) {
            return id;
        }
        let id = id_of(&self.name, key);
        if ids::usable_hash(id) && nodes.get(&id).is_none_or(|n| n.key == key) {
            return id;
        }
        table.next += 1;
        let id = NS | table.next;
        table.ids.insert(key, id);
        id
    }

    /// How a new node keeps `obj`: as it is while the descriptor budget
    /// allows, else parked, else by name.
    fn hold(&self, obj: A::Obj) -> Held<A::Obj> {
        if !self.src.holds_fd(&obj) {
            return Held::Obj(obj, None);
        }
        if let Some(share) = self.budget.take() {
            return Held::Obj(obj, Some(share));
        }
        match self.src.park(&obj) {
            Some(p) => Held::Parked(p),
            None => Held::ByName,
        }
    }

    /// Node `id`'s object (made usable), type and parent.
    fn obj(&self, id: u64) -> Result<(A::Obj, u32, u64)> {
        let (held, kind, parent, name) = {
            let nodes = self.nodes.read();
            let n = nodes.get(&id).ok_or(Errno::ESTALE)?;
            let held = match &n.held {
                Held::Obj(o, _) => Some((o.clone(), false)),
                Held::Parked(o) => Some((o.clone(), true)),
                Held::ByName => None,
                Held::Retired => return Err(Errno::ESTALE),
            };
            (held, n.kind, n.parent, n.name.clone())
        };
        let obj = match held {
            Some((o, false)) => o,
            Some((o, true)) => self.src.unpark(&o).map_err(errno)?,
            None => {
                let (dir, _, _) = self.obj(parent)?;
                self.src.child(&dir, &name).map_err(errno)?
            }
        };
        Ok((obj, kind, parent))
    }

    fn fh(&self) -> u64 {
        let mut n = self.next_fh.lock();
        *n += 1;
        *n
    }

    /// The snapshot is sealed (or its copy failed): drops every object
    /// and open file this view holds, with their descriptors. The nodes
    /// stay, for `.snapshots/` to find them again in the store's view.
    pub fn retire(&self) {
        if self.retired.swap(true, Ordering::SeqCst) {
            return;
        }
        for n in self.nodes.write().values_mut() {
            n.held = Held::Retired;
        }
        self.files.lock().clear();
        self.dirs.lock().clear();
    }

    /// The root as an entry (`lookup` of the snapshot's name in `.snapshots`).
    pub fn lookup_root(&self) -> Result<Attr> {
        let (obj, _, _) = self.obj(self.root_id)?;
        let st = self.src.stat(&obj).map_err(errno)?;
        self.nodes
            .write()
            .get_mut(&self.root_id)
            .expect("the root stays")
            .lookups += 1;
        Ok(attr_of(self.root_id, &st))
    }

    /// Enters `obj` (named `name` in `parent`) and takes one lookup on it.
    fn enter(&self, parent: u64, name: &[u8], obj: A::Obj) -> Result<Attr> {
        if self.retired.load(Ordering::SeqCst) {
            return Err(Errno::ESTALE);
        }
        let st = self.src.stat(&obj).map_err(errno)?;
        let key = self.src.key(&obj);
        let kind = st.st_mode & libc::S_IFMT;
        let mut nodes = self.nodes.write();
        let id = self.id_for(&nodes, key);
        match nodes.get_mut(&id) {
            Some(n) => {
                n.lookups += 1;
                if kind != libc::S_IFDIR && !matches!(n.held, Held::Retired) {
                    // The name the kernel found it by last is the one
                    // most likely cached: the best way back by name.
                    n.parent = parent;
                    n.name = name.to_vec();
                }
            }
            None => {
                let held = self.hold(obj);
                nodes.insert(
                    id,
                    PitNode {
                        key,
                        held,
                        kind,
                        parent,
                        name: name.to_vec(),
                        lookups: 1,
                    },
                );
            }
        }
        Ok(attr_of(id, &st))
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let (dir, kind, _) = self.obj(parent)?;
        if kind != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        let child = self.src.child(&dir, name.as_bytes()).map_err(errno)?;
        self.enter(parent, name.as_bytes(), child)
    }

    /// The names leading from the view's root to node `id`.
    pub fn path(&self, id: u64) -> Option<Vec<Vec<u8>>> {
        let nodes = self.nodes.read();
        let mut out = Vec::new();
        let mut cur = id;
        while cur != self.root_id {
            let n = nodes.get(&cur)?;
            out.push(n.name.clone());
            cur = n.parent;
            if out.len() > 4096 {
                return None;
            }
        }
        out.reverse();
        Some(out)
    }

    /// The kernel dropped `n` lookups of `id`; returns those this view did
    /// not hand out (once sealed, the store's view hands out the same ids).
    pub fn forget(&self, id: u64, n: u64) -> u64 {
        let mut nodes = self.nodes.write();
        let Some(node) = nodes.get_mut(&id) else {
            return n;
        };
        let mine = n.min(node.lookups);
        node.lookups -= mine;
        if node.lookups == 0 && id != self.root_id {
            nodes.remove(&id);
        }
        n - mine
    }

    /// Whether node `id` belongs to this view.
    pub fn knows(&self, id: u64) -> bool {
        self.nodes.read().contains_key(&id)
    }

    /// Whether the kernel still holds anything of this view.
    pub fn in_use(&self) -> bool {
        let nodes = self.nodes.read();
        nodes.len() > 1 || nodes.get(&self.root_id).is_some_and(|n| n.lookups > 0)
    }

    pub fn getattr(&self, id: u64) -> Result<Attr> {
        let (obj, _, _) = self.obj(id)?;
        let st = self.src.stat(&obj).map_err(errno)?;
        Ok(attr_of(id, &st))
    }

    pub fn readlink(&self, id: u64) -> Result<Vec<u8>> {
        let (obj, kind, _) = self.obj(id)?;
        if kind != libc::S_IFLNK {
            return Err(Errno::EINVAL);
        }
        self.src.readlink(&obj).map_err(errno)
    }

    pub fn open(&self, id: u64, flags: i32) -> Result<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(Errno::EROFS);
        }
        let (obj, kind, _) = self.obj(id)?;
        match kind {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(Errno::EISDIR),
            _ => return Err(Errno::ENXIO),
        }
        let file = self.src.open(&obj).map_err(errno)?;
        let fh = self.fh();
        self.files.lock().insert(fh, Arc::new(file));
        Ok(fh)
    }

    pub fn read(&self, fh: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
        let file = self.files.lock().get(&fh).cloned().ok_or(Errno::EBADF)?;
        let mut done = 0;
        while done < buf.len() {
            let n = file
                .read_at(&mut buf[done..], off + done as u64)
                .map_err(errno)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    pub fn release(&self, fh: u64) {
        self.files.lock().remove(&fh);
    }

    pub fn opendir(&self, id: u64) -> Result<u64> {
        let (obj, kind, _) = self.obj(id)?;
        if kind != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        let mut names = self.src.list(&obj).map_err(errno)?;
        names.sort();
        let fh = self.fh();
        self.dirs.lock().insert(fh, Arc::new(names));
        Ok(fh)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    /// Lists directory `id` (open as `fh`) from `offset` (0: the start;
    /// offset k resumes after entry k), calling `add` until it returns
    /// false. Offsets 1 and 2 are `.` and `..`.
    pub fn readdir(
        &self,
        id: u64,
        fh: u64,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(&Listed, u64) -> bool,
    ) -> Result<()> {
        let names = self.dirs.lock().get(&fh).cloned().ok_or(Errno::EBADF)?;
        let (dir, _, parent) = self.obj(id)?;
        let mut next = offset;
        while next < names.len() as u64 + 2 {
            let listed = match next {
                0 => Listed {
                    name: b".".to_vec(),
                    id,
                    kind: libc::S_IFDIR,
                    attr: if plus { Some(self.getattr(id)?) } else { None },
                },
                1 => Listed {
                    name: b"..".to_vec(),
                    id: parent,
                    kind: libc::S_IFDIR,
                    attr: None,
                },
                k => {
                    let name = &names[(k - 2) as usize];
                    let child = match self.src.child(&dir, name) {
                        Ok(c) => c,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                            next += 1;
                            continue;
                        }
                        Err(e) => return Err(errno(e)),
                    };
                    if plus {
                        let attr = self.enter(id, name, child)?;
                        Listed {
                            name: name.clone(),
                            id: attr.ino,
                            kind: attr.kind,
                            attr: Some(attr),
                        }
                    } else {
                        let st = self.src.stat(&child).map_err(errno)?;
                        let key = self.src.key(&child);
                        let id = self.id_for(&self.nodes.read(), key);
                        Listed {
                            name: name.clone(),
                            id,
                            kind: st.st_mode & libc::S_IFMT,
                            attr: None,
                        }
                    }
                }
            };
            next += 1;
            if !add(&listed, next) {
                if plus && listed.attr.is_some() && next > 2 {
                    self.forget(listed.id, 1);
                }
                break;
            }
        }
        Ok(())
    }

    fn xattrs(&self, id: u64) -> Result<Vec<crate::store::Xattr>> {
        let (obj, _, _) = self.obj(id)?;
        self.src.xattrs(&obj).map_err(errno)
    }

    pub fn listxattr(&self, id: u64, size: u32) -> Result<Xattr> {
        let mut all = Vec::new();
        for x in self.xattrs(id)? {
            all.extend_from_slice(&x.name);
            all.push(0);
        }
        Xattr::answer(all, size)
    }

    pub fn getxattr(&self, id: u64, name: &OsStr, size: u32) -> Result<Xattr> {
        let x = self
            .xattrs(id)?
            .into_iter()
            .find(|x| x.name == name.as_bytes())
            .ok_or(Errno::ENODATA)?;
        Xattr::answer(x.value, size)
    }
}
