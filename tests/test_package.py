"""The package installs under one name, `convlens`, and the tests use the installed package."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import convlens

ROOT = Path(__file__).resolve().parents[1]


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
        if command != "demo":
            assert callable(getattr(convlens, command)), command
    assert callable(convlens.load)
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", convlens.__version__)


def test_version_flag():
    out = subprocess.run([sys.executable, "-m", "convlens.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"convlens {convlens.__version__}"
