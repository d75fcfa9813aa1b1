"""Where and in what precision the trainers compute: one home for the device choice, autocast and memory format.

``precision``:

- ``"auto"``: ``"bf16"`` where the hardware computes bfloat16 natively (a CUDA GPU that supports it; a CPU with
  oneDNN bf16 support, e.g. AVX-512 BF16 or AMX), else ``"fp32"`` (emulated bf16 is slower than fp32).
- ``"fp32"``: everything in float32.
- ``"bf16"``: analysis and synthesis transforms (and the VLP) under bfloat16 autocast; the hyperprior, entropy
  models, likelihoods and losses stay float32 (``models.base.float32_entropy``). On CUDA, float32 matmuls and
  convolutions may use TF32 in either mode.

``channels_last`` stores activations NHWC, which oneDNN (CPU) and cuDNN convolutions often prefer. ``compile``
runs the training forward through ``torch.compile`` (one to two minutes of compilation on 2 CPU cores before the
first step). The measured speed of every combination is in docs/benchmarks/training-throughput.md; the defaults
are what the equal-time A/B in docs/experiments/precision-ab.md adopted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "cuda:N")
#: adopted by the equal-time A/B (docs/experiments/precision-ab.md): bf16 reached a lower rate-distortion cost
DEFAULT_PRECISION = "auto"
DEFAULT_CHANNELS_LAST = False
DEFAULT_COMPILE = False


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU. ``cuda`` without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch sees no CUDA GPU (torch {torch.__version__})")
    return device


@dataclass(frozen=True)
class Compute:
    """A trainer's device, precision and memory format, applied the same way to models, batches and steps."""

    device: torch.device
    precision: str = "fp32"  # resolved: never "auto"
    channels_last: bool = DEFAULT_CHANNELS_LAST
    compile: bool = DEFAULT_COMPILE

    @classmethod
    def create(cls, device: str = "auto", precision: str = DEFAULT_PRECISION,
               channels_last: bool = DEFAULT_CHANNELS_LAST, compile: bool = DEFAULT_COMPILE) -> "Compute":
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        resolved = resolve_device(device)
        if precision == "auto":
            precision = "bf16" if native_bf16(resolved) else "fp32"
        compute = cls(resolved, precision, bool(channels_last), bool(compile))
        if compute.device.type == "cuda":
            torch.cuda.set_device(compute.device)
            # TF32 keeps float32's range with a 10-bit mantissa in matmuls/convolutions: the usual safe speed-up
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True  # fixed crop shapes: let cuDNN pick its fastest kernels once
        return compute

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def model(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device, memory_format=self.memory_format)

    def forward(self, module: torch.nn.Module):
        """What the training step calls: the module itself, or its compiled forward (the module keeps its other
        methods, such as ``aux_loss``, for the caller)."""
        return torch.compile(module) if self.compile else module

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    @property
    def log_every(self) -> int:
        """Steps between loss readouts: reading a loss value waits for the GPU to finish, on the CPU it is free."""
        return 1 if self.device.type == "cpu" else 10

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def describe(self) -> dict:
        """What the weights' training record keeps about where they trained."""
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"device": self.device.type, "device_name": name, "precision": self.precision,
                "channels_last": self.channels_last, "compile": self.compile, "threads": torch.get_num_threads()}
