"""Half-precision copies of weights files: float16 storage outside the entropy path, same decoding.

    python -m psic_core.weights.convert --half src/psic_core/weights/mshp64-q2.safetensors OUT.safetensors

The copy keeps the name (unless ``--name``), quality, architecture and training record; its
``psic.decodes_sha256`` lists the original's SHA-256 (and whatever the original already decoded), so ``.psic``
files made with the original find and decode with the copy: the entropy path is stored unchanged, so they decode
to the same latent symbols and only the pixels move by the synthesis weights' rounding.

``--fresh`` is for weights no file was made with yet (a new training's export): only the entropy models stay
float32 (``weights.ENTROPY_MODELS``, smaller still) and the copy declares nothing; it is new weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import ENTROPY_MODELS, ENTROPY_PATH, decodes_sha256, describe, instantiate, save_weights, training_record


def half_copy(source: str | Path, out: str | Path, name: str | None = None, fresh: bool = False) -> Path:
    info = describe(source)
    model = instantiate(info).eval()
    save_weights(model, out, name=name or info.name, quality=info.quality, half=True,
                 keep_float32=ENTROPY_MODELS if fresh else ENTROPY_PATH,
                 extra={"training": training_record(info)} if training_record(info) else None,
                 decodes=[] if fresh else [info.sha256, *decodes_sha256(info)])
    return Path(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--half", action="store_true", required=True, help="float16 outside the entropy path")
    parser.add_argument("--name", help="the copy's weights name (default: the source's)")
    parser.add_argument("--fresh", action="store_true", help="new weights no file was made with: only the entropy "
                        "models stay float32, no decodes_sha256")
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.out.resolve() == args.source.resolve():
        raise ValueError("write the copy to a new path, then replace the original on purpose")
    out = half_copy(args.source, args.out, args.name, args.fresh)
    print(f"wrote {out}: {args.source.stat().st_size / 1e6:.2f} MB -> {out.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    from ..cli import run_command

    sys.exit(run_command(main, prog="python -m psic_core.weights.convert"))
