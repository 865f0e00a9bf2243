"""Segmenting a user's own scans with the bundle's ``inference`` workflow (configs/inference.json).

The config declares the network, preprocessing, sliding-window inferer and inversion; these modules hold only
what MONAI lacks: collecting inputs, reading DICOM series, choosing tasks and modality, running case by case
with clear errors, and writing native-space outputs.
"""
