"""Training: settings, nested subsets, the TRL/PEFT trainer with checkpoints, learning curves.

Import the submodules directly; this package imports nothing heavy (torch is only loaded by
``trainer`` when a training run starts).
"""
