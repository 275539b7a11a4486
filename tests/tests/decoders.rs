//! Every decoder that reads bytes from disk or the network, over arbitrary bytes: WAL
//! segments and records, write batches, SSTable blocks, footers and filters, manifest edits
//! and logs (`corekv_storage::fuzz`), the server's request decoding (`corekv_proto::fuzz`:
//! frame, RPC message, each method's parameters), and peer frames of Raft messages
//! (`corekv_server::replication::wire::fuzz_decode`, which also checks that what decodes
//! round-trips) and the commands their entries carry (`replication::commands::fuzz_decode`).
//! None may panic, loop, or make an allocation larger than a small multiple of its input.
//! A seeded random loop on the stable toolchain: real files written by the engine, real
//! requests, peer frames and entry commands, slices of them, and mutants (flipped bits, extreme
//! length and pointer fields, truncations, splices), plus plain random bytes.
//! The cargo-fuzz targets in `tests/fuzz/` run the same entry points for as long as one likes
//! (docs/RELIABILITY.md).
//!
//! `COREKV_FUZZ_SEED=<n>` replays a run, `COREKV_FUZZ_ITERATIONS=<n>` makes it longer,
//! `COREKV_FUZZ_CORPUS=<dir>` also writes the real files, requests and peer frames there as
//! seeds for the cargo-fuzz targets.

// Test code: a failed step should panic the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use capnp::message::Builder;
use corekv_proto::codec;
use corekv_proto::corekv_capnp::core_kv;
use corekv_proto::{CasOp, GetColumnsOp, IncrementOp, Op, PutEntityOp, ScanOp, UpdateColumnsOp};
use corekv_server::replication::group::ENTRY_TIME_BYTES;
use corekv_server::replication::{commands, wire};
use corekv_server::shard::local::RequestOp;
use corekv_storage::{Engine, Options, WriteBatch, fuzz};
use corekv_tests::test_dir;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Counts the largest single allocation of the current thread, to show decoders allocate in
/// proportion to their input (a length field read from disk must not size an allocation).
struct Counting;

thread_local! {
    static LARGEST_ALLOCATION_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST_ALLOCATION_BYTES.try_with(|m| {
        if size > m.get() {
            m.set(size);
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; `note` only updates a
// thread-local counter that needs no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above; `ptr` came from this allocator, which is `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

type Decoder = (&'static str, fn(&[u8]));

const DECODERS: [Decoder; 12] = [
    ("wal_segment", fuzz::wal_segment),
    ("wal_record", fuzz::wal_record),
    ("write_batch", fuzz::write_batch),
    ("sst_block", fuzz::sst_block),
    ("sst_footer", fuzz::sst_footer),
    ("sst_filter", fuzz::sst_filter),
    ("manifest_edit", fuzz::manifest_edit),
    ("manifest_log", fuzz::manifest_log),
    ("request", corekv_proto::fuzz::request),
    ("entity", corekv_proto::fuzz::entity),
    ("peer_frame", wire::fuzz_decode),
    ("entry_command", commands::fuzz_decode),
];

/// Largest allocation a decoder may make for `len` input bytes, beyond what it makes for no
/// input at all: a few times the input (copies of keys, values, filter words), plus a constant
/// (Cap'n Proto's segment table: at most 512 segments of 16 bytes).
fn allocation_bound_bytes(len: usize) -> usize {
    4 * len + (16 << 10)
}

/// What a request may allocate beyond that: a batch reserves room for the operations its list
/// declares, up to the server's `batch_ops_max` (10 000); a list of empty structs declares many
/// in a few bytes, so this does not scale with the frame. It is bounded, and the server charges
/// every declared operation to the connection's in-flight limit before decoding.
const REQUEST_BATCH_RESERVE_BYTES: usize = 10_000 * std::mem::size_of::<Op>();

/// Real files: an engine with tiny memtables writes puts, deletes, batches and TTLs until it
/// has WAL segments, tables at two levels and a manifest; returns every file's bytes.
fn real_files() -> Vec<(String, Vec<u8>)> {
    let dir = test_dir("decoders");
    let path = dir.path().to_path_buf();
    let engine = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let options = Options {
                memtable_size_bytes_max: 4096,
                wal_segment_size_bytes: 64 << 10,
                block_size_bytes: 512,
                ..Options::default()
            };
            let e = Engine::open(&path, options).await.unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            for i in 0..600u32 {
                let key = format!("key-{:04}", rng.gen_range(0..300u32)).into_bytes();
                match i % 7 {
                    0 => {
                        e.delete(&key).await.unwrap();
                    }
                    1 => {
                        let mut b = WriteBatch::new();
                        b.put(&key, b"batched").delete(b"key-0001");
                        b.put_with_ttl(b"ttl", &[1; 10], Duration::from_secs(3600));
                        e.write(b).await.unwrap();
                    }
                    _ => {
                        let value = vec![b'a' + (i % 26) as u8; rng.gen_range(0..200)];
                        e.put(&key, &value).await.unwrap();
                    }
                }
            }
            e.close().await.unwrap();
        });
    engine.unwrap().join().unwrap();
    let mut files = Vec::new();
    collect(dir.path(), &mut files);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for kind in [".sst", "MANIFEST-", ".log"] {
        assert!(
            names.iter().any(|n| n.contains(kind)),
            "no {kind} file: {names:?}"
        );
    }
    files
}

/// Stored values the column operations decode: entities and counters.
fn real_values() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for n in 0..4usize {
        let columns = (0..n)
            .map(|i| (format!("field{i}").into_bytes(), vec![b'v'; i * 7]))
            .collect();
        out.push((
            format!("entity-{n}"),
            corekv_proto::entity::encode(&columns),
        ));
    }
    for v in [0, -7, i64::MAX] {
        out.push((
            format!("counter{v}"),
            corekv_proto::entity::encode_counter(v),
        ));
    }
    out
}

/// A random key of the real requests and commands.
fn random_key(rng: &mut ChaCha8Rng) -> Vec<u8> {
    format!("key-{}", rng.gen_range(0..1000)).into_bytes()
}

/// A random entity of one to three columns.
fn random_entity(rng: &mut ChaCha8Rng) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..rng.gen_range(1..4))
        .map(|i| {
            (
                format!("field{i}").into_bytes(),
                vec![b'x'; rng.gen_range(0..50)],
            )
        })
        .collect()
}

