"""Atomic file writes and checksums: nothing the pipeline writes is ever seen half-written. Also the one listing
of a user's image files (:func:`expand_images`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _new_temporary(target: Path) -> Path:
    """Create an empty ``.<name>.<random>.tmp`` beside ``target`` (exclusively, mode 0666 less the umask)."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {target}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path`` (atomic on POSIX).

    On any exception the temporary file is removed and ``path`` keeps its previous content; an ``OSError``
    (disk full, quota, permissions) is re-raised with the same errno and a message naming ``path``. The file gets
    the mode any new file of the user gets (0666 less the umask: 0644 under umask 022), not ``mkstemp``'s 0600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(target)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        # OSError(errno, msg) builds the matching subclass, so callers catching e.g. FileNotFoundError still do
        reason = exc.strerror or str(exc)
        message = f"cannot write {target}: {reason} (its previous content is unchanged)"
        raise (OSError(exc.errno, message) if exc.errno is not None else OSError(message)) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def unwritable_reason(path: str | os.PathLike[str]) -> str | None:
    """Why nothing can be created at ``path`` as :func:`atomic_path` would (creating its missing folders), in a
    phrase naming the nearest existing folder above it (``"<folder> is a file, not a folder"``, ``"folder
    <folder> is not writable"``); ``None`` when it can. ``path`` itself is not looked at: callers check what
    may already be there. Lets a command refuse a bad output path before it does any work."""
    parent = Path(path).parent
    while not parent.exists() and parent != parent.parent:  # the nearest folder that exists
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"folder {parent} is not writable"
    return None


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes atomically (a killed render never leaves half a JPEG)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically (sorted keys, indented, NaN refused)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_parquet(path: str | os.PathLike[str], frame: Any) -> None:
    """Write a pandas DataFrame to parquet atomically."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def load_error_reason(exc: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused a file.

    An :class:`pickle.UnpicklingError` (the file holds pickled Python objects, which may be code that runs on
    unpickling) keeps only the line of torch's several-paragraph text that names the refused object; any other
    error is its message with its line breaks folded.
    """
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        lines = [line for line in str(exc).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        return f"it holds pickled Python objects, refused ({' '.join((lines[0] if lines else str(exc)).split())})"
    return " ".join(str(exc).split())


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """Walk up from ``start`` (default: cwd) to the folder holding ``dvc.yaml``.

    nbval runs notebooks in their own folder and papermill in the caller's; both find the root this way.
    """
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists():
            return folder
    raise FileNotFoundError(f"no dvc.yaml found in {here} or any parent: run from inside the iqalab checkout")


def workdir(params_file: str | os.PathLike[str] | None = None) -> Path:
    """Folder that receives ``build/`` and ``results/``.

    ``$IQALAB_WORKDIR`` if set (a relative path counts from the project root, as ``$IQALAB_PARAMS`` does, so
    that a notebook run from its own folder and a command run from the root agree); else, when ``params_file``
    is a params file other than the project's ``params.yaml`` (a test or paper profile), its own work folder
    ``build/work/<name>/`` under the project root (:func:`params_workdir`), so that it never overwrites the
    committed ``results/``; else the project root.
    """
    override = os.environ.get("IQALAB_WORKDIR")
    if override:
        chosen = Path(override).expanduser()
        return chosen if chosen.is_absolute() else project_root() / chosen
    root = project_root()
    if params_file is not None and Path(params_file).resolve() != (root / "params.yaml").resolve():
        return params_workdir(params_file, root)
    return root


def params_workdir(params_file: str | os.PathLike[str], root: Path) -> Path:
    """``<root>/build/work/<name>``: the work folder of a params file other than the project's, named after its
    path inside the project (``tests/nbval/params.yaml`` -> ``tests-nbval-params``), or after its stem and a
    hash of its absolute path when it lies outside."""
    path = Path(params_file).resolve()
    try:
        name = "-".join(path.relative_to(root.resolve()).with_suffix("").parts)
    except ValueError:
        name = f"{path.stem}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
    return root / "build" / "work" / name


#: suffixes (lower case) :func:`expand_images` takes for image files inside a folder
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def expand_images(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders expanded (recursively) to their image files, sorted; a file reached twice (a folder
    and a file inside it, a path given twice or through a link) is kept once, at its first occurrence, and the
    repeats left out are logged: one row per image in a scores table."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
    if not files:
        raise FileNotFoundError(f"no images found in {list(map(str, inputs))}")
    seen: set[Path] = set()
    kept = []
    for path in files:
        if (key := path.resolve()) not in seen:
            seen.add(key)
            kept.append(path)
    if len(kept) < len(files):
        log.info("%d repeated file(s) kept once (first occurrence)", len(files) - len(kept))
    return kept
