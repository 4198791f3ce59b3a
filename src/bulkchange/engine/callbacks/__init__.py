"""Carrier callbacks: admitted by the gate, stored by group commit (intake), applied in batches (applier).

A callback only settles the change it is bound to — its provider's, its requestId, its step (``matching``);
what it says about that change is the carrier adapter's verdict (``ReceivesCallbacks``).
"""
