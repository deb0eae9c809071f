//! `sqlite`: `PRAGMA wal_checkpoint(TRUNCATE)` at freeze and, with
//! `hold = true`, a `BEGIN IMMEDIATE` held by a session process (the sqlite3
//! CLI reading a pipe) until thaw: writers wait, readers go on. If bkfs dies,
//! the pipe closes, sqlite3 exits and the lock is gone.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{ParamError, Params, PhaseCx, Plugin, PluginError};
use crate::quiesce::run::Session;

pub struct Sqlite {
    database: String,
    hold: bool,
    cli: String,
    busy_ms: i64,
    session: Option<Session>,
    checkpoint: Option<(i64, i64, i64)>,
}

fn echo(marker: &str) -> String {
    format!(".print {marker}")
}

/// Lines the sqlite3 CLI prints for a failed statement.
fn error_in(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find(|l| {
            l.starts_with("Error") || l.starts_with("Parse error") || l.starts_with("Runtime error")
        })
        .cloned()
}

impl Sqlite {
    pub fn new(p: &Params) -> Result<Self, ParamError> {
        p.known(&["database", "hold", "sqlite3", "busy_timeout_ms"])?;
        let database = p.str("database")?.ok_or_else(|| ParamError {
            key: None,
            msg: "missing key database (path of the SQLite file)".into(),
        })?;
        Ok(Sqlite {
            database,
            hold: p.bool("hold", false)?,
            cli: p.str("sqlite3")?.unwrap_or_else(|| "sqlite3".into()),
            busy_ms: p.int("busy_timeout_ms")?.unwrap_or(5000),
            session: None,
            checkpoint: None,
        })
    }

    fn exchange(
        &mut self,
        cx: &PhaseCx,
        sql: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        if self.session.is_none() {
            let argv: Vec<OsString> = vec![
                self.cli.clone().into(),
                "-batch".into(),
                self.database.clone().into(),
            ];
            self.session = Some(Session::start(&argv, cx.creds, &[], echo)?);
        }
        let s = self.session.as_mut().unwrap();
        let out = s
            .exchange(sql, timeout)
            .inspect_err(|_| self.session = None)?;
        if let Some(e) = error_in(&out) {
            return Err(e);
        }
        Ok(out)
    }
}

impl Plugin for Sqlite {
    fn identify(&mut self, _cx: &PhaseCx) -> Result<String, PluginError> {
        self.checkpoint = None;
        if !std::path::Path::new(&self.database).exists() {
            return Err(format!("{} does not exist", self.database).into());
        }
        Ok(format!("SQLite database {}", self.database))
    }

    fn freeze(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        let sql = format!(
            ".timeout {}\nPRAGMA wal_checkpoint(TRUNCATE);",
            self.busy_ms
        );
        let out = self.exchange(cx, &sql, cx.timeout)?;
        if let Some(l) = out.iter().rev().find(|l| l.split('|').count() == 3) {
            let v: Vec<i64> = l.split('|').filter_map(|x| x.trim().parse().ok()).collect();
            if v.len() == 3 {
                self.checkpoint = Some((v[0], v[1], v[2]));
            }
        }
        if self.hold {
            self.exchange(cx, "BEGIN IMMEDIATE;", cx.timeout)?;
        } else if let Some(s) = self.session.take() {
            s.close(Duration::from_secs(2));
        }
        Ok(())
    }

    fn thaw(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        if let Some(mut s) = self.session.take() {
            // Roll back politely; closing stdin releases the lock regardless.
            let _ = s.exchange("ROLLBACK;", cx.timeout.min(Duration::from_secs(5)));
            s.close(Duration::from_secs(2));
        }
        Ok(())
    }

    fn positions(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some((busy, log, ckpt)) = self.checkpoint {
            m.insert(
                "wal_checkpoint".into(),
                json!({"busy": busy, "log_frames": log, "checkpointed": ckpt}),
            );
        }
        m
    }
}
