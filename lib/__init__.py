"""Parallel training for biomedical image captioning on PMC-OA.

Every stage is a function here and a subcommand of ``python -m lib``; notebooks
and SLURM scripts are thin views over the same calls.
"""

__version__ = "0.1.0"
