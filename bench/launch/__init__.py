"""Launching workers: many on one machine (:mod:`bench.launch.local`), a Slurm job array
(:mod:`bench.launch.slurm`) or submitit jobs (:mod:`bench.launch.submitit`).

Every launcher starts the same ``bench grid FILE`` / ``bench study FILE`` worker a terminal
would; the workers share the study through its storage exactly as hand-started ones do.
What a launcher adds is placement (a GPU and a share of the cores per worker), one view of
the progress, and stopping them all cleanly. Nothing here is imported by ``bench --help``.
"""
