"""A corekv client written with pycapnp from the schema file alone.

Usage: python3 tests/python/pycapnp_client.py HOST PORT [big-reply]

Exercises every method of the CoreKv interface against a running server and prints `ok` on
success; any mismatch raises (non-zero exit). With `big-reply`, checks instead that a batch
whose results would exceed what a client reads with default settings (64 MiB) is answered
within it. pycapnp runs with its default reader limits throughout. Run by
tests/tests/other_clients.rs.
"""

import asyncio
import os
import sys

import capnp

SCHEMA = os.path.join(os.path.dirname(__file__), "..", "..", "proto", "schema", "corekv.capnp")
corekv = capnp.load(SCHEMA)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def main(host, port):
    stream = await capnp.AsyncIoStream.create_connection(host=host, port=port)
    client = capnp.TwoPartyClient(stream)
    kv = client.bootstrap().cast_as(corekv.CoreKv)

    topo = (await kv.topology()).topology
    check(topo.hash == "fnv1a64-fmix64-jump-v1", f"hash {topo.hash}")
    check(len(topo.shards) == topo.shardCount, "one entry per shard")

    r = (await kv.put(key=b"py:\x00bin", value=b"v\xff", ttlMs=0)).result
    check(r.which() == "write" and r.write.sequence > 0, f"put: {r}")
    written = r.write.sequence
    r = (await kv.get(key=b"py:\x00bin")).result
    check(r.which() == "get" and r.get.found and r.get.value == b"v\xff", f"get: {r}")
    check(r.get.sequence == written, f"get reports the put's sequence {written}: {r}")

    # A CAS can expect the version instead of the value.
    cas = corekv.CasOp.new_message(key=b"py:\x00bin", ttlMs=0)
    cas.expected.sequence = written + 1000
    cas.new.value = b"no"
    r = (await kv.cas(op=cas)).result
    check(not r.cas.succeeded and r.cas.sequence == written, f"cas on a stale version: {r}")
    cas.expected.sequence = written
    cas.new.value = b"v\xff"
    r = (await kv.cas(op=cas)).result
    check(r.cas.succeeded and r.cas.sequence > written, f"cas on the version read: {r}")
    r = (await kv.get(key=b"py:missing")).result
    check(r.which() == "get" and not r.get.found, f"missing get: {r}")

    cas = corekv.CasOp.new_message(key=b"py:cas", ttlMs=0)
    cas.expected.absent = None
    cas.new.value = b"one"
    r = (await kv.cas(op=cas)).result
    check(r.which() == "cas" and r.cas.succeeded, f"cas from absent: {r}")
    r = (await kv.cas(op=cas)).result
    check(r.which() == "cas" and not r.cas.succeeded and r.cas.current.value == b"one",
          f"cas mismatch: {r}")

    ops = []
    for i in range(10):
        op = corekv.Op.new_message()
        op.init("put")
        op.put.key = b"py:batch:%d" % i
        op.put.value = b"%d" % i
        ops.append(op)
    get_op = corekv.Op.new_message()
    get_op.init("get")
    get_op.get.key = b"py:batch:3"
    ops.append(get_op)
    results = (await kv.batch(ops=ops)).results
    check(len(results) == 11, "one result per op")
    check(all(results[i].which() == "write" for i in range(10)), "batch writes")
    check(results[10].get.value == b"3", f"batch read-your-write: {results[10]}")

    scan = corekv.ScanOp.new_message(start=b"py:batch:", end=b"py:batch;", limit=4, reverse=False)
    seen = []
    while True:
        page = (await kv.scan(op=scan)).result
        check(page.which() == "scan", f"scan: {page}")
        seen += [bytes(e.key) for e in page.scan.entries]
        if not page.scan.more:
            break
        scan.start = page.scan.continuation
    check(seen == [b"py:batch:%d" % i for i in range(10)], f"scan saw {seen}")

    r = (await kv.delete(key=b"py:batch:0")).result
    check(r.which() == "write", f"delete: {r}")
    r = (await kv.get(key=b"py:batch:0")).result
    check(not r.get.found, "deleted key is gone")

    r = (await kv.put(key=b"", value=b"x", ttlMs=0)).result
    check(r.which() == "error" and r.error.code == "emptyKey", f"typed error: {r}")

    info = (await kv.serverInfo()).info
    check(info.protocolVersion == 1 and info.shardCount == topo.shardCount, f"info: {info}")
    check(info.limits.keyBytesMax == 16384 and info.durability == "sync", f"info: {info}")

    stats = (await kv.stats()).stats
    check(len(stats.shards) == topo.shardCount, "stats for every shard")
    names = {c.name for c in stats.shards[0].counters}
    check("calls_total" in names, f"counters: {names}")
    print("ok")


async def big_reply(host, port):
    """9 gets of one 8 MiB value (every request limit holds) plus a put: the reply keeps within
    64 MiB by answering the gets that do not fit with `batchTooLarge`; the put is applied."""
    stream = await capnp.AsyncIoStream.create_connection(host=host, port=port)
    client = capnp.TwoPartyClient(stream)
    kv = client.bootstrap().cast_as(corekv.CoreKv)
    big = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    r = (await kv.put(key=b"py:big", value=big, ttlMs=0)).result
    check(r.which() == "write", f"put of 8 MiB: {r.which()}")

    ops = []
    for _ in range(9):
        op = corekv.Op.new_message()
        op.init("get")
        op.get.key = b"py:big"
        ops.append(op)
    op = corekv.Op.new_message()
    op.init("put")
    op.put.key = b"py:big:put"
    op.put.value = b"applied"
    ops.append(op)
    results = list((await kv.batch(ops=ops)).results)
    check(len(results) == 10, "one result per op")
    kinds = [r.which() for r in results]
    served = [r for r in results[:9] if r.which() == "get"]
    refused = [r for r in results[:9] if r.which() == "error"]
    check(len(served) + len(refused) == 9, f"results: {kinds}")
    check(len(served) >= 1 and len(refused) >= 1, f"results: {kinds}")
    check(kinds[:len(served)] == ["get"] * len(served), f"served first: {kinds}")
    check(all(r.get.found and r.get.value == big for r in served), "served values are whole")
    for r in refused:
        e = r.error
        check(e.code == "batchTooLarge", f"code {e.code}")
        check(e.limit < 64 * 1024 * 1024 and e.actual > e.limit, f"limit {e.limit} actual {e.actual}")
    check(kinds[9] == "write", f"the put in the batch: {kinds[9]}")

    # The connection is still usable, and the put was applied.
    r = (await kv.get(key=b"py:big:put")).result
    check(r.which() == "get" and r.get.value == b"applied", f"get after: {r.which()}")
    print("ok")


if __name__ == "__main__":
    run = big_reply if sys.argv[3:] == ["big-reply"] else main
    asyncio.run(capnp.run(run(sys.argv[1], int(sys.argv[2]))))
