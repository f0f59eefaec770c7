"""Every image either works as a person would expect or gets one sentence; so does every output path."""
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from convlens.cli import main
from convlens.engine.render.images import load_image

RNG = np.random.default_rng(0)
PHOTO = (RNG.random((40, 60, 3)) * 255).astype(np.uint8)
PHOTO[:20, :30] = [200, 30, 60]


def _pil_rgb(path):
    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).astype(np.float32)


def _save(kind, path):
    """Write an image of one kind; returns the RGB pixels a person sees in it."""
    if kind == "gray":
        Image.fromarray(PHOTO[..., 0]).save(path)
        return np.repeat(PHOTO[..., :1], 3, axis=2).astype(np.float32)
    if kind == "alpha":
        rgba = np.concatenate([PHOTO, np.full((40, 60, 1), 64, np.uint8)], axis=2)
        Image.fromarray(rgba).save(path)
        a = 64 / 255
        return PHOTO * a + 255 * (1 - a)
    if kind == "16bit":
        cv2.imwrite(str(path), (PHOTO[..., ::-1].astype(np.uint16) * 257))
        return PHOTO.astype(np.float32)
    if kind == "palette":
        Image.fromarray(PHOTO).convert("P").save(path)
        return _pil_rgb(path)
    if kind == "cmyk":
        Image.fromarray(PHOTO).convert("CMYK").save(path, quality=95)
        return _pil_rgb(path)
    if kind == "exif":
        im = Image.fromarray(PHOTO)
        exif = im.getexif()
        exif[0x0112] = 6  # "rotate 90 clockwise to view"
        im.save(path, exif=exif, quality=95)
        return _pil_rgb(path)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,suffix", [("gray", ".png"), ("alpha", ".png"), ("16bit", ".png"), ("palette", ".png"),
                                         ("cmyk", ".jpg"), ("exif", ".jpg")])
def test_decodable_oddities_read_as_a_person_sees_them(tmp_path, kind, suffix):
    path = tmp_path / f"{kind}{suffix}"
    seen = _save(kind, path)
    got = load_image(path)
    assert got.shape == seen.shape and got.dtype == np.float32
    assert np.abs(got - seen).max() <= 1.0  # CMYK: one level of the decoders' rounding
    if kind == "exif":
        assert got.shape[:2] == (60, 40)  # upright: the stored 40x60 pixels turned a quarter


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (3000, 4000)])
def test_very_small_and_very_large_images(tmp_path, tiny_torch, shape, capsys):
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), np.full((*shape, 3), 90, np.uint8) + np.arange(shape[1], dtype=np.uint8)[None, :, None])
    out = tmp_path / "cam"
    assert main(["cam", str(tiny_torch["path"]), str(path), "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    overlay = next(f for f in result["files"] if f.endswith("_overlay.png"))
    assert cv2.imread(overlay).shape[:2] == shape


def _bad(tmp_path, kind):
    if kind == "zero bytes":
        p = tmp_path / "empty.jpg"
        p.write_bytes(b"")
        return p, "the file is empty (0 bytes)"
    if kind in ("truncated jpeg", "truncated png"):
        suffix = ".jpg" if "jpeg" in kind else ".png"
        whole = tmp_path / f"whole{suffix}"
        cv2.imwrite(str(whole), PHOTO)
        p = tmp_path / f"cut{suffix}"
        p.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
        return p, "the file is truncated"
    if kind == "text":
        p = tmp_path / "notes.jpg"
        p.write_text("not an image\n")
        return p, "not a format OpenCV decodes"
    if kind == "empty folder":
        p = tmp_path / "nothing"
        p.mkdir()
        (p / "readme.txt").write_text("no images here")
        return p, "holds no image files"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["zero bytes", "truncated jpeg", "truncated png", "text", "empty folder"])
@pytest.mark.parametrize("command", ["cam", "saliency", "activations"])
def test_undecodable_inputs_get_one_sentence(tmp_path, tiny_torch, kind, command, capsys):
    path, words = _bad(tmp_path, kind)
    extra = ["--layers", "0"] if command == "activations" else []
    if command == "activations" and kind == "empty folder":
        words = "is a folder"
    rc = main([command, str(tiny_torch["path"]), str(path), *extra, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert words in err and str(path) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_output_paths_get_one_sentence(tmp_path, tiny_torch, monkeypatch, capsys):
    image = tmp_path / "img.png"
    cv2.imwrite(str(image), PHOTO)
    a_file = tmp_path / "file.txt"
    a_file.write_text("mine")
    model = str(tiny_torch["path"])
    # -o under an existing file
    assert main(["cam", model, str(image), "-o", str(a_file / "cam")]) == 1
    assert f"{a_file} is a file, not a folder" in capsys.readouterr().err
    # -o naming an existing file where a folder is written
    assert main(["cam", model, str(image), "-o", str(a_file)]) == 1
    assert f"Output folder {a_file} is an existing file" in capsys.readouterr().err
    assert a_file.read_text() == "mine"
    # a file output naming a folder
    assert main(["report", model, str(image), "-o", str(tmp_path)]) == 1
    assert f"Output {tmp_path} is a folder" in capsys.readouterr().err

    # a folder that cannot be written (sessions run as root, so the write itself is made to fail)
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    rc = main(["cam", model, str(image), "-o", str(tmp_path / "locked")])
    err = capsys.readouterr().err
    assert rc == 1 and "Cannot write" in err and "Permission denied" in err and "Traceback" not in err
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
