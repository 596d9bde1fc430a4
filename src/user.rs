//! `exec --user USER[:GROUP]`: decrypt with the privileges kmsenv started with
//! (a root-only credentials file, a key file), then run the command as someone
//! who could not have done that.
//!
//! The ids are resolved before any KMS call (a typo costs nothing), and the switch
//! happens after everything is decrypted, just before exec: supplementary groups,
//! then the group, then the user (that order, because each step needs the
//! privilege the next one drops). Afterwards we check that the change holds and
//! cannot be undone — `setuid(0)` must fail — and refuse to run the command
//! otherwise (125), the check gosu and su-exec leave to the kernel.
//!
//! Numeric ids always work, so `FROM scratch` images need no `/etc/passwd`; names
//! are looked up in the system's user and group databases (musl reads
//! `/etc/passwd` and `/etc/group` directly). This module does not change
//! capabilities, the working directory, `HOME` or any other variable: the command
//! gets exactly the environment it would get without `--user`.

use std::ffi::CString;

use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User, getgrouplist, getresgid, getresuid, setgid, setgroups, setuid};

use crate::error::{Class, Error, Result};

/// Who the command runs as: resolved ids, ready to switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    uid: Uid,
    gid: Gid,
    /// Supplementary groups, set with setgroups(2).
    groups: Vec<Gid>,
    /// The `--user` argument as given, for messages (names and numbers only).
    shown: String,
}

impl Target {
    /// Resolves `USER[:GROUP]`. `USER` is a name or a number; without `:GROUP` the
    /// group is the user's primary group from the user database, or, for a number
    /// the database does not know, the same number as the user (never root's
    /// group 0 by accident, as `docker run --user 1000` gives). Supplementary groups
    /// are the user's memberships from the group database when no group is given,
    /// else only the group named.
    pub fn resolve(spec: &str) -> Result<Target> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if user.is_empty() || group.is_some_and(str::is_empty) {
            return Err(Error::usage(format!(
                "--user {spec}: expected USER or USER:GROUP (names or numeric ids)"
            )));
        }
        let entry = match number(spec, user)? {
            Some(uid) => lookup(spec, || User::from_uid(Uid::from_raw(uid)))?
                .map(|u| (u.uid, u.gid, Some(u.name)))
                .unwrap_or((Uid::from_raw(uid), Gid::from_raw(uid), None)),
            None => match lookup(spec, || User::from_name(user))? {
                Some(u) => (u.uid, u.gid, Some(u.name)),
                None => {
                    return Err(
                        Error::input(format!("--user {spec}: no user named {user} on this system"))
                            .with_hint("use a numeric id (USER:GROUP as numbers works without /etc/passwd)"),
                    );
                }
            },
        };
        let (uid, primary, name) = entry;
        let (gid, groups) = match group {
            Some(g) => {
                let gid = match number(spec, g)? {
                    Some(gid) => Gid::from_raw(gid),
                    None => match lookup(spec, || Group::from_name(g))? {
                        Some(found) => found.gid,
                        None => {
                            return Err(Error::input(format!(
                                "--user {spec}: no group named {g} on this system"
                            ))
                            .with_hint("use a numeric group id"));
                        }
                    },
                };
                (gid, vec![gid])
            }
            None => {
                let groups = match &name {
                    Some(n) => memberships(spec, n, primary)?,
                    None => vec![primary],
                };
                (primary, groups)
            }
        };
        Ok(Target {
            uid,
            gid,
            groups,
            shown: spec.to_string(),
        })
    }

    /// Becomes the target user: setgroups, setgid, setuid, then checks that the
    /// real, effective and saved ids are the target's and that root cannot be
    /// regained. Any failure is 125 and the command must not run.
    pub fn switch(&self) -> Result<()> {
        setgroups(&self.groups).map_err(|e| self.failed("setgroups", e))?;
        setgid(self.gid).map_err(|e| self.failed("setgid", e))?;
        setuid(self.uid).map_err(|e| self.failed("setuid", e))?;
        self.verify()
    }

    fn verify(&self) -> Result<()> {
        let u = getresuid().map_err(|e| self.failed("getresuid", e))?;
        let g = getresgid().map_err(|e| self.failed("getresgid", e))?;
        let ids_hold = [u.real, u.effective, u.saved].iter().all(|&x| x == self.uid)
            && [g.real, g.effective, g.saved].iter().all(|&x| x == self.gid);
        if !ids_hold {
            return Err(self.not_dropped("the real, effective and saved ids are not all the target's"));
        }
        if !self.uid.is_root() {
            // Both must fail with EPERM now; if either works, privileges remain
            // (a capability kept across setuid, a security module in the way).
            if setuid(Uid::from_raw(0)).is_ok() {
                return Err(self.not_dropped("setuid(0) still succeeds"));
            }
            // (setgid to one's own group always works, so only for a group not 0.)
            if self.gid.as_raw() != 0 && setgid(Gid::from_raw(0)).is_ok() {
                return Err(self.not_dropped("setgid(0) still succeeds"));
            }
        }
        Ok(())
    }

    fn failed(&self, call: &str, e: Errno) -> Error {
        let err = Error::new(
            Class::Io,
            format!(
                "--user {}: {call} failed: {}; the command was not run",
                self.shown,
                e.desc()
            ),
        );
        match e {
            Errno::EPERM => err.with_hint(
                "--user needs kmsenv to start as root (or with CAP_SETUID and CAP_SETGID); \
                 start the container as root and let kmsenv drop to USER",
            ),
            _ => err,
        }
    }

    fn not_dropped(&self, why: &str) -> Error {
        Error::new(
            Class::Io,
            format!(
                "--user {}: privileges could not be dropped for good ({why}); the command was not run",
                self.shown
            ),
        )
    }
}

