"""torchvision's ViT-B/16 at full size, through the CLI as a user runs it: convert (the fused attention path
torch.onnx cannot export is turned off), verify against torch autograd, compare with a plain torch.onnx
export of the same weights, CAM (Grad-CAM, rollout, GAE), saliency, filters and sanity. Converted once."""
import json
import shutil

import numpy as np
import pytest
import torch
from helpers import IMAGE

import convlens
from convlens.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    import torchvision

    folder = tmp_path_factory.mktemp("vit_b_16")
    torch.manual_seed(0)
    net = torchvision.models.vit_b_16(weights=None).eval()
    torch.nn.init.normal_(net.heads.head.weight, std=0.02)  # torchvision initializes the head to zero
    weights = folder / "vit_b_16.pth"
    torch.save(net.state_dict(), weights)
    path = folder / "vit_b_16.onnx"
    assert main(["convert", "torch:vit_b_16", "--weights", str(weights), "-o", str(path), "--quiet"]) == 0
    yield {"net": net, "weights": weights, "path": path, "folder": folder}
    shutil.rmtree(folder, ignore_errors=True)


def _run(args, capsys):
    code = main(args + ["--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_verify_passes_against_torch(vit, capsys):
    result = _run(["verify", str(vit["path"]), "--source", "torch:vit_b_16", "--weights", str(vit["weights"])], capsys)
    rows = {r["figure"].split(" (")[0]: r for r in result["rows"]}
    assert all(r["ok"] for r in result["rows"]), result["rows"]
    assert rows["input gradient relative L2 difference"]["value"] <= 1e-4
    assert "Grad-CAM max abs difference" in rows  # at the token layer the auto rule picks


def test_compare_with_a_plain_torch_onnx_export(vit, capsys):
    foreign = vit["folder"] / "foreign.onnx"
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        torch.onnx.export(vit["net"], (torch.zeros(1, 3, 224, 224),), str(foreign), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    result = _run(["compare", str(vit["path"]), str(foreign), str(IMAGE), "-o", str(vit["folder"] / "cmp")], capsys)
    assert result["passed"], result


def test_cam_rollout_and_gae_through_the_cli(vit, capsys):
    for method in ("gradcam", "rollout", "gae"):
        out = vit["folder"] / method
        result = _run(["cam", str(vit["path"]), str(IMAGE), "--method", method, "-o", str(out)], capsys)
        entry = result["images"][0]["maps"][0]
        assert not entry["zero"]
        assert entry["layer"] == ("encoder.layers.encoder_layer_11.ln_1" if method == "gradcam" else "attention blocks")
        assert np.load(next(out.glob("*_layer.npy"))).shape == (14, 14)


def test_saliency_filters_and_sanity(vit, capsys):
    result = _run(["saliency", str(vit["path"]), str(IMAGE), "--method", "smoothgrad", "-o",
                   str(vit["folder"] / "sal")], capsys)
    assert result["files"]
    result = _run(["filters", str(vit["path"]), "--layer", "encoder.layers.encoder_layer_5.mlp.0", "--filters", "0",
                   "--recipe", "lucid", "--steps", "4", "-o", str(vit["folder"] / "filters")], capsys)
    assert result["dead"] == []
    rows = convlens.sanity(vit["path"], str(IMAGE), method="gradcam", steps=2)
    assert rows[0]["spearman"] == pytest.approx(1.0) and rows[-1]["spearman"] < 0.9
