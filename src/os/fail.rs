//! Failpoints: the write-class calls of this layer (write, fsync, rename,
//! link, copy) can be made to fail, crash or stall at a named call site,
//! for crash and fault tests.
//!
//! They exist only in builds with the cargo feature `failpoints` (the test
//! suite's: `tools/test.sh` enables it). Elsewhere [`point`] is an empty
//! inline function and costs nothing.
//!
//! A process arms them from the environment variable `BKFS_FAILPOINTS`
//! (read once, at the first call reached, or by [`arm_from_env`] at start):
//!
//! ```text
//! BKFS_FAILPOINTS = RULE[,RULE]...
//! RULE            = SITE=ACTION[@N]
//! SITE            = a site name (pack.fsync), or a prefix and * (pack.*; * alone: every site)
//! ACTION          = error:ERRNO   the call fails with ERRNO (ENOSPC, EIO... or a number), doing nothing
//!                 | panic         the calling thread panics
//!                 | abort         the process aborts at once (SIGABRT, no core dump: as a crash,
//!                                 nothing cleaned up or flushed)
//!                 | delay:MS      the call waits MS milliseconds, then proceeds
//!                 | off           nothing (a rule that stops later ones from matching)
//! @N              the action starts at the Nth call the rule matches (default 1: the first),
//!                 and every later call gets it too
//! ```
//!
//! The first rule whose SITE matches decides. Example:
//! `BKFS_FAILPOINTS=pack.fsync=error:ENOSPC,area.data=delay:200@3`.
//! docs/ARCHITECTURE.md lists the sites.

#[cfg(any(feature = "failpoints", test))]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(any(feature = "failpoints", test))]
use std::time::Duration;

#[cfg(any(feature = "failpoints", test))]
use super::Errno;
#[cfg(feature = "failpoints")]
use super::Result;
use super::Site;

/// The environment variable that arms failpoints.
pub const ENV: &str = "BKFS_FAILPOINTS";

/// Whether this build has failpoints (the `failpoints` cargo feature).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// The failpoint of call site `site`: `Ok` unless a rule armed for it says
/// otherwise (see the module comment). The OS layer calls it first thing in
/// every write-class call.
#[cfg(feature = "failpoints")]
#[inline]
pub fn point(site: Site) -> Result<()> {
    rules().fire(site)
}

/// The failpoint of call site `site`: in this build (without the
/// `failpoints` feature), nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn point(site: Site) -> super::Result<()> {
    let _ = site;
    Ok(())
}

/// Reads `BKFS_FAILPOINTS` now, so that a rule that does not parse stops
/// the process at its start (main calls it) rather than at the first write.
///
/// # Errors
/// The reason, for a rule that does not parse, or for a variable set in a
/// build without failpoints (a test that arms one would otherwise test nothing).
pub fn arm_from_env() -> std::result::Result<(), String> {
    let Some(spec) = std::env::var_os(ENV) else {
        return Ok(());
    };
    if !ENABLED {
        return Err(format!(
            "{ENV} is set, but this bkfs was built without failpoints (cargo feature `failpoints`)"
        ));
    }
    #[cfg(feature = "failpoints")]
    {
        let spec = spec.to_string_lossy();
        Rules::parse(&spec).map_err(|e| format!("{ENV}={spec}: {e}"))?;
        rules();
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = spec;
    Ok(())
}

/// The rules of this process, parsed from the environment once.
#[cfg(feature = "failpoints")]
fn rules() -> &'static Rules {
    static RULES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        let spec = std::env::var(ENV).unwrap_or_default();
        Rules::parse(&spec).unwrap_or_else(|e| panic!("{ENV}={spec}: {e}"))
    })
}

#[cfg(any(feature = "failpoints", test))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Error(Errno),
    Panic,
    Abort,
    Delay(Duration),
    Off,
}

#[cfg(any(feature = "failpoints", test))]
#[derive(Debug)]
struct Rule {
    /// The site, or the prefix of the sites, it matches.
    site: String,
    prefix: bool,
    action: Action,
    /// The first call that gets the action (1-based).
    from: u64,
    calls: AtomicU64,
}

#[cfg(any(feature = "failpoints", test))]
#[derive(Debug, Default)]
struct Rules(Vec<Rule>);

