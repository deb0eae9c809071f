//! What a mount asks of the kernel at INIT.

use fuser::{InitFlags, KernelConfig};

use super::Config;

/// The kind of tree a session serves, for the INIT negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A live tree (with or without snapshots and virtual directories).
    Live,
    /// A read-only view of a store (`bkfs mount --store`).
    View,
}

/// What was agreed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Negotiated {
    pub passthrough: bool,
    /// `FUSE_HANDLE_KILLPRIV_V2`: removing set-user-id bits and
    /// capabilities on writes and truncation is the daemon's job.
    pub kill_privs: bool,
}

fn want(config: &mut KernelConfig, flag: InitFlags, what: &str) -> bool {
    match config.add_capabilities(flag) {
        Ok(()) => true,
        Err(_) => {
            tracing::info!("kernel lacks {what}");
            false
        }
    }
}

/// Negotiates `cfg` with the kernel.
pub fn negotiate(cfg: &Config, config: &mut KernelConfig) -> Negotiated {
    let mut agreed = Negotiated::default();
    match cfg.profile {
        Profile::Live => {
            // Mode bits arrive unmasked with the caller's umask (see live::caller).
            want(config, InitFlags::FUSE_DONT_MASK, "FUSE_DONT_MASK");
            // The kernel enforces POSIX ACLs (with default_permissions).
            want(config, InitFlags::FUSE_POSIX_ACL, "FUSE_POSIX_ACL");
            // No FUSE_ATOMIC_O_TRUNC: with it the kernel hands O_TRUNC to
            // OPEN and the daemon truncates before the kernel's own checks
            // of the open (a running program, ETXTBSY) and whatever the
            // access mode (O_RDONLY|O_TRUNC too). Without it the kernel
            // truncates with a SETATTR once the open is allowed: one round
            // trip more for an open that truncates an existing file,
            // through the barrier and the pre-image like any truncation.
            want(
                config,
                InitFlags::FUSE_DO_READDIRPLUS,
                "FUSE_DO_READDIRPLUS",
            );
            want(
                config,
                InitFlags::FUSE_READDIRPLUS_AUTO,
                "FUSE_READDIRPLUS_AUTO",
            );
            want(
                config,
                InitFlags::FUSE_PARALLEL_DIROPS,
                "FUSE_PARALLEL_DIROPS",
            );
            want(
                config,
                InitFlags::FUSE_CACHE_SYMLINKS,
                "FUSE_CACHE_SYMLINKS",
            );
            // Asynchronous direct I/O lets an aio write(2) return, and its
            // inode lock go, before its requests are answered: a fence could
            // not wait for it.
            if !cfg.point_in_time {
                want(config, InitFlags::FUSE_ASYNC_DIO, "FUSE_ASYNC_DIO");
            }
            // Without this the kernel asks for security.capability before
            // every write (a round trip each); with it the daemon removes
            // privileges.
            agreed.kill_privs = want(
                config,
                InitFlags::FUSE_HANDLE_KILLPRIV_V2,
                "FUSE_HANDLE_KILLPRIV_V2",
            );
            if cfg.writeback {
                want(
                    config,
                    InitFlags::FUSE_WRITEBACK_CACHE,
                    "FUSE_WRITEBACK_CACHE",
                );
            } else if cfg.passthrough
                && want(config, InitFlags::FUSE_PASSTHROUGH, "FUSE_PASSTHROUGH")
                && config.set_max_stack_depth(1).is_ok()
            {
                agreed.passthrough = true;
            }
        }
        Profile::View => {
            for (flag, what) in [
                // The kernel enforces the recorded POSIX ACLs (with default_permissions).
                (InitFlags::FUSE_POSIX_ACL, "FUSE_POSIX_ACL"),
                // Always readdirplus, not the kernel's "auto" choice: that asks
                // for attributes only in a listing's first reply and leaves the
                // rest of a large directory to one LOOKUP per name, while
                // attributes cost the view nothing more than names.
                (InitFlags::FUSE_DO_READDIRPLUS, "FUSE_DO_READDIRPLUS"),
                (InitFlags::FUSE_PARALLEL_DIROPS, "FUSE_PARALLEL_DIROPS"),
                // A symlink's target never changes for a given inode (`latest`
                // gets a new inode when its target changes).
                (InitFlags::FUSE_CACHE_SYMLINKS, "FUSE_CACHE_SYMLINKS"),
                (InitFlags::FUSE_ASYNC_READ, "FUSE_ASYNC_READ"),
            ] {
                want(config, flag, what);
            }
        }
    }
    let _ = config.set_max_background(64);
    let _ = config.set_congestion_threshold(48);
    match cfg.profile {
        Profile::Live => tracing::info!(
            "FUSE session ready: passthrough={}, writeback={}",
            agreed.passthrough,
            cfg.writeback
        ),
        Profile::View => tracing::info!("FUSE session ready: read-only snapshot view"),
    }
    agreed
}
