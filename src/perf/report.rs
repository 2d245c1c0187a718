//! The results and how they are printed: nccl-tests' table (the format strings of its
//! `src/common.cu` up to version 2.16, column for column: the layout most published results
//! and parsers use), its footer, a JSON report and a CSV file.
//!
//! # JSON
//!
//! One object per (type, operator, root) combination:
//!
//! ```json
//! {"op":"all_reduce","nranks":4,"dtype":"float","redop":"sum","root":-1,
//!  "rows":[{"size":1024,"count":256,"inplace":false,"time_us":12.5,"algbw":0.08192,
//!           "busbw":0.12288,"wrong":0}, ...]}
//! ```
//!
//! `redop` is `"none"` and `root` is -1 where they do not apply, as in the table; `wrong` is
//! `null` when checking is off (`-c 0`); non-finite numbers are `null`. A run of a single
//! combination writes that object; a run of several (`-d all`, `-o all`, a list, or every
//! root with `-r -1`) writes a JSON array of them, in the order of the table.
//!
//! # CSV
//!
//! `--csv PATH` writes a header line, then one line per measurement (each half of each table
//! row: out-of-place, then in-place), in the order of the table, with the columns
//!
//! `op,nranks,dtype,redop,root,size,count,inplace,time_us,algbw,busbw,wrong`
//!
//! `op`, `dtype` and `redop` are names as on the command line (`redop` is `none` and `root`
//! -1 where they do not apply); `size` is bytes and `count` elements as in the table;
//! `inplace` is `0` or `1`; `time_us` is microseconds per call (combined over ranks as `-a`
//! says); `algbw` and `busbw` are GB/s (1e9 bytes/s); `wrong` is the wrong elements summed
//! over ranks, empty when checking is off (`-c 0`). Numbers are written in full precision,
//! non-finite ones as `nan`/`inf`. No field needs quoting.

use super::average::Average;
use super::ranks::RankInfo;
use super::PerfOp;
use crate::{DataType, ReduceOp};
use std::fmt::Write as _;

/// One measured line of one half (out-of-place or in-place) of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Bytes (the `size` column).
    pub size: u64,
    /// Elements (the `count` column).
    pub count: usize,
    /// In-place variant.
    pub inplace: bool,
    /// Average time of one call in microseconds, combined over ranks as `-a` says.
    pub time_us: f64,
    /// Algorithm bandwidth, GB/s.
    pub algbw: f64,
    /// Bus bandwidth, GB/s.
    pub busbw: f64,
    /// Wrong elements summed over ranks; `None` when not checked.
    pub wrong: Option<u64>,
}

/// The rows of one (type, operator, root) combination.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The collective.
    pub op: PerfOp,
    /// Number of ranks.
    pub nranks: usize,
    /// Element type.
    pub dtype: DataType,
    /// Reduction operator, for collectives that reduce.
    pub redop: Option<ReduceOp>,
    /// Root, for broadcast and reduce.
    pub root: Option<usize>,
    /// Out-of-place and in-place rows, in measurement order.
    pub rows: Vec<Row>,
}

/// The `redop` column: the operator's name, or `none`.
pub fn redop_name(redop: Option<ReduceOp>) -> &'static str {
    redop.map_or("none", |o| o.name())
}

/// The `root` column: the root, or -1.
pub fn root_value(root: Option<usize>) -> i64 {
    root.map_or(-1, |r| r as i64)
}

/// nccl-tests' time column: `%7.0f` from 10 ms, `%7.1f` from 100 us, else `%7.2f`.
pub fn time_str(time_us: f64) -> String {
    if time_us >= 10_000.0 {
        format!("{time_us:>7.0}")
    } else if time_us >= 100.0 {
        format!("{time_us:>7.1}")
    } else {
        format!("{time_us:>7.2}")
    }
}

fn c_nonfinite(value: f64) -> String {
    match (value.is_nan(), value.is_sign_negative()) {
        (true, false) => "nan".into(),
        (true, true) => "-nan".into(),
        (false, false) => "inf".into(),
        (false, true) => "-inf".into(),
    }
}

/// C's `%g`: six significant digits, trailing zeros removed, exponent form below 1e-4 and
/// from 1e6.
pub fn c_g(value: f64) -> String {
    if !value.is_finite() {
        return c_nonfinite(value);
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{value:.5e}");
    let exp: i32 = sci
        .split_once('e')
        .and_then(|(_, e)| e.parse().ok())
        .unwrap_or(0);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if !(-4..6).contains(&exp) {
        let (mant, _) = sci.split_once('e').unwrap_or((&sci, ""));
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mant), exp.abs())
    } else {
        let prec = (5 - exp) as usize;
        trim(&format!("{value:.prec$}"))
    }
}

