"""Activations from Python and the CLI, the input adapter, and image reading."""
import json

import cv2
import numpy as np
import pytest
from helpers import IMAGE

from convlens.cli import main
from convlens.engine import ConvlensError, activations, load
from convlens.engine.render.images import load_image
from convlens.engine.runtime.adapter import apply_numpy
from convlens.engine.runtime.program import program


def test_adapter_matches_numpy_preprocessing(keras_vgg16, image):
    # the adapter's output tensor is the model's input: fetch it and compare with the numpy mapping
    model = load(keras_vgg16["path"])
    got = program(model, ["input"], (224, 224)).run(image)["input"]
    np.testing.assert_allclose(got, apply_numpy(image[None], model.input_spec), rtol=1e-6, atol=1e-4)
    got_t = program(model, ["input"], (224, 224), spec=model.input_spec.with_preset("torch")).run(image)["input"]
    np.testing.assert_allclose(
        got_t, apply_numpy(image[None], model.input_spec.with_preset("torch")), rtol=1e-6, atol=1e-6
    )


def test_activations_python_api_returns_arrays(torch_vgg16, image):
    model = load(torch_vgg16["path"])
    acts = activations(model, image, ["features.1", "features.29", "classifier.1"])
    assert acts["features.1"].shape == (1, 64, 224, 224)
    assert acts["features.29"].shape == (1, 512, 14, 14)
    assert acts["classifier.1"].shape == (1, 4096)
    assert (acts["features.1"] >= 0).all()  # a ReLU output


def test_activations_cli_writes_grids_and_arrays(tmp_path, keras_vgg16, capsys):
    out = tmp_path / "acts"
    rc = main(
        [
            "activations",
            str(keras_vgg16["path"]),
            str(IMAGE),
            "--layers",
            "block1_conv1,block3_conv1",
            "-o",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["shapes"]["block1_conv1"] == [1, 224, 224, 64]
    grid = cv2.imread(str(out / "block3_conv1.png"))
    # 256 channels of 56x56 at 16 a row with 1 px gaps: 16 rows, 16 columns (upscaled by an integer factor)
    h, w = grid.shape[:2]
    assert w * (16 * 57 - 1) == h * (16 * 57 - 1) and h % (16 * 57 - 1) == 0
    arr = np.load(out / "block1_conv1.npy")
    assert arr.shape == (1, 224, 224, 64)
    # the grid follows the lesson's mapping, written out here: each channel standardized, x64, +128, clipped,
    # 16 a row with 1 px gaps
    from convlens.engine.render.pictures import channel_grid

    chw = arr[0].transpose(2, 0, 1)[:18].astype(np.float64)
    grid = channel_grid(arr[0].transpose(2, 0, 1)[:18])
    assert grid.shape == (2 * 225 - 1, 16 * 225 - 1)
    for i in (0, 5, 17):
        c = chw[i]
        expected = np.clip((c - c.mean()) / (c.std() + 1e-5) * 64 + 128, 0, 255).astype(np.uint8)
        r, k = divmod(i, 16)
        assert np.array_equal(grid[r * 225:r * 225 + 224, k * 225:k * 225 + 224], expected)
    assert (grid[224, :] == 0).all() and (grid[:, 224] == 0).all()  # the gaps


def test_existing_output_is_not_overwritten_without_force(tmp_path, torch_vgg16, capsys):
    out = tmp_path / "a"
    args = ["activations", str(torch_vgg16["path"]), str(IMAGE), "--layers", "features.0", "-o", str(out)]
    assert main(args) == 0
    before = (out / "features.0.npy").read_bytes()
    assert main(args) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert (out / "features.0.npy").read_bytes() == before
    assert main(args + ["--force"]) == 0


def test_layers_cli_json(torch_vgg16, capsys):
    assert main(["layers", str(torch_vgg16["path"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    by_name = {l["name"]: l for l in result["layers"]}
    assert by_name["features.28"]["shape"] == [1, 512, 14, 14] and by_name["features.28"]["layout"] == "NCHW"
    assert by_name["classifier.6"]["shape"] == [1, 1000]
    assert main(["layers", str(torch_vgg16["path"])]) == 0
    assert "features.28" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["gray", "rgba", "u16"])
def test_gray_rgba_and_16bit_images(tmp_path, kind, torch_vgg16):
    base = cv2.imread(str(IMAGE))
    if kind == "gray":
        img = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY)
    elif kind == "rgba":
        img = np.dstack([base, np.full(base.shape[:2], 255, np.uint8)])
    else:
        img = base.astype(np.uint16) * 257
    path = tmp_path / f"{kind}.png"
    cv2.imwrite(str(path), img)
    pixels = load_image(path)
    assert pixels.shape == (300, 451, 3) and pixels.dtype == np.float32 and pixels.max() <= 255
    if kind != "gray":
        np.testing.assert_allclose(pixels, load_image(IMAGE), atol=1e-3)
    acts = activations(load(torch_vgg16["path"]), str(path), ["features.0"])
    assert np.isfinite(acts["features.0"]).all()


# --- refusals: one sentence each, exit code 1 ---------------------------------------------------------
def _err(capsys, args):
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_refusals(tmp_path, torch_vgg16, capsys):
    model = str(torch_vgg16["path"])
    assert "Model file not found" in _err(capsys, ["layers", str(tmp_path / "nope.onnx")])
    text = tmp_path / "notes.onnx"
    text.write_text("these are my notes, not a model")
    assert "not an ONNX model" in _err(capsys, ["layers", str(text)])
    data = torch_vgg16["path"].read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 3])
    assert "truncated" in _err(capsys, ["layers", str(cut)])
    err = _err(capsys, ["activations", model, str(IMAGE), "--layers", "features.290", "-o", str(tmp_path / "x")])
    assert "Unknown layer 'features.290'" in err and "closest: features.29" in err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really")
    assert "Cannot read" in _err(
        capsys, ["activations", model, str(bad), "--layers", "features.0", "-o", str(tmp_path / "y")]
    )
    assert "Image file not found" in _err(
        capsys, ["activations", model, str(tmp_path / "no.png"), "--layers", "features.0", "-o", str(tmp_path / "z")]
    )
    assert "Unknown source" in _err(capsys, ["convert", "caffe:vgg", "-o", str(tmp_path / "c.onnx")])
    assert main(["activations", model]) == 1  # a usage error: the usage, then one sentence
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("convlens: error: the following arguments are required")
    )


def test_external_data_outside_folder_is_refused(tmp_path):
    from onnx import TensorProto, helper

    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend([4])
    t.data_location = TensorProto.EXTERNAL
    entry = t.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=[t])
    path = tmp_path / "evil.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(ConvlensError, match="outside the model's folder"):
        load(path)


