"""Application services: what the entry points (``api``, ``cli``) call to read and act on bulk changes.

A service may use ``engine``, ``integrations``, ``store`` and ``domain``; it never imports ``api`` or
``cli``. Its results are plain data classes that the entry points render (JSON, HTML, a terminal table).
"""
