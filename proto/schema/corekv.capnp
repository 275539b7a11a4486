# corekv wire protocol, version 1.
#
# This file is the public contract of corekv. Any Cap'n Proto RPC implementation (C++, Rust,
# Python's pycapnp, Go, ...) can talk to a corekv server from this file alone:
#
#   1. Connect over TCP to the server's main port (default 127.0.0.1:7379) or to one shard's
#      own port (main port + 1 + shard id, see `topology`).
#   2. Start a two-party RPC session; the server is the bootstrap side and serves `CoreKv`.
#   3. Call methods on the bootstrap capability.
#
# Any shard answers for any key: a request for a key owned by another shard is forwarded to it
# inside the server. A shard-aware client computes the owner with the hash named in
# `Topology.hash` (documented in docs/ARCHITECTURE.md, with test vectors in
# proto/testdata/shard_vectors.txt) and sends the request to the owner's port, saving a hop.
#
# Errors: a problem with one operation (a key too large, a full disk, ...) comes back as an `Error`
# inside its `OpResult`, and the connection stays usable. A CAS whose expectation does not hold is
# not an error: it is a `CasResult` with `succeeded = false`.
# RPC exceptions are reserved for protocol failures (malformed messages, the server going away);
# a client should treat them as "the outcome of this call is unknown".
#
# Keys and values are arbitrary bytes. Keys must be non-empty. Size limits are the server's
# (defaults: keys 16 KiB, values 8 MiB, a batch 10 000 operations and 64 MiB of keys and values
# in total) and are reported in `Error`. A single message (frame) larger than 80 MiB, garbage
# bytes, or a malformed message are protocol failures: the server closes that connection (and
# counts it in `stats`).
#
# Replies: every reply fits what a Cap'n Proto implementation reads with its default settings
# (a 64 MiB message): a `batch` whose results would not is answered in part (see `batch`).
#
# Order: calls on one connection that touch the same key take effect in the order they were
# sent, whether or not the earlier ones have been answered (as pipelined Redis commands do): a
# `get` sent right after an unanswered `put` of its key sees that put, a `put` sent after an
# unanswered `get` does not change what the `get` returns, and a `scan` sees every write sent
# before it on its connection. Calls on different keys, or on different connections, are not
# ordered until one is answered: an answered write is seen by every call sent after the answer,
# on any connection.
#
# Flow control: the server stops reading a connection that has too many operations in flight
# (default 4096) until some complete. Pipelining is encouraged; it never needs unbounded buffers.
#
# Stopping: on SIGTERM or SIGINT the server stops reading requests, and every request it has
# already read gets its reply before the connection closes: the result of those that ran, and
# `shuttingDown` (not applied) for those that had not started. A request the server did not
# read (sent after it stopped reading, or cut off mid-message) gets no reply, only the closed
# connection, and is not applied.
#
# Durability: a write result (`WriteResult`, a successful `CasResult`) is sent only after the write
# is as durable as the server's durability mode promises (`sync`, the default: on stable storage).

@0xf81a68850bf30f90;

interface CoreKv {
  # The bootstrap interface. Every method answers one `OpResult` (or a list of them for `batch`).

  get @0 (key :Data) -> (result :OpResult);
  # Reads the newest value of `key`. Result: `get` (found or not, and the value's sequence
  # number) or `error`.

  put @1 (key :Data, value :Data, ttlMs :UInt64) -> (result :OpResult);
  # Writes `value` under `key`. `ttlMs` > 0 makes the entry expire that many milliseconds after
  # the server applies it; expired entries are invisible to reads. 0 means no expiry; more than
  # 100 years (3153600000000) is `invalidArgument`.
  # Result: `write` (the write's sequence number within its shard) or `error`.

  delete @2 (key :Data) -> (result :OpResult);
  # Removes `key`. Deleting a missing key succeeds. Result: `write` or `error`.

  cas @3 (op :CasOp) -> (result :OpResult);
  # Compare-and-set, atomic with respect to every other write to the key. Result: `cas` (whether
  # it applied, and the value it found when it did not) or `error`.

