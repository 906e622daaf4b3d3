"""End-to-end UI test: ``notebooks/00_explore.ipynb`` in a real JupyterLab, driven by a real headless browser.

nbval (``make test``) checks that every cell of the notebooks executes; this test checks what a person sees:
JupyterLab starts from the project's environment with its kernel, the notebook runs top to bottom without an
error, the dataset grid is an image, the ipywidgets browser renders as controls (not "Loading widget..." or the
plain-text repr a missing front-end leaves), moving its "sort by" control redraws the image without an error in
the callback, and the gMAD view renders from the gMAD stage's outputs.

The toy profile of ``tests/ui/params.yaml`` (two one-epoch models, so that gMAD has a model couple) is run through
the stages' commands into a temporary work folder first. The browser is Debian's ``chromium`` with its matching
``chromedriver``, driven by Selenium (the ``dev`` extra); without them the test skips with one line
(``.ci/run`` installs them with apt where it can). Screenshots go to ``build/ui/`` (test artefacts);
``IQALAB_UI_SCREENSHOTS=docs/img`` writes the README's screenshots instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "tests" / "ui" / "params.yaml"
NOTEBOOK = ROOT / "notebooks" / "00_explore.ipynb"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
#: Seconds allowed for the whole notebook to run in the browser (the toy data: about 20 s on an idle core).
RUN_TIMEOUT = 420

selenium = pytest.importorskip("selenium", reason="UI test skipped: selenium is not installed (the dev extra)")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("UI test skipped: no chromium + chromedriver on PATH (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last state: {last!r})")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The toy profile's outputs (dataset, two trained models, gMAD pairs) in a temporary work folder
    (``IQALAB_UI_WORKDIR``: a folder where an earlier run left them, reused as is)."""
    reuse = os.environ.get("IQALAB_UI_WORKDIR")
    work = Path(reuse) if reuse else tmp_path_factory.mktemp("ui-work")
    environ = {**os.environ, "IQALAB_PARAMS": str(PARAMS), "IQALAB_WORKDIR": str(work), "HF_HUB_OFFLINE": "1",
               "PYTHONHASHSEED": "0"}
    environ.pop("MPLBACKEND", None)  # the kernel must draw inline figures, not to Agg
    steps = [["ingest", "fglive_sim"], ["train", "baseline_fglive"], ["train", "baseline_fglive_wide"], ["gmad"]]
    if reuse and (work / "results" / "gmad" / "pairs.csv").is_file():
        steps = []
    for args in steps:
        done = subprocess.run([sys.executable, "-m", "iqalab", "-q", *args], cwd=ROOT, env=environ,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"iqalab {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return environ


@pytest.fixture(scope="module")
def lab(env: dict[str, str]) -> Iterator[str]:
    """JupyterLab on 127.0.0.1 with a token, serving a copy of the explore notebook inside the project (so that
    the notebook finds ``dvc.yaml`` and the committed notebook is never autosaved with outputs)."""
    folder = ROOT / "build" / "ui" / f"lab-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    shutil.copy(NOTEBOOK, folder / NOTEBOOK.name)
    port, token = _free_port(), uuid.uuid4().hex
    log = (folder / "jupyterlab.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited with {proc.returncode}: see {folder / 'jupyterlab.log'}")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    try:
        _wait("JupyterLab to start", up, 120)
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    shutil.rmtree(folder, ignore_errors=True)  # kept, with its log, when JupyterLab failed to start


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1600",
                "--disable-gpu"):
        options.add_argument(arg)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


# JavaScript run in the page: JupyterLab's application object is exposed by --LabApp.expose_app_in_browser.
_STATE = """
const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
if (!w || !w.content || !w.sessionContext) return null;
const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
const cells = w.content.widgets.filter(c => c.model.type === 'code');
return {kernel: kernel ? kernel.status : 'none', counts: cells.map(c => c.model.executionCount),
        errors: cells.flatMap((c, i) => c.model.outputs.toJSON().filter(o => o.output_type === 'error')
                                              .map(o => `cell ${i}: ${o.ename}: ${o.evalue}`))};
"""
_CELL = """
const cells = window.jupyterapp.shell.currentWidget.content.widgets.filter(c => c.model.type === 'code');
const cell = cells.find(c => c.model.sharedModel.getSource().includes(arguments[0]));
return cell ? cell.node : null;
"""