/// One operation of each kind a `batch` call or a Raft entry's command carries.
fn every_kind_of_op(rng: &mut ChaCha8Rng) -> Vec<Op> {
    vec![
        Op::Get {
            key: random_key(rng),
        },
        Op::Put {
            key: random_key(rng),
            value: b"v".to_vec(),
            ttl_ms: 0,
        },
        Op::Delete {
            key: random_key(rng),
        },
        Op::PutEntity(PutEntityOp {
            key: random_key(rng),
            columns: random_entity(rng),
            ttl_ms: 0,
        }),
        Op::UpdateColumns(UpdateColumnsOp {
            key: random_key(rng),
            set: random_entity(rng),
            remove: vec![b"gone".to_vec()],
            ttl_ms: 9,
        }),
        Op::GetColumns(GetColumnsOp {
            key: random_key(rng),
            names: vec![b"field0".to_vec()],
        }),
        Op::Increment(IncrementOp {
            key: random_key(rng),
            column: b"n".to_vec(),
            delta: -3,
            ttl_ms: 0,
        }),
    ]
}

/// Real requests: the parameters of every method, each as a frame of its own and wrapped in
/// an RPC call message, as a client sends them.
fn real_requests(rng: &mut ChaCha8Rng) -> Vec<(String, Vec<u8>)> {
    let key = random_key;
    let entity = random_entity;
    let mut out = Vec::new();
    for method in (0..=7u16).chain(9..=12) {
        let mut params = Builder::new_default();
        {
            let root = params.init_root::<capnp::any_pointer::Builder<'_>>();
            match method {
                0 => root
                    .init_as::<core_kv::get_params::Builder<'_>>()
                    .set_key(&key(rng)),
                1 => {
                    let mut p = root.init_as::<core_kv::put_params::Builder<'_>>();
                    p.set_key(&key(rng));
                    p.set_value(&vec![7; rng.gen_range(0..100)]);
                    p.set_ttl_ms(rng.r#gen());
                }
                2 => root
                    .init_as::<core_kv::delete_params::Builder<'_>>()
                    .set_key(&key(rng)),
                3 => codec::write_cas_op(
                    root.init_as::<core_kv::cas_params::Builder<'_>>().init_op(),
                    &CasOp {
                        key: key(rng),
                        expected: corekv_proto::Expected::Value(b"old".to_vec()),
                        new: Some(b"new".to_vec()),
                        ttl_ms: 5,
                    },
                ),
                4 => codec::write_scan_op(
                    root.init_as::<core_kv::scan_params::Builder<'_>>()
                        .init_op(),
                    &ScanOp {
                        start: key(rng),
                        end: key(rng),
                        limit: 10,
                        reverse: rng.r#gen(),
                    },
                ),
                5 => {
                    let ops = every_kind_of_op(rng);
                    let p = root.init_as::<core_kv::batch_params::Builder<'_>>();
                    let mut list = p.init_ops(ops.len() as u32);
                    for (i, op) in ops.iter().enumerate() {
                        codec::write_op(list.reborrow().get(i as u32), op);
                    }
                }
                6 => {
                    root.init_as::<core_kv::topology_params::Builder<'_>>();
                }
                9 => codec::write_put_entity_op(
                    root.init_as::<core_kv::put_entity_params::Builder<'_>>()
                        .init_op(),
                    &PutEntityOp {
                        key: key(rng),
                        columns: entity(rng),
                        ttl_ms: 0,
                    },
                ),
                10 => codec::write_update_columns_op(
                    root.init_as::<core_kv::update_columns_params::Builder<'_>>()
                        .init_op(),
                    &UpdateColumnsOp {
                        key: key(rng),
                        set: entity(rng),
                        remove: vec![b"field9".to_vec()],
                        ttl_ms: 0,
                    },
                ),
                11 => codec::write_get_columns_op(
                    root.init_as::<core_kv::get_columns_params::Builder<'_>>()
                        .init_op(),
                    &GetColumnsOp {
                        key: key(rng),
                        names: vec![b"field1".to_vec(), b"field2".to_vec()],
                    },
                ),
                12 => codec::write_increment_op(
                    root.init_as::<core_kv::increment_params::Builder<'_>>()
                        .init_op(),
                    &IncrementOp {
                        key: key(rng),
                        column: Vec::new(),
                        delta: rng.r#gen(),
                        ttl_ms: 0,
                    },
                ),
                _ => {
                    root.init_as::<core_kv::stats_params::Builder<'_>>();
                }
            }
        }
        out.push((
            format!("params-{method}"),
            capnp::serialize::write_message_to_words(&params),
        ));
        let mut msg = Builder::new_default();
        {
            let root = msg.init_root::<capnp_rpc::rpc_capnp::message::Builder<'_>>();
            let mut call = root.init_call();
            call.set_question_id(rng.r#gen());
            call.set_interface_id(0x84fa_a17e_9403_d511);
            call.set_method_id(method);
            let content = params
                .get_root_as_reader::<capnp::any_pointer::Reader<'_>>()
                .unwrap();
            call.init_params().get_content().set_as(content).unwrap();
        }
        out.push((
            format!("call-{method}"),
            capnp::serialize::write_message_to_words(&msg),
        ));
    }
    out
}

/// Real peer frame bodies (what `wire::read_frame` returns): a hello, and batches of Raft
/// messages of every type with entries of every type, contexts and a snapshot with its
/// membership.
fn real_peer_frames(rng: &mut ChaCha8Rng) -> Vec<(String, Vec<u8>)> {
    let body = |frame: Vec<u8>| frame[wire::FRAME_PREFIX_BYTES..].to_vec();
    let mut out = vec![(
        "peer-hello".to_string(),
        body(wire::encode_hello(&wire::Hello {
            protocol_version: wire::PEER_PROTOCOL_VERSION,
            cluster_id: rng.r#gen(),
            from_node: 1,
            to_node: 2,
            shard: 3,
            shard_count: 4,
        })),
    )];
    let types = [
        MessageType::MsgAppend,
        MessageType::MsgAppendResponse,
        MessageType::MsgRequestVote,
        MessageType::MsgHeartbeat,
        MessageType::MsgSnapshot,
        MessageType::MsgReadIndex,
        MessageType::MsgRequestPreVoteResponse,
    ];
    let mut messages = Vec::new();
    for (i, msg_type) in types.into_iter().enumerate() {
        let entries: Vec<Entry> = (0..i as u64)
            .map(|n| Entry {
                entry_type: [
                    EntryType::EntryNormal,
                    EntryType::EntryConfChange,
                    EntryType::EntryConfChangeV2,
                ][n as usize % 3],
                term: 5,
                index: 100 + n,
                data: vec![b'd'; rng.gen_range(0..40)].into(),
                context: vec![b'c'; rng.gen_range(0..3)].into(),
                ..Entry::default()
            })
            .collect();
        let mut m = Message {
            msg_type,
            to: 2,
            from: 1,
            term: 5,
            log_term: 4,
            index: 99,
            entries: entries.into(),
            commit: 98,
            commit_term: 4,
            reject: i % 2 == 1,
            reject_hint: rng.r#gen(),
            context: vec![b'x'; i].into(),
            priority: -1,
            ..Message::default()
        };
        if msg_type == MessageType::MsgSnapshot {
            let mut s = Snapshot {
                data: vec![b's'; 64].into(),
                ..Snapshot::default()
            };
            s.mut_metadata().index = 97;
            s.mut_metadata().term = 4;
            s.mut_metadata().set_conf_state(ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                voters_outgoing: vec![1, 2],
                learners_next: vec![5],
                auto_leave: true,
                ..ConfState::default()
            });
            m.set_snapshot(s);
        }
        out.push((
            format!("peer-{msg_type:?}"),
            body(wire::encode_messages(std::slice::from_ref(&m)).unwrap()),
        ));
        messages.push(m);
    }
    out.push((
        "peer-batch".to_string(),
        body(wire::encode_messages(&messages).unwrap()),
    ));
    out
}

/// Real Raft entry commands (an entry's data after its time): plain writes with and without
/// TTLs and deletes, and Cap'n Proto commands of every kind of operation.
fn real_entry_commands(rng: &mut ChaCha8Rng) -> Vec<(String, Vec<u8>)> {
    let keys: Vec<Vec<u8>> = (0..6)
        .map(|i| format!("key-{i}-{}", rng.gen_range(0..1000)).into_bytes())
        .collect();
    let value = vec![b'v'; rng.gen_range(0..100)];
    let plain: Vec<RequestOp<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| match i % 3 {
            0 => RequestOp::Put {
                key,
                value: &value,
                ttl_ms: 0,
            },
            1 => RequestOp::Put {
                key,
                value: &value,
                ttl_ms: rng.gen_range(1..100_000),
            },
            _ => RequestOp::Delete { key },
        })
        .collect();
    let payload = plain
        .iter()
        .map(|op| match op {
            RequestOp::Put { key, value, .. } => key.len() + value.len(),
            RequestOp::Delete { key } => key.len(),
            RequestOp::Other(_) => 0,
        })
        .sum();
    let entry = commands::encode_plain_writes(&plain, payload).unwrap();
    let mut out = vec![(
        "command-plain-writes".to_string(),
        entry[ENTRY_TIME_BYTES..].to_vec(),
    )];
    let general = every_kind_of_op(rng);
    out.push(("command-ops".to_string(), commands::encode_ops(&general)));
    out
}

