"""Executors run task attempts: ``local`` (processes on this host) and, later, ``kubernetes``."""
