//! Running plug-in commands: as the profile's user (setgroups/setgid/setuid in
//! the child), in their own process group, killed as a group at the timeout.
//! And session processes: a long-lived child fed on stdin, whose lock goes
//! away when its stdin closes.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Who a command runs as.
#[derive(Clone, Debug, Default)]
pub struct Creds {
    /// (uid, gid, groups); `None`: as bkfs itself.
    pub ids: Option<(u32, u32, Vec<u32>)>,
    pub name: Option<String>,
}

impl Creds {
    pub fn of(user: Option<&str>) -> Result<Creds, String> {
        match user {
            None => Ok(Creds::default()),
            Some(u) => {
                let ids =
                    super::profile::lookup_user(u).ok_or_else(|| format!("no such user {u:?}"))?;
                Ok(Creds {
                    ids: Some(ids),
                    name: Some(u.to_string()),
                })
            }
        }
    }

    /// Sets up `cmd` to run as these credentials in a new process group.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.process_group(0);
        if let Some((uid, gid, groups)) = self.ids.clone() {
            let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.dir);
            if let Some(h) = home {
                cmd.env("HOME", h);
            }
            if let Some(n) = &self.name {
                cmd.env("USER", n).env("LOGNAME", n);
            }
            crate::os::proc::run_as(cmd, uid, gid, groups);
        }
    }
}

/// How a command ended.
#[derive(Debug)]
pub struct Ran {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub output: String,
    pub elapsed: Duration,
}

impl Ran {
    pub fn ok(&self) -> bool {
        !self.timed_out && self.status.map(|s| s.success()).unwrap_or(false)
    }
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
    /// A one-line account for results: "exit 3: <last line of output>".
    pub fn describe(&self, what: &str) -> String {
        let tail = self
            .output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let how = if self.timed_out {
            format!(
                "timed out after {:.1}s (process group killed)",
                self.elapsed.as_secs_f64()
            )
        } else {
            match self.status {
                Some(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                    (Some(c), _) => format!("exit {c}"),
                    (None, Some(sig)) => format!("killed by signal {sig}"),
                    _ => "ended".into(),
                },
                None => "did not run".into(),
            }
        };
        if tail.is_empty() {
            format!("{what}: {how}")
        } else {
            format!("{what}: {how}: {}", truncate(tail, 200))
        }
    }
}

fn truncate(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = n;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    &s[..i]
}

/// A pipe as (read end, write end), both close-on-exec.
fn pipe() -> std::io::Result<(std::fs::File, std::fs::File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    Ok((std::fs::File::from(r), std::fs::File::from(w)))
}

fn kill_group(pid: u32) {
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// Runs argv as `creds`, stdout and stderr captured together, stdin empty;
/// kills its process group at `timeout`.
pub fn run(argv: &[OsString], creds: &Creds, timeout: Duration, env: &[(&str, String)]) -> Ran {
    let start = Instant::now();
    let Some((prog, args)) = argv.split_first() else {
        return Ran {
            status: None,
            timed_out: false,
            output: "empty command".into(),
            elapsed: Duration::ZERO,
        };
    };
    let (r, w) = match pipe() {
        Ok(p) => p,
        Err(e) => return failed_to_start(e, start),
    };
    let w2 = match w.try_clone() {
        Ok(w) => w,
        Err(e) => return failed_to_start(e, start),
    };
    let mut cmd = Command::new(prog);
    cmd.args(args).stdin(Stdio::null()).stdout(w).stderr(w2);
    for (k, v) in env {
        cmd.env(k, v);
    }
    creds.apply(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed_to_start(e, start),
    };
    drop(cmd); // closes our copies of the write ends
               // The reader appends as output comes, so what arrived is kept even if a
               // background grandchild keeps the pipe open after the command exits.
    let buf = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel::<()>();
    let b2 = buf.clone();
    std::thread::spawn(move || {
        let mut r = r;
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut b = b2.lock();
                    if b.len() < 1 << 20 {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
            }
        }
        let _ = tx.send(());
    });
    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(_) => break None,
        }
        if Instant::now() >= deadline {
            timed_out = true;
            kill_group(child.id());
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // A background grandchild may hold the pipe open: wait a little, not forever.
    let _ = rx.recv_timeout(Duration::from_millis(if timed_out { 500 } else { 200 }));
    let out = std::mem::take(&mut *buf.lock());
    Ran {
        status,
        timed_out,
        output: String::from_utf8_lossy(&out).into_owned(),
        elapsed: start.elapsed(),
    }
}

fn failed_to_start(e: std::io::Error, start: Instant) -> Ran {
    Ran {
        status: None,
        timed_out: false,
        output: format!("cannot start: {e}"),
        elapsed: start.elapsed(),
    }
}

/// A long-lived child fed commands on stdin, its stdout and stderr read as
/// one stream of lines. Closing stdin (drop) ends it; its process group is
/// killed if it does not end by itself.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seq: u64,
    /// How to print a line: given the marker, the command that echoes it.
    echo: fn(&str) -> String,
}

impl Session {
    pub fn start(
        argv: &[OsString],
        creds: &Creds,
        env: &[(&str, String)],
        echo: fn(&str) -> String,
    ) -> Result<Session, String> {
        let (prog, args) = argv.split_first().ok_or("empty command")?;
        let (r, w) = pipe().map_err(|e| e.to_string())?;
        let w2 = w.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(prog);
        cmd.args(args).stdin(Stdio::piped()).stdout(w).stderr(w2);
        for (k, v) in env {
            cmd.env(k, v);
        }
        creds.apply(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", prog.to_string_lossy()))?;
        drop(cmd);
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Session {
            child,
            stdin,
            lines: rx,
            seq: 0,
            echo,
        })
    }

    /// Sends `input`, then a marker echo, and collects the lines up to the
    /// marker. Err on timeout (the session is then killed) or if it ends.
    pub fn exchange(&mut self, input: &str, timeout: Duration) -> Result<Vec<String>, String> {
        self.seq += 1;
        let marker = format!("__bkfs_done_{}_{}__", std::process::id(), self.seq);
        let mut text = input.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&(self.echo)(&marker));
        text.push('\n');
        let stdin = self.stdin.as_mut().ok_or("session closed")?;
        stdin
            .write_all(text.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("session ended: {e}"))?;
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.trim() == marker => return Ok(out),
                Ok(l) => out.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.kill();
                    return Err(format!(
                        "timed out after {:.1}s (session killed)",
                        timeout.as_secs_f64()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = self.child.wait().ok();
                    let tail = out.last().cloned().unwrap_or_default();
                    return Err(format!(
                        "session ended ({}): {tail}",
                        st.map(|s| s.to_string()).unwrap_or_default()
                    ));
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        self.stdin = None;
        kill_group(self.child.id());
        let _ = self.child.wait();
    }

    /// Closes stdin and waits up to `grace` for the child to end, then kills it.
    pub fn close(mut self, grace: Duration) {
        self.stdin = None;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.kill();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            std::thread::sleep(Duration::from_millis(20));
            if let Ok(None) = self.child.try_wait() {
                kill_group(self.child.id());
            }
        }
        let _ = self.child.wait();
    }
}
