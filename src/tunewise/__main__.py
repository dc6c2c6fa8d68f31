"""``python -m tunewise``."""

from .cli import main

main()
