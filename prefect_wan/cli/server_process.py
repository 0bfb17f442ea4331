"""The temporary Prefect server's process: uvicorn over Prefect's API, in a session of its own (a
Ctrl-C at the terminal is the command's to handle: the server must outlive it long enough for the
run's crash hooks and last logs), ending as soon as the command that started it is gone.

Run as a script (``python server_process.py PARENT_PID UVICORN_ARGS...``), not imported.
"""

import os
import signal
import sys
import threading
import time

# How long the orphaned server may take to end gracefully.
GRACE_SECONDS = 5.0


def _end_with(parent: int) -> None:
    # The command stops the server itself; this is for a command killed without the chance (kill -9).
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    # A graceful end, if it comes quickly; older uvicorns wait on their lifespan and open
    # connections for longer than anyone watches an orphan, so then an end regardless.
    time.sleep(GRACE_SECONDS)
    os._exit(1)


if __name__ == "__main__":
    # Run as a script, Python put this folder first on the path: its modules (app, review, server...)
    # must not stand in for top-level ones the server imports.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    threading.Thread(target=_end_with, args=(int(sys.argv[1]),), daemon=True).start()
    import uvicorn

    sys.argv = ["uvicorn", *sys.argv[2:]]
    uvicorn.main()
