"""Durable work: leased rows with one retry policy, and the worker loop that runs them by kind.

See ``spec`` for the shape every kind of work shares and ``statements`` for its state changes.
"""