/// A decimal id, or None for a name. Ids that do not fit, and -1 (which the
/// id syscalls read as "leave unchanged"), are usage errors.
fn number(spec: &str, text: &str) -> Result<Option<u32>> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(n) if n != u32::MAX => Ok(Some(n)),
        _ => Err(Error::usage(format!("--user {spec}: id {text} is out of range"))),
    }
}

/// A user or group database lookup. No database at all (`FROM scratch`: musl then
/// fails with ENOENT) knows nobody; any other failure to read it is 125.
fn lookup<T>(spec: &str, find: impl FnOnce() -> nix::Result<Option<T>>) -> Result<Option<T>> {
    match find() {
        Ok(found) => Ok(found),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(Error::new(
            Class::Io,
            format!("--user {spec}: cannot read the user database: {}", e.desc()),
        )),
    }
}

fn memberships(spec: &str, name: &str, primary: Gid) -> Result<Vec<Gid>> {
    let Ok(cname) = CString::new(name) else {
        return Ok(vec![primary]);
    };
    getgrouplist(&cname, primary).map_err(|e| {
        Error::new(
            Class::Io,
            format!("--user {spec}: cannot list the groups of {name}: {}", e.desc()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TestResult;

    #[test]
    fn numeric_ids_need_no_user_database() -> TestResult {
        // 4000000 is in no /etc/passwd: the group defaults to the same number.
        let t = Target::resolve("4000000")?;
        assert_eq!((t.uid.as_raw(), t.gid.as_raw()), (4000000, 4000000));
        assert_eq!(t.groups, vec![Gid::from_raw(4000000)]);
        let t = Target::resolve("4000000:4000001")?;
        assert_eq!((t.uid.as_raw(), t.gid.as_raw()), (4000000, 4000001));
        assert_eq!(t.groups, vec![Gid::from_raw(4000001)]);
        Ok(())
    }

    #[test]
    fn a_known_numeric_user_takes_its_primary_group() -> TestResult {
        // uid 0 is root on every system these tests run on.
        let t = Target::resolve("0")?;
        assert_eq!(t.gid.as_raw(), 0);
        let t = Target::resolve("root")?;
        assert_eq!((t.uid.as_raw(), t.gid.as_raw()), (0, 0));
        Ok(())
    }

    #[test]
    fn unknown_names_and_bad_specs_fail_closed() {
        for spec in [
            "no-such-user-kmsenv",
            "0:no-such-group-kmsenv",
            "",
            ":0",
            "0:",
            "4294967295",
            "99999999999",
        ] {
            let e = Target::resolve(spec).err();
            assert!(
                e.is_some_and(|e| e.exit_code() == 125),
                "{spec:?} should be refused"
            );
        }
    }
}
