"""Images as `data:` URLs, so a task carries its picture and needs no file server.

Label Studio's `<Image>` shows a `data:image/png;base64,...` value as it is, and the
backend reads the same string back: no storage, no URL signing, nothing to download.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import numpy.typing as npt
from PIL import Image

DIGIT_SIDE = 8  # sklearn's digits are 8x8 grids of 0..16
DIGIT_MAX = 16.0
SHOWN_SIDE = 64  # what an annotator sees: each cell drawn as an 8x8 block
_PREFIX = "data:image/png;base64,"

# A digits project's labeling config: the image, and one choice per digit.
DIGITS_LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="digit" toName="image">'
    + "".join(f'<Choice value="{d}"/>' for d in range(10))
    + "</Choices></View>"
)


def digit_to_data_url(grid: npt.ArrayLike) -> str:
    """An 8x8 grid of 0..16 as a 64x64 grayscale PNG data URL (dark ink on white)."""
    cells = np.asarray(grid, dtype=float).reshape(DIGIT_SIDE, DIGIT_SIDE)
    pixels = 255 - np.rint(cells / DIGIT_MAX * 255).astype(np.uint8)
    image = Image.fromarray(pixels, mode="L")
    image = image.resize((SHOWN_SIDE, SHOWN_SIDE), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return _PREFIX + base64.b64encode(buffer.getvalue()).decode("ascii")


def data_url_to_digit(url: str) -> npt.NDArray[np.float64]:
    """The 64 features (0..16) of a digit image given as a data URL, any size or mode."""
    if not url.startswith("data:image/") or ";base64," not in url:
        raise ValueError(f"expected a base64 image data URL, got {url[:40]!r}")
    raw = base64.b64decode(url.split(";base64,", 1)[1])
    image = Image.open(io.BytesIO(raw)).convert("L")
    image = image.resize((DIGIT_SIDE, DIGIT_SIDE), Image.Resampling.BOX)
    pixels = np.asarray(image, dtype=float)
    return ((255.0 - pixels) / 255.0 * DIGIT_MAX).reshape(-1)
