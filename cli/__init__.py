"""The `tailor` command line: thin wiring over the stage packages, no logic of its own."""

import os

# LightGBM's OpenMP threads sleep while they wait instead of spinning: on a machine whose
# cores other work shares, spinning threads starve the ones they wait for (the recs ranker's
# fits took 160 s instead of 35 s beside two other busy processes). Read once, when the
# OpenMP runtime loads: before anything imports LightGBM.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
