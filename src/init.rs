//! `exec --init`: kmsenv stays as the command's parent and does what PID 1 must,
//! for apps that do not (most apps, and every shell script that backgrounds work):
//! reap every child that is reparented to it, forward signals, and exit with the
//! command's status. Without it the command *is* PID 1 and nothing reaps orphans.
//!
//! The design is tini's, and it avoids the bugs of secrets-init's PID-1 mode:
//! - **No race between reaping and waiting.** There is one `waitpid(-1)` loop; the
//!   command's status is picked out of it by PID. A separate wait for the command
//!   racing a reaper is how a peer ends with "waitid: no child processes".
//! - **No busy loop.** Every forwarded signal and SIGCHLD is blocked before the fork
//!   and taken with `sigtimedwait`: the parent sleeps in the kernel until one comes
//!   (or a second passes: then it reaps anyway, so a lost SIGCHLD cannot hang it).
//!   Blocking before the fork also means no signal can arrive in a window where
//!   nobody would forward it.
//! - **Every catchable signal is forwarded**, by number (real-time ones too),
//!   except the synchronous fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP,
//!   SIGSYS), which report kmsenv's own faults. SIGKILL and SIGSTOP cannot be.
//!
//! The child is the command exactly as without `--init`: same argv, environment and
//! memfds, dispositions untouched and the mask emptied by [`exec::exec`]. Like tini,
//! it runs in its own process group and is given the terminal when kmsenv had it,
//! so a terminal's ^C reaches it once (not once directly and once forwarded).
//! The parent drops every plaintext buffer right after the fork.

use std::ffi::OsString;
use std::os::fd::BorrowedFd;

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::{ForkResult, Pid, fork, getpgrp, getpid, setpgid, tcgetpgrp, tcsetpgrp};

use crate::error::{self, Class, Error, Result};
use crate::exec::{self, Environment};
use crate::user;

/// Decrypted and ready: fork, run `argv` in the child (as `user` if given), and
/// supervise it. Returns the exit code kmsenv must exit with: the command's own, or
/// 128+N when a signal N killed it. An `Err` means nothing was started.
pub fn run(argv: &[OsString], env: Environment, user: Option<&user::Target>) -> Result<i32> {
    let waited = waited_signals();
    let mut before = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited), Some(&mut before))
        .map_err(|e| failed("block signals (sigprocmask)", e))?;
    if let Err(e) = become_reaper() {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
        return Err(e);
    }
    let foreground = has_terminal();
    // SAFETY: the child only execs or exits, and kmsenv is single-threaded here:
    // the session's runtime was shut down and its threads joined before this
    // (`Session::end` with `join`, up to 100 ms for a DNS lookup still running), and the
    // file-reading thread was joined (`blocking::within`).
    match unsafe { fork() } {
        Err(e) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&before), None);
            Err(failed("fork", e))
        }
        Ok(ForkResult::Child) => child(argv, &env, user, foreground),
        Ok(ForkResult::Parent { child }) => {
            drop(env);
            supervise(child, &waited)
        }
    }
}

/// Every signal kmsenv blocks and waits for: all but the synchronous faults.
fn waited_signals() -> SigSet {
    let mut set = SigSet::all();
    for fault in [
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
        Signal::SIGTRAP,
        Signal::SIGSYS,
        Signal::SIGKILL,
        Signal::SIGSTOP,
    ] {
        set.remove(fault);
    }
    set
}

/// PID 1 of a namespace gets orphans already; anywhere else (under a supervisor,
/// `docker run --init`, a shell) kmsenv asks for them with PR_SET_CHILD_SUBREAPER.
fn become_reaper() -> Result<()> {
    if getpid().as_raw() == 1 {
        return Ok(());
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| failed("become a child subreaper (prctl)", e))
}

/// Whether kmsenv's stdin is a terminal whose foreground process group is ours: only
/// then is the terminal handed to the child (never taken from a shell's other job).
fn has_terminal() -> bool {
    // SAFETY: fd 0 is only borrowed for the call; if it is closed the call fails.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    tcgetpgrp(stdin).is_ok_and(|pgrp| pgrp == getpgrp())
}

