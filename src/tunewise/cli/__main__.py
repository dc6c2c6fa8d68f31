"""``python -m tunewise.cli``."""

from . import main

main()