def test_unknown_device_and_missing_cuda(torch_vgg16, capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        err = _err(capsys, ["layers", str(torch_vgg16["path"]), "--device", "cuda"])
        assert "--device cuda needs onnxruntime-gpu" in err


def test_outputs_get_the_usual_file_permissions(tmp_path):
    """Atomic writes go through a private temp file; the result still follows the umask like any file."""
    import os

    from convlens.engine.model.onnx_file import write_atomic

    old = os.umask(0o022)
    try:
        out = write_atomic(tmp_path / "a.png", b"x")
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o644


def test_convert_says_what_it_wrote(tmp_path, capsys):
    assert main(["convert", "torch:squeezenet1_1", "--weights", "none", "-o", str(tmp_path / "s.onnx")]) == 0
    assert "input NCHW 224x224, torch preprocessing" in capsys.readouterr().out


def _external_model(tmp_path, folder_name="model"):
    """A small convnet saved with its weights in an external data file; returns (folder, .onnx path)."""
    import onnx
    import torch

    torch.manual_seed(8)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(64, 4)).eval()
    plain = tmp_path / "plain.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(plain), dynamo=False, opset_version=17)
    folder = tmp_path / folder_name
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(onnx.load(str(plain)), str(path), save_as_external_data=True, location="model.onnx.data",
              size_threshold=0)
    return folder, path


def test_external_data_through_links_the_user_placed(tmp_path):
    """The Hugging Face cache layout: the folder holds links into a blob store outside it."""
    import os

    folder, path = _external_model(tmp_path)
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for name in ("model.onnx", "model.onnx.data"):
        os.replace(folder / name, blobs / name)
        os.symlink(blobs / name, folder / name)
    model = load(path, preprocess="raw")
    assert np.isfinite(activations(model, np.zeros((16, 16, 3), np.float32), [model.layers[0].name])
                       [model.layers[0].name]).all()


def test_truncated_external_data_gets_one_sentence(tmp_path):
    folder, path = _external_model(tmp_path)
    data = folder / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ConvlensError, match="model.onnx.data is truncated: tensor"):
        load(path)
