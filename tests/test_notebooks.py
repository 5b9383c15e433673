"""Every notebook in ``notebooks/`` runs top to bottom against a real server.

Each notebook is executed with nbclient in a fresh kernel running *this*
interpreter (a kernel spec written to a temp dir and put first on
``JUPYTER_PATH``, so no user- or system-wide kernel is needed and none is
picked by accident), in a temp working directory, with ``NATS_URL`` unset:
the notebook starts its own embedded nats-server, as on a fresh machine.
Any error or stderr output (warnings included) fails the test, as does a
notebook committed with outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.slow

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
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
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_integrity_audit.ipynb", "03_bi_export.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path: Path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs"
        # No absolute paths: a notebook must run from any checkout.
        assert "/work/" not in cell.source and "/home/" not in cell.source and "/tmp/" not in cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, kernel_env: str):
    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copy(path, workdir / path.name)
    notebook = nbformat.read(workdir / path.name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, kernel_name=kernel_env, timeout=BUDGET_SECONDS, allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    started = time.monotonic()
    client.execute()
    elapsed = time.monotonic() - started
    problems = [
        f"cell {index}: {output.get('ename', '')} {output.get('evalue', '')}{output.get('text', '')}"
        for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
        for output in cell.outputs
        # stderr too: a warning in a notebook is a defect a reader sees.
        if output.output_type == "error" or (output.output_type == "stream" and output.name == "stderr")
    ]
    assert not problems, "\n".join(problems)
    assert elapsed < BUDGET_SECONDS, f"{path.name} took {elapsed:.0f} s"
    # Something was shown: the notebooks are for people, every one has outputs.
    assert sum(len(cell.outputs) for cell in notebook.cells if cell.cell_type == "code") >= 3
    assert "NATS_URL" not in os.environ
