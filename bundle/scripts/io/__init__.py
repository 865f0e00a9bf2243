"""The bundle's one I/O layer: atomic writes, JSON, checkpoints, NIfTI output, image readers and case names.

Every workflow writes through :mod:`.atomic` (one permission policy: outputs are readable like any other file the
user creates) and reads scans through :mod:`.readers`, so training, inference, evaluation and the sample suite see
the same geometry.
"""