  scan @4 (op :ScanOp) -> (result :OpResult);
  # Ordered range read over `[start, end)` across all shards (the server asks every shard and
  # merges). Keys are ordered as unsigned bytes, shorter first on a common prefix (memcmp order).
  # A scan is one call per page and the server keeps nothing between calls: each page reads the
  # state when its own call runs (every write acknowledged before the call is seen; writes
  # concurrent with it may or may not be), so a scan continued over several pages may see writes
  # made between them. Nothing fixes a view for later pages, and `limit` may differ from page
  # to page. Result: `scan` or `error`.

  batch @5 (ops :List(Op)) -> (results :List(OpResult));
  # Many independent operations in one call: `results[i]` answers `ops[i]`. The operations are
  # NOT a transaction: each succeeds or fails on its own, and operations on different keys may be
  # applied in any order. Operations on the same key are applied in list order (a `get` after a
  # `put` of its key in the same batch sees that put). A scan in a batch sees the state at some
  # point during the batch.
  # Two limits give `batchTooLarge`, with different effects:
  # - Too many operations, or too many key and value bytes in the request: every result is
  #   `batchTooLarge` and nothing is applied (`Error.limit`/`actual`: operations, or bytes).
  # - A reply too large (results over about 60 MiB, see `Error`): every operation runs, writes
  #   included, and the results are encoded in order; each result that carries data (a `get`
  #   value, scan entries, a failed `cas`'s current value) and would take the reply past the
  #   limit is replaced by `batchTooLarge` (`limit`: the reply limit in bytes; `actual`: the
  #   reply size in bytes it would have reached). Repeat those reads in another call.
  # This is the fast path: one call amortises the per-call cost over many operations.

  topology @6 () -> (topology :Topology);
  # How keys map to shards and where each shard listens.

  stats @7 () -> (stats :Stats);
  # Counters of every shard (requests, forwarded requests, WAL syncs, engine figures, ...).

  serverInfo @8 () -> (info :ServerInfo);
  # What the server is and every limit it enforces, so that a client learns the limits
  # without hitting them.

  # Entities and counters. An entity is a value made of named columns, stored under its key in
  # the encoding documented in proto/src/entity.rs (a plain `get` returns those bytes; a `put`
  # of them makes an entity). Column operations are applied inside the shard that owns the
  # key, atomically with respect to every other write to it, in one call: two clients updating
  # different columns of one key never lose each other's update.

  putEntity @9 (op :PutEntityOp) -> (result :OpResult);
  # Replaces whatever `key` held with an entity of these columns. Result: `write` or `error`.

  updateColumns @10 (op :UpdateColumnsOp) -> (result :OpResult);
  # Sets some columns and removes others of the entity under `key`; the other columns are
  # unchanged. Creates the entity if the key has no live value. Result: `write` or `error`
  # (`wrongType` if the key holds a plain value).

  getColumns @11 (op :GetColumnsOp) -> (result :OpResult);
  # Reads the named columns (all, when `names` is empty) of the entity under `key`.
  # Result: `columns` or `error` (`wrongType` if the key holds a plain value).

  increment @12 (op :IncrementOp) -> (result :OpResult);
  # Adds `delta` to a counter and answers its new value. Result: `increment` or `error`
  # (`wrongType` if what it addresses is not a counter; `invalidArgument` on overflow).

  transferLeader @13 (shard :UInt32, to :UInt64) -> (error :Error);
  # In a cluster: makes node `to` the leader of shard `shard`'s Raft group (an operator's move
  # before maintenance, as `etcdctl move-leader`). Send it to the group's current leader (any
  # shard port of that node); another replica answers `notLeader` naming the leader. The
  # leader refuses writes meanwhile (`notLeader`, as in an election), brings `to` up to date
  # and hands over; the call answers when `to` leads. `error` is unset on success (also when `to` already
  # leads); otherwise `notLeader`, `invalidArgument` (no such shard, `to` is not a replica, not
  # a cluster), `shuttingDown`, or `overloaded` after two election timeouts without `to`
  # leading: the transfer is given up, though `to` may still take over (see `topology`).
}

