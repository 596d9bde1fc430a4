//! Processes started while an AWS session lives do not outlive it.
//!
//! The SDK runs a profile's `credential_process` as `sh -c COMMAND`, in our
//! process group, and when the deadline passes it merely stops waiting: the
//! shell and everything it started would stay behind. We cannot kill the
//! process group (it is the caller's, and holds kmsenv itself), so while a
//! session lives kmsenv is a child subreaper (`PR_SET_CHILD_SUBREAPER`): what
//! those processes start is re-parented to us, not to init, when its parent
//! dies. When the last session ends, every child that was not already ours
//! before is killed and reaped, generation by generation (a killed shell's
//! children become ours as it dies), until none is left or [`MAX_ROUNDS`]
//! have passed. The flag is then cleared: it survives execve and would change
//! how the command's own orphans are reaped.
//!
//! Children are listed from `/proc/self/task/*/children`; without `/proc` there
//! is nothing to list and nothing is killed. Children that kmsenv already had
//! when the first session started (a shell that exec'd kmsenv may have left
//! some) are never touched: after exec they are the command's.

use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

/// Generations of descendants killed at most (a shell, its children, theirs…);
/// a process that keeps forking faster than we kill is left after that.
const MAX_ROUNDS: usize = 32;

struct State {
    /// Live sessions: the flag is set by the first and cleanup runs after the last.
    sessions: usize,
    /// Our children before the first session: not ours to kill.
    before: Vec<i32>,
    /// Whether the subreaper flag was set (and so must be cleared).
    adopting: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    sessions: 0,
    before: Vec::new(),
    adopting: false,
});

/// Held by a live session; see the module doc.
#[derive(Debug)]
pub struct Guard(());

/// Start adopting orphans for a session. If the flag cannot be set, the
/// session's direct children are still killed at the end.
pub fn start() -> Guard {
    let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
    if st.sessions == 0 {
        st.before = children().unwrap_or_default();
        st.adopting = nix::sys::prctl::set_child_subreaper(true).is_ok();
    }
    st.sessions += 1;
    Guard(())
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
        st.sessions = st.sessions.saturating_sub(1);
        if st.sessions > 0 {
            return;
        }
        reap_new_children(&st.before);
        if st.adopting {
            st.adopting = false;
            if let Err(e) = nix::sys::prctl::set_child_subreaper(false) {
                // Nowhere to return this from a drop; the command would inherit the flag.
                eprintln!(
                    "kmsenv: warning: cannot stop adopting orphans (PR_SET_CHILD_SUBREAPER): {}",
                    e.desc()
                );
            }
        }
    }
}

/// Kill and reap every child not in `before`, round after round.
fn reap_new_children(before: &[i32]) {
    for _ in 0..MAX_ROUNDS {
        let Ok(now) = children() else { return };
        let ours: Vec<Pid> = now
            .into_iter()
            .filter(|p| !before.contains(p))
            .map(Pid::from_raw)
            .collect();
        if ours.is_empty() {
            return;
        }
        for &pid in &ours {
            match kill(pid, Signal::SIGKILL) {
                // ESRCH: a zombie already, or reaped by the runtime meanwhile.
                Ok(()) | Err(Errno::ESRCH) => {}
                // EPERM (a child that became another user's): it cannot be
                // stopped; waiting for it below would hang, so leave it.
                Err(_) => continue,
            }
            // Blocks until it is dead: SIGKILL cannot be caught. ECHILD: someone
            // (the runtime's own reaper) already collected it.
            while let Err(Errno::EINTR) = waitpid(pid, None) {}
        }
    }
}

/// The PIDs of our children, from every thread's `children` file.
fn children() -> std::io::Result<Vec<i32>> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let path = task?.path().join("children");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // A thread that ended since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.extend(
            text.split_ascii_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_kills_what_it_started_and_spares_older_children() -> crate::error::TestResult {
        let mut older = std::process::Command::new("sleep").arg("60").spawn()?;
        let guard = start();
        // A shell that starts a grandchild and waits: both must be gone after.
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh.stdout.take().ok_or("no stdout")?),
            &mut line,
        )?;
        let grandchild: i32 = line.trim().parse()?;
        drop(guard);
        assert!(
            matches!(sh.try_wait(), Err(_) | Ok(Some(_))),
            "the shell was reaped"
        );
        let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        let gone = state.is_empty()
            || state
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
        assert!(gone, "grandchild {grandchild} still alive: {state}");
        assert!(
            older.try_wait()?.is_none(),
            "a child from before the session was killed"
        );
        older.kill()?;
        older.wait()?;
        let flag = nix::sys::prctl::get_child_subreaper()?;
        assert!(!flag, "the subreaper flag was left set");
        Ok(())
    }
}
