//! Mounting and unmounting: the daemon, the mount(8) helper, errors, signals.
//!
//! Over 700 lines: one test per way of mounting or stopping, each
//! self-contained; they share the mount helpers of `tests/common/mount.rs`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

struct Dirs {
    root: PathBuf,
    src: PathBuf,
    mnt: PathBuf,
    /// `root` is bound on itself as a shared mount ([`Dirs::share`]).
    shared: bool,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::Builder::new()
            .prefix("bkfs-mnt-")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        // nobody runs programs of the mount in some tests.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let (src, mnt) = (root.join("src"), root.join("mnt"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&mnt).unwrap();
        fs::write(src.join("hello"), b"world").unwrap();
        Dirs {
            root,
            src,
            mnt,
            shared: false,
        }
    }

    /// Binds `root` on itself as a shared mount of its own, so that a mount
    /// made on `mnt` in another mount namespace ([`mount8`]) shows here too:
    /// the namespace's copy of `root` is a peer of this one.
    fn share(&mut self) {
        let r = self.root.display();
        sh(&format!(
            "mount --bind {r} {r} && mount --make-private {r} && mount --make-shared {r}"
        ));
        self.shared = true;
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if !wait_gone(&self.mnt) {
            // A daemon whose mount did not reach this namespace.
            if let Some(pid) = daemon_of(&self.mnt) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
                wait_gone(&self.mnt);
            }
        }
        if self.shared {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Runs mount(8) with `args` as root, with this worktree's mount/mount.bkfs
/// as the installed helper (`mount.bkfs` and `mount.fuse.bkfs`), without
/// installing it: in a mount namespace of its own ([`with_mount_helper`]).
/// Needs [`Dirs::share`] first for a mount to show here.
fn mount8(d: &Dirs, args: &[&str]) -> std::process::Output {
    assert!(d.shared, "mount8 needs Dirs::share");
    with_mount_helper(&d.root, "mount")
        .args(args)
        .output()
        .unwrap()
}

/// `findmnt -n -o OPTIONS` of `mnt` in a namespace where `mount8_args`
/// (a remount) has just run through mount(8): the mount's own flags as the
/// remount left them (a remount changes the namespace's copy of the mount;
/// only ro/rw, the filesystem's flag, shows in every namespace).
fn remount8_options(d: &Dirs, mount8_args: &[&str]) -> Vec<String> {
    assert!(d.shared, "remount8_options needs Dirs::share");
    let out = with_mount_helper(&d.root, "sh")
        .args([
            "-c",
            "mount \"$@\" && findmnt -n -o OPTIONS --mountpoint \"$0\"",
        ])
        .arg(&d.mnt)
        .args(mount8_args)
        .output()
        .unwrap();
    assert!(out.status.success(), "mount {mount8_args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(',')
        .map(str::to_string)
        .collect()
}

/// The fields of the /proc/mounts line of `mnt`: source, type, options.
fn proc_mounts(mnt: &Path) -> Option<(String, String, Vec<String>)> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(1) == Some(&mnt.to_str().unwrap())).then(|| {
            let opts = f[3].split(',').map(str::to_string).collect();
            (f[0].to_string(), f[2].to_string(), opts)
        })
    })
}

fn umount(mnt: &Path) {
    let out = Command::new("umount").arg(mnt).output().unwrap();
    assert!(out.status.success(), "umount: {out:?}");
    assert!(wait_gone(mnt), "daemon must exit after umount");
}

