"""The two decodings of one bitstream and the condition values CLTG receives for them.

Torch-free on purpose: the container records these semantics in every file header.
"""

PROTECT = "protect"
FULL = "full"
CONDITION_VALUES: dict[str, float] = {PROTECT: 0.0, FULL: 1.0}
DEFAULT_CONDITION = PROTECT
