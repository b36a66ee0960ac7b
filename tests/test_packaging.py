"""The built wheel works outside the checkout: built-in policies are package data.

Builds the wheel (no build isolation: setuptools from the test's environment, nothing is
downloaded), installs it with ``--no-deps`` into a fresh virtual environment outside the checkout
that sees this environment's site-packages (torch, FAISS and the rest are not installed again),
and previews ``values_first`` there from a directory that holds no ``configs/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("curriculum", "loaders", "policies", "train"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(out), str(source)], check=True, cwd=out,
                   capture_output=True)
    (path,) = out.glob("curriculum_loader-*.whl")
    return path


def test_the_wheel_holds_the_builtin_policies(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for policy in ("values_first", "uniform", "threshold_filter", "bandit"):
        assert f"policies/builtin/{policy}.yaml" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]


def test_an_installed_wheel_previews_values_first_outside_the_checkout(wheel: Path,
                                                                       tmp_path) -> None:
    env_dir = tmp_path / "env"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # The fresh environment sees this one's packages through a .pth file (this environment may
    # itself be a virtual environment, whose site-packages --system-site-packages does not see).
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True).stdout
    here = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (Path(site.strip()) / "outer.pth").write_text("\n".join(here) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "--quiet", str(wheel)], check=True,
                   capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    script = (
        "import curriculum, policies, pathlib\n"
        "from curriculum.synth import write_synthetic_corpus\n"
        "from curriculum.store import build_store\n"
        "from policies import load_policy, preview_policy, resolve_policy_path\n"
        "assert not str(pathlib.Path(curriculum.__file__)).startswith(" + repr(str(ROOT)) + ")\n"
        "print(resolve_policy_path('values_first'))\n"
        "corpus = write_synthetic_corpus('corpus', num_docs=200, num_shards=2, seed=0,\n"
        "                                probe_docs_per_behavior=8)\n"
        "store = build_store('corpus', corpus.probes_dir, 'store')\n"
        "result = preview_policy(load_policy('values_first', store), store, steps=20)\n"
        "print(result.policy_name, result.steps)\n"
    )
    done = subprocess.run([str(python), "-c", script], cwd=work, env=clean, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert str(env_dir) in lines[0] and lines[0].endswith("policies/builtin/values_first.yaml")
    assert lines[-1] == "values_first 20"
