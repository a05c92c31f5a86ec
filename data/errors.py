"""Errors: about data files, the log of files skipped because of them, and how commands end.

Every climseg command (train.py, climseg-stats, climseg-stage, ...) ends an
error the same way, through `run_command`: one line on stderr,
`PROG: error: MESSAGE` (under Horovod `PROG: error: rank R of N: MESSAGE`,
since horovodrun names the first process to exit, not the one at fault), and
an exit status that tells bad usage (2) from a run that failed (1). `--debug`
or `CLIMSEG_DEBUG=1` shows the Python traceback instead.
"""

import logging
import os
import sys
import threading
import traceback

_LOG = logging.getLogger("climseg.data")


class DataFileError(ValueError):
    """A data file cannot be used. The message names the file and the problem.

    Args:
        path: the file (or directory) at fault.
        problem: what is wrong with it, with what was found and what was expected.
    """

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # rebuilt from (path, problem) in another process (pickle)
        return type(self), (self.path, self.problem)


class BadFileLog:
    """Collects the files skipped with `skip_bad_files=True`, once each.

    The data functions record every file they skip here instead of raising,
    and log a warning the first time a file is skipped. Thread-safe: the input
    pipeline reads files from several threads.

    Example:

    >>> bad = BadFileLog()
    >>> bad.add("/data/x.h5", "data contain 3 NaN/Inf values")
    >>> len(bad)
    1
    >>> print(bad.report())
    skipped 1 bad file:
      /data/x.h5: data contain 3 NaN/Inf values
    """

    def __init__(self):
        self._problems = {}
        self._lock = threading.Lock()

    def add(self, path, problem, warn=True):
        """Records that `path` was skipped because of `problem` (logged unless `warn` is False)."""
        with self._lock:
            first = str(path) not in self._problems
            self._problems.setdefault(str(path), problem)
        if first and warn:
            _LOG.warning("skipping bad file %s: %s", path, problem)

    def __len__(self):
        with self._lock:
            return len(self._problems)

    def items(self):
        """Returns (path, problem) pairs, sorted by path."""
        with self._lock:
            return sorted(self._problems.items())

    def report(self):
        """A summary for the end of a run: how many files were skipped, and why."""
        items = self.items()
        if not items:
            return "skipped no bad files"
        lines = [f"skipped {len(items)} bad file{'s' if len(items) != 1 else ''}:"]
        lines += [f"  {path}: {problem}" for path, problem in items]
        return "\n".join(lines)


def os_error_reason(error):
    """Why an OS error happened, on one line, for a message that names the path itself.

    The system's text for its errno ("No space left on device") when it has
    one; otherwise its own text with line breaks removed (h5py's, PIL's and
    TensorFlow's messages run over several lines).

    Example:

    >>> os_error_reason(OSError(28, "No space left on device", "/x"))
    'No space left on device'
    """
    number = getattr(error, "errno", None)
    if isinstance(number, int):
        return os.strerror(number)
    if getattr(error, "strerror", None):  # OSError(None, text, path): the text alone
        return " ".join(error.strerror.split())
    return " ".join(str(error).split())



def write_failed(error, where=None, kept="the files written before are complete"):
    """The `CommandError` for an output that could not be written (a full disk, a
    directory without permission): `WHERE: REASON; KEPT`.

    Args:
        error: the `OSError` (netCDF's write errors arrive as OSError through
            `data.files.written_atomically`).
        where: what could not be written. Defaults to the error's file name.
        kept: what the user still has. Defaults to the files written before.

    Example:

    >>> str(write_failed(OSError(28, "No space left on device", "/out/a.csv")))
    '/out/a.csv: No space left on device; the files written before are complete'
    """
    where = where or getattr(error, "filename", None)
    return CommandError(f"{f'{where}: ' if where else ''}{os_error_reason(error)}; {kept}")


EXIT_FAILED = 1
EXIT_USAGE = 2
DEBUG_VARIABLE = "CLIMSEG_DEBUG"
DEBUG_HELP = (f"on an error, show the Python traceback instead of one line (or set "
              f"{DEBUG_VARIABLE}=1)")


class CommandError(Exception):
    """An error the user can act on: the command prints it as one line and exits.

    Args:
        message: the line: the file or flag, what was found, what was
            expected and what to do.
        usage: True for bad usage (exit status 2: a flag, its value or an
            input it names is wrong, found before any work was done); False
            for a run that failed (1). Defaults to False.
    """

    def __init__(self, message, usage=False):
        super().__init__(message)
        self.status = EXIT_USAGE if usage else EXIT_FAILED


def debug_requested(argv):
    """Whether `--debug` is among `argv` or `CLIMSEG_DEBUG` is set (not "" or "0")."""
    return "--debug" in argv or os.environ.get(DEBUG_VARIABLE, "").strip() not in ("", "0")


def run_command(prog, function, argv=None):
    """Runs a command's `function(argv)`; returns its exit status, errors as one line.

    A `CommandError` is printed as `PROG: error: MESSAGE` with its status; any
    other exception as one line with its type, status 1, and a hint to
    `--debug`. argparse's own exits (status 2) pass through. With `--debug`
    in `argv` or `CLIMSEG_DEBUG=1`, the traceback (with its causes) comes
    first, and the line and the status stay the same.

    Args:
        prog: the command's name, e.g. "climseg-stage".
        function: takes the argument list, returns an exit status (None is 0).
        argv: the arguments. Defaults to `sys.argv[1:]`.

    Example:

        def main(argv=None):
            return run_command("climseg-stage", _stage, argv)
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return function(argv) or 0
    except CommandError as e:
        if debug_requested(argv):
            traceback.print_exc()
        _print_error(prog, str(e))
        return e.status
    except Exception as e:  # noqa: BLE001  (one line; --debug shows where)
        if debug_requested(argv):
            traceback.print_exc()
        if _HOROVOD_SHUT_DOWN in str(e):  # a healthy rank, stopped by the failing one
            _print_error(prog, "stopped because another rank failed (its own line says which "
                               "and why)")
        else:
            _print_error(prog, f"{type(e).__name__}: {' '.join(str(e).split())} (unexpected: "
                               f"run again with --debug or {DEBUG_VARIABLE}=1 to see where, "
                               "and report it)")
        return EXIT_FAILED


# What a collective raises on the other ranks once one rank has failed.
_HOROVOD_SHUT_DOWN = "Horovod has been shut down"


def _print_error(prog, message):
    import climseg_tf

    rank, size = climseg_tf.rank_and_size()
    # Horovod: horovodrun names the first process to exit, often a healthy one.
    where = f"rank {rank} of {size}: " if size > 1 else ""
    print(f"{prog}: error: {where}{message}", file=sys.stderr, flush=True)
