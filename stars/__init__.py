"""STARS: self-supervised tuning for 3D skeleton action recognition on Ray."""

__version__ = "0.1.0"
