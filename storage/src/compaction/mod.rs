//! Leveled compaction: [`picker`] decides what to compact (level sizes against targets that
//! grow by a ratio per level, level-0 file count, tombstone-heavy tables), [`job`] merges the
//! chosen tables into new ones one level down, dropping versions no reader can see.

pub(crate) mod job;
pub(crate) mod picker;
