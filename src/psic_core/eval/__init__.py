"""Evaluation: metrics, baselines, BD-rates and the one-command report (``python -m psic_core.eval``)."""


def main(argv=None, prog: str = "python -m psic_core.eval") -> int:
    """Run the evaluation (see ``psic_core.eval.report``); ``prog`` names the command in help and in the report."""
    from .report import main as _main

    return _main(argv, prog)


__all__ = ["main"]
