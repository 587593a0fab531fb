"""The caps one image decode is held to (pipeline.decode enforces them), in a module of their own
without heavy imports: the API's settings, `export publish` and Triton's face_pipeline all read
them from here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

MAX_PIXELS = 40_000_000
# A progressive JPEG from libjpeg has 10 scans, mozjpeg's optimised ones a few more; each scan
# is a pass over the whole coefficient buffer, so thousands of them cost minutes (libjpeg-turbo #284).
MAX_JPEG_SCANS = 64
# JPEG segments, PNG ancillary chunks, GIF extension blocks, TIFF tags: real photos have tens.
MAX_HEADER_ITEMS = 512
# Memory one decode may need (decoded pixels, RGB output, progressive coefficient buffer):
# 8 bytes a pixel at the 40 MP limit, so every ordinary photo fits and only the costly
# layouts (progressive JPEG coefficients, 32-bit channels at full size) are refused.
MAX_DECODE_BYTES = 320_000_000


@dataclass(frozen=True)
class DecodeLimits:
    """The caps one decode is held to. The API takes them from its FA_UPLOAD_* settings and
    `export publish` writes the same values into face_pipeline's config parameters (under these
    field names), so Triton refuses exactly what the API refuses: one setting, two enforcers."""

    max_pixels: int = MAX_PIXELS
    min_side: int = 1
    max_jpeg_scans: int = MAX_JPEG_SCANS
    max_decode_bytes: int = MAX_DECODE_BYTES

    def kwargs(self) -> dict[str, int]:
        """Keyword arguments of check_header and decode_reduced."""
        return dict(max_pixels=self.max_pixels, min_side=self.min_side, max_scans=self.max_jpeg_scans,
                    max_decode_bytes=self.max_decode_bytes)

    def params(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_params(cls, params: dict[str, str]) -> DecodeLimits:
        return cls(**{f.name: int(params[f.name]) for f in fields(cls) if f.name in params})
