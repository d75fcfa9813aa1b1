"""The ``psic`` command line: thin over the Python API.

Exit codes: 0 success, 1 error (one line on stderr, no traceback), 2 usage error, 3 key error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from . import __version__, codec
from .errors import PsicError, PsicKeyError
from .files import atomic_write

EXIT_ERROR, EXIT_USAGE, EXIT_KEY = 1, 2, 3
SAMPLE = Path(__file__).resolve().parent / "samples" / "kodim07.png"
#: candidate classes for the demo's VLP reading: the class names of the bundled reference VLP's labelled sets
DEMO_LABELS = ("animal", "coin", "food item", "hobby item", "holiday item", "household object", "plant",
               "space object", "street object", "vehicle", "fish", "monument", "renewable energy source", "tool")


def _vlp_readings(images: dict) -> dict[str, str] | None:
    """Top-1 class of the bundled reference VLP for each image (None when its weights are not installed)."""
    import numpy as np
    import torch

    from .errors import PsicModelError
    from .vlp import load_vlp
    from .vlp.zeroshot import class_embeddings

    try:
        vlp = load_vlp()
    except (PsicModelError, OSError):
        return None
    with torch.no_grad():
        classes = class_embeddings(vlp, DEMO_LABELS)
        out = {}
        for label, im in images.items():
            x = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)[None].float() / 255
            scores = (vlp.logit_scale * vlp.encode_image(x) @ classes.T)[0].softmax(0)
            out[label] = f"{DEMO_LABELS[int(scores.argmax())]} ({float(scores.max()):.0%})"
    return out


def _key_options(parser: argparse.ArgumentParser):
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--key", help="the key as text (visible in shell history; prefer --key-file or --key-env)")
    group.add_argument("--key-file", type=Path, help="read the key from this file (one trailing newline is ignored)")
    group.add_argument("--key-env", nargs="?", const="PSIC_KEY", metavar="VAR",
                       help="read the key from environment variable VAR (default PSIC_KEY)")


def _key(args) -> str | bytes | None:
    if args.key is not None:
        return args.key
    if args.key_file is not None:
        raw = args.key_file.read_bytes()
        return raw[:-1] if raw.endswith(b"\n") else raw
    if args.key_env is not None:
        if args.key_env not in os.environ:
            raise PsicKeyError(f"environment variable {args.key_env} is not set")
        return os.environ[args.key_env]
    return None


def _output_path(args, default_suffix: str) -> Path:
    out = Path(args.output) if args.output else Path(args.input).with_suffix(default_suffix)
    if out.resolve() == Path(args.input).resolve():
        raise PsicError(f"refusing to overwrite the input {args.input}")
    if out.exists() and not args.force:
        raise PsicError(f"{out} exists; use --force to replace it")
    return out


@contextmanager
def _progress(description: str):
    """A tqdm bar fed by the codec's (done, total) callback; silent for single-tile images."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int):
        nonlocal bar
        if total > 1:
            bar = bar or tqdm(total=total, desc=description, unit="tile", file=sys.stderr, leave=False)
            bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar:
            bar.close()


def _encode_image_bytes(im, path: Path) -> bytes:
    import io

    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    buffer = io.BytesIO()
    save_options = {k: im.info[k] for k in ("icc_profile", "exif") if im.info.get(k)}
    if fmt == "JPEG":
        save_options["quality"] = 95
        im = im.convert("RGB") if im.mode in ("RGBA", "LA") else im
    im.save(buffer, fmt, **save_options)
    return buffer.getvalue()


def cmd_encode(args) -> int:
    from PIL import Image

    from .metadata import extract

    out = _output_path(args, ".psic")
    key = _key(args)
    with Image.open(args.input) as im:
        if key is None and not args.keep_metadata and extract(im)[1]:
            print("psic: note: EXIF/XMP/IPTC metadata dropped (no key to seal it; --keep-metadata keeps it in the "
                  "clear)", file=sys.stderr)
        with _progress("encoding") as progress:
            data = codec.encode(im, model=args.model, quality=args.quality, key=key,
                                keep_metadata=args.keep_metadata, progress=progress)
    atomic_write(out, data, overwrite=True)
    summary = codec.info(data)
    lock = "locked with the key" if summary["locked"] else "open (no key given)"
    print(f"{out}: {summary['width']}x{summary['height']}, {len(data)} bytes, {summary['bpp']:.3f} bpp, "
          f"model {summary['model']}, full decoding {lock}")
    return 0


def cmd_decode(args) -> int:
    out = _output_path(args, ".png")
    with _progress("decoding") as progress:
        im = codec.decode(args.input, key=_key(args), full=True if args.full else None, progress=progress)
    atomic_write(out, _encode_image_bytes(im, out), overwrite=True)
    kind = "full" if (args.full or _key(args) is not None) else "protected"
    print(f"{out}: {kind} decoding, {im.size[0]}x{im.size[1]} {im.mode}")
    return 0


def cmd_info(args) -> int:
    summary = codec.info(args.input)
    key = _key(args)
    if key is not None:
        summary["sealed_metadata"] = codec.private_metadata(args.input, key).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        width = max(map(len, summary))
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0


def cmd_strip(args) -> int:
    out = Path(args.output) if args.output else Path(args.input)
    if args.output and out.exists() and not args.force:
        raise PsicError(f"{out} exists; use --force to replace it")
    stripped = codec.strip(args.input)
    before = Path(args.input).stat().st_size
    atomic_write(out, stripped, overwrite=True)
    print(f"{out}: private metadata removed ({before - len(stripped)} bytes), image stream unchanged")
    return 0


def cmd_models(args) -> int:
    from .weights import registry

    for w in registry.all():
        print(f"{w.name:<14} {w.backbone:<24} quality {w.quality or '-'}  {w.sha256[:16]}…  {w.path}")
    return 0


