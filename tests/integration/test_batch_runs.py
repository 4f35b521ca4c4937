"""A batch's items on both databases: bulk insert, set-based claims, one write of outcomes
guarded by RUNNING, a redelivery taking over only unfinished items, and the end decided once
(finq_core.batches and batch_runs, without a broker)."""

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from finq_core import batch_runs, batches, broker
from finq_core.config import get_settings
from finq_core.db import EncodedJSON, make_engine
from finq_core.errors import QuotaExceeded
from finq_core.migrate import upgrade
from finq_core.models import Batch, BatchEvent, TaskStatus
from finq_core.timeutil import utcnow

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('batches')}/batches.db"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with sessionmaker(engine, expire_on_commit=False)() as s:
        yield s


def new_batch(session: Session, n: int, size: int) -> uuid.UUID:
    request = batches.BatchRequest(
        type="loan_amortization",
        base={"annual_rate": 0.05, "years": 1},
        vary={"principal": [1000 + i for i in range(n)]},
    )
    varied, params = batches.validated(request, get_settings())
    batch = Batch(
        id=uuid.uuid4(),
        owner="alice",
        type="loan_amortization",
        status=TaskStatus.PENDING.value,
        priority="normal",
        varied=varied,
        total=n,
        chunk_size=size,
        chunks=(n + size - 1) // size,
        next_chunk=0,
        max_retries=1,
        created_at=utcnow(),
    )
    session.add(batch)
    session.flush()
    batches._insert_items(session, batch.id, size, params)
    session.commit()
    return batch.id


def succeed(idxs: list[int]) -> list[batch_runs.Outcome]:
    return [
        batch_runs.Outcome(i, TaskStatus.SUCCESS.value, result=EncodedJSON(b'{"payment": 1.5}'))
        for i in idxs
    ]


def test_items_are_inserted_in_bulk_with_their_chunks(session: Session) -> None:
    bid = new_batch(session, 12_345, 200)
    assert batch_runs.counts(session, bid) == {"PENDING": 12_345}
    last = session.execute(
        select(batch_runs.ITEMS.c.chunk, batch_runs.ITEMS.c.params).where(
            batch_runs.ITEMS.c.batch_id == bid, batch_runs.ITEMS.c.idx == 12_344
        )
    ).one()
    assert last.chunk == 61 and last.params["principal"] == 1000 + 12_344


def test_a_chunk_is_claimed_once_and_its_outcomes_written_once(session: Session) -> None:
    bid = new_batch(session, 10, 4)
    claim = batch_runs.claim_chunk(session, bid, 1, take_over=False)
    assert claim is not None and [r.idx for r in claim.items] == [4, 5, 6, 7]
    again = batch_runs.claim_chunk(session, bid, 1, take_over=False)
    assert again is not None and list(again.items) == []  # a duplicate message finds nothing
    assert session.scalar(select(Batch.status).where(Batch.id == bid)) == "RUNNING"
    batch_runs.finish_items(session, bid, succeed([4, 5]), utcnow())
    batch_runs.finish_items(session, bid, succeed([4]), utcnow())  # already final: ignored
    # The worker died here: the redelivery takes over 6 and 7 only.
    taken = batch_runs.claim_chunk(session, bid, 1, take_over=True)
    assert taken is not None and [r.idx for r in taken.items] == [6, 7]
    assert batch_runs.counts(session, bid) == {"PENDING": 6, "RUNNING": 2, "SUCCESS": 2}


def test_an_item_lost_too_often_fails_alone(session: Session) -> None:
    bid = new_batch(session, 3, 3)
    batch_runs.claim_chunk(session, bid, 0, take_over=False)  # attempt 1, lost
    batch_runs.claim_chunk(session, bid, 0, take_over=True)  # attempt 2, lost
    claim = batch_runs.claim_chunk(session, bid, 0, take_over=True)
    assert claim is not None and claim.lost == 3 and list(claim.items) == []
    assert batch_runs.end_if_done(session, bid) == "FAILED"


