"""Write the seed corpus: small valid .psic files of every variant, with the bundled weights.

    python fuzz/make_corpus.py fuzz/corpus
"""

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import psic_core
from psic_core import lock
from psic_core.cli import SAMPLE
from psic_core.weights import registry

from targets import KEY

CORPUS_WEIGHTS = ("mshp64-rd-q1", "shp64-q2")


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    # cheap scrypt (1 MiB) so the fuzzer spends its time in the parsers, not in key derivation
    lock.DEFAULT_LOG2_N = 10
    photo = Image.open(SAMPLE).convert("RGB").crop((300, 200, 364, 248))
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif.get_ifd(0x8825)[1] = "N"
    jpeg = io.BytesIO()
    photo.save(jpeg, "JPEG", exif=exif)
    # the rate-distortion weights stay bundled whatever the privacy training does, so the corpus stays decodable
    backbones = {registry.find(name).backbone: name for name in CORPUS_WEIGHTS}
    variants = {}
    for backbone, name in sorted(backbones.items()):
        variants[f"{backbone}-open"] = psic_core.encode(photo, model=name)
        variants[f"{backbone}-locked"] = psic_core.encode(photo, model=name, key=KEY)
    name = backbones["mean-scale-hyperprior"]
    variants["metadata-sealed"] = psic_core.encode(jpeg.getvalue(), model=name, key=KEY, text={"Title": "seed"})
    variants["metadata-clear"] = psic_core.encode(jpeg.getvalue(), model=name, keep_metadata=True)
    variants["rgba"] = psic_core.encode(rgba, model=name)
    variants["grey"] = psic_core.encode(photo.convert("L"), model=name)
    variants["tiled"] = psic_core.encode(Image.open(SAMPLE).convert("RGB").crop((0, 0, 130, 70)), model=name, tile=64)
    for label, data in variants.items():
        (out / f"{label}.psic").write_bytes(data)
        print(f"{label}: {len(data)} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "corpus"))
