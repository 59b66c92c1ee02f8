"""Where the label store keeps the photos reviewers upload, and the names it shows for them.

An upload is stored once per content, as <workspace>/uploads/<sha256>.<the extension of its format>,
in the workspace the store was given; the name it came with is only kept, sanitised, for display.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path

from PIL import Image

from core.images.reading import ACCEPTED_FORMATS
from core.untrusted import FORMULA_STARTS

UPLOADS_FOLDER = "uploads"  # <workspace>/uploads: stored copies of external images
_MAX_NAME = 255


def display_name(name: str) -> str:
    """A file name fit to show and keep: its last path component, no NUL or control characters,
    no leading formula character (core.untrusted)."""
    text = "".join(char for char in str(name) if char.isprintable())
    # A name starting like a formula would be one in a spreadsheet opening an export.
    text = re.split(r"[\\/]", text)[-1].strip().lstrip("".join(FORMULA_STARTS)).strip()
    return text[:_MAX_NAME] if text not in ("", ".", "..") else "upload"


def store_upload(workspace: Path, data: bytes, digest: str) -> Path:
    """<workspace>/uploads/<digest>.<ext of its format> holding `data` (an image already checked,
    core.images.reading.read_image_checked), written atomically (temp file + rename)."""
    with Image.open(io.BytesIO(data)) as image:
        extension = ACCEPTED_FORMATS[image.format][0]
    folder = workspace / UPLOADS_FOLDER
    folder.mkdir(exist_ok=True)
    target = folder / f"{digest}.{extension}"
    if target.is_file() and target.stat().st_size == len(data):  # content-addressed: already there
        return target
    descriptor, temporary = tempfile.mkstemp(prefix=".upload-", dir=folder)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
