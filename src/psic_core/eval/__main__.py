"""``python -m psic_core.eval``: see ``psic_core.eval.report``."""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import main  # noqa: E402

sys.exit(main())
