"""Verizon ThingSpace M2M v1: the client (``client``), its wire models (``models``)."""