/// The pid of the daemon serving `mnt`, found by its command line.
fn daemon_of(mnt: &Path) -> Option<i32> {
    let want = mnt.to_str().unwrap();
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"bkfs")) && args.contains(&want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

fn wait_gone(mnt: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon_of(mnt).is_some() || is_mounted(mnt) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn bkfs_mount(src: &Path, mnt: &Path, opts: &[&str]) -> std::process::Output {
    Command::new(BKFS)
        .arg("mount")
        .arg(src)
        .arg(mnt)
        .args(opts)
        .output()
        .unwrap()
}

#[test]
fn the_daemon_detaches_and_umount_stops_it() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    let log = d.root.join("log");
    let out = bkfs_mount(&d.src, &d.mnt, &["-o", &format!("log={}", log.display())]);
    assert!(out.status.success(), "{out:?}");
    // Live as soon as the command returns.
    assert!(is_mounted(&d.mnt));
    assert_eq!(fs::read(d.mnt.join("hello")).unwrap(), b"world");
    let pid = daemon_of(&d.mnt).expect("daemon running");
    assert_ne!(pid, std::process::id() as i32);
    let st = Command::new("umount").arg(&d.mnt).status().unwrap();
    assert!(st.success());
    assert!(wait_gone(&d.mnt), "daemon must exit after umount");
    let log = fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("mounted") && log.contains("unmounted"),
        "{log}"
    );
}

#[test]
fn sigterm_unmounts_cleanly() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    let out = bkfs_mount(&d.src, &d.mnt, &[]);
    assert!(out.status.success(), "{out:?}");
    let pid = daemon_of(&d.mnt).expect("daemon running");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    assert!(wait_gone(&d.mnt), "SIGTERM must unmount and exit");
    assert!(!is_mounted(&d.mnt));
}

#[test]
fn sigterm_with_a_busy_mount_detaches_it() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    assert!(bkfs_mount(&d.src, &d.mnt, &[]).status.success());
    let open = fs::File::open(d.mnt.join("hello")).unwrap();
    let pid = daemon_of(&d.mnt).expect("daemon running");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_mounted(&d.mnt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&d.mnt), "detached from the namespace");
    // The open file still reads, then the daemon goes.
    let mut s = String::new();
    std::io::Read::read_to_string(&mut &open, &mut s).unwrap();
    assert_eq!(s, "world");
    drop(open);
    assert!(wait_gone(&d.mnt));
}

#[test]
fn clear_errors_for_bad_mounts() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    let err = |out: std::process::Output| -> (i32, String) {
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, msg) = err(bkfs_mount(&d.root.join("missing"), &d.mnt, &[]));
    assert_eq!(code, 1);
    assert!(
        msg.contains("source") && msg.contains("No such file"),
        "{msg}"
    );
    let (code, msg) = err(bkfs_mount(&d.src, &d.root, &[]));
    assert_eq!(code, 1);
    assert!(msg.contains("not empty"), "{msg}");
    let (code, msg) = err(bkfs_mount(&d.src, &d.mnt, &["-o", "bogus"]));
    assert_eq!(code, 2);
    assert!(msg.contains("unknown mount option 'bogus'"), "{msg}");
    assert!(bkfs_mount(&d.src, &d.mnt, &[]).status.success());
    let (code, msg) = err(bkfs_mount(&d.src, &d.mnt, &[]));
    assert_eq!(code, 1);
    assert!(msg.contains("already mounted"), "{msg}");
    assert!(Command::new("umount")
        .arg(&d.mnt)
        .status()
        .unwrap()
        .success());
}

