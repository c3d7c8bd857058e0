"""Figures: label colouring, prediction panels, loss curves, confusion matrices, instance overlays.

Every function returns a ``matplotlib.figure.Figure`` (and never calls ``plt.show``), so notebooks
display it and scripts save it with ``fig.savefig``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
