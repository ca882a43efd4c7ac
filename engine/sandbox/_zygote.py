"""The worker factory: a process that has already paid for Python and QuickJS, and forks.

Starting a worker from scratch costs a Python interpreter start and the imports -- tens of
milliseconds of CPU, paid again after every deadline kill, exactly when a runaway script is
already burning CPU.  The zygote pays once: the pool asks it (over a Unix socket, passing the
two pipe ends of the new worker with ``SCM_RIGHTS``) and it forks a child that becomes a
worker at once.

Run as ``python -m engine.sandbox._zygote --socket-fd N`` plus the worker's limits.  It exits
when the engine process goes away (watchdog) or closes the socket.  Its children are reaped by
the kernel (SIGCHLD ignored); they watch the zygote the way a worker watches the engine, so
the whole tree goes when the engine goes.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import sys

# Everything a worker needs is imported here, before any fork, so children start warm.
import quickjs  # noqa: F401

from engine.sandbox import _worker

_PID = struct.Struct("!q")


def serve(sock: socket.socket, worker_args: argparse.Namespace) -> None:
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, 16, 2)
        except OSError:
            return
        if not message:
            return  # the pool closed the socket: we are done
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            sock.sendall(_PID.pack(-1))
            continue
        child_in, child_out = fds
        pid = os.fork()
        if pid == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            worker_args.parent_pid = os.getppid()
            status = 1
            try:
                status = _worker.run_worker(worker_args, child_in, child_out)
            finally:
                os._exit(status)
        os.close(child_in)
        os.close(child_out)
        sock.sendall(_PID.pack(pid))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="aiwebengine-sandbox-zygote")
    parser.add_argument("--socket-fd", type=int, required=True)
    args, rest = parser.parse_known_args(argv)
    worker_args = _worker.parse_args(rest)
    engine_pid = worker_args.parent_pid
    # Stray prints must never reach a pipe: stdout is the engine's log stream here, and the
    # children write frames only to the descriptors they were given.
    sys.stdout = sys.stderr
    _worker.ignore_group_signals()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our children
    _worker._die_with_parent(engine_pid)
    sock = socket.socket(fileno=args.socket_fd)
    serve(sock, worker_args)


if __name__ == "__main__":
    main()