def cmd_demo(args) -> int:
    """Encode the bundled sample, write both decodings and a side-by-side, print bpp, PSNR and sizes."""
    import numpy as np
    from PIL import Image

    from .eval.metrics import psnr
    from .eval.sheets import side_by_side
    from .weights import load_model, registry

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = "psic-demo-key"
    original = Image.open(SAMPLE).convert("RGB")
    load_model(registry.find(args.model, args.quality))  # so the timings below are the codec's, not start-up
    print(f"[1/3] encoding {SAMPLE.name} ({original.size[0]}x{original.size[1]}) with key {key!r} ...", flush=True)
    started = time.perf_counter()
    data = codec.encode(original, model=args.model, quality=args.quality, key=key)
    encode_s = time.perf_counter() - started
    psic_path = atomic_write(out_dir / "kodim07.psic", data, overwrite=True)
    print("[2/3] decoding: protected (no key) and full (with the key) ...", flush=True)
    started = time.perf_counter()
    protected = codec.decode(data)
    decode_s = time.perf_counter() - started
    full = codec.decode(data, key=key)
    paths = {}
    for label, im in (("protected", protected), ("full", full)):
        paths[label] = atomic_write(out_dir / f"kodim07.{label}.png", _encode_image_bytes(im, Path("x.png")),
                                    overwrite=True)
    sheet = side_by_side([("original", original), ("full (key)", full), ("protected (default)", protected)])
    sheet_path = atomic_write(out_dir / "kodim07.side-by-side.png", _encode_image_bytes(sheet, Path("x.png")),
                              overwrite=True)
    print("[3/3] results")
    ref = np.asarray(original)
    summary = codec.info(data)
    png_bytes = SAMPLE.stat().st_size
    print(f"  model            {summary['model']} (sha256 {summary['model_sha256'][:16]}…)")
    print(f"  original PNG     {png_bytes:>9,} bytes  {8 * png_bytes / (768 * 512):6.3f} bpp")
    print(f"  .psic            {len(data):>9,} bytes  {summary['bpp']:6.3f} bpp  ({encode_s:.2f} s to encode)")
    print(f"  full decoding    PSNR {psnr(ref, np.asarray(full)):6.2f} dB")
    print(f"  protected        PSNR {psnr(ref, np.asarray(protected)):6.2f} dB  ({decode_s:.2f} s to decode)")
    readings = _vlp_readings({"original": original, "full": full, "protected": protected})
    if readings:
        print("  reference VLP top-1 (a small CLIP we trained offline; demonstration scale, see docs/vlp.md):")
        for label, reading in readings.items():
            print(f"    {label:<10} {reading}")
    for path in (psic_path, paths["protected"], paths["full"], sheet_path):
        print(f"  wrote {path}")
    return 0


def cmd_train(args) -> int:
    from .train.privacy import main as train_main

    train_main(args.args[1:] if args.args[:1] == ["--"] else args.args)
    return 0


def build_parser(extend: Callable | None = None) -> argparse.ArgumentParser:
    """The ``psic`` parser; ``extend(subparsers)`` adds commands defined outside the core (``psic plugins``)."""
    parser = argparse.ArgumentParser(prog="psic", description="privacy-shielded image compression")
    parser.add_argument("--version", action="version", version=f"psic {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="encode an image to .psic")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="output path (default: input with .psic)")
    p.add_argument("--model", help="weights name or .safetensors path (see `psic models`)")
    p.add_argument("--quality", type=int, help="quality level of the default model family")
    p.add_argument("--keep-metadata", action="store_true",
                   help="keep EXIF/XMP/IPTC in the clear (default: sealed under the key, dropped without one)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    _key_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a .psic file (protected by default)")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="output image (.png, .jpg, .webp; default: input with .png)")
    p.add_argument("--full", action="store_true", help="the full decoding (a locked file needs the key)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    _key_options(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="print a .psic file's header (no model load)")
    p.add_argument("input")
    p.add_argument("--json", action="store_true")
    _key_options(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("strip", help="remove private metadata (sealed or clear) from a .psic file, in place")
    p.add_argument("input")
    p.add_argument("-o", "--output", help="write the stripped file here instead of replacing the input")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_strip)

    p = sub.add_parser("models", help="list installed weights")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train psic weights against a target VLP (see docs/training.md)",
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER, help="trainer options (psic train --help)")
    p.set_defaults(func=cmd_train)

    sub.add_parser("eval", help="rate-distortion, VLP exploitation, robustness and speed report (psic eval --help)",
                   add_help=False)

    p = sub.add_parser("demo", help="encode the bundled sample photo and write both decodings")
    p.add_argument("--out", default="psic-demo", help="output folder (default: psic-demo)")
    p.add_argument("--model")
    p.add_argument("--quality", type=int)
    p.set_defaults(func=cmd_demo)
    if extend:
        extend(sub)
    return parser


def main(argv=None, extend: Callable | None = None) -> int:
    """Run ``psic``. The installed console script is ``psic_plugins.cli:main``, which loads plugins first and
    adds ``psic plugins``; this core entry point works without them."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["eval"]:  # the evaluation harness owns its options
        from .eval import main as eval_main

        return eval_main(argv[1:], prog="psic eval")
    if argv[:1] == ["train"]:  # the trainer owns its options (argparse's REMAINDER would swallow none of them)
        argv = ["train", "--", *argv[1:]]
    args = build_parser(extend).parse_args(argv)
    try:
        return args.func(args)
    except PsicKeyError as exc:
        print(f"psic: key error: {exc}", file=sys.stderr)
        return EXIT_KEY
    except (PsicError, OSError, ValueError) as exc:
        print(f"psic: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("psic: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
