"""Backups of a MySQL/MariaDB cluster to S3-compatible storage, binlog archiving and
point-in-time restore (issue 14).

A package of its own, beside `components`, because it runs inside the pods (the backup Job,
the binlog archiver, the restore step) and must not drag in pulumi; like `distlock`, it never
imports pulumi.
"""
