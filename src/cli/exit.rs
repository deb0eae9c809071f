//! The exit statuses of `bkfs` (docs/CLI.md). Only the CLI maps errors to
//! them: the layers below return typed errors and know nothing of processes.
//! (`bkfs mount` maps its own, [`crate::mount_cmd::MountError::exit_code`]:
//! its daemon reports through them too.)

use crate::store::Error;

/// A bad command line or a bad name (clap's own status for bad arguments).
pub const USAGE: i32 = 2;

/// The exit status of a command that failed with store error `e`.
pub fn of_store(e: &Error) -> i32 {
    match e {
        _ if e.is_no_space() => 8,
        Error::NotAStore(..) => 4,
        Error::NewerVersion { .. } => 5,
        Error::NoSnapshot(_) | Error::NoPath { .. } => 6,
        Error::Locked(_) => 7,
        Error::Corrupt(_) => 9,
        Error::DestNotEmpty(_) => 10,
        Error::Cancelled => 11,
        Error::InvalidName(..) => USAGE,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn each_error_has_its_documented_status() {
        let enospc = Error::io("x", io::Error::from_raw_os_error(libc::ENOSPC));
        let eio = Error::io("x", io::Error::from_raw_os_error(libc::EIO));
        let cases = [
            (enospc, 8),
            (eio, 1),
            (Error::NotAStore("s".into(), "why".into()), 4),
            (Error::NoSnapshot("n".into()), 6),
            (Error::Locked("pid 1".into()), 7),
            (Error::Corrupt("x".into()), 9),
            (Error::DestNotEmpty("d".into()), 10),
            (Error::Cancelled, 11),
            (Error::InvalidName("..".into(), "why"), 2),
            (Error::Other("x".into()), 1),
        ];
        for (e, code) in cases {
            assert_eq!(of_store(&e), code, "{e}");
        }
    }
}
