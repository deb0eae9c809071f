//! `mysql` (also `mariadb`): a held client session that takes the server's
//! backup lock at freeze and records the binary log position and GTID while
//! it is held; thaw releases it. Locks:
//! - `backup_stage` (MariaDB ≥ 10.4): BACKUP STAGE START and FLUSH at
//!   prepare, BLOCK_DDL and BLOCK_COMMIT at freeze, END at thaw;
//! - `instance` (MySQL ≥ 8.0): LOCK INSTANCE FOR BACKUP (blocks DDL) plus
//!   FLUSH TABLES WITH READ LOCK (blocks writes) at freeze;
//! - `ftwrl`: FLUSH TABLES WITH READ LOCK at freeze, UNLOCK TABLES at thaw.
//!
//! The default `auto` picks backup_stage on MariaDB, else instance on MySQL 8+,
//! else ftwrl.

use std::ffi::OsString;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{ParamError, Params, PhaseCx, Plugin, PluginError};
use crate::quiesce::run::Session;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Lock {
    Auto,
    BackupStage,
    Instance,
    Ftwrl,
}

pub struct Mysql {
    lock: Lock,
    chosen: Lock,
    client: String,
    socket: Option<String>,
    defaults_file: Option<String>,
    mariadb: bool,
    session: Option<Session>,
    held: bool,
    pos: Map<String, Value>,
}

fn echo(marker: &str) -> String {
    format!("SELECT '{marker}';")
}

fn error_in(lines: &[String]) -> Option<String> {
    lines.iter().find(|l| l.starts_with("ERROR")).cloned()
}

impl Mysql {
    pub fn new(p: &Params) -> Result<Self, ParamError> {
        p.known(&["lock", "client", "socket", "defaults_file"])?;
        let lock = match p.str("lock")?.as_deref() {
            None | Some("auto") => Lock::Auto,
            Some("backup_stage") => Lock::BackupStage,
            Some("instance") => Lock::Instance,
            Some("ftwrl") => Lock::Ftwrl,
            Some(o) => {
                return Err(ParamError::new(
                    "lock",
                    format!("unknown lock {o:?} (auto, backup_stage, instance, ftwrl)"),
                ))
            }
        };
        Ok(Mysql {
            lock,
            chosen: lock,
            client: p.str("client")?.unwrap_or_else(|| "mysql".into()),
            socket: p.str("socket")?,
            defaults_file: p.str("defaults_file")?,
            mariadb: false,
            session: None,
            held: false,
            pos: Map::new(),
        })
    }

    fn query(&mut self, cx: &PhaseCx, sql: &str, timeout: Duration) -> Result<Vec<String>, String> {
        if self.session.is_none() {
            let mut argv: Vec<OsString> = vec![self.client.clone().into()];
            // --defaults-file must come first.
            if let Some(f) = &self.defaults_file {
                argv.push(format!("--defaults-file={f}").into());
            }
            argv.extend(
                ["--batch", "--skip-column-names", "--unbuffered", "--force"].map(OsString::from),
            );
            if let Some(s) = &self.socket {
                argv.push(format!("--socket={s}").into());
            }
            self.session = Some(Session::start(&argv, cx.creds, &[], echo)?);
        }
        let s = self.session.as_mut().unwrap();
        let out = s.exchange(sql, timeout).inspect_err(|_| {
            self.session = None;
            self.held = false;
        })?;
        if let Some(e) = error_in(&out) {
            return Err(e);
        }
        Ok(out)
    }

    fn close(&mut self) {
        self.held = false;
        if let Some(s) = self.session.take() {
            s.close(Duration::from_secs(2));
        }
    }

    fn record_positions(&mut self, cx: &PhaseCx) -> Result<(), String> {
        let t = cx.timeout;
        // File, Position, Binlog_Do_DB, Binlog_Ignore_DB[, Executed_Gtid_Set]; empty without a binlog.
        let status = self
            .query(cx, "SHOW MASTER STATUS;", t)
            .or_else(|_| self.query(cx, "SHOW BINARY LOG STATUS;", t))?;
        if let Some(l) = status.first() {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() >= 2 {
                self.pos.insert("binlog_file".into(), json!(f[0]));
                self.pos
                    .insert("binlog_position".into(), json!(f[1].parse::<u64>().ok()));
            }
        }
        let gtid_sql = if self.mariadb {
            "SELECT @@GLOBAL.gtid_binlog_pos;"
        } else {
            "SELECT @@GLOBAL.gtid_executed;"
        };
        if let Ok(g) = self.query(cx, gtid_sql, t) {
            let g = g.join("").replace("\\n", "");
            if !g.trim().is_empty() {
                self.pos.insert("gtid".into(), json!(g.trim()));
            }
        }
        Ok(())
    }
}

impl Plugin for Mysql {
    fn identify(&mut self, cx: &PhaseCx) -> Result<String, PluginError> {
        self.pos = Map::new();
        let v = self.query(cx, "SELECT VERSION();", cx.timeout)?.join("");
        self.mariadb = v.to_ascii_lowercase().contains("mariadb");
        let major: u32 = v
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        self.chosen = match self.lock {
            Lock::Auto if self.mariadb => Lock::BackupStage,
            Lock::Auto if major >= 8 => Lock::Instance,
            Lock::Auto => Lock::Ftwrl,
            l => l,
        };
        self.pos.insert("version".into(), json!(v));
        self.pos
            .insert("lock".into(), json!(format!("{:?}", self.chosen)));
        Ok(format!("{} ({:?})", v, self.chosen))
    }

    fn prepare(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        if self.chosen == Lock::BackupStage {
            self.held = true;
            self.query(cx, "BACKUP STAGE START;", cx.timeout)?;
            self.query(cx, "BACKUP STAGE FLUSH;", cx.timeout)?;
        }
        Ok(())
    }

    fn freeze(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        self.held = true;
        let sql = match self.chosen {
            Lock::BackupStage => "BACKUP STAGE BLOCK_DDL;\nBACKUP STAGE BLOCK_COMMIT;",
            Lock::Instance => "LOCK INSTANCE FOR BACKUP;\nFLUSH TABLES WITH READ LOCK;",
            _ => "FLUSH TABLES WITH READ LOCK;",
        };
        self.query(cx, sql, cx.timeout)?;
        self.record_positions(cx).map_err(PluginError::from)
    }

    fn thaw(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        if self.held {
            let sql = match self.chosen {
                Lock::BackupStage => "BACKUP STAGE END;",
                Lock::Instance => "UNLOCK TABLES;\nUNLOCK INSTANCE;",
                _ => "UNLOCK TABLES;",
            };
            // If this fails, closing the session releases the locks anyway.
            let _ = self.query(cx, sql, cx.timeout.min(Duration::from_secs(10)));
        }
        self.close();
        Ok(())
    }

    fn positions(&self) -> Map<String, Value> {
        self.pos.clone()
    }
}
