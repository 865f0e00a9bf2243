"""Built-in sample suite: real CT/MRI cases from the package registries, as NIfTI with a datalist and task registry.

No hub download works where this bundle is tested, but PyPI and Debian do, and two packages carry real images:
the pyradiomics 3.0.1 source tarball (chest CT, brain and breast MRI with lesion masks, NRRD) and Debian
``mricron-data`` (the Colin27 T1 with the AAL atlas drawn on it). A seeded synthetic PET dataset covers the modality
no package ships. ``ensure_sample_suite`` builds the suite once into a cache folder and reuses it after;
``make_phantom_datasets`` writes the synthetic CT datasets of the learning checks. Command line, from ``bundle/``:
``python -m scripts.sample_suite [--root DIR] [--phantoms DIR]``.

Modules: ``catalogue`` (what the suite contains), ``sources`` (fetching and checking the packages), ``conversion``
(to NIfTI through MONAI's readers and the bundle's NIfTI writer), ``build`` (writing the suite), ``cache`` (the
folder: claiming, locking, reuse), ``phantom_datasets`` (the learning-check phantoms), ``phantom_increments`` (old
and new phantom datalists for learning after release).
"""

from .cache import default_datalist, default_root, ensure_sample_suite
from .errors import SampleDataError
from .phantom_datasets import make_phantom_datasets
from .phantom_increments import make_increment_datalists

__all__ = [
    "SampleDataError",
    "default_datalist",
    "default_root",
    "ensure_sample_suite",
    "make_increment_datalists",
    "make_phantom_datasets",
]
