"""Detector files the detector tests share, built once per run (tests/conftest.py's session fixtures):

- a YOLOv8n built by ultralytics from its yaml (seeded weights, its batch norms calibrated on three photos, its
  class head spread so that detections score between 0.25 and 1), exported by ultralytics' own exporter with and
  without NMS inside;
- a transformers DetrForObjectDetection built from a config (a small ResNet backbone, seeded), exported by
  torch.onnx with its two outputs, the class logits (N, Q, C + 1) and the boxes (N, Q, 4).
"""
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

YOLO_SIZE = 160
DETR_SIZE = 128


def build_yolo(folder: Path):
    """(the ultralytics model, fused as the files are; the file without NMS; the file with NMS inside)."""
    os.environ["YOLO_CONFIG_DIR"] = str(folder / "config")  # ultralytics writes its settings there
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    # random convolutions shrink activations to ~1e-6 by the neck, so every candidate scores the same: the batch
    # norms take their statistics from three photos (as a trained net's are), and the class head is spread so
    # that scores differ from candidate to candidate
    photos = [cv2.resize(f(), (YOLO_SIZE, YOLO_SIZE), interpolation=cv2.INTER_AREA)
              for f in (skimage.data.astronaut, skimage.data.coffee, skimage.data.chelsea)]
    for module in model.model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # the plain average over the batch
    model.model.train()
    with torch.no_grad():
        model.model(torch.from_numpy(np.stack(photos).transpose(0, 3, 1, 2).copy() / 255).float())
        for branch in model.model.model[-1].cv3:
            branch[-1].weight.normal_(0.0, 0.15)
            branch[-1].bias.normal_(-7.0, 0.5)
    model.model.eval()
    here = os.getcwd()
    os.chdir(folder)  # the exporter writes next to the working directory for a yaml-built model
    try:
        raw = shutil.move(model.export(format="onnx", imgsz=YOLO_SIZE, simplify=False, opset=17), folder / "raw.onnx")
        nms = shutil.move(model.export(format="onnx", imgsz=YOLO_SIZE, simplify=False, opset=17, nms=True),
                          folder / "nms.onnx")
    finally:
        os.chdir(here)
    net = model.model.float().eval()  # fused by the export, as the files are
    return net, Path(raw), Path(nms)


class Detr(torch.nn.Module):
    """The transformers model returning (logits, boxes), as deployed files do."""

    def __init__(self):
        super().__init__()
        from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

        torch.manual_seed(0)
        backbone = ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32, 32, 64], depths=[1, 1, 1, 1],
                                layer_type="basic", out_features=["stage4"])
        config = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone,
                            d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=12,
                            num_labels=5, init_std=0.3, init_xavier_std=3.0)
        self.net = DetrForObjectDetection(config)

    def forward(self, x):
        out = self.net(pixel_values=x)
        return out.logits, out.pred_boxes


def build_detr(folder: Path):
    """(the torch module, in eval mode; its .onnx file)."""
    net = Detr().eval()
    path = folder / "detr.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, DETR_SIZE, DETR_SIZE),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits", "boxes"])
    net.eval()  # the exporter leaves transformers' modules in training mode
    return net, path
