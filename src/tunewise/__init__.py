"""tunewise: should we prompt-engineer or fine-tune? Measured on one frozen split."""

__version__ = "0.1.0"
