"""Speed and memory: encode/decode seconds and peak resident memory, each configuration in its own process.

A worker process (``python -m psic_core.eval.speed worker ...``) imports torch, loads the weights, warms up on a tiny
image, then times one operation on one image with a given number of torch threads and reports its peak RSS
(``getrusage``) at each stage: after importing torch, after importing the codec (compressai), after loading the
weights, and at the end. Large images (synthesised by upscaling a photo) also show how tiling bounds the memory and
whether tile borders are visible (PSNR in a band across the borders versus elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

#: label -> (width, height); 12 MP and 24 MP are 3:2 like the source photos
SIZES = {
    "768x512": (768, 512),
    "1536x1024": (1536, 1024),
    "2048x1536": (2048, 1536),
    "12MP": (4240, 2832),
    "24MP": (6000, 4000),
}
KEY = "eval-speed"


def parse_size(label: str) -> tuple[int, int]:
    """A named size (``12MP``) or ``WIDTHxHEIGHT``."""
    if label in SIZES:
        return SIZES[label]
    try:
        width, height = (int(v) for v in label.lower().split("x"))
    except ValueError:
        raise ValueError(f"image size {label!r} is neither one of {', '.join(SIZES)} nor WIDTHxHEIGHT") from None
    if width < 16 or height < 16:
        raise ValueError(f"image size {label!r} is too small")
    return width, height
RSS_LIMIT_MIB = 2048


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, the high-water mark of this program's own address space. (``getrusage``'s
    ``ru_maxrss`` is not used there: it survives ``exec``, so a child started by a large parent would report at least
    the parent's size.)
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource

    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / (1024 * 1024) if sys.platform == "darwin" else value / 1024


def current_rss_mib() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return None


# --- worker (child process) ----------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(argv: list[str]) -> dict:
    p = argparse.ArgumentParser(prog="psic_core.eval.speed worker")
    p.add_argument("--op", choices=("encode", "decode", "both"), required=True,
                   help="both: encode, then (peak memory reset) decode the result in the same process")
    p.add_argument("--weights", required=True)
    p.add_argument("--input", required=True, help=".npy image (encode, both) or .psic file (decode)")
    p.add_argument("--output", help="where encode writes the .psic file")
    p.add_argument("--save-full", help="where decode writes the full decoding (.npy)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--tile", type=int, default=1024)
    p.add_argument("--full-only", action="store_true", help="decode: only the full decoding (large images)")
    args = p.parse_args(argv)

    rss = {"start": peak_rss_mib()}
    import torch

    torch.set_num_threads(args.threads)
    rss["import_torch"] = peak_rss_mib()
    import psic_core
    import psic_core.models  # noqa: F401  (compressai)
    from psic_core.weights import load_model, registry

    from .codecs import model_ref

    rss["import_codec"] = peak_rss_mib()
    info = registry.register(args.weights)
    load_model(info)
    model = model_ref(info)
    rss["load_weights"] = peak_rss_mib()
    tiny = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    warm = psic_core.encode(tiny, model=model)
    psic_core.decode(warm, full=True, output="numpy")
    rss["warm_up"] = peak_rss_mib()
    result = {"op": args.op, "threads": torch.get_num_threads(), "peak_reset": None}
    if args.op in ("encode", "both"):
        rgb = np.load(args.input)
        rss["resident_before_encode"] = current_rss_mib()
        seconds = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            data = psic_core.encode(rgb, model=model, key=KEY, tile=args.tile)
            seconds.append(time.perf_counter() - started)
        if args.output:
            Path(args.output).write_bytes(data)
        rss["encode_peak"] = peak_rss_mib()
        result |= {"encode_s": seconds, "bytes": len(data), "width": rgb.shape[1], "height": rgb.shape[0]}
        del rgb
    if args.op == "decode":
        data = Path(args.input).read_bytes()
    if args.op in ("decode", "both"):
        if args.op == "both":
            result["peak_reset"] = reset_peak_rss()
        rss["resident_before_decode"] = current_rss_mib()
        seconds, seconds_full = [], []
        for _ in range(0 if args.full_only else args.repeat):
            started = time.perf_counter()
            out = psic_core.decode(data, output="numpy")
            seconds.append(time.perf_counter() - started)
            del out
        for _ in range(args.repeat):
            started = time.perf_counter()
            full = psic_core.decode(data, key=KEY, output="numpy")
            seconds_full.append(time.perf_counter() - started)
        if args.save_full:
            np.save(args.save_full, full)
        rss["decode_peak"] = peak_rss_mib()
        result |= {"decode_s": seconds, "decode_full_s": seconds_full, "width": full.shape[1],
                   "height": full.shape[0]}
    result["rss_mib"] = rss
    return result


# --- driver --------------------------------------------------------------------------------------------------


def synthesise(source: Path, size: tuple[int, int], path: Path) -> np.ndarray:
    """The photo at ``source``, centre-cropped to the aspect of ``size`` and resized (Lanczos) to it."""
    from PIL import Image, ImageOps

    with Image.open(source) as im:
        im = ImageOps.fit(im.convert("RGB"), size, Image.LANCZOS)
    rgb = np.asarray(im)
    np.save(path, rgb)
    return rgb


def spawn(args: list[str], timeout: float | None = None) -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PSIC_DISABLE_PLUGIN_AUTOLOAD="1")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "psic_core.eval.speed", "worker", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"speed worker failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def classical_speed(rgb: np.ndarray, repeat: int) -> dict:
    """JPEG and WebP (quality 75) encode and decode seconds through Pillow, single-threaded."""
    from . import baselines

    out = {}
    for codec in baselines.CODECS:
        enc, dec = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            data = baselines.encode(rgb, codec, 75)
            enc.append(time.perf_counter() - started)
            started = time.perf_counter()
            baselines.decode(data)
            dec.append(time.perf_counter() - started)
        out[codec] = {"quality": 75, "encode_s": statistics.median(enc), "decode_s": statistics.median(dec),
                      "bpp": 8 * len(data) / (rgb.shape[0] * rgb.shape[1])}
    return out


def run(weights_path: str, source: Path, sizes: list[str], threads: list[int], large: str | None,
        large_threads: int, tile: int = 1024, log: Callable[[str], None] = print) -> dict:
    """Timing and memory rows for every size x threads, then the large-image decode (memory limit, seams)."""
    from .metrics import seam_psnr

    rows, classical = [], {}
    with tempfile.TemporaryDirectory(prefix="psic-eval-speed-") as tmp:
        tmp = Path(tmp)
        for size in sizes:
            width, height = parse_size(size)
            image = tmp / f"{size}.npy"
            rgb = synthesise(source, (width, height), image)
            repeat = 3 if width * height <= 1_000_000 else 1
            classical[size] = classical_speed(rgb, repeat)
            for n in threads:
                run_ = spawn(["--op", "both", "--weights", weights_path, "--input", str(image), "--threads", str(n),
                              "--repeat", str(repeat), "--tile", str(tile)])
                rows.append({
                    "size": size, "width": width, "height": height, "threads": n, "repeat": repeat,
                    "bpp": 8 * run_["bytes"] / (width * height),
                    "encode_s": statistics.median(run_["encode_s"]),
                    "decode_protected_s": statistics.median(run_["decode_s"]),
                    "decode_full_s": statistics.median(run_["decode_full_s"]),
                    "rss_mib": run_["rss_mib"], "peak_reset": run_["peak_reset"],
                })
                log(f"  speed {size} threads={n}: encode {rows[-1]['encode_s']:.2f} s, decode "
                    f"{rows[-1]['decode_protected_s']:.2f} s, peak RSS encode {run_['rss_mib']['encode_peak']:.0f} "
                    f"MiB, decode {run_['rss_mib']['decode_peak']:.0f} MiB")
        large_result = None
        if large:
            width, height = parse_size(large)
            image = tmp / f"{large}.npy"
            rgb = synthesise(source, (width, height), image)
            stream, decoded = tmp / f"{large}.psic", tmp / f"{large}-full.npy"
            enc = spawn(["--op", "encode", "--weights", weights_path, "--input", str(image), "--output", str(stream),
                         "--threads", str(large_threads), "--tile", str(tile)])
            dec = spawn(["--op", "decode", "--weights", weights_path, "--input", str(stream), "--threads",
                         str(large_threads), "--save-full", str(decoded), "--full-only"])
            full = np.load(decoded)
            large_result = {
                "size": large, "width": width, "height": height, "threads": large_threads, "tile": tile,
                "tiles": -(-width // tile) * -(-height // tile),
                "bpp": 8 * enc["bytes"] / (width * height),
                "encode_s": enc["encode_s"][0], "decode_full_s": dec["decode_full_s"][0],
                "encode_rss_mib": enc["rss_mib"], "decode_rss_mib": dec["rss_mib"],
                "rss_limit_mib": RSS_LIMIT_MIB,
                "decode_within_limit": dec["rss_mib"]["decode_peak"] <= RSS_LIMIT_MIB,
                "seams_full": seam_psnr(rgb, full, tile),
                "classical": classical_speed(rgb, 1),
            }
            log(f"  large {large}: decode peak RSS {dec['rss_mib']['decode_peak']:.0f} MiB "
                f"({'within' if large_result['decode_within_limit'] else 'OVER'} {RSS_LIMIT_MIB} MiB), "
                f"seams: border minus mid-tile PSNR {large_result['seams_full']['delta_db']:.2f} dB")
    return {"weights": weights_path, "source": str(source), "rows": rows, "classical": classical, "large": large_result}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        print(json.dumps(worker(sys.argv[2:])))
    else:
        sys.exit("usage: python -m psic_core.eval.speed worker --op encode|decode|both ... "
                 "(used by python -m psic_core.eval)")
