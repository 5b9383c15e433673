"""Every notebook in ``notebooks/`` runs top to bottom against a real server,
twice in a row, and is committed executed.

Each notebook is executed with nbclient in a fresh kernel running *this*
interpreter (a kernel spec written to a temp dir and put first on
``JUPYTER_PATH``, so no user- or system-wide kernel is needed and none is
picked by accident), in a temp working directory, with ``NATS_URL`` unset:
the notebook starts its own embedded nats-server, as on a fresh machine.
Then again in the same directory and a new kernel ("Restart and run all"
twice). Any error or stderr output (warnings included) fails the test.

The committed notebooks carry their outputs (so they read on a code host),
small, with no absolute path or secret, written by running this file:
``.venv/bin/python tests/present/test_notebooks.py``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "aether-audit-test"
# The brief for the notebooks: small data, each under a minute (kernel start
# and the embedded server included; generous for slow CI machines).
BUDGET_SECONDS = 90


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec for ``sys.executable`` on a private ``JUPYTER_PATH``."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "aether_audit tests",
        "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    # The kernel must not write into the developer's runtime dir, nor pick up
    # their IPython profile (startup scripts could change what runs).
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "agg")
    monkeypatch.delenv("NATS_URL", raising=False)
    return KERNEL_NAME


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_integrity_audit.ipynb", "03_bi_export.ipynb",
                                          "04_business_rules.ipynb"]


# What a committed notebook may weigh: the figures are PNGs of ~30-60 KiB each.
MAX_NOTEBOOK_BYTES = 1_500_000
SECRET_PATTERNS = (
    re.compile(r"\w+://[^/@\s\"']+:[^/@\s\"']+@"),  # a URL with a password
    re.compile(r"\bS[UOA][A-Z2-7]{50,}"),  # an NKey seed
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)


def execute(notebook: Any, workdir: Path, kernel_name: str) -> float:
    """Run ``notebook`` in place in a fresh kernel; the seconds it took."""
    client = nbclient.NotebookClient(
        notebook, kernel_name=kernel_name, timeout=BUDGET_SECONDS, allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
        # No timings (reproducible, small). The widgets' state is saved, so a
        # notebook opened without a kernel draws their controls; each widget
        # also carries a static text/html rendering beside it, for viewers
        # that draw no widgets.
        record_timing=False, store_widget_state=True,
    )
    started = time.monotonic()
    client.execute()
    return time.monotonic() - started


def problems_in(notebook: Any) -> list[str]:
    return [
        f"cell {index}: {output.get('ename', '')} {output.get('evalue', '')}{output.get('text', '')}"
        for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
        for output in cell.outputs
        # stderr too: a warning in a notebook is a defect a reader sees.
        if output.output_type == "error" or (output.output_type == "stream" and output.name == "stderr")
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_executed_small_and_clean(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), \
        f"{path.name}: commit it executed top to bottom (python tests/present/test_notebooks.py)"
    assert sum(len(cell.outputs) for cell in code) >= len(code) - 1
    assert not problems_in(notebook)
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, path.stat().st_size
    text = path.read_text(encoding="utf-8")
    # No absolute paths: a notebook must run from any checkout, and say nothing of this machine.
    for cell in notebook.cells:
        for where in ("/work/", "/home/", "/tmp/", "/root/"):
            assert where not in cell.source and where not in json.dumps(cell.get("outputs", [])), (path.name, where)
    for pattern in SECRET_PATTERNS:
        assert not pattern.search(text), (path.name, pattern.pattern)
    # Every widget output can be read without a kernel: its state is saved, and a static rendering beside it.
    state = notebook.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    for cell in code:
        for output in cell.outputs:
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                assert "text/html" in data, f"{path.name}: a widget without a static rendering"
                assert data["application/vnd.jupyter.widget-view+json"]["model_id"] in state, \
                    f"{path.name}: a widget whose state is not saved"


def saved_html(notebook: Any) -> list[str]:
    return ["".join(output["data"]["text/html"]) for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.outputs if "text/html" in output.get("data", {})]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_notebook_opened_without_running_shows_styled_output(path: Path):
    """What a reader sees before running anything is the saved outputs: each
    of our HTML outputs carries its own <style>, scoped to its root's id, as
    after a run. JupyterLab drops <style> from an untrusted notebook's
    outputs: the colours that carry meaning are inline too (test_html.py
    checks they use only properties its sanitizer keeps), and the first cell
    says how to see the rest (jupyter trust)."""
    notebook = nbformat.read(path, as_version=4)
    ours = [html for html in saved_html(notebook) if 'class="aether-audit-report"' in html]
    for html in ours:
        root = re.match(r'<div id="(aa-[0-9a-f]+)" class="aether-audit-report"><style>#(aa-[0-9a-f]+)\{', html)
        assert root and root.group(1) == root.group(2), html[:200]
        assert f"#{root.group(1)} table.aa" in html  # the tables' rules, scoped to this output
    if ours:
        assert "jupyter trust notebooks/" + path.name in notebook.cells[0].source
        verdicts = [html for html in ours if 'class="verdict' in html]
        assert verdicts and all(re.search(r'class="verdict verdict-\w+"[^>]*style="[^"]*background-color', html)
                                for html in verdicts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_twice_in_a_row(path: Path, tmp_path: Path, kernel_env: str):
    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copy(path, workdir / path.name)
    for run in ("first", "second"):
        notebook = nbformat.read(workdir / path.name, as_version=4)
        elapsed = execute(notebook, workdir, kernel_env)
        problems = problems_in(notebook)
        assert not problems, f"{run} run:\n" + "\n".join(problems)
        assert elapsed < BUDGET_SECONDS, f"{path.name} took {elapsed:.0f} s on its {run} run"
        # Something was shown: the notebooks are for people, every one has outputs.
        assert sum(len(cell.outputs) for cell in notebook.cells if cell.cell_type == "code") >= 3
    assert "NATS_URL" not in os.environ


def _write_executed() -> None:
    """Execute every notebook in a scratch directory and write it back with its outputs."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        spec_dir = root / "jupyter" / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True)
        (spec_dir / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "aether_audit", "language": "python",
        }))
        os.environ.update(JUPYTER_PATH=str(root / "jupyter"), JUPYTER_RUNTIME_DIR=str(root / "runtime"),
                          IPYTHONDIR=str(root / "ipython"), MPLBACKEND="agg")
        os.environ.pop("NATS_URL", None)
        for path in NOTEBOOKS:
            workdir = root / path.stem
            workdir.mkdir()
            notebook = nbformat.read(path, as_version=4)
            elapsed = execute(notebook, workdir, KERNEL_NAME)
            assert not problems_in(notebook), problems_in(notebook)
            # The kernel spec is this machine's; a reader's Jupyter picks its own.
            notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            nbformat.write(notebook, path)
            print(f"{path.name}: {elapsed:.0f} s, {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    _write_executed()
