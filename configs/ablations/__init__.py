"""The study's ablations (Sections 4-5, Appendix G.3), each a small delta on configs/final.py.

Every file runs as `python -m mmprolong_jax.train --config configs/ablations/<file>.py[:<arg>]`
from the repository root; parametrised files list their arguments in `ARGS`.
"""
