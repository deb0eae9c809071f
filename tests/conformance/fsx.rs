//! fsx (fsx-rs) as a child process: a fixed number of operations with a fixed seed, so that
//! a failure replays exactly.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::setup::{self, Scratch};

/// At least this many operations per configuration (`BKFS_FSX_OPS` changes it).
pub const OPS: u64 = 30_000;

/// The seed of every run (`BKFS_FSX_SEED` changes it): fixed, so a failure on CI replays.
pub const SEED: u64 = 20_261_122;

const LIMIT: Duration = Duration::from_secs(900);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Runs fsx on `file` (created, truncated) with the project's fsx.toml. On failure the
/// artifacts (fsx's log dump, its `.fsxgood` file and a copy of the bad file) are kept in a
/// folder under /tmp named in the error.
pub fn run(bin: &Path, file: &Path, what: &str) -> Result<(), String> {
    let ops = env_u64("BKFS_FSX_OPS", OPS);
    let seed = env_u64("BKFS_FSX_SEED", SEED);
    let conf = setup::here().join("fsx.toml");
    let mut artifacts = Scratch::new("bkfs-fsx-");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let replay = format!(
        "fsx -f {} -N {ops} -S {seed} {}",
        conf.display(),
        file.display()
    );
    println!("fsx on {what}: {ops} operations, seed {seed}; replay with `{replay}`");
    let mut cmd = Command::new(bin);
    cmd.arg("-f")
        .arg(&conf)
        .arg("-N")
        .arg(ops.to_string())
        .arg("-S")
        .arg(seed.to_string())
        .arg("-P")
        .arg(&artifacts.path)
        .arg(file)
        .env("RUST_BACKTRACE", "1");
    let ran = setup::run(cmd, LIMIT);
    let done = ran.stdout.contains("All operations completed A-OK!")
        || ran.stderr.contains("All operations completed A-OK!");
    if ran.ok() && done {
        println!(
            "fsx on {what}: {ops} operations A-OK in {:.1} s",
            ran.elapsed.as_secs_f64()
        );
        return Ok(());
    }
    artifacts.keep();
    let _ = std::fs::write(artifacts.path.join("fsx.stdout"), &ran.stdout);
    let _ = std::fs::write(artifacts.path.join("fsx.stderr"), &ran.stderr);
    let _ = std::fs::copy(file, artifacts.path.join("fsx.bad"));
    Err(format!(
        "fsx on {what} failed ({}) after {:.1} s; seed {seed}, {ops} operations\n\
         replay: {replay}\nartifacts (log, good and bad file): {}\n--- fsx's output (end) ---\n{}\n{}",
        ran.status(),
        ran.elapsed.as_secs_f64(),
        artifacts.path.display(),
        setup::tail(&ran.stdout, 10),
        setup::tail(&ran.stderr, 60)
    ))
}