struct Op {
  # One operation, as carried in `batch`.
  union {
    get @0 :GetOp;
    put @1 :PutOp;
    delete @2 :DeleteOp;
    cas @3 :CasOp;
    scan @4 :ScanOp;
    putEntity @5 :PutEntityOp;
    updateColumns @6 :UpdateColumnsOp;
    getColumns @7 :GetColumnsOp;
    increment @8 :IncrementOp;
  }
}

struct GetOp {
  key @0 :Data;
}

struct PutOp {
  key @0 :Data;
  value @1 :Data;
  ttlMs @2 :UInt64;
  # 0 = no expiry.
}

struct DeleteOp {
  key @0 :Data;
}

struct CasOp {
  # Atomically: if the current state of `key` matches `expected`, replace it with `new`.
  key @0 :Data;
  expected :union {
    absent @1 :Void;
    # Succeeds only if the key has no live value.
    value @2 :Data;
    # Succeeds only if the key's live value equals these bytes.
    sequence @6 :UInt64;
    # Succeeds only if the key's live value is the one written with this sequence number (as
    # `GetResult.sequence` or `WriteResult.sequence` reported it): the value need not be sent
    # back, and a change to another value and back (ABA) is seen as a change. 0 (no write has
    # it) succeeds only if the key has no live value, as `absent`.
  }
  new :union {
    value @3 :Data;
    # Write this value ...
    delete @4 :Void;
    # ... or remove the key.
  }
  ttlMs @5 :UInt64;
  # Expiry of the new value, as in `PutOp`; must be 0 when `new` is `delete`.
}

struct ScanOp {
  # Bounds longer than the key limit plus one byte (a continuation is a key plus one byte) are
  # `invalidArgument`, as is `start` > `end` when `end` is set.
  start @0 :Data;
  # Inclusive lower bound. Empty = from the first key.
  end @1 :Data;
  # Exclusive upper bound. Empty = to the last key.
  limit @2 :UInt32;
  # Maximum entries returned; 0 means the server's default (1000), larger values are capped at
  # 10 000. The server may return fewer than `limit` (it caps a reply at about 4 MiB);
  # `ScanResult.more` tells whether to continue.
  reverse @3 :Bool;
  # false: ascending from `start`. true: descending from just below `end`.
}

struct Column {
  name @0 :Data;
  # Non-empty (a request with an empty column name is malformed); unique within an operation.
  value @1 :Data;
}

struct PutEntityOp {
  key @0 :Data;
  columns @1 :List(Column);
  # At least one, names unique (`invalidArgument` otherwise).
  ttlMs @2 :UInt64;
  # Expiry of the entity, as in `PutOp`.
}

struct UpdateColumnsOp {
  key @0 :Data;
  set @1 :List(Column);
  # Columns written (added or replaced).
  remove @2 :List(Data);
  # Columns removed (missing ones are ignored; names non-empty). A name may not be both set
  # and removed.
  # Removing the last column deletes the key.
  ttlMs @3 :UInt64;
  # Expiry of the whole entity from this write on, as in `PutOp` (0: none); an update does
  # not keep an earlier expiry.
}

struct GetColumnsOp {
  key @0 :Data;
  names @1 :List(Data);
  # The columns wanted (names non-empty); empty = all. Names the entity lacks are left out of
  # the result.
}

struct IncrementOp {
  # The counter is a signed 64-bit integer stored as ASCII decimal ("-12"), as Redis's INCR
  # keeps it (proto/src/entity.rs); an absent one counts as 0.
  key @0 :Data;
  column @1 :Data;
  # Empty: the counter is the key's whole value. Otherwise: this column of the entity under
  # `key` (created if the key has no live value).
  delta @2 :Int64;
  ttlMs @3 :UInt64;
  # Expiry of the written value or entity from this write on, as in `UpdateColumnsOp`.
}

