"""One project's loop: the cycle (cycle.py) and the steps it runs (poll, schema_change,
publish), plus pruning (prune.py), which the service runs beside cycles."""
