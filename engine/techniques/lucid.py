"""The `lucid` recipe: Fourier-space image with 1/f scaling, decorrelated color, transformation
robustness and Adam (after Olah et al., Distill 2017, and the Lucid library's defaults).

The parameterization is linear up to a sigmoid, so its gradient is written in numpy around the ONNX
pixel gradient: irfft2's adjoint is a scaled rfft2, the color matrix's adjoint is its transpose. The
random transforms are pad, jitter, scale and rotation; the adjoint of a small warp is approximated
by the inverse warp (exact for jitter and padding).
"""
from __future__ import annotations

import cv2
import numpy as np

# square root of ImageNet's color covariance, from the Lucid library's color decorrelation
COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float64)
COLOR = COLOR_SQRT / np.max(np.linalg.norm(COLOR_SQRT, axis=0))
SCALES = [1.0, 0.975, 1.025, 0.95, 1.05]
ANGLES = list(range(-5, 6))
PAD, JITTER = 12, 8


class FourierImage:
    """Images (N, H, W, 3) in 0..255 from spectra (N, 3, H, W//2+1) scaled by 1/frequency."""

    def __init__(self, n: int, h: int, w: int, rng, sd: float = 0.01, decay: float = 1.0):
        self.h, self.w = h, w
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.rfftfreq(w)[None, :]
        freqs = np.sqrt(fy ** 2 + fx ** 2)
        self.scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay * np.sqrt(h * w)
        shape = (n, 3, h, w // 2 + 1)
        self.re = rng.normal(0, sd, shape)
        self.im = rng.normal(0, sd, shape)
        cols = np.full(w // 2 + 1, 2.0)
        cols[0] = 1.0
        if w % 2 == 0:
            cols[-1] = 1.0
        self.hermitian = cols  # how often each rfft column appears in the full spectrum

    def linear(self) -> np.ndarray:
        spec = (self.re + 1j * self.im) * self.scale
        img = np.fft.irfft2(spec, s=(self.h, self.w)) / 4.0  # (N, 3, H, W)
        return img.transpose(0, 2, 3, 1) @ COLOR.T  # decorrelated -> RGB

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        s = 1.0 / (1.0 + np.exp(-self.linear()))
        return (s * 255.0).astype(np.float32), s

    def gradient(self, g_pixels: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradients for (re, im) from a gradient w.r.t. pixels."""
        g = g_pixels * 255.0 * s * (1 - s)  # through 255 * sigmoid
        g = (g @ COLOR).transpose(0, 3, 1, 2) / 4.0  # through the color matrix and the /4
        f = np.fft.rfft2(g) * (self.hermitian / (self.h * self.w)) * self.scale
        return f.real, f.imag


def transform(images: np.ndarray, rng) -> tuple[np.ndarray, list]:
    """Pad, then one random jitter/scale/rotation per call (same for the batch), cropped back."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)), constant_values=127.5)
    ph, pw = h + 2 * PAD, w + 2 * PAD
    angle = float(rng.choice(ANGLES))
    scale = float(rng.choice(SCALES))
    dx, dy = rng.integers(-JITTER, JITTER + 1, 2)
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, scale)
    m[:, 2] += (dx, dy)
    out = np.stack(
        [cv2.warpAffine(p, m, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) for p in padded]
    )
    return out[:, PAD:PAD + h, PAD:PAD + w], [m, (ph, pw)]


def transform_adjoint(grad: np.ndarray, state) -> np.ndarray:
    m, (ph, pw) = state
    n, h, w, _ = grad.shape
    full = np.zeros((n, ph, pw, 3), np.float32)
    full[:, PAD:PAD + h, PAD:PAD + w] = grad
    inv = cv2.invertAffineTransform(m)
    back = np.stack(
        [cv2.warpAffine(g, inv, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT) for g in full]
    )
    return back[:, PAD:PAD + h, PAD:PAD + w]


def lucid_ascent(step, filters, hw, steps, rng, lr: float = 0.05):
    """Adam ascent of each filter's mean activation over the Fourier parameters."""
    n = len(filters)
    img = FourierImage(n, hw[0], hw[1], rng)
    m = [np.zeros_like(img.re), np.zeros_like(img.im)]
    v = [np.zeros_like(img.re), np.zeros_like(img.im)]
    b1, b2, eps = 0.9, 0.999, 1e-8
    live = np.zeros(n, bool)
    for t in range(1, steps + 1):
        pixels, s = img.pixels()
        seen, state = transform(pixels, rng)
        g_seen, _ = step(seen.astype(np.float32), filters)
        g = transform_adjoint(g_seen, state)
        live |= np.abs(g_seen).reshape(n, -1).max(axis=1) > 0
        for k, (param, grad) in enumerate(zip((img.re, img.im), img.gradient(g, s))):
            m[k] = b1 * m[k] + (1 - b1) * grad
            v[k] = b2 * v[k] + (1 - b2) * grad ** 2
            delta = lr * (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
            param += delta  # ascent
    pixels, _ = img.pixels()
    final = step(pixels.astype(np.float32), filters)[1]
    return pixels, final, live
