"""The paper, end to end: every experiment of Huang et al. 2019 on embedded data, as phases.

`run(config, workdir)` runs (or resumes) the phases (driver.py); `claims(results)` checks the
paper's claims against the measured numbers (claims.py); `write_outputs` writes
paper_summary.json and report.html (outputs.py). The phases: phases_training.py (decision,
minefield, circles, optimizers), phases_geometry.py (landscape, basin, sharpness),
phase_gap_sweep.py (Fig. 6). Config: genviz_jax/configs/paper.py.

Layout of WORKDIR: phases/*.json, figures/*.png|gif, runs/ (trainer workdirs: good, bad, and the
optimizer comparison), landscape/, basin/, report.html, paper_summary.json, paper_config.json.
"""

from genviz_jax.paper.claims import claims
from genviz_jax.paper.driver import PHASE_FNS, PHASES, run
from genviz_jax.paper.outputs import write_outputs
from genviz_jax.paper.phase_gap_sweep import sweep_values

__all__ = ["PHASES", "PHASE_FNS", "claims", "run", "sweep_values", "write_outputs"]
