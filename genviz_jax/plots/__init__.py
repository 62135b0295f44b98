"""matplotlib figures (Agg backend): decision boundaries, landscapes, basins, sharpness, report."""

import matplotlib

matplotlib.use("Agg")
