"""Results: cache keys (value fingerprints, function snapshots, key assembly and explain),
atomic files, and the result caches and artifact stores (private)."""