#[test]
fn the_mount_helper_accepts_mount8_arguments() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount/mount.bkfs");
    let run = |args: &[&str]| {
        Command::new("sh")
            .arg(&helper)
            .arg(&d.src)
            .arg(&d.mnt)
            .args(args)
            .env("BKFS_BIN", BKFS)
            .output()
            .unwrap()
    };
    // -f (fake) checks and does nothing.
    assert!(run(&["-f", "-o", "noauto"]).status.success());
    assert!(!is_mounted(&d.mnt));
    let out = run(&[
        "-n",
        "-o",
        "rw,noauto,_netdev,nofail,x-systemd.requires=foo,defaults",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(is_mounted(&d.mnt));
    assert_eq!(fs::read(d.mnt.join("hello")).unwrap(), b"world");
    assert!(Command::new("umount")
        .arg(&d.mnt)
        .status()
        .unwrap()
        .success());
    assert!(wait_gone(&d.mnt));
    let out = run(&["-o", "ro,nosuchoption"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchoption"));
}

#[test]
fn single_thread_and_nopassthrough_mounts_work() {
    if !can_mount() {
        return;
    }
    for opts in [
        "threads=1",
        "nopassthrough",
        "passthrough=ro",
        "nowriteback",
        "snapshots=off,writeback",
        "cache_timeout=0",
    ] {
        let m = Mount::with_source(opts, |src| fs::write(src.join("f"), b"data").unwrap());
        assert_eq!(fs::read(m.path("f")).unwrap(), b"data", "{opts}");
        fs::write(m.path("g"), b"more").unwrap();
        assert_eq!(fs::read(m.backing("g")).unwrap(), b"more", "{opts}");
        let status = m.unmount();
        assert!(status.success(), "{opts}: {status}");
    }
}

/// `id -u` (the effective uid) of `prog` run as nobody.
fn euid_as_nobody(prog: &Path) -> String {
    nobody_ok(&format!("{} -u", prog.display()))
        .trim()
        .to_string()
}

#[test]
fn mount8_gives_a_native_mount_typed_fuse_bkfs() {
    if !can_mount() {
        return;
    }
    let mut d = Dirs::new();
    d.share();
    let out = mount8(
        &d,
        &[
            "-t",
            "bkfs",
            d.src.to_str().unwrap(),
            d.mnt.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(is_mounted(&d.mnt));
    // The source as device and the FUSE subtype, as fuse.sshfs; no flag
    // mount(8) was not asked for.
    let (source, fstype, opts) = proc_mounts(&d.mnt).expect("in /proc/mounts");
    assert_eq!(source, d.src.to_str().unwrap());
    assert_eq!(fstype, "fuse.bkfs");
    for flag in ["nodev", "nosuid", "noexec"] {
        assert!(!opts.iter().any(|o| o == flag), "{flag} in {opts:?}");
    }
    let m = d.mnt.display();
    let listed = sh(&format!(
        "findmnt -n -t fuse.bkfs -o SOURCE,FSTYPE --mountpoint {m}"
    ));
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        [d.src.to_str().unwrap(), "fuse.bkfs"]
    );
    assert_eq!(
        sh(&format!("df --output=source {m} | tail -n 1")).trim(),
        d.src.to_str().unwrap()
    );
    // Device files work, as on the filesystem below.
    sh(&format!("mknod {m}/null c 1 3 && mknod {m}/zero c 1 5"));
    fs::write(d.mnt.join("null"), b"discarded").unwrap();
    let mut zeros = [1u8; 8];
    std::io::Read::read_exact(&mut fs::File::open(d.mnt.join("zero")).unwrap(), &mut zeros)
        .unwrap();
    assert_eq!(zeros, [0; 8]);
    // A set-user-id program runs with its owner's uid.
    let id = d.mnt.join("id");
    fs::copy("/usr/bin/id", &id).unwrap();
    fs::set_permissions(&id, fs::Permissions::from_mode(0o4755)).unwrap();
    assert_eq!(euid_as_nobody(&id), "0");
    umount(&d.mnt);
}

#[test]
fn mount8_honours_nodev_nosuid_and_noexec() {
    if !can_mount() {
        return;
    }
    let mut d = Dirs::new();
    d.share();
    // Made on the source directly: a device file and a set-user-id program.
    sh(&format!("mknod {}/null c 1 3", d.src.display()));
    let id = d.src.join("id");
    fs::copy("/usr/bin/id", &id).unwrap();
    fs::set_permissions(&id, fs::Permissions::from_mode(0o4755)).unwrap();
    let (src, mnt) = (d.src.to_str().unwrap(), d.mnt.to_str().unwrap());

    let out = mount8(&d, &["-t", "bkfs", "-o", "nodev,nosuid", src, mnt]);
    assert!(out.status.success(), "{out:?}");
    let (_, _, opts) = proc_mounts(&d.mnt).unwrap();
    assert!(
        opts.contains(&"nodev".into()) && opts.contains(&"nosuid".into()),
        "{opts:?}"
    );
    assert!(!opts.contains(&"noexec".into()), "{opts:?}");
    let err = fs::OpenOptions::new().write(true).open(d.mnt.join("null"));
    assert_eq!(errno_of(err), libc::EACCES);
    assert_eq!(euid_as_nobody(&d.mnt.join("id")), NOBODY.to_string());
    umount(&d.mnt);

    let out = mount8(&d, &["-t", "bkfs", "-o", "noexec", src, mnt]);
    assert!(out.status.success(), "{out:?}");
    let (_, _, opts) = proc_mounts(&d.mnt).unwrap();
    assert!(
        opts.contains(&"noexec".into()) && !opts.contains(&"nodev".into()),
        "{opts:?}"
    );
    let err = Command::new(d.mnt.join("id")).output();
    assert_eq!(errno_of(err), libc::EACCES);
    fs::write(d.mnt.join("null"), b"discarded").unwrap();
    umount(&d.mnt);
}

#[test]
fn fstab_lines_mount_with_their_options_and_mount8_s_own_are_accepted() {
    if !can_mount() {
        return;
    }
    let mut d = Dirs::new();
    d.share();
    let (src, mnt) = (d.src.display(), d.mnt.display());
    let fstab = d.root.join("fstab");
    let run = |line: &str, args: &[&str]| {
        fs::write(&fstab, format!("{src} {mnt} bkfs {line} 0 0\n")).unwrap();
        let mut all = vec!["--fstab", fstab.to_str().unwrap()];
        all.extend_from_slice(args);
        mount8(&d, &all)
    };

    // Options of mount(8), systemd and fstab beside bkfs's own, mounted by
    // its mount point as `mount /mnt/data` does.
    let out = run(
        "defaults,noauto,nofail,_netdev,x-systemd.requires=network.target,x-systemd.automount,\
         comment=bkfs,snapdir=visible",
        &[d.mnt.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    let (source, fstype, opts) = proc_mounts(&d.mnt).unwrap();
    assert_eq!(
        (source.as_str(), fstype.as_str()),
        (d.src.to_str().unwrap(), "fuse.bkfs")
    );
    assert!(
        !opts.iter().any(|o| o.starts_with("no") && o != "noatime"),
        "{opts:?}"
    );
    let names: Vec<_> = fs::read_dir(&d.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.contains(&".snapshots".to_string()),
        "snapdir=visible: {names:?}"
    );
    umount(&d.mnt);

    // `user`: mount(8)'s nosuid, nodev, noexec, as for any filesystem.
    let out = run("user,noauto", &[d.mnt.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let (_, _, opts) = proc_mounts(&d.mnt).unwrap();
    for flag in ["nodev", "nosuid", "noexec"] {
        assert!(opts.contains(&flag.to_string()), "{flag} not in {opts:?}");
    }
    umount(&d.mnt);

    // mount -a mounts the line once.
    let out = run("nofail", &["-a"]);
    assert!(out.status.success(), "{out:?}");
    assert!(is_mounted(&d.mnt));
    let out = run("nofail", &["-a"]);
    assert!(out.status.success(), "{out:?}");
    umount(&d.mnt);

    // An option neither bkfs's nor mount(8)'s is refused, naming it.
    let out = run("frobnicate", &[d.mnt.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown mount option 'frobnicate'"), "{err}");
    assert!(!is_mounted(&d.mnt));
    let out = mount8(
        &d,
        &[
            "-t",
            "bkfs",
            "-o",
            "snapdir=sideways",
            d.src.to_str().unwrap(),
            d.mnt.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("snapdir= takes 'hidden' or 'visible'"),
        "{err}"
    );
    assert!(!is_mounted(&d.mnt));
}

/// Reads work, writes fail with EROFS, and the mount shows `ro` in
/// /proc/mounts and findmnt.
fn assert_read_only(mnt: &Path) {
    assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"world");
    assert!(fs::read_dir(mnt).unwrap().count() > 0);
    assert_eq!(errno_of(fs::write(mnt.join("hello"), b"x")), libc::EROFS);
    assert_eq!(errno_of(fs::write(mnt.join("new"), b"x")), libc::EROFS);
    assert_eq!(errno_of(fs::create_dir(mnt.join("dir"))), libc::EROFS);
    let (_, _, opts) = proc_mounts(mnt).unwrap();
    assert_eq!(opts[0], "ro", "{opts:?}");
    let m = mnt.display();
    let listed = sh(&format!("findmnt -n -o OPTIONS --mountpoint {m}"));
    assert!(listed.starts_with("ro,"), "findmnt: {listed}");
}

/// Writes work again (and are undone).
fn assert_read_write(mnt: &Path) {
    let (_, _, opts) = proc_mounts(mnt).unwrap();
    assert_eq!(opts[0], "rw", "{opts:?}");
    fs::write(mnt.join("new"), b"x").unwrap();
    fs::remove_file(mnt.join("new")).unwrap();
    fs::write(mnt.join("hello"), b"world").unwrap();
}

#[test]
fn the_mount_helper_remounts_with_the_kernel_s_flags_alone() {
    // What mount(8) 2.38 hands the helper for `mount -o remount,ro DIR` when
    // an fstab line names DIR: the line's options, its own among them.
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount/mount.bkfs");
    let out = Command::new("sh")
        .arg(&helper)
        .args(["/srv/data", "/mnt/data", "-f", "-v", "-o"])
        .arg(
            "ro,nodev,noatime,remount,store=/b/s.bkfs,profile=/etc/p.toml,snapshots=off,\
             writeback,log=/var/log/bkfs.log,nofail,_netdev,user_id=0,group_id=0,\
             default_permissions,allow_other",
        )
        .env("BKFS_BIN", "/nonexistent/bkfs")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("-i --options-mode ignore -o remount,ro,nodev,noatime --target /mnt/data\n"),
        "{err}"
    );
    assert!(
        err.contains(
            "not changed by a remount: store=/b/s.bkfs,profile=/etc/p.toml,snapshots=off,\
             writeback,log=/var/log/bkfs.log,nofail,_netdev,user_id=0,group_id=0,\
             default_permissions,allow_other\n"
        ),
        "{err}"
    );
    assert!(!err.contains("bkfs mount"), "{err}");
}

#[test]
fn mount8_remounts_read_only_and_back_by_mount_point() {
    if !can_mount() {
        return;
    }
    let mut d = Dirs::new();
    d.share();
    let (src, mnt) = (d.src.to_str().unwrap(), d.mnt.to_str().unwrap());
    let out = mount8(&d, &["-t", "bkfs", "-o", "nosuid,noatime", src, mnt]);
    assert!(out.status.success(), "{out:?}");
    assert_read_write(&d.mnt);

    // mount(8) runs mount.fuse.bkfs (the type is fuse.bkfs); the flags not
    // named are kept.
    let opts = remount8_options(&d, &["-o", "remount,ro", mnt]);
    assert_eq!(opts[0], "ro", "{opts:?}");
    assert!(
        opts.contains(&"nosuid".into()) && opts.contains(&"noatime".into()),
        "{opts:?}"
    );
    assert_read_only(&d.mnt);
    let opts = remount8_options(&d, &["-o", "remount,rw", mnt]);
    assert_eq!(opts[0], "rw", "{opts:?}");
    assert!(opts.contains(&"nosuid".into()), "{opts:?}");
    assert_read_write(&d.mnt);

    // By the source, as for any filesystem; flags turned on and off.
    let out = mount8(&d, &["-o", "remount,ro", src]);
    assert!(out.status.success(), "{out:?}");
    assert_read_only(&d.mnt);
    let opts = remount8_options(&d, &["-o", "remount,rw,suid,noexec", mnt]);
    assert!(
        opts.contains(&"noexec".into()) && !opts.contains(&"nosuid".into()),
        "{opts:?}"
    );
    assert_read_write(&d.mnt);

    // bkfs's own options keep their mount-time values.
    let out = mount8(&d, &["-o", "remount,snapdir=visible", mnt]);
    assert!(out.status.success(), "{out:?}");
    let names: Vec<_> = fs::read_dir(&d.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.contains(&".snapshots".to_string()), "{names:?}");
    umount(&d.mnt);
}

#[test]
fn mount8_remounts_an_fstab_mount_read_only_and_back() {
    if !can_mount() {
        return;
    }
    let mut d = Dirs::new();
    d.share();
    let fstab = d.root.join("fstab");
    let store = d.root.join("store.bkfs");
    // mount(8) merges the line's options into a remount by its mount point,
    // bkfs's and its own with the kernel's flags.
    fs::write(
        &fstab,
        format!(
            "{} {} bkfs nosuid,snapdir=visible,store={},nofail 0 0\n",
            d.src.display(),
            d.mnt.display(),
            store.display()
        ),
    )
    .unwrap();
    let (fstab, mnt) = (fstab.to_str().unwrap(), d.mnt.to_str().unwrap());
    let out = mount8(&d, &["--fstab", fstab, mnt]);
    assert!(out.status.success(), "{out:?}");
    assert!(store.is_dir());

    let opts = remount8_options(&d, &["--fstab", fstab, "-o", "remount,ro", mnt]);
    assert_eq!(opts[0], "ro", "{opts:?}");
    assert!(opts.contains(&"nosuid".into()), "{opts:?}");
    assert_read_only(&d.mnt);
    let opts = remount8_options(&d, &["--fstab", fstab, "-o", "remount,rw", mnt]);
    assert_eq!(opts[0], "rw", "{opts:?}");
    assert!(opts.contains(&"nosuid".into()), "{opts:?}");
    assert_read_write(&d.mnt);
    assert!(d.mnt.join(".snapshots").is_dir());
    umount(&d.mnt);
}

#[test]
fn an_fstab_line_of_type_fuse_bkfs_mounts() {
    if !can_mount() {
        return;
    }
    let mut d = Dirs::new();
    d.share();
    let fstab = d.root.join("fstab");
    fs::write(
        &fstab,
        format!(
            "{} {} fuse.bkfs nodev,snapdir=visible 0 0\n",
            d.src.display(),
            d.mnt.display()
        ),
    )
    .unwrap();
    let (fstab, mnt) = (fstab.to_str().unwrap(), d.mnt.to_str().unwrap());
    let out = mount8(&d, &["--fstab", fstab, mnt]);
    assert!(out.status.success(), "{out:?}");
    let (source, fstype, opts) = proc_mounts(&d.mnt).unwrap();
    assert_eq!(
        (source.as_str(), fstype.as_str()),
        (d.src.to_str().unwrap(), "fuse.bkfs")
    );
    assert!(opts.contains(&"nodev".into()), "{opts:?}");
    let names: Vec<_> = fs::read_dir(&d.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.contains(&".snapshots".to_string()) && names.contains(&"hello".to_string()),
        "{names:?}"
    );
    let opts = remount8_options(&d, &["--fstab", fstab, "-o", "remount,ro", mnt]);
    assert_eq!(opts[0], "ro", "{opts:?}");
    assert_read_only(&d.mnt);
    let out = mount8(&d, &["--fstab", fstab, "-o", "remount,rw", mnt]);
    assert!(out.status.success(), "{out:?}");
    assert_read_write(&d.mnt);
    umount(&d.mnt);
}

#[test]
fn bkfs_mount_and_mount8_give_the_same_mount() {
    if !can_mount() {
        return;
    }
    let mut d = Dirs::new();
    d.share();
    let (src, mnt) = (d.src.to_str().unwrap(), d.mnt.to_str().unwrap());
    // mount(8) passes neither `dev`, `suid`, `exec` nor `defaults` on; it
    // adds noexec,nosuid,nodev for `user`, and keeps later positives.
    for opts in [
        "",
        "dev,suid,exec",
        "nodev",
        "nosuid,noexec",
        "ro,noatime",
        "user",
        "users,dev,suid",
        "owner",
        "defaults,nofail,_netdev",
    ] {
        let mut args = vec!["-t", "bkfs"];
        let mut direct = vec![];
        if !opts.is_empty() {
            args.extend(["-o", opts]);
            direct.extend(["-o", opts]);
        }
        args.extend([src, mnt]);
        let out = mount8(&d, &args);
        assert!(out.status.success(), "{opts}: {out:?}");
        let through_mount8 = proc_mounts(&d.mnt).unwrap();
        umount(&d.mnt);
        let out = bkfs_mount(&d.src, &d.mnt, &direct);
        assert!(out.status.success(), "{opts}: {out:?}");
        let direct = proc_mounts(&d.mnt).unwrap();
        umount(&d.mnt);
        assert_eq!(through_mount8, direct, "-o {opts}");
    }
}

#[test]
fn the_mount_never_honours_what_the_source_s_filesystems_withhold() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    // A source on a tmpfs mounted nodev,nosuid,noexec, as /tmp often is.
    let t = d.root.join("t");
    fs::create_dir(&t).unwrap();
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    sh(&format!(
        "mount -t tmpfs -o nodev,nosuid,noexec bkfs-test {}",
        t.display()
    ));
    let _t = Unmount(t.clone());
    let src = t.join("src");
    fs::create_dir(&src).unwrap();
    let out = bkfs_mount(&src, &d.mnt, &["-o", "dev,suid"]);
    assert!(out.status.success(), "{out:?}");
    let (_, _, opts) = proc_mounts(&d.mnt).unwrap();
    for flag in ["nodev", "nosuid", "noexec"] {
        assert!(opts.contains(&flag.to_string()), "{flag} not in {opts:?}");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("dev ignored: {} is mounted nodev", t.display()))
            && err.contains("suid ignored"),
        "{err}"
    );
    umount(&d.mnt);

    // A filesystem mounted inside the source counts too.
    let sub = d.src.join("sub");
    fs::create_dir(&sub).unwrap();
    sh(&format!(
        "mount -t tmpfs -o nosuid bkfs-test {}",
        sub.display()
    ));
    let _sub = Unmount(sub.clone());
    let out = bkfs_mount(&d.src, &d.mnt, &[]);
    assert!(out.status.success(), "{out:?}");
    let (_, _, opts) = proc_mounts(&d.mnt).unwrap();
    assert!(
        opts.contains(&"nosuid".into()) && !opts.contains(&"nodev".into()),
        "{opts:?}"
    );
    umount(&d.mnt);
}

#[test]
fn a_failed_foreground_mount_reports_its_error_once() {
    if !can_mount() {
        return;
    }
    // In the foreground without log=, the daemon's log is stderr, where the
    // command prints the error it fails with, as under bkfs@.service.
    let d = Dirs::new();
    let out = Command::new(BKFS)
        .arg("mount")
        .arg(&d.src)
        .arg(&d.mnt)
        .args(["--foreground", "-o", "profile=/nonexistent/p.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("/nonexistent/p.toml").count(), 1, "{err}");
    assert!(!err.contains('\x1b'), "colours, off a terminal: {err:?}");
    assert!(!is_mounted(&d.mnt));
}

#[test]
fn the_daemon_log_has_each_event_once() {
    if !can_mount() {
        return;
    }
    let d = Dirs::new();
    let log = d.root.join("log");
    let out = bkfs_mount(&d.src, &d.mnt, &["-o", &format!("log={}", log.display())]);
    assert!(out.status.success(), "{out:?}");
    fs::write(d.mnt.join(".control/snapshot"), b"one\n").unwrap();
    assert_eq!(fs::read(d.mnt.join("hello")).unwrap(), b"world");
    umount(&d.mnt);
    let log = fs::read_to_string(&log).unwrap();
    let about = |word: &str| {
        log.lines()
            .filter(|l| l.to_lowercase().contains(word))
            .count()
    };
    assert_eq!(about(" mounted "), 1, "{log}");
    assert_eq!(about("unmount"), 1, "{log}");
    // No line says what another already said (timestamps aside).
    let mut seen = std::collections::HashSet::new();
    for line in log.lines() {
        let text = line.split_once(' ').map_or(line, |(_, rest)| rest);
        assert!(seen.insert(text), "repeated: {text}\n{log}");
    }
}

#[test]
fn relative_option_paths_mean_the_directory_mount_was_run_in() {
    if !can_mount() {
        return;
    }
    // The daemon works from /: store= and log= relative to where `bkfs
    // mount` ran, as SOURCE and MOUNTPOINT are, not to /.
    let d = Dirs::new();
    let out = Command::new(BKFS)
        .current_dir(&d.root)
        .arg("mount")
        .arg(&d.src)
        .arg(&d.mnt)
        .args(["-o", "store=rel.bkfs,log=rel.log"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    fs::write(d.mnt.join(".control/snapshot"), b"one\n").unwrap();
    umount(&d.mnt);
    assert!(d.root.join("rel.bkfs").is_dir());
    let log = fs::read_to_string(d.root.join("rel.log")).unwrap();
    assert!(log.contains("unmounted"), "{log}");
}

/// Write-through (the default) and the writeback cache: what fsync(2)
/// returned for is in the source when the daemon is killed with SIGKILL
/// the next moment; and the kernel's readahead and dirty-data bound are
/// the mount's.
#[test]
fn an_fsynced_write_survives_a_kill_9_of_the_daemon() {
    if !can_mount() {
        return;
    }
    use std::io::Write;
    let data: Vec<u8> = (0..(3 << 20) + 123)
        .map(|i: u32| (i * 7 % 251) as u8)
        .collect();
    for options in ["", "nowriteback", "dirty_max=64M,readahead=1M"] {
        let mut m = Mount::new(options);
        let bdi = Path::new("/sys/class/bdi").join(
            String::from_utf8(
                Command::new("mountpoint")
                    .arg("-d")
                    .arg(&m.mnt)
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap()
            .trim(),
        );
        let sysfs = |name: &str| -> u64 {
            fs::read_to_string(bdi.join(name))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        if options.contains("dirty_max") {
            assert_eq!(sysfs("read_ahead_kb"), 1024, "{options:?}");
            // The kernel keeps the bound to its own granularity.
            assert!(
                sysfs("max_bytes").abs_diff(64 << 20) < 1 << 20,
                "{options:?}"
            );
        } else {
            assert_eq!(sysfs("read_ahead_kb"), 4096, "{options:?}");
        }
        // A file written and fsynced, and closed.
        let mut f = fs::File::create(m.path("closed")).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        drop(f);
        // A file still open: a part fsynced, then more written.
        let mut g = fs::File::create(m.path("open")).unwrap();
        g.write_all(&data[..1 << 20]).unwrap();
        g.sync_data().unwrap();
        g.write_all(b"written, not synced").unwrap();
        m.kill_and_remount(options);
        drop(g);
        assert!(
            fs::read(m.backing("closed")).unwrap() == data,
            "{options:?}: the fsynced file is not whole in the source"
        );
        let open = fs::read(m.backing("open")).unwrap();
        assert!(
            open.len() >= 1 << 20 && open[..1 << 20] == data[..1 << 20],
            "{options:?}: the fsynced part of the open file is not in the source"
        );
        assert_eq!(fs::read(m.path("closed")).unwrap(), data, "{options:?}");
    }
}
