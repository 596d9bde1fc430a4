#!/usr/bin/env python3
"""Run a command on a new pseudo-terminal and answer its prompts, waiting for
each prompt before typing (a program may flush input typed too early).

    python3 tests/support/pty_answer.py PROMPT ANSWER [PROMPT ANSWER …] -- CMD ARGS…

Prints everything the command wrote to the terminal to stdout, and exits with
the command's exit code (125 if a prompt never came within 20 s).
"""

import os
import pty
import select
import sys
import time


def main() -> int:
    split = sys.argv.index("--")
    pairs = sys.argv[1:split]
    command = sys.argv[split + 1:]
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(command[0], command)
    seen = b""
    deadline = time.monotonic() + 20
    for prompt, answer in zip(pairs[0::2], pairs[1::2]):
        while prompt.encode() not in seen:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                sys.stdout.buffer.write(seen)
                os.kill(pid, 9)
                return 125
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                break
            seen += chunk
        seen = seen.split(prompt.encode(), 1)[-1] if prompt.encode() in seen else seen
        sys.stdout.buffer.write(prompt.encode() + b"\n")
        os.write(fd, answer.encode() + b"\n")
    while True:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            os.kill(pid, 9)
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        sys.stdout.buffer.write(chunk)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
