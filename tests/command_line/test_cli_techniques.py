"""The technique commands end to end: files written, JSON results, folders of images."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
from helpers import IMAGE

from convlens.cli import main


def test_cam_cli_on_a_folder(tmp_path, keras_vgg16, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(IMAGE, folder / "a.png")
    cv2.imwrite(str(folder / "b.png"), cv2.imread(str(IMAGE))[:, ::-1])
    out = tmp_path / "cam"
    rc = main(["cam", str(keras_vgg16["path"]), str(folder), "--class", "top2", "--method", "gradcam++",
               "--batch", "2", "-o", str(out), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert [len(e["maps"]) for e in result["images"]] == [2, 2] and len(result["images"][0]["top5"]) == 5
    assert len(result["files"]) == 12
    overlay = cv2.imread(str(out / f"a_gradcam++_{result['images'][0]['maps'][0]['class']}_overlay.png"))
    assert overlay.shape == (300, 451, 3)
    layer_map = np.load(out / f"a_gradcam++_{result['images'][0]['maps'][0]['class']}_layer.npy")
    assert layer_map.shape == (14, 14) and 0 <= layer_map.min() and layer_map.max() <= 1
    assert main(["cam", str(keras_vgg16["path"]), str(IMAGE), "--class", "no such class", "-o", str(out)]) == 1
    assert "Unknown class 'no such class'" in capsys.readouterr().err


def test_saliency_and_filters_cli(tmp_path, torch_vgg16, capsys):
    out = tmp_path / "sal"
    assert main(["saliency", str(torch_vgg16["path"]), str(IMAGE), "--method", "integrated-gradients",
                 "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"][0]["completeness_error"] is not None
    assert np.load(result["files"][0]).shape == (224, 224, 3)
    out = tmp_path / "filters"
    assert main(["filters", str(torch_vgg16["path"]), "--layer", "features.3", "--filters", "0-2,5", "--steps", "3",
                 "--size", "48", "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(result["objectives"], key=int) == ["0", "1", "2", "5"]  # JSON keys are strings
    grid = cv2.imread(str(out / "features.3_grid.png"))
    assert grid.shape == (48, 4 * 48 + 3 * 5, 3)
    assert np.load(out / "features.3.npy").shape == (4, 48, 48, 3)
    assert (
        main(
            [
                "filters",
                str(torch_vgg16["path"]),
                "--layer",
                "features.3",
                "--filters",
                "999",
                "-o",
                str(out),
                "--force",
            ]
        )
        == 1
    )
    assert "Filter 999 is out of range" in capsys.readouterr().err


def test_one_runs_outputs_never_collide_and_topk_saliency_gives_k_maps(tmp_path, tiny_torch, capsys):
    """Two images with the same stem in one run get two sets of files; saliency --class top3 writes three maps per
    image; attribution PNGs are scaled by a high percentile, not the max (nearly black)."""
    import cv2

    rng = np.random.default_rng(4)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "cat.png"), rng.uniform(0, 255, (32, 32, 3)).astype(np.uint8))
    images = [str(tmp_path / "a" / "cat.png"), str(tmp_path / "b" / "cat.png")]
    assert main(["cam", str(tiny_torch["path"]), *images, "-o", str(tmp_path / "cam"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    overlays = sorted(p for p in result["files"] if p.endswith("_overlay.png"))
    assert len(overlays) == 2 and len(set(overlays)) == 2 and all(Path(p).exists() for p in overlays)
    assert main(["saliency", str(tiny_torch["path"]), *images, "--class", "top3", "-o", str(tmp_path / "sal"),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["images"]) == 6 and len({(e["image"], e["class"]) for e in result["images"]}) == 6
    pngs = [p for p in result["files"] if p.endswith(".png")]
    assert len(pngs) == 6
    brightness = cv2.imread(pngs[0]).max(axis=2)
    assert np.percentile(brightness, 99) > 200  # the brightest 2 % saturate: the map is readable
