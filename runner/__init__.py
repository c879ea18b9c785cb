"""Gantry's compute plane: a runner dials out to the control plane and runs task attempts."""

__version__ = "0.1.0"
