//! Unit tests of the memtable: versions, pruning, the key filter, scans.

use super::*;

fn scan_keys(
    m: &Memtable,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
    rev: bool,
) -> (Vec<Vec<u8>>, bool) {
    let (e, more) = m.scan(start, end, limit, rev, u64::MAX, 0);
    (e.into_iter().map(|(k, _)| k).collect(), more)
}

/// Readers at exactly these sequence numbers.
fn readers(points: &[SeqNo]) -> impl Fn(SeqNo, SeqNo) -> bool + '_ {
    move |lo, hi| points.iter().any(|&r| lo <= r && r < hi)
}

const ALL: &dyn Fn(SeqNo, SeqNo) -> bool = &|_, _| true;
const NONE: &dyn Fn(SeqNo, SeqNo) -> bool = &|_, _| false;

#[test]
fn the_key_filter_keeps_every_key_through_its_rebuilds_and_rejects_most_others() {
    let mut m = Memtable::new();
    assert_eq!(m.get(b"nothing", u64::MAX, 0), None);
    let n = 20_000u64;
    for i in 0..n {
        let key = format!("key:{:012}", i * 2);
        m.insert(key.as_bytes(), i + 1, Some(key.as_bytes()), 0, NONE);
    }
    // 64 blocks doubled until 20,000 keys fit at 10 bits each.
    assert_eq!(m.filter.blocks.len(), 512);
    assert!(m.filter.keys_max() >= m.keys());
    for i in 0..n {
        let key = format!("key:{:012}", i * 2);
        assert_eq!(m.get(key.as_bytes(), u64::MAX, 0), Some(key.as_bytes()));
    }
    // Odd numbers were never written: the filter answers almost all of them alone.
    let passed = (0..n)
        .filter(|i| {
            let key = format!("key:{:012}", i * 2 + 1);
            assert_eq!(m.get(key.as_bytes(), u64::MAX, 0), None);
            m.filter
                .may_contain(crate::sst::filter::key_hash(key.as_bytes()))
        })
        .count();
    assert!(
        passed * 100 < n as usize * 3,
        "{passed} of {n} absent keys passed the filter"
    );
    // A key whose newest version is a tombstone is still the memtable's answer.
    m.insert(b"key:000000000000", n + 1, None, 0, NONE);
    assert_eq!(m.lookup(b"key:000000000000", u64::MAX, 0), Some(None));
}

#[test]
fn reads_see_the_newest_version_at_their_sequence() {
    let mut m = Memtable::new();
    m.insert(b"k", 1, Some(b"v1"), 0, ALL);
    m.insert(b"k", 2, Some(b"v2"), 0, ALL);
    m.insert(b"k", 3, None, 0, ALL);
    assert_eq!(m.get(b"k", 1, 0), Some(&b"v1"[..]));
    assert_eq!(m.get(b"k", 2, 0), Some(&b"v2"[..]));
    assert_eq!(m.get(b"k", 3, 0), None);
    assert_eq!(m.get(b"k", 0, 0), None);
    assert_eq!(m.versions(), 3);
}

#[test]
fn versions_no_reader_needs_are_pruned_and_bytes_follow() {
    let mut m = Memtable::new();
    m.insert(b"k", 1, Some(&[0; 100]), 0, NONE);
    let one = m.bytes();
    assert_eq!(one, write_cost_bytes(1, 100));
    // A reader at 1 still needs v1.
    m.insert(b"k", 2, Some(&[0; 100]), 0, &readers(&[1]));
    assert_eq!(m.versions(), 2);
    // Readers at 3 only: v1 and v2 go.
    m.insert(b"k", 3, Some(&[0; 100]), 0, &readers(&[3]));
    assert_eq!(m.versions(), 1);
    assert_eq!(m.bytes(), one);
    assert_eq!(m.get(b"k", 3, 0), Some(&[0u8; 100][..]));
    // Readers at 3 and 5: v3 (for 3) and v5 (for 5) stay, v4 goes, v6 is the newest.
    m.insert(b"k", 4, Some(b"4"), 0, &readers(&[3]));
    m.insert(b"k", 5, Some(b"5"), 0, &readers(&[3]));
    m.insert(b"k", 6, Some(b"6"), 0, &readers(&[3, 5]));
    assert_eq!(m.versions(), 3);
    assert_eq!(m.get(b"k", 3, 0), Some(&[0u8; 100][..]));
    assert_eq!(m.get(b"k", 4, 0), Some(&[0u8; 100][..]));
    assert_eq!(m.get(b"k", 5, 0), Some(&b"5"[..]));
    assert_eq!(m.get(b"k", 6, 0), Some(&b"6"[..]));
}

