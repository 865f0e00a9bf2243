"""``python -m scripts.export``."""

from ..cli import run_command
from .command import main

run_command(main)