/// Seeds for the cargo-fuzz targets: `<dir>/<target>/<name>` (docs/RELIABILITY.md).
/// `frames` holds the requests and the peer frames, told apart by name.
fn write_corpus(dir: &Path, files: &[(String, Vec<u8>)], frames: &[(String, Vec<u8>)]) {
    let (peer, requests): (Vec<_>, Vec<_>) = frames
        .iter()
        .cloned()
        .partition(|(n, _)| n.starts_with("peer-"));
    let (commands, requests): (Vec<_>, Vec<_>) = requests
        .into_iter()
        .partition(|(n, _)| n.starts_with("command-"));
    for (name, _) in DECODERS {
        let target = dir.join(name);
        std::fs::create_dir_all(&target).unwrap();
        let seeds = match name {
            "request" => &requests[..],
            "peer_frame" => &peer[..],
            "entry_command" => &commands[..],
            _ => files,
        };
        for (file, bytes) in seeds {
            std::fs::write(target.join(file), bytes).unwrap();
        }
    }
    eprintln!("decoders: seeds written to {dir:?}");
}

fn collect(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.file_name().unwrap().to_string_lossy().into(), bytes));
        }
    }
}

/// A mutant of a Cap'n Proto frame: whole 8-byte words (pointers: offsets, list lengths,
/// struct sizes; the segment table) replaced by extreme or random values, or byte mutants.
fn mutate_words(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    if d.len() < 8 || rng.gen_bool(0.3) {
        return mutate(rng, &d);
    }
    for _ in 0..rng.gen_range(1..4) {
        let w = rng.gen_range(0..d.len() / 8) * 8;
        let v: u64 = [
            0,
            u64::MAX,
            rng.r#gen(),
            // A struct or list pointer with a huge offset or element count.
            0xffff_fffc | (u64::from(rng.r#gen::<u32>()) << 32),
            1 | (0xffff_ffff << 35),
            u64::from(rng.r#gen::<u32>()) << 32,
        ][rng.gen_range(0..6)];
        d[w..w + 8].copy_from_slice(&v.to_le_bytes());
    }
    d
}

/// A mutant of `seed`: bit flips, extreme 32-bit values (length and count fields), a cut,
/// a spliced copy of a range, or several of these.
fn mutate(rng: &mut ChaCha8Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..rng.gen_range(1..4) {
        if d.is_empty() {
            d.extend((0..rng.gen_range(1..64)).map(|_| rng.r#gen::<u8>()));
            continue;
        }
        match rng.gen_range(0..5) {
            0 => {
                for _ in 0..rng.gen_range(1..8) {
                    let i = rng.gen_range(0..d.len());
                    d[i] ^= 1 << rng.gen_range(0..8);
                }
            }
            1 if d.len() >= 4 => {
                let i = rng.gen_range(0..d.len() - 3);
                let v: u32 = [
                    0,
                    1,
                    u32::MAX,
                    u32::MAX / 2,
                    0x8000_0000,
                    d.len() as u32,
                    d.len() as u32 + 1,
                    rng.r#gen(),
                ][rng.gen_range(0..8)];
                d[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            2 => d.truncate(rng.gen_range(0..d.len())),
            3 => {
                let a = rng.gen_range(0..d.len());
                let b = rng.gen_range(a..=d.len().min(a + 256));
                let at = rng.gen_range(0..=d.len());
                let copy = d[a..b].to_vec();
                d.splice(at..at, copy);
            }
            _ => {
                let i = rng.gen_range(0..d.len());
                d[i] = [0x00, 0x7f, 0x80, 0xff][rng.gen_range(0..4)];
            }
        }
    }
    d
}

/// The inputs: each real file, its tail (footers), random slices (blocks, records, edits),
/// mutants of all of these, and random bytes.
fn inputs(
    rng: &mut ChaCha8Rng,
    files: &[(String, Vec<u8>)],
    requests: &[(String, Vec<u8>)],
    count: usize,
) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(count);
    for (_, f) in files {
        out.push(f.clone());
        out.push(f[f.len().saturating_sub(64)..].to_vec());
    }
    out.extend(requests.iter().map(|(_, r)| r.clone()));
    while out.len() < count {
        let input = match rng.gen_range(0..13) {
            10..=12 => {
                let r = &requests[rng.gen_range(0..requests.len())].1;
                mutate_words(rng, r)
            }
            0 => (0..rng.gen_range(0..512))
                .map(|_| rng.r#gen::<u8>())
                .collect(),
            1..=3 => {
                let f = &files[rng.gen_range(0..files.len())].1;
                let a = rng.gen_range(0..f.len());
                let b = rng.gen_range(a..=f.len().min(a + 8192));
                f[a..b].to_vec()
            }
            _ => {
                let f = &files[rng.gen_range(0..files.len())].1;
                // Mutate a whole small file, or a slice of a large one (a block, a record).
                let seed = if f.len() <= 8192 || rng.gen_bool(0.2) {
                    &f[..]
                } else {
                    let a = rng.gen_range(0..f.len());
                    &f[a..f.len().min(a + rng.gen_range(16..8192))]
                };
                mutate(rng, seed)
            }
        };
        out.push(input);
    }
    out
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

#[test]
fn decoders_survive_arbitrary_bytes_without_panics_loops_or_large_allocations() {
    let seed = env_u64("COREKV_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let count = env_u64("COREKV_FUZZ_ITERATIONS").unwrap_or(3000) as usize;
    eprintln!("decoders: seed {seed} (replay with COREKV_FUZZ_SEED={seed}), {count} inputs");
    let mut files = real_files();
    files.extend(real_values());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Network frames: client requests and peer frames, seeds for the word mutants.
    let mut requests = real_requests(&mut rng);
    requests.extend(real_peer_frames(&mut rng));
    requests.extend(real_entry_commands(&mut rng));
    if let Some(dir) = std::env::var_os("COREKV_FUZZ_CORPUS") {
        write_corpus(Path::new(&dir), &files, &requests);
    }
    let inputs = inputs(&mut rng, &files, &requests, count);

    // The decoders run on their own thread; a decoder that loops never reports back. The
    // watchdog is generous (minutes): it detects hangs, it does not time anything.
    let (tx, rx) = mpsc::channel::<Result<usize, String>>();
    let worker = std::thread::spawn(move || {
        let mut baseline = [0usize; DECODERS.len()];
        for (d, (_, decode)) in DECODERS.iter().enumerate() {
            LARGEST_ALLOCATION_BYTES.with(|m| m.set(0));
            decode(&[]);
            baseline[d] = LARGEST_ALLOCATION_BYTES.with(Cell::get);
        }
        for (n, input) in inputs.iter().enumerate() {
            for (d, (name, decode)) in DECODERS.iter().enumerate() {
                LARGEST_ALLOCATION_BYTES.with(|m| m.set(0));
                let r = std::panic::catch_unwind(|| decode(input));
                let largest = LARGEST_ALLOCATION_BYTES.with(Cell::get);
                let problem = if r.is_err() {
                    Some("panicked".to_string())
                } else if largest
                    > baseline[d]
                        + allocation_bound_bytes(input.len())
                        + if *name == "request" {
                            REQUEST_BATCH_RESERVE_BYTES
                        } else {
                            0
                        }
                {
                    Some(format!(
                        "allocated {largest} bytes at once for {} input bytes",
                        input.len()
                    ))
                } else {
                    None
                };
                if let Some(p) = problem {
                    let head: Vec<String> =
                        input.iter().take(64).map(|b| format!("{b:02x}")).collect();
                    let _ = tx.send(Err(format!(
                        "{name} {p} on input {n} ({} bytes, starts {})",
                        input.len(),
                        head.join("")
                    )));
                    return;
                }
            }
            let _ = tx.send(Ok(n));
        }
    });
    let mut done = 0;
    loop {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(Ok(n)) => done = n + 1,
            Ok(Err(problem)) => panic!("seed {seed}: {problem}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("seed {seed}: a decoder has not returned for 5 minutes on input {done}")
            }
        }
    }
    worker.join().unwrap();
    assert_eq!(done, count.max(done), "every input was decoded");
    eprintln!(
        "decoders: {done} inputs x {} decoders, all fine",
        DECODERS.len()
    );
}

/// Regression (found by the test above): a WAL payload whose header puts its last sequence
/// number past u64::MAX overflowed in replay (a panic in debug builds, a wrapped sequence in
/// release); it is damage like any other malformed header.
#[test]
fn a_wal_payload_whose_sequence_range_overflows_is_damage() {
    let mut payload = vec![0u8; 24];
    payload[0] = 1; // a write batch
    payload[4..8].copy_from_slice(&2u32.to_le_bytes());
    payload[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    payload.extend_from_slice(b"garbage operations");
    fuzz::wal_record(&payload);
    // count 0 (nothing to apply) is damage too.
    payload[4..8].copy_from_slice(&0u32.to_le_bytes());
    payload[8..16].copy_from_slice(&0u64.to_le_bytes());
    fuzz::wal_record(&payload);
}

/// Regression (found by the cargo-fuzz target `manifest_edit`): an edit adding a table numbered
/// u64::MAX overflowed computing the next file number; it is a contradiction like any other.
#[test]
fn a_manifest_edit_adding_table_u64_max_is_refused() {
    let input = [
        0x07, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1d, 0xff, 0x1d, 0xff,
        0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1d, 0xff, 0xff, 0xff, 0x1d, 0xff, 0xff,
        0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];
    fuzz::manifest_edit(&input);
}