/// In the child: own process group (and the terminal), the user switch, then exec.
/// Never returns: a failure is reported and ends the child with kmsenv's exit code
/// (125, 126 or 127), which the parent then exits with.
fn child(argv: &[OsString], env: &Environment, user: Option<&user::Target>, foreground: bool) -> ! {
    let result = (|| {
        setpgid(Pid::from_raw(0), Pid::from_raw(0))
            .map_err(|e| failed("start a process group (setpgid)", e))?;
        if foreground {
            // SIGTTOU is still blocked here, so a background group may take the terminal.
            // SAFETY: fd 0 is only borrowed for the call.
            let stdin = unsafe { BorrowedFd::borrow_raw(0) };
            match tcsetpgrp(stdin, getpgrp()) {
                Ok(()) | Err(Errno::ENOTTY) | Err(Errno::ENXIO) => {}
                Err(e) => return Err(failed("give the terminal to the command (tcsetpgrp)", e)),
            }
        }
        if let Some(user) = user {
            user.switch()?;
        }
        Err(exec::exec(argv, env))
    })();
    let e = match result {
        Ok(()) => Error::new(Class::Internal, "exec --init: the command returned without exec"),
        Err(e) => e,
    };
    error::report(&e);
    // SAFETY: _exit ends the forked child at once, without running the parent's
    // atexit handlers or flushing buffers that the parent owns.
    unsafe { libc::_exit(e.exit_code()) }
}

/// The parent's loop: wait for a signal; SIGCHLD reaps, anything else is forwarded.
/// Returns once the command itself has been reaped.
fn supervise(command: Pid, waited: &SigSet) -> Result<i32> {
    // A SIGCHLD can be lost: a thread of the SDK's runtime that is still ending
    // when we fork has the signals unblocked and may take it. So, as tini does,
    // the wait has a timeout and every pass reaps: a lost SIGCHLD costs at most
    // one period, never a hang.
    let period = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: `waited` is a valid, initialised sigset_t and `period` a valid
        // timespec; no siginfo is asked for.
        let signo = unsafe { libc::sigtimedwait(waited.as_ref(), std::ptr::null_mut(), &period) };
        if signo < 0 {
            match Errno::last() {
                Errno::EINTR | Errno::EAGAIN => {}
                e => return Err(failed("wait for signals (sigtimedwait)", e)),
            }
        } else if signo != libc::SIGCHLD {
            forward(command, signo);
        }
        if let Some(code) = reap(command)? {
            return Ok(code);
        }
    }
}

/// Reaps every child that has exited (one SIGCHLD may stand for many), and returns
/// the command's exit code if the command was among them.
fn reap(command: Pid) -> Result<Option<i32>> {
    let mut code = None;
    loop {
        let mut status: libc::c_int = 0;
        // Raw waitpid: a child killed by a real-time signal must still be reaped and
        // counted, and nix's WaitStatus has no Signal for those.
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == 0 {
            return Ok(code);
        }
        if pid < 0 {
            return match Errno::last() {
                Errno::EINTR => continue,
                Errno::ECHILD => Ok(code),
                e => Err(failed("reap children (waitpid)", e)),
            };
        }
        if pid == command.as_raw() {
            if libc::WIFEXITED(status) {
                code = Some(libc::WEXITSTATUS(status));
            } else if libc::WIFSIGNALED(status) {
                code = Some(128 + libc::WTERMSIG(status));
            }
        }
    }
}

/// Sends `signo` to the command. The command is not reaped yet (it would have ended
/// the loop), so it exists, at least as a zombie; a failure is reported, not fatal.
fn forward(command: Pid, signo: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(command.as_raw(), signo) } != 0 {
        let e = Errno::last();
        eprintln!(
            "kmsenv: exec --init: cannot forward signal {signo} to {command}: {}",
            e.desc()
        );
    }
}

fn failed(what: &str, e: Errno) -> Error {
    Error::new(Class::Io, format!("exec --init: cannot {what}: {}", e.desc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catchable_signal_is_waited_for_but_the_faults() {
        let set = waited_signals();
        for s in [
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
            Signal::SIGWINCH,
            Signal::SIGCONT,
            Signal::SIGCHLD,
            Signal::SIGABRT,
            Signal::SIGTSTP,
            Signal::SIGALRM,
        ] {
            assert!(set.contains(s), "{s} should be forwarded");
        }
        for s in [
            Signal::SIGSEGV,
            Signal::SIGBUS,
            Signal::SIGILL,
            Signal::SIGFPE,
            Signal::SIGKILL,
        ] {
            assert!(!set.contains(s), "{s} should not be waited for");
        }
        // SAFETY: `set` is a valid sigset_t; sigismember only reads it.
        let rt = unsafe { libc::sigismember(set.as_ref(), libc::SIGRTMIN() + 1) };
        assert_eq!(rt, 1, "real-time signals are forwarded too");
    }
}
