"""Release metadata: the declared dependencies match the imports, the citation file, and an sdist
whose own tests import (the sdist is built from a copy of this tree, never in it)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "napari_dip"
PYPROJECT = REPO / "pyproject.toml"
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"imageio": "imageio", "skimage": "scikit-image"}

pytestmark = pytest.mark.skipif(not PYPROJECT.is_file(), reason="needs the source tree (pyproject.toml)")


def _requirement_names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower() for r in requirements}


def _third_party_imports() -> set[str]:
    """Top-level names of everything the package imports that is neither napari_dip nor the standard library."""
    stdlib = set(sys.stdlib_module_names)
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in stdlib and n != "napari_dip"}


def test_dependencies_match_the_imports():
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    base = _requirement_names(project["dependencies"])
    extras = {name: _requirement_names(reqs) for name, reqs in project["optional-dependencies"].items()}
    declared = base | set().union(*(extras[e] for e in ("qt", "models", "distributed", "all")))
    imported = {DISTRIBUTIONS.get(n, n) for n in _third_party_imports()}
    assert imported - declared == set(), "imported but not declared"
    assert base - imported == set(), "declared but never imported"
    assert {"psygnal", "tifffile"} <= base and not {"qtpy", "npe2"} & base
    tifffile = next(r for r in project["dependencies"] if r.startswith("tifffile"))
    assert tifffile == "tifffile>=2025.5.21"  # earlier releases fail with zarr 3 (ZarrTiffStore)
    assert project["requires-python"] == ">=3.11" and "zarr>=3" in project["optional-dependencies"]["distributed"]
    assert {"Bug Tracker", "Documentation", "User Support", "Source Code"} <= set(project["urls"])
    assert project["dynamic"] == ["version"] and "version" not in project  # napari_dip.__version__ only


def test_citation_file():
    import yaml

    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["authors"]
    assert cff["repository-code"] == project["urls"]["Source Code"]
    assert cff["license"] == project["license"]
    dois = {ref.get("doi") for ref in cff["references"]}
    assert {"10.1109/CVPR.2018.00984", "10.1007/s11263-020-01303-4"} <= dois  # the Deep Image Prior papers
    assert "version" not in cff  # the version lives in napari_dip.__version__ only


def _copy_tree(dest: Path) -> Path:
    """The source tree without build outputs, virtual environments and caches."""
    ignore = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    ".ruff_cache", "out", ".whl", ".ci-cache")
    return Path(shutil.copytree(REPO, dest, ignore=ignore))


@pytest.mark.slow
def test_sdist_ships_tests_that_import(tmp_path):
    pytest.importorskip("setuptools", minversion="77")
    tree = _copy_tree(tmp_path / "tree")
    build = subprocess.run([sys.executable, "-c", "from setuptools import build_meta as b; print(b.build_sdist('dist'))"],
                           cwd=tree, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    sdist = tree / "dist" / build.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        tar.extractall(tmp_path / "unpacked", filter="data")
    tests = {f"tests/{p.name}" for p in (REPO / "tests").glob("*.py")}
    assert tests <= names and "tests/conftest.py" in names
    assert {"benchmarks/quality.py", "CITATION.cff", "LICENSE", "README.md", "src/napari_dip/napari.yaml",
            "src/napari_dip/cli/__init__.py", "docs/engine.md"} <= names
    assert not any("__pycache__" in n or n.startswith((".venv", ".git/")) for n in names)

    root = next((tmp_path / "unpacked").iterdir())
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([sys.executable, "-c", "import napari_dip; print(napari_dip.__file__)"], cwd=root, env=env,
                           capture_output=True, text=True, timeout=120)
    assert Path(where.stdout.strip()).is_relative_to(root), where.stdout  # the sdist's own package
    collect = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                             cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert collect.returncode == 0, collect.stdout[-3000:] + collect.stderr[-3000:]
    collected = {line.split("::", 1)[0] for line in collect.stdout.splitlines() if "::" in line}
    assert collected == {t for t in tests if Path(t).name.startswith("test_")}, collect.stdout[-2000:]


@pytest.mark.slow
def test_wheel_holds_the_package_and_the_manifest(tmp_path):
    import zipfile

    pytest.importorskip("setuptools", minversion="77")
    tree = _copy_tree(tmp_path / "tree")
    build = subprocess.run([sys.executable, "-c", "from setuptools import build_meta as b; print(b.build_wheel('dist'))"],
                           cwd=tree, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    with zipfile.ZipFile(tree / "dist" / build.stdout.strip().splitlines()[-1]) as whl:
        names = set(whl.namelist())
        meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = whl.read(meta).decode()
    assert {"napari_dip/napari.yaml", "napari_dip/cli/__init__.py", "napari_dip/cli/_common.py",
            "napari_dip/io.py"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "napari-dip = napari_dip.cli:main" in entry_points and "napari-dip = napari_dip:napari.yaml" in entry_points
