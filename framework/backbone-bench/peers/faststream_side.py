"""FastStream's side of `backbone-bench peers` (run by the bench in a venv it makes under target/).

    python faststream_side.py publish BOOTSTRAP TOPIC N LINGER_MS
    python faststream_side.py consume BOOTSTRAP TOPIC N

Publishes N keyed 100-byte events (1,000 keys, acks=all + idempotence, murmur2 partitioner, as the
Rust sides) on its fastest path: every publish enqueued without waiting (`no_confirm=True`), then
every confirmation awaited. Consumes N events from the topic's beginning with a fresh group on a
batch subscriber (its fastest path), counting bytes. Prints one line: `RATE <messages per second>`
(first event to last, as the Rust sides measure).
"""

import asyncio
import sys
import time
import uuid

from faststream.confluent import KafkaBroker

PAYLOAD = b"x" * 100
KEYS = [f"order-{k:06}".encode() for k in range(1000)]


async def publish(bootstrap: str, topic: str, n: int, linger_ms: int) -> float:
    broker = KafkaBroker(
        bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        partitioner="murmur2_random",
        config={"queue.buffering.max.messages": n + 1, "batch.size": 1_000_000},
        logger=None,
    )
    await broker.connect()
    await broker.publish(PAYLOAD, topic, key=KEYS[0])  # connections, producer id, metadata
    started = time.perf_counter()
    pending = []
    for i in range(n):
        pending.append(await broker.publish(PAYLOAD, topic, key=KEYS[i % 1000], no_confirm=True))
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - started
    await broker.stop()
    return n / elapsed


async def consume(bootstrap: str, topic: str, n: int) -> float:
    broker = KafkaBroker(bootstrap, logger=None)
    seen = {"count": 0, "bytes": 0, "first": None, "last": None}
    done = asyncio.Event()

    @broker.subscriber(
        topic,
        group_id=f"faststream-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        batch=True,
        max_records=10_000,
    )
    async def count(messages: list[bytes]) -> None:
        if seen["first"] is None:
            seen["first"] = time.perf_counter()
        seen["count"] += len(messages)
        seen["bytes"] += sum(len(m) for m in messages)
        if seen["count"] >= n and not done.is_set():
            seen["last"] = time.perf_counter()
            done.set()

    await broker.start()
    await asyncio.wait_for(done.wait(), timeout=300)
    await broker.stop()
    return seen["count"] / (seen["last"] - seen["first"])


def main() -> None:
    what, bootstrap, topic, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if what == "publish":
        rate = asyncio.run(publish(bootstrap, topic, n, int(sys.argv[5])))
    else:
        rate = asyncio.run(consume(bootstrap, topic, n))
    print(f"RATE {rate:.0f}", flush=True)


if __name__ == "__main__":
    main()
