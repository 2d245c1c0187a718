//! The OSU-style point-to-point mode of dmsc-perf (`osu_latency`, `osu_bw`, `osu_bibw`), on
//! exactly 2 ranks, after the OSU Micro-Benchmarks' tests of the same names:
//!
//! * `osu_latency`: ping-pong. Rank 0 sends a message to rank 1, which sends it back; one
//!   sample is half of one round trip, as measured on rank 0.
//! * `osu_bw`: windowed bandwidth. Rank 0 starts `-W` non-blocking sends (each a group of one
//!   send, started with [`crate::Group::immediate_end`]) and waits on them all; rank 1 starts
//!   as many receives, waits, and answers with a 4-byte acknowledgement. One sample is one
//!   window, as measured on rank 0.
//! * `osu_bibw`: bidirectional bandwidth. Both ranks start `-W` groups of one send and one
//!   receive and wait on them all; one sample is one window.
//!
//! Each size runs `-w` untimed and `-n` timed iterations (round trips or windows). The rows
//! print the size, OSU's figure (the average one-way latency in µs for `osu_latency`; for the
//! bandwidth tests, bytes moved over the whole timed loop per second, in MB/s of 1e6 bytes as
//! OSU prints it), then the minimum, median and 99th percentile (nearest rank) of the
//! per-sample times in µs. Receive buffers are one per message in flight (`-W` of them),
//! since two receives in flight may not share memory.

use super::buf::AlignedBuf;
use super::comm::PerfComm;
use super::sizes::{sizes, Step};
use crate::{Error, Request, Result};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write;
use std::time::Instant;

/// One of the point-to-point tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsuTest {
    /// Ping-pong latency.
    Latency,
    /// Windowed one-way bandwidth.
    Bw,
    /// Windowed bidirectional bandwidth.
    Bibw,
}

impl OsuTest {
    /// Every test, in the order of the usage text.
    pub const ALL: [OsuTest; 3] = [OsuTest::Latency, OsuTest::Bw, OsuTest::Bibw];

    /// The name on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            OsuTest::Latency => "osu_latency",
            OsuTest::Bw => "osu_bw",
            OsuTest::Bibw => "osu_bibw",
        }
    }

    /// Parse a name (`osu_latency`, `osu-bw`, any case).
    pub fn parse(s: &str) -> Option<OsuTest> {
        let s = s.to_ascii_lowercase().replace('-', "_");
        OsuTest::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// What the OSU mode measures.
#[derive(Clone, Debug, PartialEq)]
pub struct OsuOptions {
    /// The test.
    pub test: OsuTest,
    /// Smallest message in bytes (`-b`).
    pub min_bytes: u64,
    /// Largest message in bytes (`-e`).
    pub max_bytes: u64,
    /// Growth from one size to the next (`-f`/`-i`).
    pub step: Step,
    /// Timed iterations (round trips or windows) per size (`-n`).
    pub iters: u32,
    /// Untimed iterations per size (`-w`).
    pub warmup: u32,
    /// Messages in flight per window of `osu_bw`/`osu_bibw` (`-W`).
    pub window: u32,
    /// Start this many ranks (`--np`, which must be 2).
    pub np: Option<usize>,
}

impl OsuOptions {
    /// dmsc-perf's defaults for `test`: 1 B to 4 MiB (OSU's range), factor 2, 100 timed and
    /// 10 untimed iterations, a window of 64 (OSU's).
    pub fn defaults(test: OsuTest) -> OsuOptions {
        OsuOptions {
            test,
            min_bytes: 1,
            max_bytes: 4 << 20,
            step: Step::Factor(2),
            iters: 100,
            warmup: 10,
            window: 64,
            np: None,
        }
    }

    /// The arguments that make a rank re-create these options (everything but `--np`).
    pub fn to_rank_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![self.test.name().into()];
        let mut push = |k: &str, v: String| {
            a.push(k.into());
            a.push(v.into());
        };
        push("-b", self.min_bytes.to_string());
        push("-e", self.max_bytes.to_string());
        match self.step {
            Step::Factor(f) => push("-f", f.to_string()),
            Step::Bytes(b) => {
                push("-f", "1".into());
                push("-i", b.to_string());
            }
        }
        push("-n", self.iters.to_string());
        push("-w", self.warmup.to_string());
        push("-W", self.window.to_string());
        a
    }
}

/// Minimum, median and 99th percentile of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Smallest sample.
    pub min: f64,
    /// Median (the mean of the two middle samples when their number is even).
    pub median: f64,
    /// 99th percentile, nearest rank: the `ceil(0.99 * n)`-th smallest sample.
    pub p99: f64,
}

