//! Permissions and ownership through the mount, as an unprivileged user
//! (nobody, no supplementary groups) and as root.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use crate::common::*;

fn chmod(p: &std::path::Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn nobody_owns_what_nobody_creates_and_is_refused_what_is_not_theirs() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", |src| {
        fs::create_dir(src.join("pub")).unwrap();
        chmod(&src.join("pub"), 0o777);
        fs::create_dir(src.join("private")).unwrap();
        chmod(&src.join("private"), 0o700);
        fs::write(src.join("rootfile"), b"root's").unwrap();
        chmod(&src.join("rootfile"), 0o644);
        fs::write(src.join("secret"), b"no").unwrap();
        chmod(&src.join("secret"), 0o600);
        fs::write(src.join("shared"), b"").unwrap();
        chmod(&src.join("shared"), 0o666);
    });
    let mnt = m.mnt.display().to_string();
    // Creation as nobody: owner and group are nobody's, the umask holds.
    nobody_ok(&format!(
        "umask 027 && cd {mnt}/pub && echo hi > f && mkdir d && ln -s f l && mkfifo p"
    ));
    for (name, mode) in [("f", 0o640), ("d", 0o750), ("p", 0o640)] {
        let md = fs::symlink_metadata(m.backing(&format!("pub/{name}"))).unwrap();
        assert_eq!((md.uid(), md.gid()), (NOBODY, NOBODY), "{name}");
        assert_eq!(md.mode() & 0o777, mode, "{name}");
    }
    let l = fs::symlink_metadata(m.backing("pub/l")).unwrap();
    assert_eq!((l.uid(), l.gid()), (NOBODY, NOBODY));
    // What nobody may not do.
    nobody_fails(&format!("echo x > {mnt}/new"), "Permission denied");
    nobody_fails(&format!("ls {mnt}/private"), "Permission denied");
    nobody_fails(&format!("cat {mnt}/secret"), "Permission denied");
    nobody_fails(&format!("echo x >> {mnt}/rootfile"), "Permission denied");
    nobody_fails(
        &format!("chmod 777 {mnt}/rootfile"),
        "Operation not permitted",
    );
    nobody_fails(
        &format!("chown nobody {mnt}/rootfile"),
        "Operation not permitted",
    );
    nobody_fails(
        &format!("touch -d 2001-01-01 {mnt}/shared"),
        "Operation not permitted",
    );
    nobody_fails(&format!("rm -f {mnt}/rootfile"), "Permission denied");
    nobody_fails(
        &format!("mv {mnt}/rootfile {mnt}/pub/"),
        "Permission denied",
    );
    // What nobody may do.
    nobody_ok(&format!(
        "cat {mnt}/rootfile && echo ok >> {mnt}/shared && touch {mnt}/shared"
    ));
    nobody_ok(&format!(
        "chmod 600 {mnt}/pub/f && truncate -s 1 {mnt}/pub/f"
    ));
    assert_eq!(fs::read(m.backing("pub/f")).unwrap(), b"h");
    assert_eq!(fs::read(m.backing("shared")).unwrap(), b"ok\n");
    // Root reads anything and chowns anything.
    assert_eq!(fs::read(m.path("secret")).unwrap(), b"no");
    std::os::unix::fs::chown(m.path("pub/f"), Some(0), Some(0)).unwrap();
    nobody_fails(&format!("cat {mnt}/pub/f"), "Permission denied");
}

#[test]
fn sticky_directories_protect_other_users_files() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", |src| {
        fs::create_dir(src.join("tmp")).unwrap();
        chmod(&src.join("tmp"), 0o1777);
        fs::write(src.join("tmp/roots"), b"").unwrap();
        chmod(&src.join("tmp/roots"), 0o666);
    });
    let mnt = m.mnt.display().to_string();
    nobody_fails(&format!("rm -f {mnt}/tmp/roots"), "Operation not permitted");
    nobody_fails(
        &format!("mv {mnt}/tmp/roots {mnt}/tmp/mine"),
        "Operation not permitted",
    );
    nobody_ok(&format!("touch {mnt}/tmp/own && rm {mnt}/tmp/own"));
    assert!(m.backing("tmp/roots").exists());
}

#[test]
fn setgid_directories_give_their_group() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", |src| {
        fs::create_dir(src.join("team")).unwrap();
        std::os::unix::fs::chown(src.join("team"), Some(0), Some(4321)).unwrap();
        chmod(&src.join("team"), 0o2777);
    });
    let mnt = m.mnt.display().to_string();
    nobody_ok(&format!("touch {mnt}/team/f && mkdir {mnt}/team/sub"));
    let f = fs::metadata(m.backing("team/f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (NOBODY, 4321));
    let d = fs::metadata(m.backing("team/sub")).unwrap();
    assert_eq!((d.uid(), d.gid()), (NOBODY, 4321));
    assert_ne!(d.mode() & 0o2000, 0, "subdirectory inherits setgid");
    // Root creating in a plain directory keeps root's group.
    fs::write(m.path("rootmade"), b"").unwrap();
    assert_eq!(fs::metadata(m.backing("rootmade")).unwrap().gid(), 0);
}

#[test]
fn posix_acls_are_kept_and_enforced() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", |src| {
        fs::write(src.join("doc"), b"acl data").unwrap();
        chmod(&src.join("doc"), 0o600);
        fs::create_dir(src.join("inherit")).unwrap();
    });
    let mnt = m.mnt.display().to_string();
    nobody_fails(&format!("cat {mnt}/doc"), "Permission denied");
    sh(&format!("setfacl -m u:nobody:r {mnt}/doc"));
    let acl = sh(&format!("getfacl -p {}", m.backing("doc").display()));
    assert!(acl.contains("user:nobody:r--"), "{acl}");
    assert_eq!(nobody_ok(&format!("cat {mnt}/doc")), "acl data");
    nobody_fails(&format!("echo x >> {mnt}/doc"), "Permission denied");
    sh(&format!("setfacl -x u:nobody {mnt}/doc"));
    nobody_fails(&format!("cat {mnt}/doc"), "Permission denied");
    // A default ACL is inherited by new files, and beats the umask.
    sh(&format!("setfacl -d -m u:nobody:rwx,m::rwx {mnt}/inherit"));
    sh(&format!("umask 077 && echo new > {mnt}/inherit/file"));
    let acl = sh(&format!(
        "getfacl -p {}",
        m.backing("inherit/file").display()
    ));
    assert!(acl.contains("user:nobody:rwx"), "{acl}");
    assert_eq!(nobody_ok(&format!("cat {mnt}/inherit/file")), "new\n");
    // chmod updates the ACL mask as natively.
    sh(&format!("chmod 600 {mnt}/inherit/file"));
    nobody_fails(&format!("cat {mnt}/inherit/file"), "Permission denied");
}