struct OpResult {
  union {
    error @0 :Error;
    get @1 :GetResult;
    write @2 :WriteResult;
    cas @3 :CasResult;
    scan @4 :ScanResult;
    columns @5 :ColumnsResult;
    increment @6 :IncrementResult;
  }
}

struct ColumnsResult {
  found @0 :Bool;
  # Whether the key has a live value (an entity). When not, `columns` is empty.
  columns @1 :List(Column);
  # In ascending name order.
  sequence @2 :UInt64;
  # When `found`: the sequence number of the write that stored the entity.
}

struct IncrementResult {
  value @0 :Int64;
  # The counter after this increment.
  sequence @1 :UInt64;
  # The write's sequence number.
}

struct GetResult {
  found @0 :Bool;
  value @1 :Data;
  # Meaningful only when `found`.
  sequence @2 :UInt64;
  # When `found`: the sequence number of the write that stored this value (what
  # `WriteResult.sequence` answered that write, and what `CasOp.expected.sequence` takes).
}

struct WriteResult {
  sequence @0 :UInt64;
  # The write's sequence number in the shard that owns the key; grows with every write there,
  # and every write has its own (also within a `batch`). A `get` of a value this write stored
  # reports it as `GetResult.sequence`.
}

struct CasResult {
  succeeded @0 :Bool;
  sequence @1 :UInt64;
  # When `succeeded`: the write's sequence number. Otherwise: the sequence number of the
  # value found (`current`), 0 when absent — what a retry can expect with `expected.sequence`.
  current :union {
    # When not `succeeded`: what the key held instead.
    absent @2 :Void;
    value @3 :Data;
  }
}

struct ScanResult {
  entries @0 :List(KeyValue);
  # In ascending key order for a forward scan, descending for a reverse scan.
  more @1 :Bool;
  # true if the range may hold entries beyond those returned.
  continuation @2 :Data;
  # When `more`: a forward scan continues with `start = continuation`; a reverse scan continues
  # with `end = continuation`. Other fields stay the same.
}

struct KeyValue {
  key @0 :Data;
  value @1 :Data;
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;
  # Human-readable: what happened and what the caller can do.
  limit @2 :UInt64;
  # For the *TooLarge codes, the server's limit; `actual` is the same quantity for this request.
  # The unit depends on the code (0 for the other codes):
  # - `keyTooLarge`: bytes of the key.
  # - `valueTooLarge`: bytes of the value (of `expected` or `new` for a `cas`).
  # - `batchTooLarge`, request over its operation count: operations in the batch.
  # - `batchTooLarge`, request over its byte size: key and value bytes in the batch.
  # - `batchTooLarge`, reply over its size: bytes of results in the reply (`actual` is the
  #   size the reply would have reached with this result).
  # The message names which.
  actual @3 :UInt64;
  leader @4 :UInt64;
  # With `notLeader`: the node id of the shard's leader as the replica knows it (0: none known,
  # during an election).
  leaderAddress @5 :Text;
  # With `notLeader` and a known leader: its client address, `host:port` (empty when this
  # replica has not learned it yet). Send the operation there.
}

enum ErrorCode {
  internal @0;
  # A bug in the server; the message says more.
  emptyKey @1;
  keyTooLarge @2;
  valueTooLarge @3;
  batchTooLarge @4;
  # Too many operations or bytes in one `batch`.
  invalidArgument @5;
  # For example a scan with start > end.
  io @6;
  # The storage failed (I/O error, disk full). The write was NOT applied.
  readOnly @7;
  # The shard refuses writes after an unrecoverable storage error, until it is restarted.
  overloaded @8;
  # A bound was reached (write stall, queue full). Retry later.
  shuttingDown @9;
  # The server is stopping; the operation was not applied.
  corruption @10;
  # Stored data failed its checksum; the message names the file and offset.
  wrongType @11;
  # The key holds another kind of value than the operation needs: a column operation on a
  # plain value, an increment of bytes that are not a counter. Nothing was changed.
  notLeader @12;
  # A replicated shard's operation reached a replica that is not its group's leader (or the
  # leader lost its leadership before answering a read). Nothing was applied. The message
  # names the leader's node id when this replica knows it (none during an election), and
  # `Error.leader` / `Error.leaderAddress` say where it is; retry on the leader, or after a short
  # wait.
  outcomeUnknown @13;
  # A replicated write may or may not have been applied: the replica stopped (or lost its
  # leadership) after proposing it and before learning its outcome. Read the key to find out.
}

