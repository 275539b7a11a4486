//! `corekv-tune flamegraph`: a CPU flame graph of a running server (or of a command).
//!
//! Records with `perf record -e cpu-clock`, the kernel's software clock: it works where the
//! hardware counters are missing (virtual machines, containers), and samples a task in
//! proportion to the CPU time it uses, so a busy function shows up whatever the machine's load.
//! `perf script` turns the recording into text; inferno folds the stacks and renders the SVG
//! in-process (no Perl FlameGraph scripts needed).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use inferno::collapse::Collapse;

use crate::error::{Error, Result};

/// What to profile.
#[derive(Debug, Clone)]
pub enum Target {
    /// A running process, for a number of seconds.
    Pid {
        /// Process id (all its threads are recorded).
        pid: u32,
        /// How long to record.
        seconds: f64,
    },
    /// A command run under perf until it exits.
    Command(Vec<String>),
    /// An existing `perf.data` file: only render it.
    PerfData(PathBuf),
}

/// How to unwind stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CallGraph {
    /// DWARF unwinding from copied stack memory: complete stacks for code built without frame
    /// pointers (Rust's default), larger recordings.
    #[default]
    Dwarf,
    /// Frame pointers (`perf record -g`): small and fast, but stacks through code built
    /// without frame pointers are cut short.
    Fp,
}

/// Recording settings.
#[derive(Debug, Clone)]
pub struct FlameOptions {
    /// Samples per second per CPU.
    pub frequency_hz: u32,
    /// Stack unwinding.
    pub call_graph: CallGraph,
    /// Title of the SVG.
    pub title: String,
}

/// Longest recording of a running process.
pub const SECONDS_MAX: f64 = 3600.0;
/// Highest sampling frequency accepted (perf's default limit is around 25-100 kHz).
pub const FREQUENCY_HZ_MAX: u32 = 20_000;

fn perf() -> Command {
    Command::new(std::env::var_os("PERF").unwrap_or_else(|| "perf".into()))
}

fn perf_error(what: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::Profile(format!(
            "{what}: `perf` is not installed (Debian: `apt-get install linux-perf`; or set PERF \
             to its path)"
        ))
    } else {
        Error::Profile(format!("{what}: cannot run perf: {e}"))
    }
}

/// Records `target` into `data` (a `perf.data` path).
pub fn record(target: &Target, opts: &FlameOptions, data: &Path) -> Result<()> {
    if opts.frequency_hz == 0 || opts.frequency_hz > FREQUENCY_HZ_MAX {
        return Err(Error::Invalid(format!(
            "--frequency-hz {} must be between 1 and {FREQUENCY_HZ_MAX}",
            opts.frequency_hz
        )));
    }
    let mut cmd = perf();
    cmd.arg("record")
        .args(["-e", "cpu-clock"])
        .args(["-F", &opts.frequency_hz.to_string()]);
    match opts.call_graph {
        CallGraph::Dwarf => cmd.args(["--call-graph", "dwarf"]),
        CallGraph::Fp => cmd.arg("-g"),
    };
    cmd.arg("-o").arg(data);
    match target {
        Target::Pid { pid, seconds } => {
            if !(*seconds > 0.0 && *seconds <= SECONDS_MAX) {
                return Err(Error::Invalid(format!(
                    "--seconds {seconds} must be above 0 and at most {SECONDS_MAX}"
                )));
            }
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(Error::Invalid(format!("no process with pid {pid}")));
            }
            cmd.args(["-p", &pid.to_string(), "--", "sleep", &seconds.to_string()]);
        }
        Target::Command(argv) => {
            if argv.is_empty() {
                return Err(Error::Invalid("no command to profile".to_string()));
            }
            cmd.arg("--").args(argv);
        }
        Target::PerfData(_) => return Ok(()),
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| perf_error("perf record", e))?;
    let produced = std::fs::metadata(data)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    // `perf record -- cmd` exits with cmd's status; the recording is still good when perf wrote it.
    if !produced {
        let err = String::from_utf8_lossy(&out.stderr);
        let hint = if err.contains("perf_event_paranoid") || err.contains("Permission denied") {
            " (as root, or lower the restriction: `sysctl kernel.perf_event_paranoid=1`)"
        } else {
            ""
        };
        return Err(Error::Profile(format!(
            "perf record wrote no data{hint}: {}",
            err.trim()
        )));
    }
    Ok(())
}

