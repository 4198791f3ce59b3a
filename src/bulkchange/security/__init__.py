"""Security: secrets encrypted at rest, one redaction layer, API keys, transport checks, webhook verification.

See docs/security.md for the threat model and what each module protects.
"""
