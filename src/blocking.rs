//! Blocking system calls under the run's deadline (DESIGN: every wait has one).
//!
//! `open` and `read` of a FIFO without a writer, a read on a hung network mount,
//! or `flock` on a folder someone else holds block in the kernel, where no
//! timeout reaches. Such a call runs in a helper thread, waited for until the
//! deadline; if it is still blocked then, the thread is left behind and the run
//! ends (or execs) without it. A thread costs tens of microseconds, not a start-up.
//! A call that returns in time is joined: kmsenv is single-threaded again after.

use std::sync::mpsc::{RecvTimeoutError, sync_channel};
use std::time::Instant;

/// `call`'s result, or `None` if it had not returned by `deadline`. Err only
/// when no thread could be started.
pub fn within<T: Send + 'static>(
    deadline: Instant,
    call: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<Option<T>> {
    let (tx, rx) = sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("kmsenv-blocking".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            // The receiver may have given up: nothing to do then.
            let _ = tx.send(call());
        })?;
    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(v) => {
            // It has sent, so it is ending: wait for it, so that no second thread
            // is running (and maybe holding the allocator's lock) when `exec
            // --init` forks.
            let _ = thread.join();
            Ok(Some(v))
        }
        Err(RecvTimeoutError::Timeout) => Ok(None),
        // The thread panicked (the release build aborts instead).
        Err(RecvTimeoutError::Disconnected) => {
            Err(std::io::Error::other("the helper thread ended without an answer"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_call_that_returns_in_time_gives_its_result() -> std::io::Result<()> {
        assert_eq!(within(Instant::now() + Duration::from_secs(5), || 7)?, Some(7));
        Ok(())
    }

    #[test]
    fn a_call_still_blocked_at_the_deadline_gives_none() -> std::io::Result<()> {
        let (_hold, rx) = std::sync::mpsc::channel::<()>();
        // Blocks until `_hold` is dropped, after the deadline has passed.
        let got = within(Instant::now() + Duration::from_millis(50), move || {
            rx.recv().is_ok()
        })?;
        assert_eq!(got, None);
        Ok(())
    }
}
