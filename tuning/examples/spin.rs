//! A short, CPU-bound program with a known function name, for testing `corekv-tune flamegraph`:
//! cpu-clock samples it in proportion to the CPU time it burns, so `spin_marker_for_flamegraph`
//! is in the flame graph however loaded the machine is.
//! Usage: spin [ROUNDS]   (default 30 million)

#[inline(never)]
fn spin_marker_for_flamegraph(rounds: u64) -> u64 {
    let mut x: u64 = 1;
    for i in 0..rounds {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(30_000_000);
    println!("{}", spin_marker_for_flamegraph(rounds));
}