/// The lines above the table: a description of the run, nccl-tests' line for blocking mode,
/// its per-rank lines (`ranks`, in rank order), then its column header.
pub fn header(
    op: PerfOp,
    nranks: usize,
    settings: &str,
    blocking: bool,
    average: Average,
    ranks: &[RankInfo],
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# dmsc-perf {}: {op} over {nranks} rank{} (nccl-tests compatible output)",
        env!("CARGO_PKG_VERSION"),
        if nranks == 1 { "" } else { "s" }
    );
    let _ = writeln!(s, "# {settings}");
    if blocking {
        let _ = writeln!(
            s,
            "# Blocking Enabled: wait for completion and barrier after each collective "
        );
    }
    let _ = writeln!(
        s,
        "# time: average of one call of the timed loop, {}",
        average.describe()
    );
    s.push_str("#\n");
    if !ranks.is_empty() {
        s.push_str("# Using devices\n");
        for (r, info) in ranks.iter().enumerate() {
            let _ = writeln!(s, "{}", info.line(r));
        }
        s.push_str("#\n");
    }
    let _ = writeln!(
        s,
        "# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}           out-of-place                       in-place          ",
        "", "", "", "", ""
    );
    let _ = writeln!(
        s,
        "# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6} {:>6}  {:>7}  {:>6}  {:>6} {:>6}",
        "size", "count", "type", "redop", "root", "time", "algbw", "busbw", "#wrong", "time",
        "algbw", "busbw", "#wrong"
    );
    let _ = writeln!(
        s,
        "# {:>10}  {:>12}  {:>8}  {:>6}  {:>6}  {:>7}  {:>6}  {:>6}  {:>5}  {:>7}  {:>6}  {:>6}  {:>5}",
        "(B)", "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)",
        "(GB/s)", ""
    );
    s
}

/// The first five columns of a row.
pub fn row_prefix(size: u64, count: usize, dtype: DataType, redop: &str, root: i64) -> String {
    format!(
        "{size:>12}  {count:>12}  {:>8}  {redop:>6}  {root:>6}",
        dtype.name()
    )
}

/// The four columns of one half of a row: `"  %7s  %6.2f  %6.2f  %5g"`, `N/A` for an
/// unchecked `#wrong`.
pub fn row_half(time_us: f64, algbw: f64, busbw: f64, wrong: Option<u64>) -> String {
    let wrong = match wrong {
        Some(w) => c_g(w as f64),
        None => "N/A".into(),
    };
    format!(
        "  {}  {algbw:>6.2}  {busbw:>6.2}  {wrong:>5}",
        time_str(time_us)
    )
}

/// The half of a row that is not measured (sendrecv in place).
pub fn row_half_absent() -> String {
    format!("  {:>7}  {:>6}  {:>6}  {:>5}", "N/A", "N/A", "N/A", "N/A")
}

