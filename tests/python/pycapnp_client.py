"""A corekv client written with pycapnp from the schema file alone.

Usage: python3 tests/python/pycapnp_client.py HOST PORT

Exercises every method of the CoreKv interface against a running server and prints `ok` on
success; any mismatch raises (non-zero exit). Run by tests/tests/other_clients.rs.
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
    r = (await kv.get(key=b"py:\x00bin")).result
    check(r.which() == "get" and r.get.found and r.get.value == b"v\xff", f"get: {r}")
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

    stats = (await kv.stats()).stats
    check(len(stats.shards) == topo.shardCount, "stats for every shard")
    names = {c.name for c in stats.shards[0].counters}
    check("calls_total" in names, f"counters: {names}")
    print("ok")


if __name__ == "__main__":
    asyncio.run(capnp.run(main(sys.argv[1], int(sys.argv[2]))))
