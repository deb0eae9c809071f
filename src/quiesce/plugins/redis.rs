//! `redis`: BGSAVE at prepare and wait until LASTSAVE moves (and the save
//! reports ok), so the snapshot holds an RDB file as of that moment; the
//! time of the save is recorded (`lastsave`).

use std::ffi::OsString;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{ParamError, Params, PhaseCx, Plugin, PluginError};
use crate::quiesce::run::run;

pub struct Redis {
    cli: String,
    host: Option<String>,
    port: Option<i64>,
    socket: Option<String>,
    pos: Map<String, Value>,
}

impl Redis {
    pub fn new(p: &Params) -> Result<Self, ParamError> {
        p.known(&["redis_cli", "host", "port", "socket"])?;
        let socket = p.str("socket")?;
        let host = p.str("host")?;
        if socket.is_some() && host.is_some() {
            return Err(ParamError::new("socket", "give socket or host, not both"));
        }
        Ok(Redis {
            cli: p.str("redis_cli")?.unwrap_or_else(|| "redis-cli".into()),
            host,
            port: p.int("port")?,
            socket,
            pos: Map::new(),
        })
    }

    /// Runs one command; the reply's lines. A password, if needed, comes
    /// from REDISCLI_AUTH in bkfs's environment (never from the profile).
    fn cmd(&self, cx: &PhaseCx, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut argv: Vec<OsString> = vec![self.cli.clone().into()];
        if let Some(s) = &self.socket {
            argv.extend(["-s".into(), s.into()]);
        }
        if let Some(h) = &self.host {
            argv.extend(["-h".into(), h.into()]);
        }
        if let Some(p) = self.port {
            argv.extend(["-p".into(), p.to_string().into()]);
        }
        argv.extend(args.iter().map(OsString::from));
        let r = run(&argv, cx.creds, timeout, &[]);
        let out = r.output.trim().to_string();
        // redis-cli exits 0 on server errors; they start with "ERR" or "(error)".
        if !r.ok()
            || out.starts_with("ERR")
            || out.starts_with("(error)")
            || out.starts_with("Could not connect")
        {
            return Err(if r.ok() {
                out
            } else {
                r.describe(&format!("redis-cli {}", args.join(" ")))
            });
        }
        Ok(out)
    }

    fn lastsave(&self, cx: &PhaseCx, timeout: Duration) -> Result<i64, String> {
        let s = self.cmd(cx, &["LASTSAVE"], timeout)?;
        s.trim()
            .parse()
            .map_err(|_| format!("unexpected LASTSAVE reply {s:?}"))
    }
}

impl Plugin for Redis {
    fn identify(&mut self, cx: &PhaseCx) -> Result<String, PluginError> {
        self.pos = Map::new();
        let pong = self.cmd(cx, &["PING"], cx.timeout)?;
        if pong != "PONG" {
            return Err(format!("PING answered {pong:?}").into());
        }
        Ok("Redis".into())
    }

    fn prepare(&mut self, cx: &PhaseCx) -> Result<(), PluginError> {
        let deadline = Instant::now() + cx.timeout;
        let before = self.lastsave(cx, cx.timeout)?;
        // LASTSAVE has a resolution of a second: make sure ours is later.
        loop {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            if now > before {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let r = self.cmd(cx, &["BGSAVE", "SCHEDULE"], left)?;
        if !r.contains("started") && !r.contains("scheduled") {
            return Err(format!("BGSAVE answered {r:?}").into());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "BGSAVE did not finish within {:.1}s",
                    cx.timeout.as_secs_f64()
                )
                .into());
            }
            let now = self.lastsave(cx, left)?;
            if now > before {
                let info = self.cmd(cx, &["INFO", "persistence"], left)?;
                if info
                    .lines()
                    .any(|l| l.trim() == "rdb_last_bgsave_status:err")
                {
                    return Err("BGSAVE failed (rdb_last_bgsave_status:err)".into());
                }
                self.pos.insert("lastsave".into(), json!(now));
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn freeze(&mut self, _cx: &PhaseCx) -> Result<(), PluginError> {
        Ok(())
    }

    fn thaw(&mut self, _cx: &PhaseCx) -> Result<(), PluginError> {
        Ok(())
    }

    fn positions(&self) -> Map<String, Value> {
        self.pos.clone()
    }
}
