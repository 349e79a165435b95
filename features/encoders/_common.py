"""Constants shared by several family modules (published normalization statistics)."""

from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# DINOv2-style SwiGLU: timm's SwiGLUPacked packs the two hidden projections into fc1, so the
# ratio is twice the 2/3-reduced width (4096 * 2 / 1536 for ViT-g); the cards publish 2.66667*2.
SWIGLU_RATIO_G = 2.66667 * 2
