"""The command line, end to end in subprocesses."""

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from conftest import add_noise, smooth_gray

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "napari_dip", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)


@pytest.fixture()
def noisy_png(tmp_path):
    clean = smooth_gray(32)
    noisy = np.clip(add_noise(clean, 0.1) * 255, 0, 255).astype(np.uint8)
    path = tmp_path / "noisy.png"
    iio.imwrite(path, noisy)
    return path, clean


def test_denoise_png_to_tiff_with_log(noisy_png, tmp_path):
    src, clean = noisy_png
    before = src.read_bytes()
    out, log = tmp_path / "out.tif", tmp_path / "log.json"
    r = cli("denoise", src, "-o", out, "--iterations", 150, "--preset", "fast", "--device", "cpu", "--log", log)
    assert r.returncode == 0, r.stderr
    assert src.read_bytes() == before
    res = tifffile.imread(out)
    assert res.shape == (32, 32) and res.dtype == np.float32
    noisy = iio.imread(src) / 255.0
    err = lambda x: np.mean((x - clean) ** 2)  # noqa: E731
    assert err(res / 255.0) < err(noisy) / 2
    data = json.loads(log.read_text())
    assert data["command"] == "denoise" and data["slices"][0]["iterations"] == 150
    assert len(data["slices"][0]["loss"]) == 150


def test_inpaint_and_super_resolve(tmp_path):
    img = (smooth_gray(32) * 60000).astype(np.uint16)
    mask = np.zeros((32, 32), np.uint8)
    mask[10:14, 5:25] = 255
    tifffile.imwrite(tmp_path / "img.tif", img)
    iio.imwrite(tmp_path / "mask.png", mask)
    r = cli("inpaint", tmp_path / "img.tif", "--mask", tmp_path / "mask.png", "-o", tmp_path / "filled.tif",
            "--iterations", 20, "--preset", "fast", "--quiet")
    assert r.returncode == 0, r.stderr
    filled = tifffile.imread(tmp_path / "filled.tif")
    assert np.array_equal(filled[mask == 0], img[mask == 0].astype(np.float32))
    r = cli("super-resolve", tmp_path / "img.tif", "--factor", 2, "-o", tmp_path / "big.tif", "--iterations", 5,
            "--preset", "fast", "--quiet")
    assert r.returncode == 0, r.stderr
    assert tifffile.imread(tmp_path / "big.tif").shape == (64, 64)


def test_refuses_to_overwrite(noisy_png, tmp_path):
    src, _ = noisy_png
    before = src.read_bytes()
    r = cli("denoise", src, "-o", src, "--iterations", 1, "--overwrite")
    assert r.returncode == 2 and "is the input file" in r.stderr
    existing = tmp_path / "exists.tif"
    existing.write_bytes(b"keep me")
    r = cli("denoise", src, "-o", existing, "--iterations", 1)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert existing.read_bytes() == b"keep me" and src.read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["denoise", "missing.png", "-o", "o.tif"], "no such file"),
    (["denoise", "notimage.png", "-o", "o.tif"], "cannot read"),
    (["denoise", "noisy.png", "-o", "o.tif", "--iterations", "0"], "positive integer"),
    (["super-resolve", "noisy.png", "-o", "o.tif", "--factor", "1.5"], "integer >= 2"),
    (["denoise", "noisy.png", "-o", "o.tif", "--device", "tpu"], "unknown device"),
    (["denoise", "noisy.png", "-o", "o.xyz"], "unsupported format"),
])
def test_clear_errors(noisy_png, tmp_path, args, message):
    (tmp_path / "notimage.png").write_text("this is not a PNG")
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert not (tmp_path / "o.tif").exists()


