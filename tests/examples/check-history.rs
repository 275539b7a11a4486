//! Checks a recorded register history (JSON Lines, see `corekv_tests::history`) for
//! linearizability and prints the report: `check-history FILE`. Exit status 0 when it is
//! linearizable, 1 when it is not (or the checker gave up), 2 when the file cannot be read.

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: check-history FILE");
        std::process::exit(2);
    };
    let events = match corekv_tests::history::read_jsonl(std::path::Path::new(&path)) {
        Ok(events) => events,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match corekv_tests::linearizability::check_events(&events) {
        Ok(report) => {
            println!("{report}");
            std::process::exit(if report.is_linearizable() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("malformed history: {e}");
            std::process::exit(2);
        }
    }
}
