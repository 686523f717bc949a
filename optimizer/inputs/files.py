"""Reading input files with one-line errors, and writing output files atomically."""

from __future__ import annotations

import glob
import json
import os
import re
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ValidationError

from optimizer.errors import InputError

# Limits on what a reader accepts: far above any real moeopt input (an instance is a few kB,
# an expert-load file of 384 experts x 61 layers under 1 MB), far below what would exhaust
# memory or the interpreter's stack.
MAX_FILE_BYTES = 128 * 2**20    # a text or JSON file (its parsed form takes a few times more)
MAX_JSON_DEPTH = 64             # nested arrays/objects (instances and plans use at most 6)
MAX_INT_DIGITS = 30             # digits of a JSON integer (every size in the schema is <= 10**15)


def read_text(path: str | os.PathLike, what: str, expected: str = "a file",
              encoding: str = "utf-8") -> str:
    """A text file's content (at most MAX_FILE_BYTES); any problem becomes an InputError
    naming the file."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            blob = fh.read(MAX_FILE_BYTES + 1)
        if len(blob) > MAX_FILE_BYTES:
            raise InputError(f"{what} {p}: larger than {MAX_FILE_BYTES:,} bytes, the most "
                             f"moeopt reads")
        return blob.decode(encoding)
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
    """Parse a JSON file; any problem becomes an InputError naming the file. Refused: NaN
    and Infinity, integers of more than MAX_INT_DIGITS digits, nesting deeper than
    MAX_JSON_DEPTH, a key given twice in one object, and strings (or keys) holding a lone
    UTF-16 surrogate such as ``"\\ud800"``."""
    p = Path(path)
    return parse_json(read_text(p, what, "a JSON file"), f"{what} {p}")


def parse_json(text: str, where: str) -> object:
    """``text`` parsed as JSON under read_json's rules; errors start with ``where`` and name
    the offending field."""
    depth = _nesting_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise InputError(f"{where}: nested more than {MAX_JSON_DEPTH} levels deep; at most "
                         f"{MAX_JSON_DEPTH}")
    # The slow checks (a Python call per integer, a walk over every value) run only when
    # the text could hold what they look for: a run of digits too long, a surrogate escape.
    long_digits = _LONG_DIGITS.search(text) is not None
    hooks = {"parse_int": _bounded_int} if long_digits else {}
    try:
        doc = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys,
                         **hooks)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{where}: {exc}") from None
    if long_digits or _SURROGATE_ESCAPE.search(text):
        _refuse_odd_leaves(doc, where)
    return doc


_LONG_DIGITS = re.compile(f"[0-9]{{{MAX_INT_DIGITS + 1}}}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _nesting_depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text (brackets inside strings don't count);
    stops counting once past MAX_JSON_DEPTH. Invalid text is left to the parser."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    break
        elif token in "]}":
            depth -= 1
    return deepest


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


class _HugeInt:
    """Stands for a JSON integer of more than MAX_INT_DIGITS digits (never converted: the
    conversion is quadratic in the digits) until ``_refuse_odd_leaves`` names its field."""

    def __init__(self, digits: str):
        self.digits = digits


def _bounded_int(digits: str) -> int | _HugeInt:
    return int(digits) if len(digits.lstrip("-")) <= MAX_INT_DIGITS else _HugeInt(digits)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    doc = dict(pairs)
    if len(doc) < len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {twice[:60]!r} appears twice in one object")
    return doc


def _refuse_odd_leaves(doc: object, where: str) -> None:
    """InputError naming the field if ``doc`` holds an integer of more than MAX_INT_DIGITS
    digits, or a string or key with a lone surrogate (not encodable as UTF-8)."""
    stack: list[tuple[object, tuple]] = [(doc, ())]
    while stack:
        node, at = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                _check_text(key, at + (key,), where)
                stack.append((value, at + (key,)))
        elif isinstance(node, list):
            stack.extend((value, at + (i,)) for i, value in enumerate(node))
        elif isinstance(node, str):
            _check_text(node, at, where)
        elif isinstance(node, _HugeInt):
            digits = node.digits.lstrip("-")
            raise InputError(f"{where}: {_field(at)}={node.digits[:20]}...: an integer of "
                             f"{len(digits)} digits; at most {MAX_INT_DIGITS}")


def _check_text(text: str, at: tuple, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{where}: {_field(at)}={text[:40]!r}: holds a lone UTF-16 surrogate "
                         "(not Unicode text)") from None


def _field(at: tuple) -> str:
    """A JSON location as validation_message writes it (``model.moe_layers.3``)."""
    return ".".join(ascii(x)[1:-1] if isinstance(x, str) else str(x) for x in at) or "(top level)"


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


# Longest file name (one path component) and whole path an output may have, in UTF-8 bytes:
# Linux's NAME_MAX and PATH_MAX. The temporary file beside the output adds
# TMP_NAME_EXTRA characters to the name, so the name itself may have that many fewer.
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
TMP_NAME_EXTRA = 14  # "." + name + "." + mkstemp's 8 random characters + ".tmp"


def output_path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot name an output file (empty, a control character, a name over
    MAX_NAME_BYTES - TMP_NAME_EXTRA bytes, which leaves room for the temporary file, or a
    path over MAX_PATH_BYTES), or None when it can."""
    text = os.fspath(path)
    if not text:
        return "is empty, expected a file path"
    bad = next((ch for ch in text if ord(ch) < 32 or ord(ch) == 127), None)
    if bad is not None:
        return f"contains the control character {bad!r}"
    try:
        encoded = [part.encode("utf-8") for part in Path(text).parts]
    except UnicodeEncodeError:
        return "is not a valid file name (a lone surrogate)"
    longest = max((len(part) for part in encoded), default=0)
    limit = MAX_NAME_BYTES - TMP_NAME_EXTRA
    if longest > limit:
        return f"has a file or folder name of {longest} bytes; at most {limit}"
    size = len(text.encode("utf-8"))
    if size > MAX_PATH_BYTES:
        return f"is a path of {size} bytes; at most {MAX_PATH_BYTES}"
    return None


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """``path`` as a Path if it can name an output file; else an InputError naming ``what``
    (see ``output_path_problem``)."""
    problem = output_path_problem(path)
    if problem is not None:
        text = os.fspath(path)
        shown = repr(text) if len(text) <= 80 else repr(text[:77]) + "..."
        raise InputError(f"{what}={shown}: {problem}")
    return Path(path)


