"""Errors about data files, the log of files skipped because of them, and OS errors in one line."""

import logging
import os
import threading

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
    return " ".join(str(error).split())
