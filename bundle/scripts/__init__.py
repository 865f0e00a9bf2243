"""Python pieces of the Hermes universal segmentation bundle that MONAI does not provide.

The bundle configs import this package as ``scripts`` (MONAI bundles are run from the bundle folder). Importing it has
no side effects: the one-line error report of ``scripts.cli`` is installed by the workflows and commands a user runs.
"""
