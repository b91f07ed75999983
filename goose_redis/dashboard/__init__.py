"""The live dashboard: one page and a small JSON API, for a gaggle (from Redis) or a standalone run."""
