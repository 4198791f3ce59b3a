"""Pure domain rules: statuses, identifier validation, the carrier plan of a change, retry policy. No I/O."""