def _shot(driver: WebDriver, name: str, node: Any = None) -> Path:
    folder = Path(os.environ.get("IQALAB_UI_SCREENSHOTS") or ROOT / "build" / "ui")
    folder = folder if folder.is_absolute() else ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"explore_{name}.png"
    if node is not None:
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", node)
        time.sleep(0.5)
        node.screenshot(str(path))
    else:
        driver.save_screenshot(str(path))
    return path


def _images(node: Any) -> list[str]:
    return [img.get_attribute("src") or "" for img in node.find_elements("css selector", "img")]


def _redrawn(cell: Any, before: list[str]) -> list[str]:
    """The cell's images once they differ from ``before``; fails at once when the widget's callback raised."""
    if "Traceback" in cell.text or "Error" in cell.text:
        raise AssertionError(f"a widget callback raised:\n{cell.text[:800]}")
    now = _images(cell)
    return now if now and now != before else []


def test_explore_notebook_in_jupyterlab(lab: str, browser: WebDriver) -> None:
    driver = browser
    driver.get(lab)
    _wait("the notebook and its kernel", lambda: (driver.execute_script(_STATE) or {}).get("kernel") == "idle", 180)
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")

    def finished() -> Any:
        state = driver.execute_script(_STATE)
        if state["errors"]:
            raise AssertionError("a cell raised in JupyterLab: " + "; ".join(state["errors"]))
        return state["kernel"] == "idle" and all(c is not None for c in state["counts"]) and state

    state = _wait("every cell to run", finished, RUN_TIMEOUT, every=1.0)
    assert not state["errors"]
    _shot(driver, "notebook")

    # the dataset grid is an image
    grid = driver.execute_script(_CELL, "explore.sorted_grid(ds, sort_by")
    assert grid is not None and _images(grid), "the dataset grid did not render as an image"
    _shot(driver, "grid", grid)

    # the ipywidgets browser renders as controls, not as text
    cell = driver.execute_script(_CELL, "explore.browser(ds")
    text = cell.text
    assert "Loading widget" not in text and "interactive(children=" not in text, text[:300]
    selects = _wait("the browser's controls", lambda: cell.find_elements("css selector", ".widget-dropdown select"),
                    60)
    before = _wait("the browser's image", lambda: _images(cell), 60)
    _shot(driver, "browser", cell)

    # moving the "sort by" control redraws the image, and the callback raises nothing
    sort_by = Select(selects[0])
    assert len(sort_by.options) > 1, "the sort control offers a single column"
    sort_by.select_by_index(1)
    after = _wait("the image to change after a new sort column", lambda: _redrawn(cell, before), 60)
    assert after != before
    _shot(driver, "browser_sorted", cell)

    # the one-image view: another image redraws every model's scores
    view = driver.execute_script(_CELL, "explore.image_browser(")
    controls = _wait("the image view's controls", lambda: view.find_elements("css selector", ".widget-dropdown select"),
                     60)
    before = _wait("the image view's figure", lambda: _images(view), 120)
    Select(controls[0]).select_by_index(0)  # the lowest-ranked image (the view opens on the middle one)
    _wait("the scores of another image", lambda: _redrawn(view, before), 120)
    _shot(driver, "image_view", view)

    # the gMAD view renders from the gMAD stage's pairs
    gmad = driver.execute_script(_CELL, "explore.gmad_figure(")
    assert gmad is not None and _images(gmad), f"the gMAD view did not render: {gmad.text[:300] if gmad else ''}"
    chooser = driver.execute_script(_CELL, "explore.gmad_browser(")
    assert chooser.find_elements("css selector", ".widget-dropdown select"), chooser.text[:300]
    _shot(driver, "gmad", gmad)

