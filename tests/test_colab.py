"""mp4.ipynb's setup cells in a simulated Colab: a kernel in which segkit is NOT importable and
``google.colab`` is already imported (a fake one whose ``drive.mount(path)`` links a temporary
"My Drive"), no ``SEGKIT_DATA``, and pip without network (``PIP_NO_INDEX``).

The kernel runs in a fresh venv that sees this environment's packages through a path line (so
torch is not reinstalled) but not segkit's editable install. Three ways in, as a student meets
them: the repository on Drive, an uploaded archive, and nothing at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
SETUP_CELLS = 2  # the code cells that find and install segkit, check the data, load the numbers
FAKE_DRIVE = '''import os
from pathlib import Path


def mount(mountpoint, force_remount=False):
    """Colab's drive.mount, faked: link the test's "My Drive" at <mountpoint>/MyDrive."""
    Path(mountpoint).mkdir(parents=True, exist_ok=True)
    link = Path(mountpoint) / "MyDrive"
    if not link.exists():
        link.symlink_to(os.environ["FAKE_MY_DRIVE"], target_is_directory=True)
    print(f"Mounted at {mountpoint}")
'''


def _repository_copy(dest: Path) -> Path:
    """The files a student has (tracked and new, not ignored), and synthetic data in data/."""
    from segkit.synthetic import make_pennfudan, make_sbd

    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        if (ROOT / rel).is_file() and not rel.endswith((".pdf", ".jpg", ".png")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    sizes = {"train": 2, "val": 2, "test": 2}
    make_sbd(dest / "data", sizes=sizes, image_size=(32, 48))
    make_pennfudan(dest / "data")
    return dest


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _repository_copy(tmp_path_factory.mktemp("repo") / "segkit-main")


def _kernel(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A venv whose python sees this environment's site-packages (a path line: their .pth files,
    among them segkit's editable finder, are not run) and imports the fake google.colab at start;
    returns its jupyter data dir (kernelspec "colab-sim") and the kernel's environment. Makes
    ``tmp/content`` (Colab's /content) and ``tmp/my_drive`` (what the fake Drive mounts)."""
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False, symlinks=True)
    site = Path(
        sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)})
    )
    fake = tmp / "fake"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "colab" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "drive.py").write_text(FAKE_DRIVE)
    ours = sysconfig.get_path("purelib")
    (site / "a_colab_sim.pth").write_text(f"{fake}\n{ours}\n")
    (site / "b_colab_sim.pth").write_text("import google.colab\n")  # imported at start, as on Colab
    spec = tmp / "jupyter" / "kernels" / "colab-sim"
    spec.mkdir(parents=True)
    argv = [str(env_dir / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    (tmp / "content").mkdir()
    (tmp / "my_drive").mkdir()
    env = {
        "SEGKIT_CONTENT": str(tmp / "content"),
        "FAKE_MY_DRIVE": str(tmp / "my_drive"),
        "PIP_NO_INDEX": "1",  # no network: everything must come from this environment
        "PIP_NO_BUILD_ISOLATION": "0",  # pip's spelling of "build with the installed setuptools"
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "MPLBACKEND": "Agg",
        "SEGKIT_QUICK": "1",
        "JUPYTER_PATH": str(tmp / "jupyter"),
    }
    return tmp / "jupyter", env


def _execute(tmp: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    """Run the notebook's setup cells in the simulated Colab; (the cells run, the error)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("SEGKIT_DATA", "SEGKIT_HOME", "SEGKIT_REPO", "SEGKIT_RUNS"):
        monkeypatch.delenv(k, raising=False)
    nb = nbformat.read(ROOT / "mp4.ipynb", as_version=4)
    probe = "print('CWD', os.getcwd()); print('FILE', segkit.__file__)"
    nb.cells = [c for c in nb.cells if c.cell_type == "code"][:SETUP_CELLS]
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="colab-sim", resources={"metadata": {"path": str(tmp)}}
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        return nb.cells, e
    return nb.cells, None


def _text(cells: list) -> str:
    outs = [o for c in cells for o in c.get("outputs", [])]
    return "".join(o.get("text", "") + "".join(o.get("traceback", [])) for o in outs)


def _installed_from(cells: list, home: Path) -> None:
    """segkit was installed from ``home``, the kernel works there, and read its numbers."""
    text = _text(cells)
    assert f"CWD {home.resolve()}" in text, text[-2000:]
    assert f"FILE {home}/segkit/__init__.py" in text, text[-2000:]
    date = json.loads((ROOT / "report/generated/results.json").read_text())["date"]
    assert f"full run (report): {date}" in text  # the committed numbers, read from the copy
    assert "synthetic (segkit.synthetic)" in text  # its data/ was found and checked, not fetched


def test_repository_on_google_drive(repo_copy, tmp_path, monkeypatch):
    _, env = _kernel(tmp_path)
    home = tmp_path / "my_drive" / "Courses" / "CS 498" / "mp4" / "segkit-main"  # 4 deep
    shutil.copytree(repo_copy, home, symlinks=True)
    cells, error = _execute(tmp_path, env, monkeypatch)
    assert error is None, _text(cells)[-3000:]
    assert "Mounted at" in _text(cells)
    mounted = tmp_path / "content" / "drive" / "MyDrive" / home.relative_to(tmp_path / "my_drive")
    _installed_from(cells, mounted)


@pytest.mark.slow  # a second venv install: about 11 s; the Drive path runs by default
def test_uploaded_archive(repo_copy, tmp_path, monkeypatch):
    _, env = _kernel(tmp_path)
    with zipfile.ZipFile(tmp_path / "content" / "segkit-main.zip", "w") as z:
        for p in sorted(repo_copy.rglob("*")):
            z.write(p, Path("segkit-main") / p.relative_to(repo_copy))
    cells, error = _execute(tmp_path, env, monkeypatch)
    assert error is None, _text(cells)[-3000:]
    assert "extracted" in _text(cells)
    _installed_from(cells, tmp_path / "content" / "segkit-main" / "segkit-main")


def test_nothing_found_says_the_three_ways(tmp_path, monkeypatch):
    _, env = _kernel(tmp_path)
    (tmp_path / "content" / "notes.zip").write_bytes(b"")  # an unrelated upload is skipped
    zipfile.ZipFile(tmp_path / "content" / "notes.zip", "w").close()
    cells, error = _execute(tmp_path, env, monkeypatch)
    assert error is not None and error.ename == "SystemExit"
    message = str(error.evalue)
    for way in ("Google", "upload", "SEGKIT_REPO"):
        assert way in message
    assert "Traceback" not in _text(cells[:1])  # one message, not a traceback
