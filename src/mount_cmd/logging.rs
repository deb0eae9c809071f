//! Where the daemon logs: a file (`log=`), stderr (foreground), or syslog
//! (which journald also collects).

use std::ffi::CString;
use std::io::{IsTerminal, Write};
use std::path::Path;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// `BKFS_LOG` (an env-filter directive) or info. When the session ends,
/// fuser unmounts once more, after the kernel already has: it announces it
/// (`fuser::mnt`, info: a second "unmounting" line beside the daemon's own
/// "unmounted") and warns that it failed (`fuser::session`). Both hidden.
fn filter() -> EnvFilter {
    EnvFilter::try_from_env("BKFS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,fuser::mnt=warn,fuser::session=error"))
}

pub enum Target<'a> {
    File(&'a Path),
    Stderr,
    Syslog,
}

/// Installs the global subscriber (and the bridge for fuser's `log` records).
pub fn init(target: Target<'_>) -> std::io::Result<()> {
    let builder = tracing_subscriber::fmt().with_env_filter(filter());
    let result = match target {
        Target::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            // tracing-subscriber writes through a std Mutex it locks
            // itself (its MakeWriter is for that type): the one exception
            // to the lock policy of src/lib.rs.
            #[allow(clippy::disallowed_types)]
            let file = std::sync::Mutex::new(file);
            builder.with_ansi(false).with_writer(file).try_init()
        }
        Target::Stderr => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
        Target::Syslog => {
            crate::os::proc::openlog_daemon();
            builder
                .with_ansi(false)
                .without_time()
                .with_writer(Syslog)
                .try_init()
        }
    };
    // A subscriber set earlier (tests) is fine.
    let _ = result;
    Ok(())
}

/// Makes one syslog record per formatted event, at the event's level.
struct Syslog;

pub struct SyslogLine {
    priority: libc::c_int,
    buf: Vec<u8>,
}

impl Write for SyslogLine {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine {
    fn drop(&mut self) {
        while self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        self.buf.retain(|&b| b != 0);
        if self.buf.is_empty() {
            return;
        }
        let msg = CString::new(std::mem::take(&mut self.buf)).expect("NULs removed");
        crate::os::proc::syslog(self.priority, &msg);
    }
}

impl<'a> MakeWriter<'a> for Syslog {
    type Writer = SyslogLine;

    fn make_writer(&'a self) -> SyslogLine {
        SyslogLine {
            priority: libc::LOG_INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SyslogLine {
        let priority = match *meta.level() {
            tracing::Level::ERROR => libc::LOG_ERR,
            tracing::Level::WARN => libc::LOG_WARNING,
            tracing::Level::INFO => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        SyslogLine {
            priority,
            buf: Vec::new(),
        }
    }
}
