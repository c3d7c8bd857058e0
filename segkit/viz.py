"""Figures: label colouring, prediction panels, loss curves, confusion matrices, instance overlays.

Every function returns a ``matplotlib.figure.Figure`` (and never calls ``plt.show``), so notebooks
display it and scripts save it with ``fig.savefig``.
"""

from __future__ import annotations

import matplotlib

if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline",):
    pass
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["Figure", "np", "plt"]
