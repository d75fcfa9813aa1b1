"""Target vision-language models: the adversary whose default-decoding predictions the codec must spoil.

``load_vlp()`` gives the bundled demo-scale reference model (see docs/vlp.md); ``load_vlp('open_clip:NAME',
pretrained=...)`` any open_clip model such as a real CLIP.
"""

from .adapter import TargetVLP
from .files import describe_vlp_file, load_vlp_file, save_vlp
from .registry import DEFAULT_VLP, available_vlps, load_vlp, register_vlp

__all__ = [
    "DEFAULT_VLP",
    "TargetVLP",
    "available_vlps",
    "describe_vlp_file",
    "load_vlp",
    "load_vlp_file",
    "register_vlp",
    "save_vlp",
]
