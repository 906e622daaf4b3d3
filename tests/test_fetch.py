"""``iqalab data fetch`` / ``data status`` against a local HTTP server (127.0.0.1; no test touches the internet)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from iqalab.data import fetch as F


class _Server:
    """Serves ``files`` (path -> bytes) with Range support; ``truncate[path]`` sends only that many bytes of a
    full-length response and closes the connection."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.truncate.pop(self.path, None)
                self.wfile.write(body[start:cut] if cut is not None else body[start:])
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


# an archive shaped like ChallengeDB_release.zip (one top folder, stripped) -- large enough to need several reads
ARCHIVE = _zip({"Release/Data/AllMOS_release.mat": b"m" * 10, "Release/Data/AllImages_release.mat": b"n",
                "Release/Data/AllStdDev_release.mat": b"s", "Release/Images/a.jpg": bytes(range(256)) * 40})


def _sources(srv: _Server, sha: str | None) -> dict[str, F.Source]:
    srv.files["/clive.zip"] = ARCHIVE
    return {"clive": F.Source("clive", "LIVE test", F._entry("clive", "clive"),
                              archives=(F.Archive(srv.url + "/clive.zip", sha256=sha, strip=True),))}


def _only_dataset(raw: Path) -> list[str]:
    return sorted(p.name for p in raw.iterdir()) if raw.is_dir() else []


def test_correct_checksum_unpacks_whole(server: _Server, tmp_path: Path) -> None:
    sha = hashlib.sha256(ARCHIVE).hexdigest()
    out = F.fetch("clive", tmp_path / "raw", tmp_path / "dl", progress=False, sources=_sources(server, sha))
    assert out == tmp_path / "raw" / "clive"
    assert (out / "Images" / "a.jpg").read_bytes() == bytes(range(256)) * 40
    assert _only_dataset(tmp_path / "raw") == ["clive"]  # no partial folder left
    meta = json.loads((out / ".fetch.json").read_text())
    assert meta["archives"][0] == {"url": server.url + "/clive.zip", "sha256": sha, "sha256_source": "published",
                                   "bytes": len(ARCHIVE)}
    assert F.check_raw("clive", "clive", out).state == "present"
    assert not list((tmp_path / "dl").rglob("*.zip"))  # archive removed after unpacking


