"""Tools run from the repository root (scripts/pulumi_inline.py); the shell scripts beside."""
