"""The ``psic`` command line: thin over the Python API.

Exit codes: 0 success, 1 error (one line on stderr, no traceback), 2 usage error, 3 key error.
Every file it writes goes through ``psic_core.files.atomic_write``: whole or not at all, never replacing a file
without ``--force``, with the permissions of any new file.
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
from .files import atomic_write, check_output
from .lock import read_key_file

EXIT_ERROR, EXIT_USAGE, EXIT_KEY = 1, 2, 3
PSIC_SUFFIX = ".psic"
#: the image formats ``psic decode`` writes, by output extension
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
                 ".bmp": "BMP"}
#: modes a format cannot store, and what they are written as (a decoding is RGB, RGBA, L or LA)
_MODE_FALLBACKS = {"JPEG": {"RGBA": "RGB", "LA": "L"}, "BMP": {"LA": "RGBA"}}
SAMPLE = Path(__file__).resolve().parent / "samples" / "kodim07.png"
#: candidate classes for the demo's VLP reading: the class names of the bundled reference VLP's labelled sets
DEMO_LABELS = ("animal", "coin", "food item", "hobby item", "holiday item", "household object", "plant",
               "space object", "street object", "vehicle", "fish", "monument", "renewable energy source", "tool")


def _vlp_readings(images: dict) -> dict[str, str] | None:
    """Top-1 class of the bundled reference VLP for each image (None when its weights, or the ``train`` extra that
    runs it, are not installed)."""
    import numpy as np
    import torch

    from .errors import PsicModelError
    from .extras import MissingExtraError
    from .vlp import load_vlp
    from .vlp.zeroshot import class_embeddings

    try:
        vlp = load_vlp()
    except (PsicModelError, MissingExtraError, OSError):
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
    group.add_argument("--key-file", type=Path, help="read the key from this file (a UTF-8 byte-order mark and one "
                       "trailing line ending, LF or CRLF, are ignored)")
    group.add_argument("--key-env", nargs="?", const="PSIC_KEY", metavar="VAR",
                       help="read the key from environment variable VAR (default PSIC_KEY)")


def _key(args) -> str | bytes | None:
    if args.key is not None:
        return args.key
    if args.key_file is not None:
        return read_key_file(args.key_file)
    if args.key_env is not None:
        if args.key_env not in os.environ:
            raise PsicKeyError(f"environment variable {args.key_env} is not set")
        return os.environ[args.key_env]
    return None


class UsageError(Exception):
    """A command line that names something psic does not do (exit code 2, like argparse's own errors)."""


def _file_argument(name: str) -> str:
    """argparse type of file arguments: ``-`` would read standard input or write standard output, which psic does
    not (its outputs are published atomically, and a .psic header is read before the pixels)."""
    if name == "-":
        raise argparse.ArgumentTypeError("psic reads and writes named files only, not standard input or output ('-')")
    return name


def _quality_argument(text: str) -> int | float:
    """argparse type of ``--quality``: an integer names a level of a per-level family; variable-rate weights also
    take a number between (``codec.encode`` checks either against the weights)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"quality must be a number, not {text!r}") from None


def _output_path(args, default: Path, suffixes) -> Path:
    """``-o`` or ``default``, checked before any work: not the input, an extension in ``suffixes``, not an existing
    file unless ``--force``, in a writable folder. (atomic_write checks "exists" again when it publishes.)"""
    out = Path(args.output) if args.output else default
    if out.resolve() == Path(args.input).resolve():
        raise PsicError(f"refusing to overwrite the input {args.input}")
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"cannot write {out}: the output's extension must be one of {', '.join(suffixes)}")
    return check_output(out, replace=args.force)


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
    """``im`` in the format ``path``'s extension names (one of IMAGE_FORMATS), with its ICC profile and EXIF."""
    import io

    fmt = IMAGE_FORMATS[path.suffix.lower()]
    buffer = io.BytesIO()
    save_options = {k: im.info[k] for k in ("icc_profile", "exif") if im.info.get(k)}
    if fmt == "JPEG":
        save_options["quality"] = 95
    fallback = _MODE_FALLBACKS.get(fmt, {}).get(im.mode)
    (im.convert(fallback) if fallback else im).save(buffer, fmt, **save_options)
    return buffer.getvalue()


def cmd_encode(args) -> int:
    from .metadata import extract

    out = _output_path(args, Path(args.input).with_suffix(PSIC_SUFFIX), (PSIC_SUFFIX,))
    key = _key(args)
    with codec.open_image(args.input) as im:  # the core's limits apply (decompression bombs)
        if key is None and not args.keep_metadata and extract(im)[1]:
            print("psic: note: EXIF/XMP/IPTC metadata dropped (no key to seal it; --keep-metadata keeps it in the "
                  "clear)", file=sys.stderr)
        with _progress("encoding") as progress:
            data = codec.encode(im, model=args.model, quality=args.quality, key=key,
                                keep_metadata=args.keep_metadata, progress=progress)
    atomic_write(out, data, replace=args.force)
    summary = codec.info(data)
    lock = "locked with the key" if summary["locked"] else "open (no key given)"
    print(f"{out}: {summary['width']}x{summary['height']}, {len(data)} bytes, {summary['bpp']:.3f} bpp, "
          f"model {summary['model']}, full decoding {lock}")
    return 0


def cmd_decode(args) -> int:
    key = _key(args)
    kind = "full" if (args.full or key is not None) else "protected"
    # photo.psic usually sits beside photo.png, the photo it came from: the default names never collide with it
    out = _output_path(args, Path(args.input).with_suffix(f".{kind}.png"), tuple(IMAGE_FORMATS))
    with _progress("decoding") as progress:
        im = codec.decode(args.input, key=key, full=True if args.full else None, model=args.model,
                          progress=progress)
    atomic_write(out, _encode_image_bytes(im, out), replace=args.force)
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
    in_place = args.output is None or Path(args.output).resolve() == Path(args.input).resolve()
    out = check_output(args.input, replace=True) if in_place else _output_path(args, Path(args.input), (PSIC_SUFFIX,))
    stripped = codec.strip(args.input)
    before = Path(args.input).stat().st_size
    atomic_write(out, stripped, replace=in_place or args.force)
    print(f"{out}: private metadata removed ({before - len(stripped)} bytes), image stream unchanged")
    return 0


def cmd_models(args) -> int:
    from .weights import history, init_training_record, registry, training_record

    for w in registry.all():
        quality = w.quality or ("{:g}-{:g}".format(*w.quality_range) if w.quality_range else "-")
        print(f"{w.name:<14} {w.backbone:<24} quality {quality}  {w.sha256[:16]}…  {w.path}")
        if args.verbose:
            record = training_record(w)
            for stage, totals in history.cumulative(record, init_training_record).items():
                hours = f"{'>= ' if totals.get('untimed') else ''}{totals['seconds'] / 3600:.2f} h"
                steps = "?" if totals["steps"] is None else totals["steps"]
                print(f"    {stage:<7} {steps:>7} steps  {hours}")
            for run in history.chain(record, init_training_record):
                compute = run.get("compute") or {}
                where = (f"{compute.get('precision', '?')} on {compute.get('device_name', '?')}" if compute
                         else "compute not recorded")
                trainer = str(run.get("trainer") or run.get("script") or "?").rsplit(".", 1)[-1]
                print(f"    run: {trainer:<7} steps {json.dumps(run.get('steps'))}  from {run.get('init') or 'scratch'}"
                      f"  ({where})")
    return 0


def cmd_demo(args) -> int:
    """Encode the bundled sample, write both decodings and a side-by-side, print bpp, PSNR and sizes."""
    import numpy as np
    from PIL import Image

    from .eval.metrics import psnr
    from .eval.sheets import side_by_side
    from .weights import load_model, registry

    out_dir = Path(args.out)
    outputs = {name: out_dir / f"kodim07.{name}" for name in ("psic", "protected.png", "full.png", "side-by-side.png")}
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in outputs.values():  # before the encode, which a later "exists" would waste
        check_output(path, replace=args.force)
    key = "psic-demo-key"
    original = Image.open(SAMPLE).convert("RGB")
    load_model(registry.find(args.model, args.quality))  # so the timings below are the codec's, not start-up
    print(f"[1/3] encoding {SAMPLE.name} ({original.size[0]}x{original.size[1]}) with key {key!r} ...", flush=True)
    started = time.perf_counter()
    data = codec.encode(original, model=args.model, quality=args.quality, key=key)
    encode_s = time.perf_counter() - started
    atomic_write(outputs["psic"], data, replace=args.force)
    print("[2/3] decoding: protected (no key) and full (with the key) ...", flush=True)
    started = time.perf_counter()
    protected = codec.decode(data)
    decode_s = time.perf_counter() - started
    full = codec.decode(data, key=key)
    sheet = side_by_side([("original", original), ("full (key)", full), ("protected (default)", protected)])
    for name, im in (("protected.png", protected), ("full.png", full), ("side-by-side.png", sheet)):
        atomic_write(outputs[name], _encode_image_bytes(im, outputs[name]), replace=args.force)
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
    for path in outputs.values():
        print(f"  wrote {path}")
    return 0


def cmd_train(args) -> int:
    from .train.privacy import main as train_main

    train_main(args.args[1:] if args.args[:1] == ["--"] else args.args)
    return 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """Usage errors in one line, as every other error (argparse prints the usage first)."""
        self.exit(EXIT_USAGE, f"psic: error: {message} (see {self.prog} --help)\n")


def build_parser(extend: Callable | None = None) -> argparse.ArgumentParser:
    """The ``psic`` parser; ``extend(subparsers)`` adds commands defined outside the core (``psic plugins``)."""
    parser = _Parser(prog="psic", description="privacy-shielded image compression")
    parser.add_argument("--version", action="version", version=f"psic {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("encode", help="encode an image to .psic")
    p.add_argument("input", type=_file_argument)
    p.add_argument("-o", "--output", type=_file_argument, help="output .psic file (default: input with .psic)")
    p.add_argument("--model", help="weights name or .safetensors path (see `psic models`)")
    p.add_argument("--quality", type=_quality_argument, help="quality level of the default model family (1 to 4), or "
                   "any number in the range of variable-rate weights (1 to 4)")
    p.add_argument("--keep-metadata", action="store_true",
                   help="keep EXIF/XMP/IPTC in the clear (default: sealed under the key, dropped without one)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    _key_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a .psic file (protected by default)")
    p.add_argument("input", type=_file_argument)
    p.add_argument("-o", "--output", type=_file_argument,
                   help=f"output image, in the format its extension names ({', '.join(IMAGE_FORMATS)}; default: "
                        "input with .protected.png, or .full.png for the full decoding)")
    p.add_argument("--full", action="store_true", help="the full decoding (a locked file needs the key)")
    p.add_argument("--model", metavar="PATH", help="the file's weights, if not installed: a .safetensors path (or "
                                                   "add its folder to PSIC_WEIGHTS_PATH)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    _key_options(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("info", help="print a .psic file's header (no model load)")
    p.add_argument("input", type=_file_argument)
    p.add_argument("--json", action="store_true")
    _key_options(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("strip", help="remove private metadata (sealed or clear) from a .psic file, in place")
    p.add_argument("input", type=_file_argument)
    p.add_argument("-o", "--output", type=_file_argument,
                   help="write the stripped .psic file here instead of replacing the input")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_strip)

    p = sub.add_parser("models", help="list installed weights")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also each one's training: cumulative steps and hours per stage, and every run of its chain")
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
    p.add_argument("--quality", type=_quality_argument)
    p.add_argument("-f", "--force", action="store_true", help="replace the outputs of an earlier demo")
    p.set_defaults(func=cmd_demo)
    if extend:
        extend(sub)
    return parser


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


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
    return run_command(lambda: args.func(args))


def run_command(command: Callable[[], int | None], prog: str = "psic") -> int:
    """``command()`` under the CLI's error handling: a failure prints one line on stderr and returns its exit code
    instead of a traceback. The ``python -m`` trainers run their ``main`` through it too."""
    try:
        return command() or 0
    except UsageError as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except PsicKeyError as exc:
        print(f"{prog}: key error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_KEY
    except (PsicError, OSError, ValueError) as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
