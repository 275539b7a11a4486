//! The YCSB driver: workloads A–F with YCSB's own definitions.

pub mod zipfian;
