//! The environment checks (root, tools) and running commands, the `bkfs` binary among them.

use super::*;

/// Default time limit for one `bkfs` command.
pub const TIMEOUT: Duration = Duration::from_secs(180);

pub fn bkfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bkfs")
}

// ---------------------------------------------------------------------------------------------
// Environment checks: root and tools. With CI=true a missing requirement fails the test; on a
// developer's machine the test is skipped with a printed reason.

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Returns true if the test can run; otherwise skips (prints why) or, under CI, panics.
pub fn require(root: bool, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if root && !is_root() {
        missing.push("root".to_string());
    }
    for t in tools {
        if !have_tool(t) {
            missing.push(format!("the tool `{t}`"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("this test needs {}", missing.join(", "));
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{msg} (CI=true, so this is a failure; see .ci/packages.txt)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

// ---------------------------------------------------------------------------------------------
// Running commands.

/// The result of one command: exit code (None if killed by a signal), output, and how long it took.
pub struct Out {
    pub cmdline: String,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Out {
    pub fn code(&self) -> i32 {
        self.code.unwrap_or(-1)
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// stdout and stderr together, lossily decoded.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout_str(), self.stderr_str())
    }
    pub fn describe(&self) -> String {
        let cut = |s: String| {
            if s.len() > 3000 {
                let mut i = 3000;
                while !s.is_char_boundary(i) {
                    i -= 1;
                }
                format!("{}... [{} bytes in all]", &s[..i], s.len())
            } else {
                s
            }
        };
        format!(
            "`{}` -> exit {}{} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code.map_or("<signal>".to_string(), |c| c.to_string()),
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.elapsed,
            cut(self.stdout_str()),
            cut(self.stderr_str())
        )
    }
    /// Panics with the whole picture unless the exit code is `code`.
    #[track_caller]
    pub fn expect(&self, code: i32, what: &str) -> &Self {
        if self.code != Some(code) {
            panic!("{what}: expected exit {code}\n{}", self.describe());
        }
        self
    }
    #[track_caller]
    pub fn ok(&self, what: &str) -> &Self {
        self.expect(0, what)
    }
}

pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    if s == bkfs_bin() {
        s = "bkfs".into();
    }
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains(' ') || a.is_empty() {
            let _ = write!(s, " '{a}'");
        } else {
            let _ = write!(s, " {a}");
        }
    }
    s
}

/// Runs a command to completion with a time limit, capturing its output.
pub fn run_cmd(mut cmd: Command, timeout: Duration) -> Out {
    let line = cmdline(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Out {
        cmdline: line,
        code: status.code(),
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
        elapsed: start.elapsed(),
        timed_out,
    }
}

/// Runs a shell tool (not bkfs) and panics if it fails.
#[track_caller]
pub fn sh(prog: &str, args: &[&OsStr]) -> Out {
    let mut c = Command::new(prog);
    c.args(args);
    let o = run_cmd(c, TIMEOUT);
    if o.code != Some(0) {
        panic!("helper command failed\n{}", o.describe());
    }
    o
}

/// `bkfs ARGS` without a store.
pub fn bkfs<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(bkfs_bin());
    c.args(args).env_remove("BKFS_STORE");
    run_cmd(c, TIMEOUT)
}