#[cfg(any(feature = "failpoints", test))]
impl Rules {
    fn parse(spec: &str) -> std::result::Result<Rules, String> {
        let mut out = Vec::new();
        for rule in spec.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (site, action) = rule
                .split_once('=')
                .ok_or_else(|| format!("{rule:?}: want SITE=ACTION"))?;
            let (action, from) = match action.split_once('@') {
                Some((a, n)) => (
                    a,
                    n.parse::<u64>()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| format!("{rule:?}: @{n} is not a count from 1"))?,
                ),
                None => (action, 1),
            };
            let (site, prefix) = match site.strip_suffix('*') {
                Some(p) => (p, true),
                None => (site, false),
            };
            if site.is_empty() && !prefix {
                return Err(format!("{rule:?}: no site"));
            }
            out.push(Rule {
                site: site.to_string(),
                prefix,
                action: Self::action(action).map_err(|e| format!("{rule:?}: {e}"))?,
                from,
                calls: AtomicU64::new(0),
            });
        }
        Ok(Rules(out))
    }

    fn action(s: &str) -> std::result::Result<Action, String> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("error", Some(e)) => errno(e).map(Action::Error),
            ("panic", None) => Ok(Action::Panic),
            ("abort", None) => Ok(Action::Abort),
            ("delay", Some(ms)) => ms
                .parse()
                .map(|ms| Action::Delay(Duration::from_millis(ms)))
                .map_err(|_| format!("delay:{ms}: not a number of milliseconds")),
            ("off", None) => Ok(Action::Off),
            _ => Err(format!(
                "{s:?} is not an action (error:ERRNO, panic, abort, delay:MS, off)"
            )),
        }
    }

    /// The action for this call of `site`, counting it.
    fn action_for(&self, site: &str) -> Option<Action> {
        let rule = self.0.iter().find(|r| {
            if r.prefix {
                site.starts_with(&r.site)
            } else {
                site == r.site
            }
        })?;
        let n = rule.calls.fetch_add(1, Ordering::Relaxed) + 1;
        (n >= rule.from).then_some(rule.action)
    }

    #[cfg(feature = "failpoints")]
    fn fire(&self, site: Site) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        match self.action_for(site) {
            None | Some(Action::Off) => Ok(()),
            Some(Action::Error(e)) => {
                tracing::warn!("failpoint {site}: error {e}");
                Err(e)
            }
            Some(Action::Delay(d)) => {
                tracing::warn!("failpoint {site}: delay {d:?}");
                std::thread::sleep(d);
                Ok(())
            }
            Some(Action::Panic) => panic!("failpoint {site}: panic"),
            Some(Action::Abort) => {
                tracing::warn!("failpoint {site}: abort");
                eprintln!("bkfs: failpoint {site}: abort");
                // A crash on purpose leaves no core file where the test ran.
                super::proc::forbid_core_dump();
                std::process::abort()
            }
        }
    }
}

/// An errno by name (`ENOSPC`) or number.
#[cfg(any(feature = "failpoints", test))]
fn errno(s: &str) -> std::result::Result<Errno, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(Errno::from_raw(n));
    }
    let s = match s {
        "ENOTSUP" => "EOPNOTSUPP",
        "EWOULDBLOCK" => "EAGAIN",
        s => s,
    };
    (1..4096)
        .map(Errno::from_raw)
        .find(|e| format!("{e:?}") == s)
        .ok_or_else(|| format!("{s:?} is not an errno name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match_in_order() {
        let r = Rules::parse("pack.fsync=error:ENOSPC, area.*=delay:5@2,*=off,x=panic").unwrap();
        assert_eq!(
            r.action_for("pack.fsync"),
            Some(Action::Error(Errno::ENOSPC))
        );
        assert_eq!(
            r.action_for("pack.fsync"),
            Some(Action::Error(Errno::ENOSPC))
        );
        assert_eq!(r.action_for("area.data"), None, "@2: not the first call");
        assert_eq!(
            r.action_for("area.log"),
            Some(Action::Delay(Duration::from_millis(5)))
        );
        assert_eq!(r.action_for("index.write"), Some(Action::Off));
        assert_eq!(
            r.action_for("x"),
            Some(Action::Off),
            "the first match decides"
        );
        let r = Rules::parse("a=error:28,b=abort").unwrap();
        assert_eq!(r.action_for("a"), Some(Action::Error(Errno::ENOSPC)));
        assert_eq!(r.action_for("b"), Some(Action::Abort));
        assert_eq!(r.action_for("c"), None);
        assert!(Rules::parse("").unwrap().0.is_empty());
    }

    #[test]
    fn bad_rules_say_why() {
        for bad in [
            "pack.fsync",
            "pack.fsync=explode",
            "pack.fsync=error:ENOTANERRNO",
            "pack.fsync=error",
            "pack.fsync=delay:soon",
            "pack.fsync=abort@0",
            "=abort",
        ] {
            let e = Rules::parse(bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        assert_eq!(errno("ENOTSUP"), Ok(Errno::EOPNOTSUPP));
        assert_eq!(errno("EIO"), Ok(Errno::EIO));
    }
}
