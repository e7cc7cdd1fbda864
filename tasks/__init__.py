"""Prefect tasks: thin wrappers that add caching, retries and logging around docqa's plain stage functions."""
