"""Python pieces of the Hermes universal segmentation bundle that MONAI does not provide.

The bundle configs import this package as ``scripts`` (MONAI bundles are run from the bundle folder). Importing it
installs the one-line error report of ``scripts.cli``.
"""

from .cli import install_error_report

install_error_report()