/// The lines below the table (nccl-tests' `writeResultFooter`).
pub fn footer(wrong_rows: u64, avg_busbw: f64) -> String {
    format!(
        "# {:<20} : {} {}\n# {:<20} : {} \n#\n",
        "Out of bounds values",
        wrong_rows,
        if wrong_rows > 0 { "FAILED" } else { "OK" },
        "Avg bus bandwidth",
        c_g(avg_busbw)
    )
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A JSON number (`null` when not finite).
fn json_f64(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

/// One combination as a JSON object.
pub fn run_json(run: &Run) -> String {
    let mut s = format!(
        "{{\"op\":{},\"nranks\":{},\"dtype\":{},\"redop\":{},\"root\":{},\"rows\":[",
        json_str(run.op.name()),
        run.nranks,
        json_str(run.dtype.name()),
        json_str(redop_name(run.redop)),
        root_value(run.root)
    );
    for (i, r) in run.rows.iter().enumerate() {
        let _ = write!(
            s,
            "{}{{\"size\":{},\"count\":{},\"inplace\":{},\"time_us\":{},\"algbw\":{},\"busbw\":{},\"wrong\":{}}}",
            if i == 0 { "" } else { "," },
            r.size,
            r.count,
            r.inplace,
            json_f64(r.time_us),
            json_f64(r.algbw),
            json_f64(r.busbw),
            r.wrong.map_or("null".into(), |w| w.to_string())
        );
    }
    s.push_str("]}");
    s
}

/// The CSV columns (see the module documentation).
pub const CSV_HEADER: &str =
    "op,nranks,dtype,redop,root,size,count,inplace,time_us,algbw,busbw,wrong";

/// The CSV file: [`CSV_HEADER`], then one line per measurement.
pub fn csv(runs: &[Run]) -> String {
    let mut s = format!("{CSV_HEADER}\n");
    for run in runs {
        for r in &run.rows {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{}",
                run.op.name(),
                run.nranks,
                run.dtype.name(),
                redop_name(run.redop),
                root_value(run.root),
                r.size,
                r.count,
                u8::from(r.inplace),
                r.time_us,
                r.algbw,
                r.busbw,
                r.wrong.map_or(String::new(), |w| w.to_string())
            );
        }
    }
    s
}

/// The whole report: the single combination's object, or an array of them.
pub fn json(runs: &[Run]) -> String {
    let mut s = match runs {
        [one] => run_json(one),
        many => format!(
            "[{}]",
            many.iter().map(run_json).collect::<Vec<_>>().join(",\n")
        ),
    };
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_column() {
        assert_eq!(time_str(12.345), "  12.35");
        assert_eq!(time_str(99.999), " 100.00");
        assert_eq!(time_str(123.45), "  123.5");
        assert_eq!(time_str(12345.6), "  12346");
        assert_eq!(time_str(12345678.0), "12345678");
    }

    #[test]
    fn g_matches_printf() {
        for (x, want) in [
            (0.0, "0"),
            (5.0, "5"),
            (1234567.0, "1.23457e+06"),
            (999999.0, "999999"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (12.5, "12.5"),
            (1.23456789, "1.23457"),
            (100.0, "100"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(c_g(x), want, "{x}");
        }
    }

    #[test]
    fn table_lines_line_up_with_nccl_tests() {
        let ranks = [RankInfo {
            pid: 7,
            host: "h".into(),
        }];
        let h = header(PerfOp::AllReduce, 4, "x", true, Average::Mean, &ranks);
        assert!(h.contains("\n# Blocking Enabled: wait for completion and barrier"));
        assert!(h.contains("mean over ranks (-a 1)"));
        assert!(h.contains("\n# Using devices\n#  Rank  0 Group  0 Pid      7 on          h"));
        let plain = header(PerfOp::AllReduce, 4, "x", false, Average::Max, &[]);
        assert!(!plain.contains("Blocking") && !plain.contains("Using devices"));
        assert!(plain.contains("maximum over ranks (-a 3)"));
        let lines: Vec<&str> = h.lines().collect();
        let n = lines.len();
        assert_eq!(
            lines[n - 3],
            "#                                                              out-of-place                       in-place          "
        );
        assert_eq!(
            lines[n - 2],
            "#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong"
        );
        assert_eq!(
            lines[n - 1].trim_end(),
            "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)"
        );
        let row = row_prefix(8, 2, DataType::Float32, "sum", -1)
            + &row_half(12.34, 0.0, 0.0, Some(0))
            + &row_half(11.9, 0.0, 0.0, Some(0));
        assert_eq!(
            row,
            "           8             2     float     sum      -1    12.34    0.00    0.00      0    11.90    0.00    0.00      0"
        );
        // Every column ends where its header ends.
        assert_eq!(row.len(), lines[n - 2].len());
        assert_eq!(
            row_half(1.0, 1.0, 1.0, None),
            "     1.00    1.00    1.00    N/A"
        );
        assert_eq!(
            row_half(1.0, 1.0, 1.0, Some(1234567)),
            "     1.00    1.00    1.00  1.23457e+06"
        );
        assert_eq!(row_half_absent().len(), row_half(1.0, 1.0, 1.0, None).len());
    }

    #[test]
    fn footer_lines() {
        assert_eq!(
            footer(0, 12.3456789),
            "# Out of bounds values : 0 OK\n# Avg bus bandwidth    : 12.3457 \n#\n"
        );
        assert!(footer(2, 0.0).starts_with("# Out of bounds values : 2 FAILED\n"));
    }

    #[test]
    fn json_shapes() {
        let row = Row {
            size: 8,
            count: 2,
            inplace: true,
            time_us: 1.5,
            algbw: f64::NAN,
            busbw: 0.25,
            wrong: None,
        };
        let run = Run {
            op: PerfOp::Broadcast,
            nranks: 2,
            dtype: DataType::Float16,
            redop: None,
            root: Some(1),
            rows: vec![row],
        };
        let one = json(std::slice::from_ref(&run));
        assert_eq!(
            one,
            "{\"op\":\"broadcast\",\"nranks\":2,\"dtype\":\"half\",\"redop\":\"none\",\
             \"root\":1,\"rows\":[{\"size\":8,\"count\":2,\"inplace\":true,\"time_us\":1.5,\
             \"algbw\":null,\"busbw\":0.25,\"wrong\":null}]}\n"
        );
        let two = json(&[run.clone(), run.clone()]);
        assert!(two.starts_with("[{") && two.ends_with("}]\n"));
        assert_eq!(json_str("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\u0001\"");
    }

    #[test]
    fn csv_lines() {
        let row = |inplace, wrong| Row {
            size: 1024,
            count: 256,
            inplace,
            time_us: 12.5,
            algbw: 0.08192,
            busbw: 0.12288,
            wrong,
        };
        let run = Run {
            op: PerfOp::AllReduce,
            nranks: 4,
            dtype: DataType::Float32,
            redop: Some(ReduceOp::Sum),
            root: None,
            rows: vec![row(false, Some(0)), row(true, None)],
        };
        let text = csv(&[run]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "all_reduce,4,float,sum,-1,1024,256,0,12.5,0.08192,0.12288,0"
        );
        assert_eq!(
            lines[2],
            "all_reduce,4,float,sum,-1,1024,256,1,12.5,0.08192,0.12288,"
        );
        assert_eq!(lines.len(), 3);
        let cols = CSV_HEADER.split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == cols));
    }
}
