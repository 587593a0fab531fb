"""Shapes more than one route uses."""

from __future__ import annotations

from api.schemas import BBox


def bbox(face) -> BBox:
    """A face's box as the API reports it: x, y, width, height in original pixels."""
    x, y, w, h = face.xywh
    return BBox(x=x, y=y, width=w, height=h)