def test_released_items_run_again_and_the_batch_ends_exactly_once(session: Session) -> None:
    bid = new_batch(session, 4, 4)
    batch_runs.claim_chunk(session, bid, 0, take_over=False)
    batch_runs.finish_items(session, bid, succeed([0, 1]), utcnow())
    batch_runs.release(session, bid, [2, 3])
    assert batch_runs.end_if_done(session, bid) is None
    claim = batch_runs.claim_chunk(session, bid, 0, take_over=False)
    assert claim is not None and [r.idx for r in claim.items] == [2, 3]
    batch_runs.finish_items(session, bid, succeed([2, 3]), utcnow())
    assert batch_runs.end_if_done(session, bid) == "SUCCESS"
    assert batch_runs.end_if_done(session, bid) is None
    ended = session.scalars(
        select(BatchEvent.status).where(BatchEvent.batch_id == bid).order_by(BatchEvent.id)
    ).all()
    assert list(ended) == ["RUNNING", "SUCCESS"]  # started, ended: once each


def test_a_pump_that_loses_the_race_for_the_frontier_sends_the_next_chunk_too(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two chunks end at once and both pumps pick chunk 1: the one whose compare-and-set
    fails sends chunk 2, so the batch keeps its chunks in flight."""
    bid = new_batch(session, 12, 3)
    sent: list[int] = []

    def racing_send(batch_id: str, chunk: int, priority: str) -> None:
        sent.append(chunk)
        if len(sent) == 1:  # the other pump sends chunk 1 and moves the frontier first
            session.execute(update(Batch).where(Batch.id == bid).values(next_chunk=chunk + 1))

    monkeypatch.setattr(broker, "enqueue_chunk", racing_send)
    assert batch_runs.pump(session, bid, "normal", 1) == 1
    assert sent == [0, 1]
    assert session.scalar(select(Batch.next_chunk).where(Batch.id == bid)) == 2


def test_ended_batches_past_their_lifetime_are_purged_with_their_items(session: Session) -> None:
    old, young = new_batch(session, 3, 3), new_batch(session, 3, 3)
    for bid in (old, young):
        batch_runs.claim_chunk(session, bid, 0, take_over=False)
        batch_runs.finish_items(session, bid, succeed([0, 1, 2]), utcnow())
        batch_runs.end_if_done(session, bid)
    cutoff = utcnow()
    session.execute(
        update(Batch).where(Batch.id == old).values(finished_at=cutoff - timedelta(days=1))
    )
    session.commit()
    assert batch_runs.purge_ended(session, cutoff - timedelta(hours=1), limit=100) == 1
    assert session.get(Batch, old) is None and batch_runs.counts(session, old) == {}
    assert batch_runs.counts(session, young) == {"SUCCESS": 3}


def test_the_items_of_unfinished_batches_count_against_the_owners_quota(
    session: Session,
) -> None:
    settings = get_settings().model_copy(update={"quota_batch_items": 10})
    owner = f"quota-{uuid.uuid4().hex[:6]}"
    bid = new_batch(session, 6, 3)
    session.execute(update(Batch).where(Batch.id == bid).values(owner=owner))
    session.commit()
    batches.check_batch_quota(session, owner, 4, settings)
    with pytest.raises(QuotaExceeded, match="QUOTA_BATCH_ITEMS"):
        batches.check_batch_quota(session, owner, 5, settings)
    session.execute(update(Batch).where(Batch.id == bid).values(status="SUCCESS"))
    session.commit()
    batches.check_batch_quota(session, owner, 10, settings)  # an ended batch holds no room


def test_a_chunk_out_of_time_goes_back_as_two_chunks_that_each_run_once(session: Session) -> None:
    bid = new_batch(session, 10, 10)
    claim = batch_runs.claim_chunk(session, bid, 0, take_over=False)
    assert claim is not None and len(claim.items) == 10
    batch_runs.finish_items(session, bid, succeed([0, 1, 2]), utcnow())
    again = batch_runs.split_release(session, bid, 0, [3, 4, 5, 6, 7, 8, 9])
    assert again == [0, 1]  # the batch had one chunk: the new one is chunk 1
    first = batch_runs.claim_chunk(session, bid, 0, take_over=False)
    second = batch_runs.claim_chunk(session, bid, 1, take_over=False)
    assert first is not None and [r.idx for r in first.items] == [3, 4, 5]
    assert second is not None and [r.idx for r in second.items] == [6, 7, 8, 9]
    assert session.scalar(select(Batch.chunks).where(Batch.id == bid)) == 2
    batch_runs.finish_items(session, bid, succeed([3, 4, 5, 6, 7, 8, 9]), utcnow())
    assert batch_runs.end_if_done(session, bid) == "SUCCESS"
    assert batch_runs.counts(session, bid) == {"SUCCESS": 10}
