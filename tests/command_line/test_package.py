"""The package installs under one name, `convlens`, and the tests use the installed package."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import convlens

ROOT = Path(__file__).resolve().parents[2]


def test_repository_root_is_not_importable():
    # a leftover `from engine import` must fail: only the installed `convlens` package is on the path
    for name in ("engine", "converters", "cli", "api"):
        assert importlib.util.find_spec(name) is None, f"{name!r} is importable as a top-level module"


def test_no_top_level_imports_left_in_the_tree():
    pattern = re.compile(r"^\s*(from|import)\s+(engine|converters|cli|api)(\.|\s|$)", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if ".venv" not in p.parts and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_public_api_has_one_function_per_command():
    from convlens.cli import COMMANDS

    for command in COMMANDS:
        if command != "demo":  # example-files is convlens.example_files
            assert callable(getattr(convlens, command.replace("-", "_"))), command
    assert callable(convlens.load)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", convlens.__version__)


def test_method_help_comes_from_the_tables(capsys):
    from convlens.cli import main
    from convlens.engine.techniques.cam_methods import CAM_METHODS
    from convlens.engine.techniques.saliency import SALIENCY_METHODS

    assert main(["cam", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"  {name}: {m.formula}" in text for name, m in CAM_METHODS.items())
    assert main(["saliency", "--help"]) == 0
    text = capsys.readouterr().out
    assert all(f"  {name}: {m.formula}" in text for name, m in SALIENCY_METHODS.items())


def test_version_flag():
    out = subprocess.run([sys.executable, "-m", "convlens.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"convlens {convlens.__version__}"


def test_public_functions_take_the_commands_options(tiny_torch, tmp_path):
    from convlens.engine.techniques.cam import gradcam

    image = np.random.default_rng(0).uniform(0, 255, (40, 48, 3)).astype(np.float32)
    model = convlens.load(tiny_torch["path"], threads=1)
    acts = convlens.activations(model, image, "0,2")
    assert acts["0"].shape == (1, 8, 32, 32) and acts["2"].shape == (1, 8, 16, 16)
    maps, top = convlens.cam(tiny_torch["path"], image, target="class3", method="gradcam++", top=3)
    assert maps[0][0].class_index == 3 and len(top[0]) == 3
    ref = gradcam(model, image, 3, "auto", "gradcam++")[0][0]
    np.testing.assert_array_equal(maps[0][0].cam, ref.cam)
    sal = convlens.saliency(model, [image, image], method="vanilla", target=2)
    assert len(sal) == 2 and sal[0].attribution.shape == (32, 32, 3)
    pats = convlens.filters(model, "0", filters="0-2", steps=2, size=24)
    assert pats.images.shape == (3, 24, 24, 3) and pats.images.dtype == np.uint8
    assert [r["name"] for r in convlens.layers(model)][:2] == ["0", "1"]


def test_the_wheel_holds_only_the_convlens_package(tmp_path):
    import shutil
    import zipfile

    leftovers = [p for p in (ROOT / "build", ROOT / "convlens.egg-info") if not p.exists()]
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                              "-q", "-w", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    finally:  # setuptools builds in the checkout: remove what it made there
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("convlens-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "convlens",
        f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info",
    }
    for module in ("convlens/__init__.py", "convlens/cli.py", "convlens/api.py", "convlens/engine/model/model.py",
                   "convlens/converters/dispatch.py", "convlens/engine/data/imagenet_labels.txt",
                   "convlens/engine/evaluation/run.py"):
        assert module in names
    # every engine folder is a subpackage the wheel holds (pyproject.toml lists them one by one)
    for folder in sorted(p.parent.name for p in (ROOT / "engine").glob("*/__init__.py")):
        assert f"convlens/engine/{folder}/__init__.py" in names, f"engine/{folder} is missing from the wheel"
