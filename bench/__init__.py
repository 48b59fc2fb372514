"""Benchmarks for tower-trio, measured side by side with a peer in one run.

``python -m bench`` (``just bench``) measures the publisher against
aio-pika, ``POST /triggers`` against a FastAPI + uvicorn + aio-pika service
doing the same job, and the tower's CPU use while idle, then writes
``docs/benchmarks.md``. Absolute figures drift between runs on a shared
machine; the ratios, measured in the same run, are what to compare.
"""
