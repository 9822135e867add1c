"""The epoch a failover writes (arbiter._failover.failover_epoch): newer than the record's,
and growing with every grant of the lock, whichever backend numbered the grants."""

from __future__ import annotations

import itertools

import pytest

from arbiter._failover import FailoverStopped, failover_epoch


def test_etcd_the_token_is_the_epoch() -> None:
    # Revisions of the store `pulumi up` locks in too: the same numbering as its epochs.
    assert failover_epoch("etcd", 5_000, 4_321) == 5_000


def test_etcd_a_token_not_newer_than_the_record_stops_the_failover() -> None:
    with pytest.raises(FailoverStopped, match="lock token 4321 is not newer"):
        failover_epoch("etcd", 4_321, 4_321)


def test_kubernetes_a_record_ahead_of_the_locks_counter_does_not_stop_the_failover() -> None:
    # A Lock counts from 1; `pulumi up` without etcd wrote record + 1, or etcd revisions.
    assert failover_epoch("kubernetes", 1, 1) == 2
    assert failover_epoch("kubernetes", 3, 100_000) == 100_003


def test_kubernetes_successive_grants_write_ever_newer_epochs() -> None:
    """Grants in order (tokens growing from any counter value); each reads the record
    the last grant that wrote left, or the same one when the last stopped before it."""
    for start, first, writes in itertools.product((0, 1, 7, 100_000), (1, 50),
                                                   itertools.product((True, False), repeat=6)):
        recorded, epochs = start, []
        for token, wrote in enumerate(writes, start=first):
            epoch = failover_epoch("kubernetes", token, recorded)
            assert epoch > recorded
            epochs.append(epoch)
            if wrote:
                recorded = epoch
        assert epochs == sorted(set(epochs)), (start, first, writes, epochs)