#[test]
fn read_only_mounts_refuse_writes() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("ro", |src| fs::write(src.join("f"), b"x").unwrap());
    assert_eq!(fs::read(m.path("f")).unwrap(), b"x");
    assert_eq!(
        crate::common::errno_of(fs::write(m.path("f"), b"y")),
        libc::EROFS
    );
    assert_eq!(
        crate::common::errno_of(fs::create_dir(m.path("d"))),
        libc::EROFS
    );
}

/// One script of everyday operations, run as nobody in a sticky
/// world-writable directory on the mount and in one on the native
/// filesystem: outputs, errors and the resulting trees must be the same.
#[test]
fn nobody_sees_the_same_results_as_on_the_native_filesystem() {
    if !can_mount() {
        return;
    }
    let prepare = |dir: &std::path::Path| {
        fs::create_dir(dir).unwrap();
        chmod(dir, 0o1777);
        fs::write(dir.join("rootfile"), b"root\n").unwrap();
        chmod(&dir.join("rootfile"), 0o644);
    };
    let m = Mount::with_source("", |src| prepare(&src.join("w")));
    let native = m.scratch("native").join("w");
    prepare(&native);
    let script = r#"
        umask 022
        mkdir -p a/b && echo x > a/f && ln a/f a/h && ln -s f a/s && mv a/h a/b/h2
        chmod 640 a/f && touch -d 2001-01-01 a/f && truncate -s 100 a/b/h2
        setfattr -n user.u -v 1 a/f && getfattr -n user.u --only-values a/f; echo
        cp -a a c && rm -r c/b && mkfifo p && ln -s nowhere dangling
        umask 077 && mkdir private && echo s > private/secret
        rmdir a 2>&1 || echo rmdir-failed
        echo y >> rootfile 2>&1 || echo append-denied
        rm -f rootfile 2>&1 || echo rm-denied
        mv rootfile mine 2>&1 || echo mv-denied
        ln rootfile mylink 2>&1 || echo link-denied
        chmod 777 rootfile 2>&1 || echo chmod-denied
        cat rootfile a/s
        echo '#!/bin/sh' > suid && chmod 6755 suid && echo >> suid && stat -c %a suid
        cp suid suid2 && chmod 4700 suid2 && truncate -s 0 suid2 && stat -c %a suid2
        ls -n a | sed 1d | awk '{print $1, $3, $4, $5, $9}'
    "#;
    let run = |dir: &std::path::Path| {
        let out = as_nobody(&format!("cd {} && {script}", dir.display()));
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // Error messages name the directory; make them comparable.
        (
            out.status.code(),
            text.replace(&dir.display().to_string(), "DIR"),
        )
    };
    let on_mount = run(&m.path("w"));
    let on_native = run(&native);
    assert_eq!(on_mount, on_native);
    assert!(on_mount.1.contains("rm-denied") || on_mount.1.contains("Operation not permitted"));
    let tree = |dir: &std::path::Path| {
        sh(&format!(
            "cd {} && find . -printf '%p %y %m %U %G %s %n %l\\n' | grep -v '^\\. ' | sort",
            dir.display()
        ))
    };
    assert_eq!(tree(&m.path("w")), tree(&native));
}

/// Writes and truncation remove set-user-id bits when the writer is not
/// privileged (the daemon does it, see fs::init), and keep them for root.
#[test]
fn writes_drop_setuid_for_users_but_not_for_root() {
    if !can_mount() {
        return;
    }
    let m = Mount::with_source("", |src| {
        fs::create_dir(src.join("w")).unwrap();
        chmod(&src.join("w"), 0o777);
    });
    let w = m.path("w");
    let mode = |name: &str| fs::metadata(w.join(name)).unwrap().mode() & 0o7777;
    nobody_ok(&format!(
        "cd {} && echo a > u && chmod 4755 u && echo b > g && chmod 2775 g",
        w.display()
    ));
    // A reader keeps the file open meanwhile: writes then use passthrough.
    let reader = fs::File::open(w.join("u")).unwrap();
    nobody_ok(&format!(
        "cd {} && echo more >> u && echo more >> g",
        w.display()
    ));
    assert_eq!(mode("u"), 0o755);
    assert_eq!(mode("g"), 0o775);
    drop(reader);
    fs::set_permissions(w.join("u"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(w.join("u"), b"root writes").unwrap();
    assert_eq!(mode("u"), 0o4755, "root (CAP_FSETID) keeps the bit");
    let md = fs::metadata(m.backing("w/u")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o4755);
}