/// The [`Stats`] of `samples` (sorted in place); all zero when there are none.
pub fn stats(samples: &mut [f64]) -> Stats {
    let n = samples.len();
    if n == 0 {
        return Stats {
            min: 0.0,
            median: 0.0,
            p99: 0.0,
        };
    }
    samples.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    let rank = (n * 99).div_ceil(100).max(1);
    Stats {
        min: samples[0],
        median,
        p99: samples[rank - 1],
    }
}

/// One printed row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OsuRow {
    /// Message size in bytes.
    pub size: u64,
    /// Average one-way latency in µs (`osu_latency`) or bandwidth in MB/s (the others).
    pub value: f64,
    /// Statistics of the per-sample times, µs.
    pub times_us: Stats,
}

/// The lines above the rows.
pub fn header(o: &OsuOptions) -> String {
    let (title, what) = match o.test {
        OsuTest::Latency => ("Latency Test", "Avg Latency(us)"),
        OsuTest::Bw => ("Bandwidth Test", "Bandwidth (MB/s)"),
        OsuTest::Bibw => ("Bi-Directional Bandwidth Test", "Bandwidth (MB/s)"),
    };
    let sample = match o.test {
        OsuTest::Latency => "half a round trip".to_string(),
        _ => format!("one window of {} messages", o.window),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# dmsc-perf {} {title} ({}), 2 ranks",
        env!("CARGO_PKG_VERSION"),
        o.test.name()
    );
    let _ = writeln!(
        s,
        "# iters: {} warmup: {}; Min/Median/P99: times of {sample} (us), on rank 0",
        o.iters, o.warmup
    );
    let _ = writeln!(
        s,
        "# {:<8}{what:>18}{:>12}{:>12}{:>12}",
        "Size", "Min(us)", "Median(us)", "P99(us)"
    );
    s
}

/// One row as text (OSU's `%-10d%18.2f`, then the statistics).
pub fn row_line(r: &OsuRow) -> String {
    format!(
        "{:<10}{:>18.2}{:>12.2}{:>12.2}{:>12.2}",
        r.size, r.value, r.times_us.min, r.times_us.median, r.times_us.p99
    )
}

