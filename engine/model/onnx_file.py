"""Reading .onnx files safely and writing files atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from ..errors import ConvlensError


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Parse an .onnx file, refusing missing, non-ONNX and truncated files and stray external data."""
    path = Path(path)
    if not path.exists():
        raise ConvlensError(f"Model file not found: {path}")
    if path.is_dir():
        raise ConvlensError(f"Model path is a folder, not an .onnx file: {path}")
    data = path.read_bytes()
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        kind = "truncated or corrupt" if data[:1] == b"\x08" or _looks_like_onnx(data) else "not an ONNX model"
        raise ConvlensError(f"{path} is {kind} ({exc.__class__.__name__}).") from None
    if not model.HasField("graph") or len(model.graph.node) == 0 or len(model.graph.output) == 0:
        raise ConvlensError(f"{path} is not an ONNX model, or is truncated: it has no graph nodes or outputs.")
    _load_external_data(model, path.parent)
    return model


def _looks_like_onnx(data: bytes) -> bool:
    return b"onnx" in data[:200] or b"pytorch" in data[:200] or b"tf2onnx" in data[:200]


def _load_external_data(model: onnx.ModelProto, folder: Path) -> None:
    """Load tensors stored next to the model. A location that escapes the model's folder by its own text
    (absolute, or through "..") is refused; symbolic links the user placed in the folder are followed (the
    Hugging Face cache keeps every file as a link into a blob store). Files too short for their tensors
    (an interrupted download) get one sentence."""
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    for tensor in external:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        parts = Path(os.path.normpath(location)).parts
        if not location or os.path.isabs(location) or (parts and parts[0] == ".."):
            raise ConvlensError(
                f"Tensor {tensor.name!r} points to external data outside the model's folder ({location}); "
                "refusing to read it."
            )
        target = folder / location
        if not target.exists():
            raise ConvlensError(f"Tensor {tensor.name!r} needs the external data file {target}, which is missing.")
        offset, length = int(info.get("offset", 0)), int(info.get("length", 0) or _nbytes(tensor))
        if offset + length > target.stat().st_size:
            raise ConvlensError(
                f"The external data file {target} is truncated: tensor {tensor.name!r} needs bytes up to "
                f"{offset + length}, the file has {target.stat().st_size}."
            )
        # read here rather than with onnx's loader, which refuses any symbolic link
        with open(target, "rb") as f:
            f.seek(offset)
            tensor.raw_data = f.read(length)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def _nbytes(tensor: onnx.TensorProto) -> int:
    n = 1
    for d in tensor.dims:
        n *= d
    return n * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def check_writable(path: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing output unless force is set, and refuse paths that cannot be files."""
    path = Path(path)
    if path.is_dir():
        raise ConvlensError(f"Output {path} is a folder; give a file name.")
    if path.exists() and not force:
        raise ConvlensError(f"Output {path} already exists; pass --force to overwrite it.")
    _check_parents(path.parent)
    return path


def output_folder(path: str | os.PathLike) -> Path:
    """An output folder (made when first written to): refused when the path, or a folder above it, is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConvlensError(f"Output folder {path} is an existing file; choose another -o.")
    _check_parents(path)
    return path


def _check_parents(folder: Path) -> None:
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConvlensError(f"Cannot write under {folder}: {parent} is a file, not a folder.")
            return


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: bytes, force: bool = False) -> Path:
    """Write bytes to a temp file in the same folder, then rename it into place."""
    path = check_writable(path, force)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except OSError as exc:  # a read-only folder, a full disk: the user's to fix, in one sentence
        _remove(tmp)
        raise ConvlensError(f"Cannot write {path}: {exc.strerror or exc.__class__.__name__}.") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(tmp: str | None) -> None:
    if tmp and os.path.exists(tmp):
        os.unlink(tmp)


def save_onnx(model: onnx.ModelProto, path: str | os.PathLike, force: bool = False) -> Path:
    """Save a model atomically; models over 2 GB are not supported as single files by protobuf."""
    data = model.SerializeToString()
    return write_atomic(path, data, force)


PROTOBUF_LIMIT = 2 ** 31 - 2 ** 26  # a little under protobuf's 2 GB message limit


def save_large_onnx(model: onnx.ModelProto, path: str | os.PathLike, force: bool = False) -> Path:
    """save_onnx, or for a graph over protobuf's 2 GB limit the graph plus its weights in PATH.data beside
    it (ONNX external data; both written atomically, the weights first, each stored once)."""
    path = check_writable(path, force)
    if model.ByteSize() < PROTOBUF_LIMIT:
        return save_onnx(model, path, force)
    from onnx.external_data_helper import convert_model_to_external_data

    data_name = path.name + ".data"
    check_writable(path.parent / data_name, force)
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        onnx.save_model(model, staging / path.name)  # writes the weights to staging/PATH.data
        os.replace(staging / data_name, path.parent / data_name)
        os.replace(staging / path.name, path)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return path
