"""Benchmarks: the project's paths against their physical limits and usual alternatives.

Run ``venv/bin/python -m bench`` from the repository root (see ``bench/__main__.py``).
Benchmarks are not tests: nothing here asserts on time; docs/benchmarks.md records
the figures with the machine they came from.
"""
