"""Reading input files with one-line errors, and writing output files atomically."""

from __future__ import annotations

import glob
import json
import os
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ValidationError

from optimizer.errors import InputError


def read_text(path: str | os.PathLike, what: str, expected: str = "a file",
              encoding: str = "utf-8") -> str:
    """A text file's content; any problem becomes an InputError naming the file."""
    p = Path(path)
    try:
        return p.read_bytes().decode(encoding)
    except IsADirectoryError:
        raise InputError(f"{what} {p}: is a directory, expected {expected}") from None
    except FileNotFoundError:
        raise InputError(f"{what} {p}: no such file") from None
    except PermissionError:
        raise InputError(f"{what} {p}: cannot be read (permission denied)") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {p}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{what} {p}: cannot be read ({exc.strerror})") from None


def read_json(path: str | os.PathLike, what: str) -> object:
    """Parse a JSON file; any problem becomes an InputError naming the file."""
    p = Path(path)
    text = read_text(p, what, "a JSON file")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} {p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:
        raise InputError(f"{what} {p}: {exc}") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def validation_message(what: str, exc: ValidationError) -> str:
    """The first validation error as one line: field path, value and rule."""
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-"))
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{what}: {loc or '(top level)'}={shown}: {msg}{more}"


def load_model(path: str | os.PathLike, cls: type[BaseModel], what: str) -> BaseModel:
    """Read and validate a JSON file into ``cls``; errors are one-line InputErrors."""
    data = read_json(path, what)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InputError(validation_message(f"{what} {path}", exc)) from None


def write_atomic(path: str | os.PathLike, data: str | bytes, what: str = "output") -> None:
    """Write ``data`` (text as UTF-8, or bytes) to a temporary file beside ``path``, then
    rename it into place: the file is either the old one or the complete new one.
    ``what`` names the path in errors (e.g. the option that gave it). A device or FIFO
    (``/dev/null``) is written to directly (renaming over it would replace the device), a
    symbolic link's target is replaced (the link stays), and temporaries that killed
    writers left beside the file are removed. Any OS error is one line (exit 2)."""
    p = Path(path)
    if not str(path) or p.is_dir():
        raise InputError(f"{what}={str(path)!r}: is a directory or empty, expected a file path")
    blob = data.encode("utf-8") if isinstance(data, str) else data
    if p.exists() and not p.is_file():  # /dev/null, /dev/stdout, a FIFO: write to it, never replace it
        try:
            with open(p, "wb") as fh:
                fh.write(blob)
        except OSError as exc:
            raise InputError(f"{what}={str(p)!r}: cannot be written ({exc.strerror or exc})") from None
        return
    if p.is_symlink():
        p = Path(os.path.realpath(p))  # replace what the link points to, keep the link
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"{what}={str(p)!r}: cannot be written ({exc.strerror or exc})") from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except OSError as exc:  # a full disk, a quota, a read-only or vanished folder
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{what}={str(p)!r}: cannot be written ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _remove_stale_temporaries(p)


# A temporary file of write_atomic this old belongs to a writer that was killed (SIGKILL
# leaves no chance to remove it); a live write takes well under this.
STALE_TMP_S = 60.0


def _remove_stale_temporaries(p: Path) -> None:
    """Remove what killed writers of ``p`` left beside it (``.<name>.*.tmp``)."""
    now = time.time()
    for stale in p.parent.glob(f".{glob.escape(p.name)}.*.tmp"):
        try:
            if now - stale.stat().st_mtime > STALE_TMP_S:
                stale.unlink()
        except OSError:
            pass


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
