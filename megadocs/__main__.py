"""`python -m megadocs ...`: the console script as a module, for launchers that run modules
(`torchrun --nproc-per-node=N -m megadocs train CONFIG.yaml`)."""

import sys

from megadocs.cli import main

if __name__ == "__main__":
    sys.exit(main())
