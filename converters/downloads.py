"""Before a framework is asked for ImageNet weights: is the file cached, or can its host be reached? Offline, the
frameworks take a minute to say so (importing themselves, then retrying); this says it at once."""
from __future__ import annotations

import os
import socket
from pathlib import Path

from convlens.engine.errors import ConvlensError

# where each zoo downloads its weights from, and where it keeps them once downloaded
HOSTS = {"keras": "storage.googleapis.com", "torch": "download.pytorch.org", "timm": "huggingface.co"}
PROBE_TIMEOUT_S = 5.0


def _cache_folders(kind: str) -> list[Path]:
    home = Path.home()
    if kind == "keras":
        return [Path(os.environ.get("KERAS_HOME", home / ".keras")) / "models"]
    if kind == "torch":
        torch_home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME", home / ".cache")) / "torch"
        return [Path(torch_home) / "hub" / "checkpoints"]
    hf_home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", home / ".cache")) / "huggingface"
    return [Path(os.environ.get("HF_HUB_CACHE", Path(hf_home) / "hub"))]


def _squashed(text: str) -> str:
    return text.lower().replace("_", "").replace("-", "")


def weights_cached(kind: str, name: str) -> bool:
    """Whether the zoo's cache holds a file named after the model (vgg16-397923af.pth, efficientnetb0.h5,
    models--timm--deit_tiny_patch16_224.fb_in1k)."""
    key = _squashed(name)
    for folder in _cache_folders(kind):
        if folder.is_dir() and any(_squashed(p.name).startswith(key) or f"timm{key}" in _squashed(p.name)
                                   for p in folder.iterdir()):
            return True
    return False


def host_unreachable(host: str) -> str | None:
    """None when a TCP connection to host:443 opens; else the reason, in words."""
    try:
        socket.create_connection((host, 443), PROBE_TIMEOUT_S).close()
        return None
    except socket.gaierror:
        return "its name does not resolve: no network or no DNS"
    except socket.timeout:
        return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__


def check_imagenet_download(kind: str, name: str, alternative: str) -> None:
    """Refuse in one sentence, before any framework is imported, when ImageNet weights are neither cached nor
    downloadable. Behind a proxy the direct probe says nothing, so the framework is left to try."""
    if weights_cached(kind, name) or any(os.environ.get(v) for v in ("https_proxy", "HTTPS_PROXY", "all_proxy")):
        return
    reason = host_unreachable(HOSTS[kind])
    if reason:
        raise ConvlensError(f"Cannot download ImageNet weights for {name}: {HOSTS[kind]} cannot be reached ({reason}); "
                            f"pass {alternative}, or convert once where the network is reachable (the framework "
                            "keeps the file in its cache).")


def failure_cause(exc: BaseException) -> str:
    """The framework's own reason in a few words: its message's first line, else the exception's class."""
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return (line[:160] + ("..." if len(line) > 160 else "")) if line else exc.__class__.__name__
