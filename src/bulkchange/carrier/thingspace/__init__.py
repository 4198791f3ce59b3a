"""Verizon ThingSpace M2M v1.

``client`` speaks the REST API (tokens, login guard, retries, typed errors) with the wire models of
``models``; ``adapter`` puts it behind the carrier port (``ThingSpaceCarrier``, ``ThingSpaceSession``), with
its decisions in ``steps`` (plans, states), ``requests`` (request fields, batch keys), ``verdicts``
(outcomes of answers, reads and callbacks) and ``mirror`` (the ThingSpaceDevice* tables).
"""
