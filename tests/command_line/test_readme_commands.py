"""The README's Commands block, run as written: every line, in order, in an empty folder, through the installed
`convlens` command, then the README's Python example in the same folder. Each line must exit 0 (the compare and
verify pairs too: the two VGG16 files hold the same weights) and write what it says it writes; nothing is downloaded
(the demo's weights ship in a package, the other files come from `convlens example-files`). The folder (about 2.5
GB: VGG16 weights and files) is removed at the end."""
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def commands_block() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Commands\n"):text.index("`compare` on Keras VGG16")]
    return [shlex.split(line, comments=True) for line in section.splitlines() if line.startswith("    convlens ")]


def _written(args: list[str]) -> list[str]:
    """What a line says it writes: its -o target, or example-files' folder."""
    if args[1] == "example-files":
        return [f"{args[2]}/{name}" for name in ("cat.jpg", "more_images/cat_face.jpg", "images.csv", "vgg16.pth",
                                                 "model.keras", "resnet.onnx")]
    if "-o" in args:
        return [args[args.index("-o") + 1]]
    return []


@pytest.fixture
def empty_folder(tmp_path):
    folder = tmp_path / "readme"
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_the_commands_block_runs_as_written_in_an_empty_folder(empty_folder):
    lines = commands_block()
    assert len(lines) >= 20 and lines[0][:2] == ["convlens", "demo"]
    convlens = Path(sys.executable).parent / "convlens"  # the console script the install made
    for args in lines:
        done = subprocess.run([str(convlens), *args[1:]], cwd=empty_folder, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, (" ".join(args), done.stderr[-2000:])
        for name in _written(args):
            target = empty_folder / name
            assert target.exists() and (target.is_file() or any(target.iterdir())), (" ".join(args), name)
    assert "PASSED" in (empty_folder / "cmp" / "compare.md").read_text()
    # then the Python example, in the same folder: it reads the files the block made
    checks = "\nassert result.passed and all(r['ok'] for r in rows), rows\n"  # each does what its comment says
    done = subprocess.run([sys.executable, "-c", python_example() + checks], cwd=empty_folder, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (empty_folder / "resnet18.onnx").exists()


def python_example() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index("From Python, `import convlens` gives one function per command"))
    start += len("```python\n")
    return text[start:text.index("```", start)]


def test_example_files_never_overwrite_and_refuse_before_writing(tmp_path, capsys):
    from convlens.cli import main

    (tmp_path / "images.csv").write_text("mine")
    assert main(["example-files", str(tmp_path)]) == 1
    assert "images.csv already exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "images.csv").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "images.csv"]
    (tmp_path / "file").write_text("x")
    assert main(["example-files", str(tmp_path / "file")]) == 1
    assert "is a file" in capsys.readouterr().err
