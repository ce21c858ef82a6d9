"""Names that become folders: experiment and study names, checked where they enter.

An experiment name becomes ``reports/<name>/`` (a folder the report replaces as a whole)
and the experiment's artifact folder ``<artifact_root>/<name>/``; a study name becomes the
Optuna study and parent run. So a name may not climb out of those roots or hide there: no
path separator, no ``..``, no leading dot, no control character (NUL, newline), at most
:data:`MAX_LENGTH` characters. Study files (``experiment:``, ``study_name:``, variant keys)
and every ``--experiment`` / ``--study`` option pass through :func:`check_name`.
Standard library only.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.config import ConfigError

#: Longest name accepted: room for ``.<variant>.repeat`` suffixes and the report's
#: ``.<name>.<pid>.XXXXXXXX`` temporary folder within a file system's 255-byte names.
MAX_LENGTH = 100

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be an experiment or study name; None when it can."""
    if not isinstance(name, str) or not name.strip():
        return "is empty"
    if len(name) > MAX_LENGTH:
        return f"is {len(name)} characters long (at most {MAX_LENGTH})"
    if "/" in name or "\\" in name:
        return "contains a path separator (/ or \\)"
    if ".." in name:
        return "contains '..'"
    if name.startswith("."):
        return "starts with a dot"
    if _CONTROL.search(name):
        return "contains a control character (NUL, newline, tab...)"
    if name != name.strip():
        return "starts or ends with white space"
    return None


def suggest(name: str) -> str:
    """A name that passes :func:`check_name`, as close to ``name`` as possible."""
    out = _CONTROL.sub("", str(name)).replace("/", "-").replace("\\", "-")
    while ".." in out:
        out = out.replace("..", ".")
    out = out.strip().lstrip(".-").strip()[:MAX_LENGTH].strip()
    return out or "my-experiment"


def name_error(name: object) -> str | None:
    """The one-line reason and fix for a bad ``name`` (without the field); None if it is fine."""
    problem = name_problem(name)
    if problem is None:
        return None
    shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:57] + "...")
    return (f"{shown} {problem}: a name becomes a folder (reports/<name>/, the artifact folder), so it may hold "
            f"no / or \\, no '..', no leading dot, no control character and at most {MAX_LENGTH} characters; "
            f"e.g. {suggest(str(name))!r}")


def check_name(name: object, field: str) -> str:
    """``name`` if it can be a folder name under the suite's roots; else a
    :class:`ConfigError` naming ``field`` (``--experiment``, ``--study``...) and a fix."""
    error = name_error(name)
    if error is not None:
        raise ConfigError(f"{field} {error}")
    return name  # type: ignore[return-value]


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies strictly inside ``root``."""
    p, r = Path(path).resolve(), Path(root).resolve()
    return p != r and r in p.parents
