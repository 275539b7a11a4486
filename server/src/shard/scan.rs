//! Scans across shards: ask every shard for its first `limit` entries of the range, merge.
//!
//! Keys are spread over shards by hash, so every shard may hold part of any range. The first
//! `limit` entries of the whole range are among the union of each shard's first `limit`; the
//! merge sorts that union, keeps `limit` (and at most `scan_reply_bytes_max` bytes, but always
//! one entry), and says `more` if anything was left behind or any shard had more. The
//! continuation is the smallest bound that excludes what was returned: the last key plus a zero
//! byte for a forward scan, the last key itself (an exclusive end) for a reverse one.

use std::rc::Rc;

use corekv_proto::{Op, OpResult, ScanOp, ScanResult};

use super::Shard;
use crate::counters;
use crate::mesh::{Work, WorkResult};

/// One page of `op` over every shard.
pub async fn scan(shard: &Rc<Shard>, mut op: ScanOp) -> OpResult {
    op.limit = shard.limits.scan_limit(op.limit);
    counters::add(&shard.counters.scan_fanouts_total, shard.count as u64 - 1);
    let parts = futures::future::join_all((0..shard.count).map(|j| {
        let op = &op;
        async move {
            if j == shard.id {
                // Through `execute_local_one`: in a cluster, behind a read barrier.
                return shard.execute_local_one(&Op::Scan(op.clone())).await;
            }
            match shard
                .mesh
                .request(j, Work::Ops(vec![Op::Scan(op.clone())]))
                .await
            {
                Ok(WorkResult::Ops(mut r)) if r.len() == 1 => r.pop().unwrap_or_else(|| {
                    OpResult::Error(corekv_proto::OpError::new(
                        corekv_proto::ErrorCode::Internal,
                        "empty scan reply",
                    ))
                }),
                Ok(_) => OpResult::Error(corekv_proto::OpError::new(
                    corekv_proto::ErrorCode::Internal,
                    "malformed scan reply from another shard",
                )),
                Err(e) => OpResult::Error(e),
            }
        }
    }))
    .await;
    let mut pages = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            OpResult::Scan(page) => pages.push(page),
            other => return other,
        }
    }
    OpResult::Scan(merge(
        pages,
        op.limit as usize,
        op.reverse,
        shard.limits.scan_reply_bytes_max,
    ))
}

/// Merges per-shard pages (each sorted in scan order, keys disjoint across pages).
pub fn merge(pages: Vec<ScanResult>, limit: usize, reverse: bool, bytes_max: usize) -> ScanResult {
    let any_more = pages.iter().any(|p| p.more);
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = pages.into_iter().flat_map(|p| p.entries).collect();
    if reverse {
        entries.sort_unstable_by(|a, b| b.0.cmp(&a.0));
    } else {
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    let mut keep = entries.len().min(limit);
    let mut bytes = 0usize;
    for (i, (k, v)) in entries.iter().take(keep).enumerate() {
        bytes += k.len() + v.len();
        if bytes > bytes_max && i > 0 {
            keep = i;
            break;
        }
    }
    let more = any_more || keep < entries.len();
    entries.truncate(keep);
    let continuation = match (more, entries.last()) {
        (true, Some((last, _))) if reverse => last.clone(),
        (true, Some((last, _))) => {
            let mut next = last.clone();
            next.push(0);
            next
        }
        _ => Vec::new(),
    };
    debug_assert!(entries.windows(2).all(|w| (w[0].0 < w[1].0) != reverse));
    ScanResult {
        entries,
        more,
        continuation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(keys: &[&str], more: bool) -> ScanResult {
        ScanResult {
            entries: keys
                .iter()
                .map(|k| (k.as_bytes().to_vec(), b"v".to_vec()))
                .collect(),
            more,
            continuation: Vec::new(),
        }
    }

    fn keys(r: &ScanResult) -> Vec<String> {
        r.entries
            .iter()
            .map(|(k, _)| String::from_utf8(k.clone()).unwrap())
            .collect()
    }

    #[test]
    fn forward_merge_keeps_the_smallest_and_continues_after_the_last() {
        let r = merge(
            vec![page(&["a", "d"], false), page(&["b", "c"], true)],
            3,
            false,
            usize::MAX,
        );
        assert_eq!(keys(&r), ["a", "b", "c"]);
        assert!(r.more);
        assert_eq!(r.continuation, b"c\0");
    }

    #[test]
    fn reverse_merge_keeps_the_largest_and_continues_below_the_last() {
        let r = merge(
            vec![page(&["d", "a"], false), page(&["c", "b"], false)],
            2,
            true,
            usize::MAX,
        );
        assert_eq!(keys(&r), ["d", "c"]);
        assert!(r.more);
        assert_eq!(r.continuation, b"c");
    }

    #[test]
    fn a_complete_merge_has_no_continuation() {
        let r = merge(
            vec![page(&["a"], false), page(&["b"], false)],
            10,
            false,
            usize::MAX,
        );
        assert_eq!(keys(&r), ["a", "b"]);
        assert!(!r.more);
        assert!(r.continuation.is_empty());
    }

    #[test]
    fn a_shard_with_more_means_more_even_when_all_returned_fit() {
        let r = merge(
            vec![page(&["a"], true), page(&[], false)],
            10,
            false,
            usize::MAX,
        );
        assert!(r.more);
        assert_eq!(r.continuation, b"a\0");
    }

    #[test]
    fn the_byte_cap_cuts_pages_but_never_to_nothing() {
        let r = merge(vec![page(&["a", "b", "c"], false)], 10, false, 3);
        // "a"+"v" = 2 bytes, "b"+"v" makes 4 > 3.
        assert_eq!(keys(&r), ["a"]);
        assert!(r.more);
        let r = merge(vec![page(&["abc"], false)], 10, false, 1);
        assert_eq!(keys(&r), ["abc"]);
        assert!(!r.more);
    }
}