def write_atomic(path: str | os.PathLike, data: str | bytes, what: str = "output") -> None:
    """Write ``data`` (text as UTF-8, or bytes) to a temporary file beside ``path``, then
    rename it into place: the file is either the old one or the complete new one.
    ``what`` names the path in errors (e.g. the option that gave it). A device or FIFO
    (``/dev/null``) is written to directly (renaming over it would replace the device), a
    symbolic link's target is replaced (the link stays) when that target lies in the link's
    own folder and its folder exists (no folder is ever created through a link), and
    temporaries that killed writers left beside the file are removed. Missing folders of a
    plain path are created. Any OS error is one line (exit 2)."""
    p = check_output_path(path, what)
    blob = data.encode("utf-8") if isinstance(data, str) else data
    try:
        if p.is_dir():
            raise InputError(f"{what}={str(path)!r}: is a directory, expected a file path")
        special = p.exists() and not p.is_file()
        link = p.is_symlink()
    except OSError as exc:
        raise InputError(f"{what}={str(p)!r}: cannot be written ({exc.strerror or exc})") from None
    if special:  # /dev/null, /dev/stdout, a FIFO: write to it, never replace it
        try:
            with open(p, "wb") as fh:
                fh.write(blob)
        except OSError as exc:
            raise InputError(f"{what}={str(p)!r}: cannot be written ({exc.strerror or exc})") from None
        return
    if link:
        p = _link_target(p, what)  # replace what the link points to, keep the link
    try:
        if not link:
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


def _link_target(link: Path, what: str) -> Path:
    """The file a symbolic link ``link`` points to, if it lies inside the link's own folder
    and its folder exists; else an InputError (a link never leads a write elsewhere)."""
    folder = Path(os.path.realpath(link.parent))
    target = Path(os.path.realpath(link))
    if folder != target.parent and folder not in target.parents:
        raise InputError(f"{what}={str(link)!r}: a symbolic link to {str(target)!r}, outside "
                         f"the folder {str(link.parent)!r}; refusing to write through it")
    if not target.parent.is_dir():
        raise InputError(f"{what}={str(link)!r}: a symbolic link to {str(target)!r}, whose "
                         "folder does not exist (no folder is created through a link)")
    check_output_path(target, what)
    return target


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
