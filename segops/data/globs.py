"""Glob patterns on POSIX relative paths, for a source's ``include`` / ``exclude``.

Pure and small: Python 3.11 has no ``PurePath.full_match``, and ``fnmatch`` lets ``*`` cross
``/``. Here a pattern matches the whole relative path: ``*`` and ``?`` stay within one path
component, ``[...]`` is a character class (``[!...]`` negated), and a ``**`` component stands
for any number of folders, none included (``**/README*`` matches ``README.md`` and
``a/b/README.png``; ``good/**`` matches everything under ``good``). ``*.jpg`` matches JPEGs at
the top level only; ``**/*.jpg`` matches them at any depth. :func:`list_files` lists a folder as
``segops plan`` reads it.
"""

from __future__ import annotations

import logging
import os
import re
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile one glob (see the module docstring) to a regex that must match the whole path."""
    parts = pattern.strip("/").split("/")
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_component_regex(part) + ("" if last else "/"))
    if len(parts) > 1 and parts[-1] == "**":  # "good/**": something under good/, not good itself
        out[-1] = ".+"
    return re.compile("".join(out))


def _component_regex(part: str) -> str:
    """One path component: ``*``, ``?`` and ``[...]`` never match ``/``."""
    out, i = [], 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := part.find("]", i + 2 if part[i + 1 : i + 2] in ("!", "]") else i + 1)) > i:
            body = part[i + 1 : end]
            negate = body.startswith("!")
            body = re.sub(r"([\\^\[])", r"\\\1", body[1:] if negate else body)
            out.append(f"(?!/)[{'^' if negate else ''}{body}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


@lru_cache(maxsize=256)
def compile_globs(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    """The regexes of ``patterns``, compiled once per distinct tuple (specs are frozen)."""
    return tuple(glob_regex(p) for p in patterns)


def path_selected(rel_path: str, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> bool:
    """Whether ``rel_path`` (POSIX, relative to the source root) matches an include pattern
    (or none are given) and no exclude pattern."""
    if include and not any(r.fullmatch(rel_path) for r in compile_globs(tuple(include))):
        return False
    return not any(r.fullmatch(rel_path) for r in compile_globs(tuple(exclude)))


MAX_LISTED = 50_000


def list_files(root: Path, limit: int = MAX_LISTED) -> list[str]:
    """Relative posix paths of the files under ``root`` (hidden ones skipped), sorted, at most ``limit``."""
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(folder).relative_to(root)
        found += [(rel / f).as_posix() for f in sorted(files) if not f.startswith(".")]
        if len(found) >= limit:
            log.warning("listed the first %d files of %s for planning", limit, root)
            break
    return sorted(found[:limit])
