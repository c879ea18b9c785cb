"""The audit log: every state-changing request, who made it, how, on what, and how it ended.

``middleware`` records requests as their answer starts, ``service`` writes and reads rows,
``api`` and ``views`` show them to holders of ``audit:Read`` (DESIGN.md §9).
"""