def test_wrong_checksum_writes_nothing(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(F.FetchError, match="SHA-256 mismatch"):
        F.fetch("clive", tmp_path / "raw", tmp_path / "dl", progress=False, sources=_sources(server, "0" * 64))
    assert _only_dataset(tmp_path / "raw") == []
    assert not list((tmp_path / "dl").rglob("*clive.zip*"))  # the bad download is deleted, not resumed later


def test_truncated_download_fails_then_resumes(server: _Server, tmp_path: Path) -> None:
    sha = hashlib.sha256(ARCHIVE).hexdigest()
    sources = _sources(server, sha)
    server.truncate["/clive.zip"] = 4000
    with pytest.raises(F.FetchError, match="truncated, 4000 of"):
        F.fetch("clive", tmp_path / "raw", tmp_path / "dl", progress=False, sources=sources)
    assert _only_dataset(tmp_path / "raw") == []
    part = tmp_path / "dl" / "clive" / "clive.zip.part"
    assert part.stat().st_size == 4000
    F.fetch("clive", tmp_path / "raw", tmp_path / "dl", progress=False, sources=sources)
    assert server.ranges == [None, "bytes=4000-"]  # the second request asked only for the rest
    assert (tmp_path / "raw" / "clive" / "Data" / "AllMOS_release.mat").read_bytes() == b"m" * 10


def test_interrupted_download_resumes_and_unknown_hash_is_recorded(server: _Server, tmp_path: Path) -> None:
    sources = _sources(server, None)
    part = tmp_path / "dl" / "clive" / "clive.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(ARCHIVE[:1234])  # a download killed earlier
    F.fetch("clive", tmp_path / "raw", tmp_path / "dl", progress=False, sources=sources)
    assert server.ranges == ["bytes=1234-"]
    sha = hashlib.sha256(ARCHIVE).hexdigest()
    assert json.loads((tmp_path / "dl" / "sha256.json").read_text()) == {server.url + "/clive.zip": sha}
    meta = json.loads((tmp_path / "raw" / "clive" / ".fetch.json").read_text())
    assert meta["archives"][0]["sha256_source"] == "recorded on first download"
    # a later download of different bytes is refused by the recorded hash (trust on first use)
    server.files["/clive.zip"] = ARCHIVE[:-1] + b"x"
    with pytest.raises(F.FetchError, match="SHA-256 mismatch"):
        F.fetch("clive", tmp_path / "raw2", tmp_path / "dl", progress=False, sources=sources)
    assert not (tmp_path / "raw2" / "clive").exists()


def test_two_archives_fill_one_layout_wrappers_stripped_layout_folders_kept(server: _Server, tmp_path: Path) -> None:
    # KonIQ-like: the scores come wrapped in a folder the layout does not name, the images in `1024x768/`, a name
    # the layout has (kept); a third archive wraps a whole repository like a GitHub `<repo>-main.zip`
    server.files["/scores.zip"] = _zip({"koniq_scores/koniq10k_scores_and_distributions.csv": b"image_name,MOS\n"})
    server.files["/images.zip"] = _zip({"1024x768/1.jpg": b"j", "1024x768/2.jpg": b"k"})
    server.files["/extra.zip"] = _zip({"repo-main/koniq10k_distributions_sets.csv": b"image_name,set\n"})
    sources = {"koniq10k": F.Source("koniq10k", "KonIQ test", F._entry("koniq10k", "koniq10k"), archives=tuple(
        F.Archive(server.url + f"/{n}.zip") for n in ("scores", "images", "extra")))}
    out = F.fetch("koniq10k", tmp_path / "raw", tmp_path / "dl", progress=False, sources=sources)
    assert sorted(p.name for p in out.iterdir()) == [".fetch.json", "1024x768", "koniq10k_distributions_sets.csv",
                                                     "koniq10k_scores_and_distributions.csv"]
    assert F.check_raw("koniq10k", "koniq10k", out).state == "present"
    assert len(json.loads((out / ".fetch.json").read_text())["archives"]) == 3


def test_unpack_failure_leaves_no_dataset(server: _Server, tmp_path: Path) -> None:
    server.files["/bad.zip"] = b"not a zip file" * 10
    sources = {"clive": F.Source("clive", "LIVE test", "x", archives=(F.Archive(server.url + "/bad.zip"),))}
    with pytest.raises(F.FetchError, match="cannot unpack"):
        F.fetch("clive", tmp_path / "raw", tmp_path / "dl", progress=False, sources=sources)
    assert _only_dataset(tmp_path / "raw") == []


def test_existing_folder_refused_and_unreachable_server_fails_fast(server: _Server, tmp_path: Path) -> None:
    (tmp_path / "raw" / "clive").mkdir(parents=True)
    with pytest.raises(F.FetchError, match="exists"):
        F.fetch("clive", tmp_path / "raw", tmp_path / "dl", progress=False, sources=_sources(server, None))
    dead = {"x": F.Source("x", "X", "x", archives=(F.Archive("http://127.0.0.1:9/x.zip"),))}
    with pytest.raises(F.FetchError, match="cannot connect"):
        F.fetch("x", tmp_path / "raw", tmp_path / "dl", progress=False, sources=dead)


def test_manual_sources_say_what_to_do() -> None:
    for name in ("spaq", "gfiqa", "fglive", "sfiqa", "cgfiqa", "bid"):
        src = F.source(name)
        assert not src.archives and src.manual
        with pytest.raises(F.FetchError, match="cannot be downloaded directly") as err:
            F.fetch(name, Path("/nonexistent"), progress=False)
        assert f"data/raw/{name}/" in str(err.value)
    assert "corp.dxomark.com" in F.manual_text(F.source("piq2023"))  # PIQ23: scores fetched, images by form
    assert F.source("livec").adapter == "clive" and F.source("fglive").adapter == "generic"
    with pytest.raises(ValueError, match="unknown dataset"):
        F.source("imagenet")


def test_status_missing_partial_present(tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw"
    (raw / "koniq10k" / "1024x768").mkdir(parents=True)
    (raw / "koniq10k" / "1024x768" / "a.jpg").write_bytes(b"x")  # images but no scores CSV
    (raw / "gfiqa" / "image").mkdir(parents=True)
    (raw / "gfiqa" / "mos_val_rating.csv").write_text("img_name,mos\n")
    (raw / "gfiqa" / "image" / "1.png").write_bytes(b"x")
    rows = {r.name: r for r in F.status_rows({}, tmp_path)}
    assert set(rows) == set(F.SOURCES)
    assert rows["koniq10k"].state == "partial" and rows["koniq10k"].missing == ("koniq10k_scores_and_distributions.csv",)
    assert rows["gfiqa"].state == "present" and rows["spaq"].state == "missing"
    text = F.status_table(rows.values(), tmp_path)
    assert "koniq10k   koniq10k  partial  data/raw/koniq10k  missing: koniq10k_scores" in text
    assert "`iqalab data fetch clive`" in text


def test_status_uses_params_entries_for_their_raw_folder(tmp_path: Path) -> None:
    from types import SimpleNamespace

    (tmp_path / "elsewhere" / "ChallengeDB" / "Data").mkdir(parents=True)
    datasets = {"livec_mine": SimpleNamespace(source="adapter", builder="livec", raw="elsewhere/ChallengeDB"),
                "sim": SimpleNamespace(source="sim", builder="fglive_sim", raw=None)}
    (tmp_path / "elsewhere" / "ChallengeDB" / "Data" / "AllMOS_release.mat").write_bytes(b"m")
    rows = {r.name: r for r in F.status_rows(datasets, tmp_path)}
    assert "sim" not in rows and "clive" in rows  # simulated sets have no raw folder; clive's default place listed
    mine = rows["livec_mine"]
    assert (mine.adapter, mine.state) == ("clive", "partial")
    assert mine.missing == ("Data/AllImages_release.mat", "Data/AllStdDev_release.mat", "Images/ (images)")
