"""Evaluation of the bundle's segmentations against labels: per-task Dice, HD95 and NSD in native and 1.5 mm space.

``configs/evaluate.json`` wires these modules onto the inference pieces of ``configs/inference.json``:
``cases`` (labelled datalist, bad items reported), ``scoring`` (one case in both spaces), ``metrics`` (MONAI metrics
with the empty-mask conventions), ``tables`` (CSV and markdown) and ``runner`` (the case-by-case loop).
"""