/// Rank 0's samples (seconds) for one size; rank 1's are empty.
fn samples(comm: &dyn PerfComm, o: &OsuOptions, size: usize) -> Result<Vec<f64>> {
    let me = comm.rank();
    let peer = 1 - me;
    let send = AlignedBuf::new(size);
    let window = match o.test {
        OsuTest::Latency => 1,
        _ => o.window.max(1) as usize,
    };
    let mut recv: Vec<AlignedBuf> = (0..window).map(|_| AlignedBuf::new(size)).collect();
    let mut ack = [0u8; 4];
    let mut out = Vec::with_capacity(o.iters as usize);
    comm.barrier()?;
    for i in 0..o.warmup + o.iters {
        let start = Instant::now();
        match (o.test, me) {
            (OsuTest::Latency, 0) => {
                comm.group_bytes(vec![(send.bytes(), peer)], vec![])?;
                comm.group_bytes(vec![], vec![(recv[0].bytes_mut(), peer)])?;
            }
            (OsuTest::Latency, _) => {
                comm.group_bytes(vec![], vec![(recv[0].bytes_mut(), peer)])?;
                comm.group_bytes(vec![(send.bytes(), peer)], vec![])?;
            }
            (OsuTest::Bw, 0) => {
                let reqs: Vec<_> = (0..window)
                    .map(|_| comm.immediate_group_bytes(vec![(send.bytes(), peer)], vec![]))
                    .collect();
                Request::wait_all(reqs)?;
                comm.group_bytes(vec![], vec![(&mut ack[..], peer)])?;
            }
            (OsuTest::Bw, _) => {
                let reqs: Vec<_> = recv
                    .iter_mut()
                    .map(|b| comm.immediate_group_bytes(vec![], vec![(b.bytes_mut(), peer)]))
                    .collect();
                Request::wait_all(reqs)?;
                comm.group_bytes(vec![(&ack[..], peer)], vec![])?;
            }
            (OsuTest::Bibw, _) => {
                let reqs: Vec<_> = recv
                    .iter_mut()
                    .map(|b| {
                        comm.immediate_group_bytes(
                            vec![(send.bytes(), peer)],
                            vec![(b.bytes_mut(), peer)],
                        )
                    })
                    .collect();
                Request::wait_all(reqs)?;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        if i >= o.warmup && me == 0 {
            out.push(match o.test {
                OsuTest::Latency => secs / 2.0,
                _ => secs,
            });
        }
    }
    Ok(out)
}

/// Run the OSU test on this rank (of exactly 2), writing rank 0's rows to `out` as they are
/// measured. Returns rank 0's rows (rank 1's list is empty).
pub fn benchmark(comm: &dyn PerfComm, o: &OsuOptions, out: &mut dyn Write) -> Result<Vec<OsuRow>> {
    if comm.size() != 2 {
        return Err(Error::invalid(format!(
            "{} needs exactly 2 ranks, this job has {} (use --np 2)",
            o.test.name(),
            comm.size()
        )));
    }
    let _ = write!(out, "{}", header(o));
    let mut rows = Vec::new();
    for size in sizes(o.min_bytes, o.max_bytes, o.step) {
        let bytes = usize::try_from(size)
            .map_err(|_| Error::invalid(format!("message size {size} does not fit in memory")))?;
        let mut s = samples(comm, o, bytes)?;
        if comm.rank() != 0 {
            continue;
        }
        let total: f64 = s.iter().sum();
        let per_iter_bytes = match o.test {
            OsuTest::Latency => 0.0,
            OsuTest::Bw => (bytes as f64) * f64::from(o.window),
            OsuTest::Bibw => 2.0 * (bytes as f64) * f64::from(o.window),
        };
        let value = match o.test {
            OsuTest::Latency => total / s.len().max(1) as f64 * 1e6,
            _ => per_iter_bytes * s.len() as f64 / total / 1e6,
        };
        let st = stats(&mut s);
        let us = |x: f64| x * 1e6;
        let row = OsuRow {
            size,
            value,
            times_us: Stats {
                min: us(st.min),
                median: us(st.median),
                p99: us(st.p99),
            },
        };
        let _ = writeln!(out, "{}", row_line(&row));
        let _ = out.flush();
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::fake;
    use std::thread;

    #[test]
    fn percentiles() {
        let mut v: Vec<f64> = (1..=200).rev().map(f64::from).collect();
        let s = stats(&mut v);
        assert_eq!((s.min, s.median, s.p99), (1.0, 100.5, 198.0));
        let s = stats(&mut [5.0, 1.0, 3.0]);
        assert_eq!((s.min, s.median, s.p99), (1.0, 3.0, 5.0));
        assert_eq!(stats(&mut []).p99, 0.0);
    }

    #[test]
    fn names() {
        for t in OsuTest::ALL {
            assert_eq!(OsuTest::parse(t.name()), Some(t));
        }
        assert_eq!(OsuTest::parse("OSU-BIBW"), Some(OsuTest::Bibw));
        assert_eq!(OsuTest::parse("osu_mbw_mr"), None);
    }

    fn run(n: usize, o: &OsuOptions) -> Vec<(String, Result<Vec<OsuRow>>)> {
        thread::scope(|s| {
            let hs: Vec<_> = fake::group(n)
                .into_iter()
                .map(|c| {
                    s.spawn(move || {
                        let mut out = Vec::new();
                        let r = benchmark(&c, o, &mut out);
                        (String::from_utf8(out).expect("utf8"), r)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("rank")).collect()
        })
    }

    #[test]
    fn every_test_runs_on_two_fake_ranks() {
        for test in OsuTest::ALL {
            let o = OsuOptions {
                min_bytes: 1,
                max_bytes: 64,
                step: Step::Factor(4),
                iters: 5,
                warmup: 1,
                window: 3,
                ..OsuOptions::defaults(test)
            };
            let r = run(2, &o);
            let rows = r[0].1.as_ref().expect("rank 0");
            assert_eq!(
                rows.iter().map(|r| r.size).collect::<Vec<_>>(),
                [1, 4, 16, 64]
            );
            for row in rows {
                let t = row.times_us;
                assert!(row.value > 0.0 && t.min > 0.0, "{row:?}");
                assert!(t.min <= t.median && t.median <= t.p99, "{row:?}");
            }
            assert!(r[1].1.as_ref().expect("rank 1").is_empty());
            let text = &r[0].0;
            assert!(text.contains(test.name()), "{text}");
            let data = text.lines().filter(|l| !l.starts_with('#')).count();
            assert_eq!(data, 4, "{text}");
        }
    }

    #[test]
    fn other_rank_counts_are_refused() {
        let o = OsuOptions::defaults(OsuTest::Latency);
        for (_, r) in run(3, &o) {
            let e = r.unwrap_err().to_string();
            assert!(e.contains("exactly 2 ranks"), "{e}");
        }
    }

    #[test]
    fn rows_line_up() {
        let r = OsuRow {
            size: 8,
            value: 1.5,
            times_us: Stats {
                min: 1.0,
                median: 1.25,
                p99: 3.0,
            },
        };
        let line = row_line(&r);
        assert_eq!(
            line,
            "8                       1.50        1.00        1.25        3.00"
        );
        let h = header(&OsuOptions::defaults(OsuTest::Bw));
        let cols = h.lines().last().expect("column line");
        assert_eq!(cols.len(), line.len());
        assert!(cols.contains("Bandwidth (MB/s)"));
    }
}
