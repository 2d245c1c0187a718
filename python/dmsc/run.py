"""Start N local ranks of a Python script, like ``dmscrun`` (and ``torchrun --standalone``).

Usage::

    python -m dmsc.run -n N [--] script.py [ARGS...]
    python -m dmsc.run -n N -m package.module [ARGS...]
    python -m dmsc.run -n N --no-python COMMAND [ARGS...]

Each rank runs with this interpreter and gets ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT`` (a
free port), ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and
``DMSC_LAUNCHER=dmscrun``, so ``dmsc.init()`` joins the job. The process management is
dmscrun's own (from the native module): output lines are prefixed with ``[rank]``; when a rank
fails the others get SIGTERM, then SIGKILL after ``DMSC_KILL_GRACE`` seconds (default 3);
the exit code is that of the first failing rank (128 + signal number). ``PYTHONUNBUFFERED=1``
is set unless the environment already sets it, so the ranks' prints appear as they happen.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import List, Optional, Sequence, Tuple

from . import SystemCallError, __version__
from ._dmsc import launch

USAGE = """\
usage: python -m dmsc.run -n N [--] SCRIPT.py [ARGS...]
       python -m dmsc.run -n N -m MODULE [ARGS...]
       python -m dmsc.run -n N --no-python COMMAND [ARGS...]

Starts N ranks on this machine for one dmsc job (like dmscrun, or torchrun --standalone):
each rank runs SCRIPT.py (or MODULE, or COMMAND) with MASTER_ADDR=127.0.0.1, MASTER_PORT (a
free port), RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and DMSC_LAUNCHER=dmscrun. Output
lines are prefixed with [rank]. When a rank fails, the others get SIGTERM, then SIGKILL after
DMSC_KILL_GRACE seconds (default 3); the exit code is that of the first failing rank
(128+signal).

options:
  -n, --np, --nproc-per-node, --nproc_per_node N   number of ranks (required)
  -m MODULE                                        run a module (python -m MODULE)
  --no-python                                      run COMMAND itself, not with Python
  -h, --help                                       this text
  -V, --version                                    print the version
"""

#: Exit code of command-line errors (as dmscrun).
USAGE_ERROR = 2


class UsageError(Exception):
    """A command-line error; the message says what is wrong."""


def _ranks(flag: str, value: str) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        raise UsageError(f"invalid value '{value}' for {flag}: expected a number of ranks") from None
    if n < 1:
        raise UsageError(f"{flag} must be at least 1, got {n}")
    return n


def parse(argv: Sequence[str]) -> Optional[Tuple[int, str, List[str]]]:
    """Parse the command line (dmscrun's syntax plus ``-m`` and ``--no-python``).

    Returns ``(n, program, args)``, or None after printing help or the version. Raises
    :class:`UsageError` on a bad command line.
    """
    n: Optional[int] = None
    module: Optional[str] = None
    no_python = False
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            i += 1
            break
        if not tok.startswith("-") or tok == "-":
            break
        flag, inline = tok, None
        if tok.startswith("--") and "=" in tok:
            flag, inline = tok.split("=", 1)
        elif tok.startswith("-n") and len(tok) > 2 and not tok.startswith("--"):
            flag, inline = "-n", tok[2:]
        elif tok.startswith("-m") and len(tok) > 2 and not tok.startswith("--"):
            flag, inline = "-m", tok[2:]
        if flag in ("-h", "--help"):
            print(USAGE, end="")
            return None
        if flag in ("-V", "--version"):
            print(f"dmsc.run {__version__}")
            return None
        if flag == "--no-python":
            no_python = True
            i += 1
            continue
        if flag in ("-n", "--np", "--nproc-per-node", "--nproc_per_node", "-m"):
            if inline is None:
                i += 1
                if i >= len(argv):
                    what = "a module name" if flag == "-m" else "a number of ranks"
                    raise UsageError(f"option {flag} needs {what}")
                inline = argv[i]
            if flag == "-m":
                module = inline
                i += 1
                break  # like python -m: everything after the module is its arguments
            n = _ranks(flag, inline)
            i += 1
            continue
        raise UsageError(f"unknown option '{tok}' (see --help)")
    if n is None:
        raise UsageError("missing -n N: the number of ranks to start")
    rest = list(argv[i:])
    if module is not None:
        if no_python:
            raise UsageError("-m and --no-python cannot be combined")
        return n, sys.executable, ["-m", module, *rest]
    if not rest:
        raise UsageError("missing the script (or command) to run after the options")
    if no_python:
        return n, rest[0], rest[1:]
    return n, sys.executable, rest


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the launcher; returns the job's exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        parsed = parse(args)
    except UsageError as e:
        print(f"dmsc.run: {e}\nTry 'python -m dmsc.run --help' for more information.", file=sys.stderr)
        return USAGE_ERROR
    if parsed is None:
        return 0
    n, program, rest = parsed
    env: List[Tuple[str, str]] = []
    if "PYTHONUNBUFFERED" not in os.environ:
        env.append(("PYTHONUNBUFFERED", "1"))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        return launch(n, program, rest, env)
    except SystemCallError as e:
        code = getattr(e, "errno", None)
        if code == errno.ENOENT:
            print(f"dmsc.run: {program}: command not found", file=sys.stderr)
            return 127
        if code == errno.EACCES:
            print(f"dmsc.run: {program}: permission denied (not executable?)", file=sys.stderr)
            return 126
        print(f"dmsc.run: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
