//! Real programs on the mount: git, a C build, sqlite3, tar, rsync -aHAX.

use std::fs;

use crate::common::*;

#[test]
fn git_clone_and_checkout_of_a_local_repository() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let origin = m.scratch("origin");
    let o = origin.display();
    sh(&format!(
        "cd {o} && git init -q -b main && git config user.email t@t && git config user.name t \
         && mkdir -p src/deep && for i in $(seq 1 200); do echo line $i > src/f$i.txt; done \
         && echo '#!/bin/sh' > run.sh && chmod +x run.sh && ln -s run.sh link \
         && git add -A && git commit -qm one \
         && git checkout -qb other && rm src/f1*.txt && echo changed > src/deep/new \
         && git add -A && git commit -qm two && git checkout -q main"
    ));
    let mnt = m.mnt.display();
    sh(&format!("cd {mnt} && git clone -q {o} clone"));
    let status = sh(&format!(
        "cd {mnt}/clone && git checkout -q other && git checkout -q main && git checkout -q other \
         && git fsck --strict 2>&1 && git status --porcelain"
    ));
    assert!(!status.contains("error"), "{status}");
    assert_eq!(
        fs::read_to_string(m.backing("clone/src/deep/new")).unwrap(),
        "changed\n"
    );
    assert!(!m.backing("clone/src/f1.txt").exists());
    sh(&format!(
        "cd {mnt}/clone && test -x run.sh && test -L link && git gc -q"
    ));
    let log = sh(&format!("cd {mnt}/clone && git log --oneline | wc -l"));
    assert_eq!(log.trim(), "2");
}

#[test]
fn building_a_c_project_with_make_and_running_it() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let d = m.path("proj");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("add.c"), "int add(int a, int b) { return a + b; }\n").unwrap();
    fs::write(d.join("add.h"), "int add(int a, int b);\n").unwrap();
    fs::write(
        d.join("main.c"),
        "#include <stdio.h>\n#include \"add.h\"\nint main(void) { printf(\"%d\\n\", add(40, 2)); return 0; }\n",
    )
    .unwrap();
    fs::write(
        d.join("Makefile"),
        "prog: main.o add.o\n\tgcc -o $@ $^\n%.o: %.c add.h\n\tgcc -O2 -c -o $@ $<\nclean:\n\trm -f prog *.o\n",
    )
    .unwrap();
    let out = sh(&format!(
        "cd {} && make -s && ./prog && make -s clean && make -s -j2 && ./prog",
        d.display()
    ));
    assert_eq!(out, "42\n42\n");
}

#[test]
fn sqlite_database_passes_its_integrity_check() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let db = m.path("test.db");
    let out = sh(&format!(
        "sqlite3 {db} 'PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); \
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<20000) \
         INSERT INTO t(v) SELECT printf(\"row %d %s\", x, hex(randomblob(20))) FROM c; \
         DELETE FROM t WHERE id % 3 = 0; VACUUM; PRAGMA integrity_check; SELECT count(*) FROM t;'",
        db = db.display()
    ));
    assert!(out.contains("ok\n"), "{out}");
    assert!(out.trim_end().ends_with("13334"), "{out}");
    // A rollback-journal database too, read back through the backing path.
    let db2 = m.path("j.db");
    sh(&format!(
        "sqlite3 {} 'CREATE TABLE a(x); BEGIN; INSERT INTO a VALUES (1),(2),(3); COMMIT;'",
        db2.display()
    ));
    let out = sh(&format!(
        "sqlite3 {} 'PRAGMA integrity_check; SELECT sum(x) FROM a;'",
        m.backing("j.db").display()
    ));
    assert_eq!(out, "ok\n6\n");
}

#[test]
fn tar_round_trip_keeps_contents_and_metadata() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let scratch = m.scratch("tar");
    let s = scratch.display();
    let mnt = m.mnt.display();
    // A tree with files, links, symlinks, modes, owners and times.
    sh(&format!(
        "mkdir -p {s}/in/a/b && cd {s}/in && for i in $(seq 1 300); do head -c $((i * 37)) /dev/urandom > a/f$i; done \
         && ln a/f1 hard && ln -s a/b sym && chmod 751 a/b && chown 1234:5678 a/f2 && touch -d 2001-02-03 a/f3 \
         && tar -C {s}/in --xattrs -cpf {s}/in.tar ."
    ));
    sh(&format!(
        "mkdir {mnt}/x && tar -C {mnt}/x --xattrs -xpf {s}/in.tar"
    ));
    sh(&format!("diff -r --no-dereference {s}/in {mnt}/x"));
    sh(&format!("tar -C {mnt}/x --xattrs -cpf {s}/out.tar . && mkdir {s}/out && tar -C {s}/out -xpf {s}/out.tar"));
    sh(&format!("diff -r --no-dereference {s}/in {s}/out"));
    let a = sh(&format!(
        "cd {s}/in && find . -printf '%p %m %u %g %n %T@ %y\\n' | sort"
    ));
    let b = sh(&format!(
        "cd {mnt}/x && find . -printf '%p %m %u %g %n %T@ %y\\n' | sort"
    ));
    let dirs_differ = |l: &str| l.ends_with(" d") && l.starts_with(". ");
    let a: Vec<_> = a.lines().filter(|l| !dirs_differ(l)).collect();
    let b: Vec<_> = b.lines().filter(|l| !dirs_differ(l)).collect();
    assert_eq!(a, b);
}

#[test]
fn rsync_ahax_round_trip() {
    if !can_mount() {
        return;
    }
    let m = Mount::new("");
    let scratch = m.scratch("rsync");
    let s = scratch.display();
    let mnt = m.mnt.display();
    sh(&format!(
        "mkdir -p {s}/in/d && cd {s}/in && for i in $(seq 1 100); do head -c $((i * 101)) /dev/urandom > d/f$i; done \
         && ln d/f1 d/hard && ln -s d/f2 sym && setfattr -n user.k -v v d/f3 && setfacl -m u:nobody:rw d/f4 \
         && chown 42:43 d/f5 && chmod 4755 d/f6"
    ));
    sh(&format!("rsync -aHAX {s}/in/ {mnt}/copy/"));
    sh(&format!("rsync -aHAX {mnt}/copy/ {s}/back/"));
    // A second pass finds nothing to change, in both directions.
    let itemized = sh(&format!(
        "rsync -aHAXn --itemize-changes {s}/in/ {mnt}/copy/"
    ));
    assert_eq!(itemized.trim(), "", "mount differs from source: {itemized}");
    let itemized = sh(&format!("rsync -aHAXn --itemize-changes {s}/in/ {s}/back/"));
    assert_eq!(itemized.trim(), "", "round trip differs: {itemized}");
    let acl = sh(&format!("getfacl -p {s}/back/d/f4"));
    assert!(acl.contains("user:nobody:rw-"), "{acl}");
    let x = sh(&format!("getfattr -n user.k --only-values {s}/back/d/f3"));
    assert_eq!(x, "v");
}
