"""Where the evaluation data lives, which images to use, and small subsets for quick runs.

Layout (the shared data folder's README): ``<data>/eval/<set>/*.png`` for rate-distortion,
``<data>/labelled/labels.csv`` and ``<data>/captioned/captions.jsonl`` for the VLP test splits. Any folder of images
works for ``--images``; any folder with those two index files works for ``--vlp-data``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".ppm"}
DEFAULT_IMAGE_SET = "eval/kodak-like-24"
#: the real Kodak images in kodak-like-24 when the folder has no manifest saying so
KNOWN_HIGHLIGHTS = {"kodak-like-01.png": "kodim02", "kodak-like-02.png": "kodim07"}
ENV_DATA = "PSIC_EVAL_DATA"


def default_data_root() -> Path | None:
    """``$PSIC_EVAL_DATA`` when set; otherwise the data folder must be given (``--data``): no guessing."""
    return Path(os.environ[ENV_DATA]) if os.environ.get(ENV_DATA) else None


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def highlights(folder: str | os.PathLike, names: list[str] | None = None) -> dict[str, str]:
    """Images reported on their own as well, file name -> display name.

    ``names`` (file names) when given; else the rows of the folder's ``manifest.csv`` marked ``is_real_kodak``
    (named after the ``kodimNN`` in their original file name); else the known real Kodak files of kodak-like-24.
    """
    folder = Path(folder)
    if names:
        return {n: Path(n).stem for n in names}
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and "is_real_kodak" in rows[0]:
            found = {}
            for row in rows:
                if row.get("is_real_kodak", "").lower() in ("yes", "true", "1"):
                    match = re.search(r"kodim\d+", row.get("original_file", ""))
                    found[row["file"]] = match.group(0) if match else Path(row["file"]).stem
            return found
    present = {p.name for p in list_images(folder)}
    return {k: v for k, v in KNOWN_HIGHLIGHTS.items() if k in present}


def pick_images(images: list[Path], limit: int | None, keep: set[str]) -> list[Path]:
    """At most ``limit`` images: the highlighted ones first, then the others in order."""
    if limit is None or limit >= len(images):
        return images
    first = [p for p in images if p.name in keep]
    rest = [p for p in images if p.name not in keep]
    return sorted((first + rest)[: max(limit, 0)])


def vlp_subset_root(root: str | os.PathLike, per_source: int | None, captions: int | None, folder: Path) -> Path:
    """A data root holding at most ``per_source`` labelled test images per source and ``captions`` captioned test
    pairs (the first ones in index order); train rows are kept, since they define the candidate labels.

    Index files only, with absolute image paths; the images are not copied. Returns ``root`` unchanged when no
    limit is given.
    """
    root = Path(root).resolve()
    if per_source is None and captions is None:
        return root
    (folder / "labelled").mkdir(parents=True, exist_ok=True)
    (folder / "captioned").mkdir(parents=True, exist_ok=True)
    with open(root / "labelled" / "labels.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    taken, kept = defaultdict(int), []
    for row in rows:
        if row["split"] == "test":
            if per_source is not None and taken[row["source"]] >= per_source:
                continue
            taken[row["source"]] += 1
        kept.append(dict(row, file=str(root / "labelled" / row["file"])))
    with open(folder / "labelled" / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(kept)
    lines, count = [], 0
    with open(root / "captioned" / "captions.jsonl", encoding="utf-8") as f:
        for line in filter(str.strip, f):
            entry = json.loads(line)
            if entry["split"] == "test":
                if captions is not None and count >= captions:
                    continue
                count += 1
            entry["file"] = str(root / "captioned" / entry["file"])
            lines.append(json.dumps(entry))
    (folder / "captioned" / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder
