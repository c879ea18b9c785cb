"""Piccolo migrations of the gantry app: generated, then read by a person; never edited once landed."""
