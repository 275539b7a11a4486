//! Transparent huge pages off for the server process.
//!
//! The allocator (mimalloc) asks for transparent huge pages on its arenas; with THP the first
//! touch of any byte of a 2 MiB region makes the kernel zero the whole 2 MiB at once. The SET
//! path touches fresh memory all the time (memtable values, write batches, Cap'n Proto message
//! buffers, blocks filled into the cache as tables are written), and on the VMs measured a
//! profile of SET at pipeline 16 had half of the shard's CPU in the kernel's `clear_page_erms`
//! under huge-page faults. With 4 KiB pages only what is touched is zeroed: server CPU per SET
//! fell from 7.6 to 4.4 µs (medians of 5 pairs, docs/BENCHMARKS.md). Redis does the same at
//! start-up (`disable-thp yes`, its default). The setting covers this process (and children
//! it would fork; it forks none), not the machine. `--transparent-huge-pages true` (or
//! `transparent_huge_pages = true` in the config file) keeps them, for a machine where they
//! help reads of a large memtable and block cache (fewer TLB misses) more than they cost
//! writes; on the VM measured no read benefit was established (docs/BENCHMARKS.md).

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`). Memory
/// already backed by huge pages stays so; call it before the shards start. An error (a kernel
/// without the call) is returned for the caller to log; the server runs either way.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes a flag of this
    // process's memory map; no pointer is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether transparent huge pages are off for this process (`PR_GET_THP_DISABLE`).
pub fn transparent_huge_pages_disabled() -> std::io::Result<bool> {
    // SAFETY: PR_GET_THP_DISABLE takes no pointer and only reads a flag of this process.
    let rc = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabling_is_visible_to_the_process() {
        // Unit tests run in threads of one process; every server test wants THP off anyway.
        disable_transparent_huge_pages().unwrap();
        assert!(transparent_huge_pages_disabled().unwrap());
    }
}