struct Topology {
  shardCount @0 :UInt32;
  hash @1 :Text;
  # Name of the key -> shard function, for example "fnv1a64-fmix64-jump-v1" (docs/ARCHITECTURE.md).
  shards @2 :List(ShardInfo);
  # Indexed by shard id.
}

struct ShardInfo {
  id @0 :UInt32;
  host @1 :Text;
  # The address the shard listens on. An unspecified address (`0.0.0.0` or `::`) means "all
  # interfaces": connect to the host you used to reach the server.
  port @2 :UInt16;
  # The shard's own port: requests sent there are served by this shard without forwarding.
  leader @3 :UInt64;
  # In a cluster: the node id of the shard's Raft leader as the answering node knows it (0: none
  # known, or not a cluster).
  replicas @4 :List(Replica);
  # In a cluster: every node holding a replica of the shard (empty when not a cluster).
}

struct Replica {
  node @0 :UInt64;
  # The node's id.
  host @1 :Text;
  port @2 :UInt16;
  # The node's client address for this shard (empty host: the answering node has not learned it
  # yet; it learns each peer's when the peer connects to it).
}

struct Stats {
  shards @0 :List(ShardStats);
}

struct ShardStats {
  id @0 :UInt32;
  counters @1 :List(Counter);
  # Names are stable, snake_case, with units. The server's own (docs/ARCHITECTURE.md lists them
  # all) include `calls_total`, `ops_total`, `ops_forwarded_out_total` (operations this shard sent
  # to their owner), `ops_forwarded_in_total` (operations it served for another shard),
  # `connections_open`, `protocol_errors_total`; the storage engine's follow (for example
  # `wal_syncs_total`, `memtable_bytes`).
}

struct Counter {
  name @0 :Text;
  value @1 :UInt64;
}

struct ServerInfo {
  version @0 :Text;
  # The server's release, for example "0.1.0".
  protocolVersion @1 :UInt32;
  # The version of this schema the server speaks (1). Fields and methods are only added
  # within a version.
  nodeId @2 :UInt64;
  # This node's id in its cluster; 0 for a single server.
  durability @3 :Text;
  # When a write is acknowledged: "sync" (on stable storage), "periodic:<ms>" (written, synced
  # at least every <ms>), or "none" (in memory; the log is written in the background).
  shardCount @4 :UInt32;
  limits @5 :Limits;
}

struct Limits {
  # Every limit the server enforces on a request (see `Error` for what exceeding each does).
  keyBytesMax @0 :UInt64;
  valueBytesMax @1 :UInt64;
  batchOpsMax @2 :UInt64;
  # Operations in one `batch`.
  batchBytesMax @3 :UInt64;
  # Key and value bytes in one `batch`.
  replyBytesMax @4 :UInt64;
  # Bytes of results in one `batch` reply.
  scanLimitDefault @5 :UInt32;
  # Entries a scan page holds when `ScanOp.limit` is 0.
  scanLimitMax @6 :UInt32;
  scanPageBytesMax @7 :UInt64;
  # A scan page stops growing past about this many key and value bytes (it holds at least one
  # entry).
  ttlMsMax @8 :UInt64;
  frameBytesMax @9 :UInt64;
  # Largest incoming message; a larger one closes the connection.
  connectionInflightOpsMax @10 :UInt64;
  # Operations in flight on one connection before the server stops reading it.
}
