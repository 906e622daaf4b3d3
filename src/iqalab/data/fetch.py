"""Get the published benchmarks into ``data/raw/<name>/``: ``iqalab data fetch <name>`` and ``iqalab data status``.

A benchmark whose publisher allows a direct download (KonIQ-10k, LIVE Challenge, PIQ23's scores and splits) is
fetched from its official address; one behind a form or an e-mail to its authors (PIQ23 images, SPAQ, BID,
GFIQA-20K, CGFIQA-40K, FGLive-10K, SFIQA-Bench) gets the exact manual steps instead. Both end with the
``params.yaml`` entry that enables the dataset (docs/datasets.md, "Real datasets").

Why not pooch: it is not in the environment, and pooch restarts an interrupted download from zero, where a
multi-gigabyte image archive on a slow link needs HTTP ``Range`` resumption. The standard library does that in a
few lines (:func:`download`): the bytes go to ``<downloads>/<file>.part`` and a later call asks for the rest.

Guarantees, each tested against a local HTTP server (``tests/test_fetch.py``):

- **checksums**: each archive's SHA-256 is checked after download. Where no published checksum is known (all
  sources below today: the publishers do not print one), the first download's hash is recorded in
  ``<downloads>/sha256.json`` and in ``data/raw/<name>/.fetch.json`` and every later download must match it
  (trust on first use; the log says so). A mismatch deletes the download and writes nothing.
- **resumable**: a truncated or interrupted download keeps its ``.part`` file; the next call resumes it with
  ``Range: bytes=<size>-`` (a server answering 200 instead of 206 restarts it).
- **no half-unpacked dataset**: archives are unpacked into a hidden sibling ``data/raw/.<name>.partial-*`` which is
  renamed to ``data/raw/<name>`` only when every archive has unpacked; any error removes it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from iqalab.data.adapters import LAYOUTS, bid, cgfiqa, gfiqa, spaq
from iqalab.data.adapters.base import match_layout
from iqalab.io import sha256_file, write_text

log = logging.getLogger(__name__)

#: Bytes read per network call.
CHUNK = 1 << 20
#: Seconds before a stalled connection is given up (the download stays resumable).
TIMEOUT = 60.0


class FetchError(RuntimeError):
    """A download or unpack that did not complete; nothing was written under ``data/raw/``."""


@dataclass(frozen=True)
class Archive:
    """One file to download: its official URL, its SHA-256 if published, and how it unpacks.

    ``strip``: the archive holds one top folder (e.g. ``ChallengeDB_release/``) whose content is the dataset;
    ``None`` (default) decides per archive: a single top folder that the adapter's layout does not name (KonIQ's
    ``1024x768/`` is named, a ``<archive>-main/`` wrapper is not) is removed. ``unpack``: ``False`` for a file
    placed as is (e.g. a CSV).
    """

    url: str
    sha256: str | None = None
    strip: bool | None = None
    unpack: bool = True

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """Where a benchmark comes from: direct ``archives`` and/or ``manual`` steps, and its ``params.yaml`` entry."""

    name: str
    title: str
    params_entry: str
    archives: tuple[Archive, ...] = ()
    manual: tuple[str, ...] = ()

    @property
    def adapter(self) -> str:
        """The adapter that reads it (``generic`` for the authors-only tables)."""
        _, found, rest = self.params_entry.partition("builder: ")
        return rest.split(",", 1)[0].rstrip("}") if found else self.name


def _entry(name: str, builder: str, extra: str = "") -> str:
    return f"{name}: {{source: adapter, builder: {builder}, raw: data/raw/{name}{extra}}}"


_KONIQ = "https://datasets.vqa.mmsp-kn.de/archives/"

#: Every benchmark ``iqalab data fetch`` knows, by adapter name. No published SHA-256 exists for these archives
#: (see the module docstring): ``sha256=None`` means "recorded on first download", never a guessed value.
SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("koniq10k", "KonIQ-10k", _entry("koniq10k", "koniq10k", ", cache_size: 384"), archives=(
        Archive(_KONIQ + "koniq10k_scores_and_distributions.zip"),
        Archive(_KONIQ + "koniq10k_1024x768.zip"),
    )),
    Source("clive", "LIVE Challenge (LIVE In the Wild)", _entry("clive", "clive"), archives=(
        Archive("https://live.ece.utexas.edu/research/ChallengeDB/ChallengeDB_release.zip"),
    )),
    Source("piq23", "PIQ23", _entry("piq23", "piq23"), archives=(
        Archive("https://github.com/DXOMARK-Research/PIQ2023/archive/refs/heads/main.zip"),
    ), manual=(
        "The scores and splits come from the GitHub repository (fetched above); the images are behind DXOMARK's "
        "form: fill it at https://corp.dxomark.com/data-base-piq23/, download the image archive(s) from the link "
        "you receive, and unpack them into data/raw/piq23/ so that the IMAGE PATH column of "
        "data/raw/piq23/Scores/Scores_Overall.csv resolves (folders Overall/, Details/, Exposure/). The image "
        "archive's own top-level Scores_*.csv may stay: both layouts are read, the repository's first.",
    )),
    Source("spaq", "SPAQ", _entry("spaq", "spaq"), manual=(
        "Download SPAQ from the Baidu Yun or MEGA links on https://github.com/h4nwei/SPAQ (no direct link).",
        f"Put the annotation workbooks in data/raw/spaq/Annotations/ ({spaq.SCORES.split('/')[-1]}, "
        f"{spaq.EXIF.split('/')[-1]}, optional {spaq.SCENES.split('/')[-1]}) and the images in "
        f"data/raw/spaq/{spaq.IMAGES}/ (00001.jpg ..).",
    )),
    Source("bid", "BID (Blurred Image Database)", _entry("bid", "bid"), manual=(
        f"Download the database from {bid.CARD.url} (the page's download link; the publisher gives no stable "
        "archive address).",
        f"Unpack it into data/raw/bid/: {bid.GRADES} and DatabaseImage0001.JPG .. DatabaseImage0586.JPG beside it "
        "or in data/raw/bid/ImageDatabase/.",
    )),
    Source("gfiqa", "GFIQA-20K", _entry("gfiqa", "gfiqa"), manual=(
        f"Request GFIQA-20K on {gfiqa.CARD.url} (a form; the download link is sent by e-mail).",
        f"Unpack it into data/raw/gfiqa/: {gfiqa.RATINGS} and {gfiqa.IMAGES}/<img_name>.",
    )),
    Source("cgfiqa", "CGFIQA-40K", _entry("cgfiqa", "cgfiqa"), manual=(
        f"Download CGFIQA-40K from the link in {cgfiqa.CARD.url}'s README (a cloud drive; no direct link).",
        "Unpack it into data/raw/cgfiqa/: " + ", ".join(f"{p}/{cgfiqa.LABEL} and {p}/img/*.png"
                                                       for p in cgfiqa.PARTS) + ".",
    )),
    Source("fglive", "FGLive-10K", _entry("fglive", "generic", ", options: {mos_range: [1, 5]}"), manual=(
        "FGLive-10K is shared by its authors on request (TuningIQA paper); ask them for the images and scores.",
        "Write data/raw/fglive/images.csv (image, mos_<attr>..., scene, cam_*; docs/datasets.md, 'Generic "
        "tables') beside the image files; pairs.csv and votes.csv if you have them.",
    )),
    Source("sfiqa", "SFIQA-Bench", _entry("sfiqa", "generic", ", options: {mos_range: [1, 5]}"), manual=(
        "SFIQA-Bench is shared by its authors on request (SFIQA paper); ask them for the images and scores.",
        "Write data/raw/sfiqa/images.csv (image, mos_<attr>..., scene, condition; docs/datasets.md, 'Generic "
        "tables') beside the image files.",
    )),
)}

#: Other spellings accepted by ``iqalab data fetch``.
FETCH_ALIASES: dict[str, str] = {"koniq": "koniq10k", "koniq-10k": "koniq10k", "livec": "clive",
                                 "live_challenge": "clive", "piq2023": "piq23", "gfiqa-20k": "gfiqa",
                                 "gfiqa20k": "gfiqa", "cgfiqa-40k": "cgfiqa", "cgfiqa40k": "cgfiqa",
                                 "fglive-10k": "fglive", "sfiqa-bench": "sfiqa"}


def source(name: str) -> Source:
    """The :class:`Source` for ``name`` (aliases accepted, case-insensitive)."""
    key = FETCH_ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[key]


def default_downloads() -> Path:
    """Where archives are downloaded (``$IQALAB_DOWNLOADS``, else ``~/.cache/iqalab/downloads``): outside
    ``data/`` so DVC never versions them."""
    env = os.environ.get("IQALAB_DOWNLOADS")
    return Path(env) if env else Path.home() / ".cache" / "iqalab" / "downloads"


def _recorded(downloads: Path) -> dict[str, str]:
    path = downloads / "sha256.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(downloads: Path, url: str, digest: str) -> None:
    known = _recorded(downloads)
    known[url] = digest
    write_text(downloads / "sha256.json", json.dumps(known, indent=2, sort_keys=True) + "\n")


def download(url: str, dest: Path, sha256: str | None = None, progress: bool = True,
             opener: Callable[..., Any] = urllib.request.urlopen) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part`` with an HTTP Range request) and check its SHA-256.

    A short read (fewer bytes than ``Content-Length``) keeps the ``.part`` file and raises :class:`FetchError`
    saying to run again; a checksum mismatch deletes it and raises. ``dest`` appears only when complete and
    verified.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "iqalab-fetch"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = opener(request, timeout=TIMEOUT)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part is already whole
            response = None
        else:
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{url}: cannot connect ({getattr(exc, 'reason', exc)}); check the network and run "
                         "again (a partial download resumes)") from None
    if response is not None:
        with response:
            resumed = have and response.status == 206
            if have and not resumed:
                log.info("%s: server ignored the Range request; downloading from the start", url)
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            got = have
            with open(part, "ab" if resumed else "wb") as out, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                    disable=not progress) as bar:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, ValueError) as exc:  # reset, timeout, IncompleteRead
                        raise FetchError(f"{url}: interrupted after {got} bytes ({exc}); run again to resume "
                                         f"({part})") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if total is not None and got < total:
                raise FetchError(f"{url}: truncated, {got} of {total} bytes; run again to resume ({part})")
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise FetchError(f"{url}: SHA-256 mismatch (expected {sha256}, got {digest}); the download was deleted, "
                         "nothing was unpacked")
    os.replace(part, dest)
    return dest


def _unpack(archive: Path, into: Path, strip: bool | None, keep: frozenset[str] = frozenset()) -> None:
    """Unpack ``archive`` into ``into`` (members escaping it refused: zipfile sanitises names, tar uses the
    ``data`` filter); with ``strip`` the archive's single top folder is removed, with ``strip=None`` only when
    its name is not in ``keep`` (the layout's top-level entries)."""
    staging = into / f".unpack-{uuid.uuid4().hex[:8]}"
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(staging, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise FetchError(f"{archive}: cannot unpack ({exc})") from None
    top = staging
    entries = [p for p in staging.iterdir() if p.name not in ("__MACOSX",)]
    if strip is None:
        strip = len(entries) == 1 and entries[0].is_dir() and entries[0].name not in keep
    if strip:
        if len(entries) != 1 or not entries[0].is_dir():
            raise FetchError(f"{archive}: expected a single top folder, found {sorted(p.name for p in entries)}")
        top = entries[0]
    for entry in top.iterdir():
        if entry.name == "__MACOSX":
            continue
        target = into / entry.name
        if target.exists():
            if target.is_dir() and entry.is_dir():  # two archives filling one folder
                shutil.copytree(entry, target, dirs_exist_ok=True)
                continue
            raise FetchError(f"{archive}: {entry.name} is in two archives")
        entry.rename(target)
    shutil.rmtree(staging)


def fetch(name: str, raw_root: Path, downloads: Path | None = None, progress: bool = True,
          sources: Mapping[str, Source] | None = None, keep_archives: bool = False) -> Path:
    """Download and unpack benchmark ``name`` into ``raw_root/<name>`` all-or-nothing; returns the folder.

    Refuses when the folder exists (remove it first to fetch again) and raises :class:`FetchError` with the
    manual steps for a source without direct download.
    """
    src = (sources or SOURCES)[name] if sources is not None else source(name)
    if not src.archives:
        raise FetchError(f"{src.title} cannot be downloaded directly:\n" + manual_text(src))
    raw_root = Path(raw_root)
    target = raw_root / src.name
    if target.exists():
        raise FetchError(f"{target} exists; `iqalab data status` says what it holds (remove it to fetch again)")
    downloads = Path(downloads) if downloads is not None else default_downloads()
    recorded = _recorded(downloads)
    files: list[tuple[Archive, Path, str, str]] = []
    for arc in src.archives:
        expected = arc.sha256 or recorded.get(arc.url)
        path = download(arc.url, downloads / src.name / arc.filename, expected, progress=progress)
        digest = sha256_file(path)
        if arc.sha256:
            how = "published"
        elif expected:
            how = "recorded on first download, matched"
        else:
            how = "recorded on first download"
            _record(downloads, arc.url, digest)
            log.warning("%s: no published SHA-256; recorded %s (%s) -- later downloads must match it",
                        arc.filename, digest, downloads / "sha256.json")
        files.append((arc, path, digest, how))
    raw_root.mkdir(parents=True, exist_ok=True)
    partial = raw_root / f".{src.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        keep = layout_top_names(src.adapter)
        for arc, path, _, _ in files:
            if arc.unpack:
                _unpack(path, partial, arc.strip, keep)
            else:
                shutil.copy2(path, partial / arc.filename)
        provenance = {"dataset": src.name, "fetched": datetime.now(UTC).isoformat(timespec="seconds"),
                      "archives": [{"url": a.url, "sha256": d, "sha256_source": how, "bytes": p.stat().st_size}
                                   for a, p, d, how in files]}
        write_text(partial / ".fetch.json", json.dumps(provenance, indent=2) + "\n")
        os.rename(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not keep_archives:
        for _, path, _, _ in files:
            path.unlink(missing_ok=True)
    state = check_raw(src.name, src.adapter, target)
    log.info("%s unpacked into %s: %s%s", src.title, target, state.state,
             f" (missing {', '.join(state.missing)})" if state.missing else "")
    return target


def manual_text(src: Source) -> str:
    """The numbered manual steps for ``src`` followed by what to do once the files are in place."""
    lines = [f"  {i}. {step}" for i, step in enumerate(src.manual, 1)]
    return "\n".join(lines)


def next_steps(src: Source) -> str:
    """What to do after the files are under ``data/raw/<name>/``: check, version, enable."""
    return (f"Then: `iqalab data status` (checks the layout), `dvc add data` (or `dvc commit`), and add under "
            f"`datasets:` in params.yaml:\n  {src.params_entry}")


# --- status -----------------------------------------------------------------------------------------------------

def layout_top_names(adapter: str) -> frozenset[str]:
    """The top-level names in ``adapter``'s published layouts (``Data`` for ``Data/AllMOS_release.mat``): the
    adapters' own :data:`~iqalab.data.adapters.LAYOUTS`, so a layout change there shows here."""
    return frozenset().union(*(layout.top_names() for layout in LAYOUTS.get(adapter, ())))


_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _has_images(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    return any(p.suffix.lower() in _IMAGE_SUFFIXES for p in folder.iterdir())


@dataclass(frozen=True)
class Status:
    """One dataset's raw folder: ``present`` / ``partial`` / ``missing`` and what is missing."""

    name: str
    adapter: str
    raw: Path
    state: str
    missing: tuple[str, ...]
    layout: str = ""


def check_raw(name: str, adapter: str, raw: Path) -> Status:
    """Compare ``raw`` with the published layouts ``adapter`` reads (:func:`.adapters.base.match_layout`):
    ``present`` names the layout found, ``partial`` lists what the closest layout lacks."""
    raw = Path(raw)
    layouts = LAYOUTS.get(adapter, ())
    if not raw.is_dir() or not any(raw.iterdir()):
        return Status(name, adapter, raw, "missing", ())
    found = match_layout(raw, layouts)
    if found is None:
        gaps = [[f"{m}/ (images)" if m in layout.image_dirs else m for m in layout.locate(raw)[1]]
                for layout in layouts]
        return Status(name, adapter, raw, "partial", tuple(min(gaps, key=len, default=[])))
    dirs = found.layout.image_dirs
    if dirs and not any(_has_images(found.root / d) for d in dirs):
        return Status(name, adapter, raw, "partial", (f"{' or '.join(dirs)}/ (images)",), found.layout.name)
    return Status(name, adapter, raw, "present", (), found.layout.name)


def status_rows(datasets: Mapping[str, Any], root: Path) -> list[Status]:
    """Every adapter dataset of ``params.yaml`` (``source: adapter``) and every other known benchmark at its
    default place ``data/raw/<name>/``."""
    rows: list[Status] = []
    seen: set[str] = set()
    from iqalab.data.adapters import resolve

    for name, ds in datasets.items():
        if getattr(ds, "source", None) != "adapter":
            continue
        adapter = resolve(str(ds.builder))
        raw = Path(ds.raw) if getattr(ds, "raw", None) else Path("data/raw") / name
        rows.append(check_raw(name, adapter, raw if raw.is_absolute() else root / raw))
        seen.add(name)
    for name, src in SOURCES.items():
        if name in seen:
            continue
        rows.append(check_raw(name, src.adapter, root / "data" / "raw" / name))
    return rows


def status_table(rows: Iterable[Status], root: Path) -> str:
    """The rows as aligned text (one line per dataset)."""
    out = []
    for row in rows:
        try:
            raw = row.raw.relative_to(root)
        except ValueError:
            raw = row.raw
        what = f"missing: {', '.join(row.missing)}" if row.missing else (
            f"`iqalab data fetch {row.name}`" if row.state == "missing" and row.name in SOURCES else row.layout)
        out.append(f"{row.name:<10} {row.adapter:<9} {row.state:<8} {raw}  {what}".rstrip())
    return "\n".join(out)
