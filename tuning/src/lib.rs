//! `corekv-tune`: what corekv needs to know about the machine it runs on.
//!
//! - [`topology`]: CPUs, physical cores, SMT siblings and NUMA nodes from sysfs.

pub mod topology;