/// Runs `perf script` on a recording and folds the stacks (one `a;b;c count` line each).
pub fn fold(data: &Path) -> Result<Vec<u8>> {
    let mut child = perf()
        .arg("script")
        .arg("-i")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| perf_error("perf script", e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Profile("perf script: no output pipe".to_string()))?;
    let mut folded = Vec::new();
    let mut folder =
        inferno::collapse::perf::Folder::from(inferno::collapse::perf::Options::default());
    let fold_result = folder.collapse(BufReader::new(stdout), &mut folded);
    let out = child
        .wait_with_output()
        .map_err(|e| perf_error("perf script", e))?;
    if !out.status.success() {
        return Err(Error::Profile(format!(
            "perf script -i {} failed: {}",
            data.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    fold_result.map_err(|e| Error::Profile(format!("folding perf script output: {e}")))?;
    Ok(folded)
}

/// Renders folded stacks as an SVG flame graph.
pub fn render(folded: &[u8], title: &str) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(folded)
        .map_err(|e| Error::Profile(format!("folded stacks are not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(Error::Profile(
            "the recording has no samples: was the process busy while it was recorded?".to_string(),
        ));
    }
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    opts.count_name = "samples".to_string();
    let mut svg = Vec::new();
    inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut svg)
        .map_err(|e| Error::Profile(format!("rendering the flame graph: {e}")))?;
    Ok(svg)
}

/// Records (unless the target is a recording), folds and renders; writes the SVG to `output`
/// and, when `keep_data` is set, leaves the recording there. Returns the number of samples.
pub fn flamegraph(
    target: &Target,
    opts: &FlameOptions,
    output: &Path,
    keep_data: Option<&Path>,
) -> Result<u64> {
    let tmp;
    let data: PathBuf = match (target, keep_data) {
        (Target::PerfData(p), _) => p.clone(),
        (_, Some(p)) => p.to_path_buf(),
        (_, None) => {
            let dir = output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            tmp = tempfile::Builder::new()
                .prefix(".corekv-perf-")
                .suffix(".data")
                .tempfile_in(dir)
                .map_err(|e| Error::io("create a temporary perf.data in", dir, e))?;
            tmp.path().to_path_buf()
        }
    };
    record(target, opts, &data)?;
    let folded = fold(&data)?;
    let samples = String::from_utf8_lossy(&folded)
        .lines()
        .filter_map(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, n)| n.trim().parse::<u64>().ok())
        })
        .sum();
    let svg = render(&folded, &opts.title)?;
    std::fs::write(output, svg).map_err(|e| Error::io("write", output, e))?;
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_stacks_render_with_their_function_names() {
        let folded = b"main;corekv_handle_get;engine_lookup 30\nmain;corekv_handle_put 10\n";
        let svg = String::from_utf8(render(folded, "t").unwrap()).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..50]);
        assert!(svg.contains("engine_lookup") && svg.contains("corekv_handle_put"));
        let e = render(b"\n", "t").unwrap_err().to_string();
        assert!(e.contains("no samples"), "{e}");
    }

    #[test]
    fn bad_settings_are_refused_before_running_perf() {
        let opts = FlameOptions {
            frequency_hz: 0,
            call_graph: CallGraph::Fp,
            title: String::new(),
        };
        let e = record(&Target::Command(vec!["true".into()]), &opts, Path::new("x")).unwrap_err();
        assert!(e.to_string().contains("--frequency-hz"), "{e}");
        let opts = FlameOptions {
            frequency_hz: 99,
            ..opts
        };
        let e = record(
            &Target::Pid {
                pid: 1,
                seconds: -1.0,
            },
            &opts,
            Path::new("x"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--seconds"), "{e}");
        let e = record(
            &Target::Pid {
                pid: u32::MAX,
                seconds: 1.0,
            },
            &opts,
            Path::new("x"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no process"), "{e}");
    }
}
