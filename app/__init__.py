"""Gantry's control plane: API, pages, authentication, scheduling and central state."""
