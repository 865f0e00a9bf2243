"""Python pieces of the Hermes universal segmentation bundle that MONAI does not provide.

The bundle configs import this package as ``scripts`` (MONAI bundles are run from the bundle folder).
"""
