//! `postgresql`: through psql sessions as the profile's user.
//! - mode `checkpoint`: CHECKPOINT at prepare, the WAL position at freeze;
//! - mode `backup_api`: `pg_backup_start` at prepare and `pg_backup_stop` at
//!   thaw in one held session (before PostgreSQL 15: the non-exclusive
//!   `pg_start_backup`/`pg_stop_backup`); the backup_label it returns is kept
//!   in the outcome (docs/PLUGINS.md says where it goes on restore).

use std::ffi::OsString;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{ParamError, Params, PhaseCx, Plugin, PluginError};
use crate::quiesce::run::Session;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Checkpoint,
    BackupApi,
}

pub struct Postgres {
    mode: Mode,
    connect: String,
    psql: String,
    label: String,
    session: Option<Session>,
    version: i64,
    in_backup: bool,
    pos: Map<String, Value>,
}

fn echo(marker: &str) -> String {
    format!("\\echo {marker}")
}

fn error_in(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find(|l| l.contains("ERROR:") || l.contains("FATAL:") || l.starts_with("psql: error"))
        .cloned()
}

const LSN_SQL: &str =
    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END;";

impl Postgres {
    pub fn new(p: &Params) -> Result<Self, ParamError> {
        p.known(&["mode", "connect", "psql", "label"])?;
        let mode = match p.str("mode")?.as_deref() {
            None | Some("checkpoint") => Mode::Checkpoint,
            Some("backup_api") => Mode::BackupApi,
            Some(o) => {
                return Err(ParamError::new(
                    "mode",
                    format!("unknown mode {o:?} (checkpoint or backup_api)"),
                ))
            }
        };
        Ok(Postgres {
            mode,
            connect: p.str("connect")?.unwrap_or_default(),
            psql: p.str("psql")?.unwrap_or_else(|| "psql".into()),
            label: p.str("label")?.unwrap_or_else(|| "bkfs".into()),
            session: None,
            version: 0,
            in_backup: false,
            pos: Map::new(),
        })
    }

    fn query(&mut self, cx: &PhaseCx, sql: &str, timeout: Duration) -> Result<Vec<String>, String> {
        if self.session.is_none() {
            let mut argv: Vec<OsString> = vec![
                self.psql.clone().into(),
                "-X".into(),
                "-q".into(),
                "-A".into(),
                "-t".into(),
                "-v".into(),
                "ON_ERROR_STOP=0".into(),
            ];
            if !self.connect.is_empty() {
                argv.push("-d".into());
                argv.push(self.connect.clone().into());
            }
            let env = [("PGAPPNAME", "bkfs".to_string())];
            self.session = Some(Session::start(&argv, cx.creds, &env, echo)?);
        }
        let s = self.session.as_mut().unwrap();
        let out = s.exchange(sql, timeout).inspect_err(|_| {
            self.session = None;
            self.in_backup = false;
        })?;
        if let Some(e) = error_in(&out) {
            return Err(e);
        }
        Ok(out
            .into_iter()
            // Notices come on stderr, merged in ("psql:<stdin>:3: NOTICE: ..."): keep results only.
            .filter(|l| {
                !["NOTICE:", "WARNING:", "DETAIL:", "HINT:"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .collect())
    }

    fn one(&mut self, cx: &PhaseCx, sql: &str, timeout: Duration) -> Result<String, String> {
        let out = self.query(cx, sql, timeout)?;
        out.into_iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .ok_or_else(|| format!("no result from {sql}"))
    }

    fn close(&mut self) {
        if let Some(s) = self.session.take() {
            s.close(Duration::from_secs(2));
        }
    }

    fn stop_backup(&mut self, cx: &PhaseCx) -> Result<(), String> {
        if !self.in_backup {
            return Ok(());
        }
        let f = if self.version >= 150000 {
            "pg_backup_stop(false)"
        } else {
            "pg_stop_backup(false, false)"
        };
        let sql = format!("SELECT json_build_object('lsn', lsn, 'labelfile', labelfile, 'spcmapfile', spcmapfile) FROM {f};");
        let line = self.one(cx, &sql, cx.timeout)?;
        self.in_backup = false;
        let v: Value =
            serde_json::from_str(&line).map_err(|e| format!("pg_backup_stop: {e}: {line}"))?;
        self.pos.insert("stop_lsn".into(), v["lsn"].clone());
        self.pos
            .insert("backup_label".into(), v["labelfile"].clone());
        if v["spcmapfile"].as_str().is_some_and(|s| !s.is_empty()) {
            self.pos
                .insert("tablespace_map".into(), v["spcmapfile"].clone());
        }
        Ok(())
    }
}

impl Plugin for Postgres {
    fn identify(&mut self, cx: &PhaseCx) -> Result<String, PluginError> {
        self.pos = Map::new();
        let v = self.one(cx, "SHOW server_version_num;", cx.timeout)?;
        self.version = v
            .trim()
            .parse()
            .map_err(|_| format!("unexpected server_version_num {v:?}"))?;
        if self.mode == Mode::BackupApi && self.version < 90600 {
            return Err("backup_api needs PostgreSQL 9.6 or later".into());
        }
        self.pos
            .insert("server_version_num".into(), json!(self.version));
        Ok(format!(
            "PostgreSQL {} ({})",
            self.version,
            if self.mode == Mode::Checkpoint {
                "checkpoint"
            } else {
                "backup_api"
            }
        ))
    }

    fn prepare(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        match self.mode {
            Mode::Checkpoint => {
                self.query(cx, "CHECKPOINT;", cx.timeout)?;
            }
            Mode::BackupApi => {
                let label = self.label.replace('\'', "''");
                let f = if self.version >= 150000 {
                    format!("pg_backup_start('{label}', true)")
                } else {
                    format!("pg_start_backup('{label}', true, false)")
                };
                self.in_backup = true;
                let lsn = self.one(cx, &format!("SELECT {f};"), cx.timeout)?;
                self.pos.insert("start_lsn".into(), json!(lsn.trim()));
            }
        }
        Ok(())
    }

    fn freeze(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        let lsn = self.one(cx, LSN_SQL, cx.timeout)?;
        self.pos.insert("lsn".into(), json!(lsn.trim()));
        // The session ends at thaw, outside the frozen window.
        Ok(())
    }

    fn thaw(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        let r = self.stop_backup(cx);
        if r.is_ok() {
            self.close();
        }
        r.map_err(PluginError::from)
    }

    fn abort(&mut self, _cx: &PhaseCx) -> Result<(), PluginError> {
        // Ending the session aborts a non-exclusive backup.
        self.in_backup = false;
        self.close();
        Ok(())
    }

    fn positions(&self) -> Map<String, Value> {
        self.pos.clone()
    }
}
