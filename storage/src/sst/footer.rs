//! The SSTable footer: the last 128 bytes of every table, a plain-old-data struct read and
//! written with bytemuck (all fields little-endian).
//!
//! ```text
//! offset  size  field
//!      0     8  magic            0x3176_5453_564b_6f63 ("coKVSTv1" read as LE bytes)
//!      8     4  version          SST_FORMAT_VERSION (1)
//!     12     4  flags            0
//!     16     8  filter_offset    \
//!     24     8  index_offset      > block handles (offset, size incl. trailer)
//!     32     8  props_offset     /
//!     40     4  filter_size
//!     44     4  index_size
//!     48     4  props_size
//!     52     4  data_blocks      number of data blocks
//!     56     8  entries          versions stored
//!     64     8  tombstones       deletes among them
//!     72     8  seq_min          smallest sequence number
//!     80     8  seq_max          largest sequence number
//!     88     8  data_bytes       on-disk bytes of the data blocks (padding included)
//!     96     8  raw_bytes        key + value bytes of the entries
//!    104     8  file_number      the table's number (its file is NNNNNN.sst)
//!    112    12  reserved         zero
//!    124     4  crc32c           of bytes 0..124
//! ```

use bytemuck::{Pod, Zeroable};

use super::{BlockHandle, SST_FORMAT_VERSION};

#[cfg(not(target_endian = "little"))]
compile_error!("the SSTable footer is read as a little-endian plain-old-data struct");

/// "coKVSTv1" as little-endian bytes.
pub const FOOTER_MAGIC: u64 = u64::from_le_bytes(*b"coKVSTv1");
/// Size of the footer in bytes.
pub const FOOTER_BYTES: usize = 128;

/// The footer (see the module doc for the layout).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Footer {
    pub magic: u64,
    pub version: u32,
    pub flags: u32,
    pub filter_offset: u64,
    pub index_offset: u64,
    pub props_offset: u64,
    pub filter_size: u32,
    pub index_size: u32,
    pub props_size: u32,
    pub data_blocks: u32,
    pub entries: u64,
    pub tombstones: u64,
    pub seq_min: u64,
    pub seq_max: u64,
    pub data_bytes: u64,
    pub raw_bytes: u64,
    pub file_number: u64,
    pub reserved: [u32; 3],
    pub crc: u32,
}

const _: () = assert!(std::mem::size_of::<Footer>() == FOOTER_BYTES);

impl Footer {
    pub fn filter(&self) -> BlockHandle {
        BlockHandle {
            offset: self.filter_offset,
            size: self.filter_size,
        }
    }

    pub fn index(&self) -> BlockHandle {
        BlockHandle {
            offset: self.index_offset,
            size: self.index_size,
        }
    }

    pub fn props(&self) -> BlockHandle {
        BlockHandle {
            offset: self.props_offset,
            size: self.props_size,
        }
    }

    /// Sets magic, version and checksum and returns the bytes to write.
    pub fn seal(mut self) -> [u8; FOOTER_BYTES] {
        self.magic = FOOTER_MAGIC;
        self.version = SST_FORMAT_VERSION;
        self.crc = 0;
        let bytes: [u8; FOOTER_BYTES] = bytemuck::cast(self);
        self.crc = crc32c::crc32c(&bytes[..FOOTER_BYTES - 4]);
        bytemuck::cast(self)
    }

    /// Reads and checks a footer; a description of the problem if it is not a valid one.
    /// `file_size` bounds the block handles.
    pub fn decode(bytes: &[u8], file_size: u64) -> Result<Footer, String> {
        if bytes.len() != FOOTER_BYTES {
            return Err(format!(
                "footer is {} bytes, expected {FOOTER_BYTES}",
                bytes.len()
            ));
        }
        let f: Footer = bytemuck::pod_read_unaligned(bytes);
        if f.magic != FOOTER_MAGIC {
            return Err(format!("bad magic {:#018x}: not a corekv SSTable", f.magic));
        }
        let crc = crc32c::crc32c(&bytes[..FOOTER_BYTES - 4]);
        if crc != f.crc {
            return Err(format!(
                "footer checksum mismatch (stored {:#010x}, computed {crc:#010x})",
                f.crc
            ));
        }
        if f.version != SST_FORMAT_VERSION {
            return Err(format!(
                "SSTable format version {} is not supported (this build reads {SST_FORMAT_VERSION})",
                f.version
            ));
        }
        let body_end = file_size.saturating_sub(FOOTER_BYTES as u64);
        for (name, h) in [
            ("filter", f.filter()),
            ("index", f.index()),
            ("props", f.props()),
        ] {
            if h.size < super::BLOCK_TRAILER_BYTES as u32
                || h.offset.saturating_add(u64::from(h.size)) > body_end
            {
                return Err(format!(
                    "{name} block handle ({}, {}) lies outside the file",
                    h.offset, h.size
                ));
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Footer {
        Footer {
            filter_offset: 4096,
            filter_size: 100,
            index_offset: 4196,
            index_size: 50,
            props_offset: 4246,
            props_size: 30,
            data_blocks: 1,
            entries: 10,
            seq_max: 10,
            seq_min: 1,
            file_number: 7,
            ..Footer::zeroed()
        }
    }

    #[test]
    fn round_trips_and_detects_every_damaged_byte() {
        let bytes = sample().seal();
        let f = Footer::decode(&bytes, 8192).unwrap();
        assert_eq!(f.file_number, 7);
        assert_eq!(f.version, SST_FORMAT_VERSION);
        assert_eq!(&bytes[..8], b"coKVSTv1");
        for i in 0..FOOTER_BYTES {
            let mut b = bytes;
            b[i] ^= 0x04;
            assert!(Footer::decode(&b, 8192).is_err(), "byte {i}");
        }
        // Handles past the end of the file.
        assert!(Footer::decode(&bytes, 4096).is_err());
    }

    #[test]
    fn other_versions_are_refused_with_a_clear_message() {
        let mut f = sample();
        f.magic = FOOTER_MAGIC;
        f.version = 2;
        let mut bytes: [u8; FOOTER_BYTES] = bytemuck::cast(f);
        let crc = crc32c::crc32c(&bytes[..FOOTER_BYTES - 4]);
        bytes[FOOTER_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
        let err = Footer::decode(&bytes, 8192).unwrap_err();
        assert!(err.contains("version 2"), "{err}");
    }
}
