//! Collecting several failures before panicking, so one run tells the whole story.

use super::*;

#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            self.0.push(msg());
        }
        ok
    }
    pub fn fail(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }
    /// Records a failure unless the command exited with `code`; returns whether it did.
    pub fn code(&mut self, out: &Out, code: i32, what: &str) -> bool {
        self.check(out.code == Some(code), || {
            format!("{what}: expected exit {code}\n{}", out.describe())
        })
    }
    pub fn same(&mut self, what: &str, a: &Listing, b: &Listing) -> bool {
        match a.diff(b) {
            None => true,
            Some(d) => {
                self.0.push(format!("{what}:\n{d}"));
                false
            }
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    #[track_caller]
    pub fn finish(self) {
        if !self.0.is_empty() {
            let mut s = format!("{} failure(s):\n", self.0.len());
            for (i, f) in self.0.iter().enumerate() {
                let _ = writeln!(s, "\n[{}] {}", i + 1, f);
            }
            panic!("{s}");
        }
    }
}