#[test]
fn a_pass_drops_the_versions_no_reader_needs_any_more_from_every_key() {
    let mut m = Memtable::new();
    for k in [&b"a"[..], b"b", b"c"] {
        m.insert(k, 1, Some(&[1; 100]), 0, NONE);
    }
    let base = m.bytes();
    // Each key rewritten while readers still read at 1 (the rewrites not yet published).
    m.insert(b"a", 2, Some(&[2; 100]), 0, &readers(&[1]));
    m.insert(b"b", 3, Some(&[3; 100]), 0, &readers(&[1]));
    m.insert(b"c", 4, Some(&[4; 100]), 0, &readers(&[1]));
    assert_eq!(m.versions(), 6);
    assert_eq!(m.older_bytes(), 3 * (VERSION_OVERHEAD_BYTES + 100));
    // Still needed: the pass keeps them.
    assert_eq!(m.prune(&readers(&[1])), 0);
    assert_eq!(m.versions(), 6);
    // A reader at 3 needs b's v3 and c's v1 (c's v4 is above it); a's v1 is needed by
    // nobody, nor is b's v1.
    let freed = m.prune(&readers(&[3]));
    assert_eq!(freed, 2 * (VERSION_OVERHEAD_BYTES + 100));
    assert_eq!(m.versions(), 4);
    assert_eq!(m.get(b"c", 3, 0), Some(&[1u8; 100][..]));
    assert_eq!(m.get(b"b", 3, 0), Some(&[3u8; 100][..]));
    // Everything published: one version per key, bytes as after the first writes.
    m.prune(&readers(&[4]));
    assert_eq!(m.versions(), 3);
    assert_eq!(m.older_bytes(), 0);
    assert_eq!(m.bytes(), base);
    for (k, v) in [(&b"a"[..], 2u8), (b"b", 3), (b"c", 4)] {
        assert_eq!(m.get(k, 4, 0), Some(&[v; 100][..]));
    }
}

#[test]
fn key_order_is_byte_order() {
    let keys: Vec<&[u8]> = vec![
        b"",
        b"\0",
        b"\0\0",
        b"a",
        b"a\0",
        b"a\0\x01",
        b"ab",
        b"abcdefgh",
        b"abcdefgh\0",
        b"abcdefghi",
        b"abcdefgi",
        b"abcdefghijklmnop",
        b"abcdefghijklmnop\0",
        b"abcdefghijklmnopq",
        b"abcdefghijklmnoq",
        b"key:000000000099",
        b"key:000000000100",
        b"key:0000000001000",
        b"b",
        b"\xff",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\x01",
    ];
    for a in &keys {
        for b in &keys {
            assert_eq!(
                MemKey::new(a).cmp(&MemKey::new(b)),
                a.cmp(b),
                "{a:?} vs {b:?}"
            );
        }
    }
}

#[test]
fn expired_values_read_as_absent() {
    let mut m = Memtable::new();
    m.insert(b"k", 1, Some(b"v"), 1000, ALL);
    assert_eq!(m.get(b"k", 1, 999), Some(&b"v"[..]));
    assert_eq!(m.get(b"k", 1, 1000), None);
    assert_eq!(m.scan(b"", None, 10, false, 1, 1000).0.len(), 0);
}

#[test]
fn scans_respect_bounds_limit_direction_and_more() {
    let mut m = Memtable::new();
    for (i, k) in [b"a", b"b", b"c", b"d", b"e"].iter().enumerate() {
        m.insert(*k, i as u64 + 1, Some(b"v"), 0, ALL);
    }
    m.insert(b"c", 6, None, 0, ALL);
    let k = |v: &[&[u8]]| v.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        scan_keys(&m, b"", None, 10, false),
        (k(&[b"a", b"b", b"d", b"e"]), false)
    );
    assert_eq!(
        scan_keys(&m, b"b", Some(b"e"), 10, false),
        (k(&[b"b", b"d"]), false)
    );
    assert_eq!(
        scan_keys(&m, b"b", Some(b"e"), 1, false),
        (k(&[b"b"]), true)
    );
    assert_eq!(
        scan_keys(&m, b"", Some(b"e"), 2, true),
        (k(&[b"d", b"b"]), true)
    );
    assert_eq!(
        scan_keys(&m, b"", Some(b"e"), 3, true),
        (k(&[b"d", b"b", b"a"]), false)
    );
    assert_eq!(scan_keys(&m, b"c", Some(b"c"), 3, false), (k(&[]), false));
    assert_eq!(scan_keys(&m, b"d", Some(b"b"), 3, true), (k(&[]), false));
    // A tombstone at the edge does not count as "more".
    assert_eq!(
        scan_keys(&m, b"b", Some(b"d"), 1, false),
        (k(&[b"b"]), false)
    );
}
