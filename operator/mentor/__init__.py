"""Mentor: a Kubernetes operator that trains and tunes models with torchrun."""

__version__ = "0.1.0"
