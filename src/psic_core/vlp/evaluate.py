"""Evaluate a target VLP on the test splits: zero-shot top-1/top-5 per labelled source, caption retrieval R@1/R@5,
retrieval top-1 over the whole test set (labelled and captioned images, label prompts and captions).

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
from .zeroshot import (  # noqa: E402
    class_embeddings,
    embed_images,
    retrieval_scores,
    source_classes,
    whole_set_retrieval,
    zero_shot_scores,
)

#: the group of the captioned test pairs beside the labelled sources (whole-set retrieval, attack success)
CAPTIONS = "captions"


def evaluate(vlp, root: str | os.PathLike, transform=None, readings: bool = False) -> dict:
    """The full report for ``vlp`` on the test splits under ``root``, images passed through ``transform``.

    zero_shot: top-k per labelled source; retrieval: recall@k among the captioned test pairs; retrieval_all:
    top-1 over the whole test set (labelled and captioned images; their label prompts and captions), per source and
    for the captions. With ``readings``, also the ``zeroshot.Readings`` of every test pair (zero-shot top-1 for
    labelled images, whole-set image->text top-1 for captioned ones), the input of ``zeroshot.attack_success``.
    """
    labelled = read_labelled(root, "test")
    captioned = read_captioned(root, "test")
    labels, sources = [item.label for item in labelled], [item.source for item in labelled]
    if CAPTIONS in sources:
        raise ValueError(f"a labelled source may not be called {CAPTIONS!r}: that name is the captioned pairs'")
    classes = source_classes(labels, sources, zero_shot_candidates(root))
    names = sorted({name for group in classes.values() for name in group})
    captions = [item.caption for item in captioned]
    with torch.no_grad():
        label_embeddings = dict(zip(names, class_embeddings(vlp, names)))
        caption_embeddings = vlp.encode_text(captions)
    labelled_embeddings = embed_images(vlp, [open_rgb(item.path) for item in labelled], transform)
    captioned_embeddings = embed_images(vlp, [open_rgb(item.path) for item in captioned], transform)

    zero_shot, zero_shot_readings = zero_shot_scores(labelled_embeddings, labels, sources, classes, label_embeddings)
    text_embeddings, positives = whole_set_texts(labels, captions, label_embeddings, caption_embeddings)
    similarity = torch.cat([labelled_embeddings, captioned_embeddings]) @ text_embeddings.T
    whole, whole_readings = whole_set_retrieval(similarity, positives, sources + [CAPTIONS] * len(captions))
    report = {"zero_shot": zero_shot,
              "retrieval": retrieval_scores(captioned_embeddings, caption_embeddings, captions),
              "retrieval_all": whole}
    if readings:
        caption_rows = range(len(labels), len(labels) + len(captions))
        report["readings"] = zero_shot_readings + whole_readings.subset(caption_rows)
    return report


def whole_set_texts(
    labels: list[str], captions: list[str], label_embeddings: dict, caption_embeddings: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct texts of the whole test set embedded (the prompt-ensembled class embedding of each test label,
    then each caption; identical texts once), and the (pairs x texts) matrix of each pair's own text, the pairs
    being the labelled images then the captioned ones."""
    own = [("label", label) for label in labels] + [("caption", caption) for caption in captions]
    texts = list(dict.fromkeys(own))
    embeddings = [label_embeddings[text] if kind == "label" else caption_embeddings[captions.index(text)]
                  for kind, text in texts]
    positives = torch.tensor([[text == mine for text in texts] for mine in own])
    return torch.stack(embeddings), positives


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
