"""Evaluate a target VLP on the test splits: zero-shot top-1/top-5 per labelled source, caption retrieval R@1/R@5.

    python -m psic_core.vlp.evaluate --data path/to/data --vlp refclip-s [--json report.json]
    python -m psic_core.vlp.evaluate --data path/to/data --vlp open_clip:ViT-B-32 --pretrained weights.safetensors

Every number comes with its chance level (random ranking of the same candidates).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from ..train.config import Integer, argument, prepare_output_files  # noqa: E402
from .data import open_rgb, read_captioned, read_labelled, zero_shot_candidates  # noqa: E402
from .registry import DEFAULT_VLP, load_vlp  # noqa: E402
from .zeroshot import retrieval_report, zero_shot_report  # noqa: E402


def evaluate(vlp, root: str | os.PathLike, transform=None) -> dict:
    """The full report for ``vlp`` on the test splits under ``root``, images passed through ``transform``."""
    candidates = zero_shot_candidates(root)
    labelled = read_labelled(root, "test")
    captioned = read_captioned(root, "test")
    return {
        "zero_shot": zero_shot_report(
            vlp,
            [open_rgb(item.path) for item in labelled],
            [item.label for item in labelled],
            [item.source for item in labelled],
            candidates=candidates,
            transform=transform,
        ),
        "retrieval": retrieval_report(
            vlp, [open_rgb(item.path) for item in captioned], [item.caption for item in captioned], transform
        ),
    }


def _rounded(value, digits: int = 4):
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {key: _rounded(item, digits) for key, item in value.items()}
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="folder holding labelled/ and captioned/")
    parser.add_argument("--vlp", default=DEFAULT_VLP, help="registered name, .safetensors path or open_clip:<model>")
    parser.add_argument("--pretrained", help="open_clip tag or weights file, with --vlp open_clip:<model>")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument("--threads", type=argument(Integer(minimum=1)), default=1, help="torch threads")
    args = parser.parse_args(argv)
    if args.json:
        prepare_output_files([args.json])

    torch.set_num_threads(args.threads)
    vlp = load_vlp(args.vlp, pretrained=args.pretrained)
    report = {"vlp": args.vlp, "pretrained": args.pretrained} | evaluate(vlp, args.data)
    text = json.dumps(_rounded(report), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    from ..cli import run_command

    sys.exit(run_command(main, prog="python -m psic_core.vlp.evaluate"))