def test_demo_info_version():
    r = cli("demo", "--size", 32, "--iterations", 30, "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "PSNR" in r.stdout and "dB" in r.stdout
    r = cli("info")
    assert r.returncode == 0 and "2,217,831" in r.stdout
    r = cli("--version")
    assert r.returncode == 0 and "napari-dip" in r.stdout


def test_precision_option(noisy_png, tmp_path):
    src, clean = noisy_png
    out, log = tmp_path / "out.tif", tmp_path / "log.json"
    r = cli("denoise", src, "-o", out, "--iterations", 60, "--preset", "fast", "--device", "cpu",
            "--precision", "bf16", "--log", log, "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(log.read_text())["precision"] == "bf16"
    res = tifffile.imread(out)
    assert res.dtype == np.float32 and np.isfinite(res).all()
    r = cli("denoise", src, "-o", tmp_path / "other.tif", "--precision", "fp8")
    assert r.returncode == 2 and "fp8" in r.stderr and not (tmp_path / "other.tif").exists()


# -- progress on a terminal and off it -------------------------------------------------------------
class _Snap:
    def __init__(self, iteration, total=1000, stopped=False):
        self.iteration, self.total, self.stopped = iteration, total, stopped
        self.loss, self.best_iteration, self.slice_index, self.n_slices = 0.01, iteration, 0, 1


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_plain_lines_are_throttled():
    import io

    from napari_dip.cli import Progress

    stream, clock = io.StringIO(), _Clock()
    progress = Progress(stream=stream, clock=clock)  # a StringIO is not a terminal: plain lines
    assert progress.plain and progress.every == 10.0
    for i in range(1, 1001):  # 1000 iterations in 50 s
        clock.now = i * 0.05
        progress(_Snap(i))
    text = stream.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines[0].startswith("iteration 1/1000 (0%)") and lines[-1].startswith("iteration 1000/1000 (100%)")
    assert 5 <= len(lines) <= 7  # the first, one every 10 s, the last: not one per iteration
    assert all(line.startswith("iteration ") and "loss 1.000e-02" in line for line in lines)


def test_progress_redraws_one_line_on_a_terminal():
    import io

    from napari_dip.cli import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream, clock = Terminal(), _Clock()
    progress = Progress(stream=stream, clock=clock)
    assert not progress.plain
    for i in range(1, 101):
        clock.now = i * 0.5
        progress(_Snap(i, total=100, stopped=i == 100))
    text = stream.getvalue()
    assert text.count("\r") == 100 and text.count("\n") == 1 and "auto-stop (best 100)" in text


def test_cli_progress_in_a_log_file_is_plain(noisy_png, tmp_path):
    src, _ = noisy_png
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:  # stderr is a file, not a terminal
        r = subprocess.run([sys.executable, "-m", "napari_dip", "denoise", str(src), "-o", str(tmp_path / "o.tif"),
                            "--iterations", "40", "--preset", "fast", "--device", "cpu"], stdout=subprocess.PIPE,
                           stderr=err, text=True, env=ENV, timeout=300)
    assert r.returncode == 0
    text = log.read_text()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines and lines[-1].startswith("iteration 40/40 (100%)") and len(lines) <= 10
    assert "wrote" in r.stdout


# -- structure -------------------------------------------------------------------------------------
def _import_graph() -> dict[str, set[str]]:
    """Which napari_dip modules each napari_dip module imports (at module level or inside functions)."""
    import ast
    from pathlib import Path

    import napari_dip

    root = Path(napari_dip.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if package else parts)] = (path, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, package) in modules.items():
        here = name if package else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = here.split(".")[: len(here.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    graph[name].add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names)
        graph[name] &= set(modules)
    return graph


def test_no_import_cycles():
    """No module of napari_dip imports itself back through others (the package root, which holds the
    version and loads the API lazily on attribute access, is left out)."""
    graph = {k: v - {"napari_dip"} for k, v in _import_graph().items() if k != "napari_dip"}
    cycles, state, path = [], {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, cycles
    cli = {name for name in graph if name.startswith("napari_dip.cli")}
    assert {"napari_dip.cli._common", "napari_dip.cli.restore", "napari_dip.cli.applications",
            "napari_dip.cli.distributed"} <= cli
    assert not graph["napari_dip.cli._common"] & cli  # the shared module imports no other CLI module


def test_entry_points_run_the_same_program():
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "napari-dip"]
    assert script.value == "napari_dip.cli:main"
    for module in ("napari_dip", "napari_dip.cli"):
        r = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, env=ENV)
        assert r.returncode == 0 and r.stdout.startswith("napari-dip "), r.stderr
