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


def build_yolo(folder: Path, size: int = YOLO_SIZE, with_nms: bool = True, yaml: str = "yolov8n.yaml"):
    """(the ultralytics model, fused as the files are; the file without NMS; the file with NMS inside, or None
    without `with_nms`). benchmarks/bench_detections.py builds its model here too. An NMS-free model (yolo26n.yaml)
    gives instead its end2end export (a TopK inside) as the second file."""
    os.environ["YOLO_CONFIG_DIR"] = str(folder / "config")  # ultralytics writes its settings there
    os.environ["YOLO_OFFLINE"] = "1"
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO(yaml)
    # random convolutions shrink activations to ~1e-6 by the neck, so every candidate scores the same: the batch
    # norms take their statistics from three photos (as a trained net's are), and the class head is spread so
    # that scores differ from candidate to candidate
    photos = [cv2.resize(f(), (size, size), interpolation=cv2.INTER_AREA)
              for f in (skimage.data.astronaut, skimage.data.coffee, skimage.data.chelsea)]
    for module in model.model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # the plain average over the batch
    model.model.train()
    with torch.no_grad():
        model.model(torch.from_numpy(np.stack(photos).transpose(0, 3, 1, 2).copy() / 255).float())
        head = model.model.model[-1]
        for branch in [*head.cv3, *getattr(head, "one2one_cv3", [])]:
            branch[-1].weight.normal_(0.0, 0.15)
            branch[-1].bias.normal_(-7.0, 0.5)
    model.model.eval()
    here = os.getcwd()
    os.chdir(folder)  # the exporter writes next to the working directory for a yaml-built model
    try:
        raw = shutil.move(model.export(format="onnx", imgsz=size, simplify=False, opset=17), folder / "raw.onnx")
        nms = shutil.move(model.export(format="onnx", imgsz=size, simplify=False, opset=17,
                                       **({"nms": False} if "26" in yaml else {"nms": True})),
                          folder / "nms.onnx") if with_nms else None
    finally:
        os.chdir(here)
    net = model.model.float().eval()  # fused by the export, as the files are
    return net, Path(raw), Path(nms) if nms else None


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


V5_SIZE = 128
V5_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))  # YOLOv5's P3-P5


class YoloV5Style(torch.nn.Module):
    """A small backbone (strides 8, 16, 32) under YOLOv5's Detect head as its export runs it (models/yolo.py of
    YOLOv5 v7.0, written out here): per level a 1x1 convolution to na x (5 + C) channels, a sigmoid of
    everything, centres (2 s - 0.5 + cell) x stride, sizes (2 s)^2 x anchor, rows (N, A, 5 + C) concatenated."""

    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(3)
        conv = torch.nn.Conv2d

        def block(a, b):
            return torch.nn.Sequential(conv(a, b, 3, 2, 1), torch.nn.SiLU())

        self.stem = torch.nn.Sequential(block(3, 8), block(8, 16), block(16, 16))  # stride 8
        self.down16, self.down32 = block(16, 32), block(32, 32)
        self.classes, self.columns, self.na = classes, classes + 5, 3
        self.heads = torch.nn.ModuleList(conv(c, self.na * self.columns, 1) for c in (16, 32, 32))
        self.register_buffer("anchors", torch.tensor(V5_ANCHORS, dtype=torch.float32).view(3, 3, 2))
        self.strides = (8, 16, 32)
        with torch.no_grad():  # features that vary over the image; objectness and classes spread, so that a few
            for module in (*self.stem, self.down16, self.down32):  # candidates pass a 0.25 score
                torch.nn.init.kaiming_normal_(module[0].weight, nonlinearity="relu")
            for head in self.heads:
                head.weight.normal_(0.0, 1.0)
                bias = head.bias.view(self.na, self.columns)
                bias.normal_(0.0, 1.0)
                bias[:, 4] = -3.0

    def forward(self, x):
        p3 = self.stem(x)
        p4 = self.down16(p3)
        p5 = self.down32(p4)
        rows = []
        for i, feature in enumerate((p3, p4, p5)):
            y = self.heads[i](feature)
            n, _, ny, nx = y.shape
            y = y.view(n, self.na, self.columns, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
            grid = torch.stack((xv, yv), 2).expand(1, self.na, ny, nx, 2).float() - 0.5
            anchor_grid = self.anchors[i].view(1, self.na, 1, 1, 2).expand(1, self.na, ny, nx, 2)
            xy, wh, rest = y.sigmoid().split((2, 2, self.classes + 1), 4)
            xy = (xy * 2 + grid) * self.strides[i]
            wh = (wh * 2) ** 2 * anchor_grid
            rows.append(torch.cat((xy, wh, rest), 4).view(n, self.na * nx * ny, self.columns))
        return torch.cat(rows, 1)


def build_yolov5_style(folder: Path):
    """(the torch module, its .onnx file: torch.onnx.export at V5_SIZE, as YOLOv5's export.py does)."""
    net = YoloV5Style().eval()
    path = folder / "yolov5_style.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, V5_SIZE, V5_SIZE),), str(path), dynamo=False, opset_version=12,
                      input_names=["images"], output_names=["output0"])
    return net, path


def yolov5_nms(rows: torch.Tensor, conf: float, iou: float, max_det: int = 300):
    """YOLOv5's non_max_suppression (utils/general.py of v7.0) for one image, written out: (detections (K, 6) as
    x1, y1, x2, y2, score, class; the candidate (row) behind each)."""
    from torchvision.ops import nms

    candidates = torch.nonzero(rows[:, 4] > conf).flatten()
    x = rows[candidates].clone()
    x[:, 5:] *= x[:, 4:5]
    box = torch.cat((x[:, :2] - x[:, 2:4] / 2, x[:, :2] + x[:, 2:4] / 2), 1)
    score, cls = x[:, 5:].max(1, keepdim=True)
    keep = score.view(-1) > conf
    x = torch.cat((box, score, cls.float()), 1)[keep]
    candidates = candidates[keep]
    order = x[:, 4].argsort(descending=True)
    x, candidates = x[order], candidates[order]
    kept = nms(x[:, :4] + x[:, 5:6] * 7680, x[:, 4], iou)[:max_det]
    return x[kept], candidates[kept]
