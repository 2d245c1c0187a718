//! Slurm host lists: `node[01-03,07],gpu5` is `node01 node02 node03 node07 gpu5`, as
//! `scontrol show hostnames` prints it.
//!
//! The syntax (Slurm's `hostlist.c`): names separated by commas; in a name, each bracket
//! group `[a-b,c,...]` stands for every number of its ranges, so a name with several groups
//! (`rack[1-2]-n[01-02]`) stands for their product, the first group varying slowest
//! (`rack1-n01 rack1-n02 rack2-n01 rack2-n02`). A number written with leading zeros keeps
//! its width (`[08-10]` is `08 09 10`); one without them is not padded (`[8-10]` is
//! `8 9 10`). Malformed lists (an unclosed `[`, a stray `]`, an empty name or range, a range
//! that runs backwards, a non-digit inside brackets) are errors naming the variable, the
//! value and what is wrong; nothing here panics on any input.

use crate::error::{Error, Result};

/// Most hosts [`expand`] will list (a larger list is an error rather than a huge
/// allocation; [`first_host`] has no such limit).
pub const MAX_HOSTS: u64 = 1 << 20;

/// Longest number accepted in a range (18 digits always fit in a `u64`).
const MAX_DIGITS: usize = 18;

/// One range of a bracket group: `lo..=hi`, printed `width` digits wide (zero-padded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    lo: u64,
    hi: u64,
    width: usize,
}

/// A piece of a name: literal text, or a bracket group.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Group(Vec<Range>),
}

/// Every host of the Slurm host list `value`, in order. `name` is the variable the list came
/// from, for error messages.
///
/// Errors when the list is malformed or names more than [`MAX_HOSTS`] hosts.
pub fn expand(name: &str, value: &str) -> Result<Vec<String>> {
    let names = parse(name, value)?;
    let mut total: u64 = 0;
    for pieces in &names {
        total = total.saturating_add(count(pieces));
    }
    if total > MAX_HOSTS {
        return Err(bad(
            name,
            value,
            &format!("it names {total} hosts, more than the {MAX_HOSTS} this reads"),
        ));
    }
    let mut hosts = Vec::new();
    for pieces in &names {
        product(pieces, String::new(), &mut hosts);
    }
    Ok(hosts)
}

/// The first host of the Slurm host list `value` (the whole list is checked, none of it
/// expanded). `name` is the variable the list came from, for error messages.
pub fn first_host(name: &str, value: &str) -> Result<String> {
    let names = parse(name, value)?;
    let mut host = String::new();
    for piece in &names[0] {
        match piece {
            Piece::Text(t) => host.push_str(t),
            Piece::Group(ranges) => push_number(&mut host, ranges[0].lo, ranges[0].width),
        }
    }
    Ok(host)
}

fn bad(name: &str, value: &str, why: &str) -> Error {
    Error::invalid(format!("{name}={value} is not a Slurm host list: {why}"))
}

/// How many hosts one name stands for (saturating).
fn count(pieces: &[Piece]) -> u64 {
    pieces.iter().fold(1u64, |n, p| match p {
        Piece::Text(_) => n,
        Piece::Group(ranges) => {
            let k = ranges
                .iter()
                .fold(0u64, |k, r| k.saturating_add(r.hi - r.lo + 1));
            n.saturating_mul(k)
        }
    })
}

/// Append to `out` every host `prefix` + `pieces` stands for.
fn product(pieces: &[Piece], prefix: String, out: &mut Vec<String>) {
    match pieces.split_first() {
        None => out.push(prefix),
        Some((Piece::Text(t), rest)) => product(rest, prefix + t, out),
        Some((Piece::Group(ranges), rest)) => {
            for r in ranges {
                for v in r.lo..=r.hi {
                    let mut p = prefix.clone();
                    push_number(&mut p, v, r.width);
                    product(rest, p, out);
                }
            }
        }
    }
}

fn push_number(s: &mut String, v: u64, width: usize) {
    s.push_str(&format!("{v:0width$}"));
}

/// Split the list into names (commas outside brackets) and each name into pieces.
fn parse(name: &str, value: &str) -> Result<Vec<Vec<Piece>>> {
    let list = value.trim();
    if list.is_empty() {
        return Err(bad(name, value, "it is empty"));
    }
    let mut names = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    let mut text = String::new();
    let mut chars = list.char_indices();
    let end_name = |pieces: &mut Vec<Piece>, text: &mut String, names: &mut Vec<Vec<Piece>>| {
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(text)));
        }
        if pieces.is_empty() {
            return Err(bad(
                name,
                value,
                "it has an empty host name (two commas in a row, or a comma at an end)",
            ));
        }
        names.push(std::mem::take(pieces));
        Ok(())
    };
    while let Some((at, c)) = chars.next() {
        match c {
            ',' => end_name(&mut pieces, &mut text, &mut names)?,
            '[' => {
                let close = list[at..].find(']').map(|i| at + i).ok_or_else(|| {
                    bad(
                        name,
                        value,
                        &format!("the '[' at byte {at} is never closed"),
                    )
                })?;
                let inner = &list[at + 1..close];
                if let Some(i) = inner.find('[') {
                    return Err(bad(
                        name,
                        value,
                        &format!("the '[' at byte {} is inside another '['", at + 1 + i),
                    ));
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Group(parse_group(name, value, inner)?));
                // Skip past the closing bracket.
                for _ in at + 1..=close {
                    chars.next();
                }
            }
            ']' => {
                return Err(bad(
                    name,
                    value,
                    &format!("the ']' at byte {at} has no '[' before it"),
                ))
            }
            c if c.is_whitespace() => {
                return Err(bad(
                    name,
                    value,
                    &format!("a host name contains whitespace (byte {at})"),
                ))
            }
            c => text.push(c),
        }
    }
    end_name(&mut pieces, &mut text, &mut names)?;
    Ok(names)
}

/// The ranges of one bracket group (`01-03,07`); only ASCII digits, '-' and ',' occur, so
/// byte positions and the skipping in [`parse`] agree.
fn parse_group(name: &str, value: &str, inner: &str) -> Result<Vec<Range>> {
    if inner.is_empty() {
        return Err(bad(name, value, "it has an empty '[]'"));
    }
    let mut ranges = Vec::new();
    for item in inner.split(',') {
        let (lo, hi) = match item.split_once('-') {
            Some((lo, hi)) => (lo, hi),
            None => (item, item),
        };
        let lo_v = number(name, value, item, lo)?;
        let hi_v = number(name, value, item, hi)?;
        if lo_v > hi_v {
            return Err(bad(
                name,
                value,
                &format!("the range '{item}' runs backwards ({lo_v} > {hi_v})"),
            ));
        }
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        ranges.push(Range {
            lo: lo_v,
            hi: hi_v,
            width,
        });
    }
    Ok(ranges)
}

fn number(name: &str, value: &str, item: &str, digits: &str) -> Result<u64> {
    if item.is_empty() {
        return Err(bad(name, value, "it has an empty range in '[...]'"));
    }
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(
            name,
            value,
            &format!("'{item}' in '[...]' is not a number or a range of numbers like 01-04"),
        ));
    }
    if digits.len() > MAX_DIGITS {
        return Err(bad(
            name,
            value,
            &format!("the number '{digits}' has more than {MAX_DIGITS} digits"),
        ));
    }
    digits
        .parse()
        .map_err(|_| bad(name, value, &format!("'{digits}' is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(list: &str) -> Vec<String> {
        expand("SLURM_JOB_NODELIST", list).unwrap_or_else(|e| panic!("{list}: {e}"))
    }

    fn e(list: &str) -> String {
        match expand("SLURM_JOB_NODELIST", list) {
            Err(Error::InvalidArgument { what }) => what,
            other => panic!("{list}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn plain_names() {
        assert_eq!(x("localhost"), ["localhost"]);
        assert_eq!(x("a,b,c"), ["a", "b", "c"]);
        assert_eq!(x("  gpu5  "), ["gpu5"]);
        assert_eq!(x("n1.cluster.example-org"), ["n1.cluster.example-org"]);
    }

    #[test]
    fn ranges_and_padding() {
        assert_eq!(
            x("node[01-03,07],gpu5"),
            ["node01", "node02", "node03", "node07", "gpu5"]
        );
        assert_eq!(x("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(x("n[08-10]"), ["n08", "n09", "n10"]);
        assert_eq!(x("n[098-101]"), ["n098", "n099", "n100", "n101"]);
        assert_eq!(x("n[0-1]"), ["n0", "n1"]);
        assert_eq!(x("n[5]"), ["n5"]);
        assert_eq!(x("n[007]"), ["n007"]);
        assert_eq!(x("[1-2]x"), ["1x", "2x"]);
        assert_eq!(x("a[1-2]b"), ["a1b", "a2b"]);
    }

    #[test]
    fn several_groups_per_name() {
        assert_eq!(
            x("rack[1-2]-n[01-02]"),
            ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]
        );
        assert_eq!(
            x("r[1,3]n[1-2],login"),
            ["r1n1", "r1n2", "r3n1", "r3n2", "login"]
        );
        assert_eq!(x("a[1][2][3]"), ["a123"]);
    }

    #[test]
    fn first_host_does_not_expand() {
        let f = |l| first_host("SLURM_NODELIST", l).unwrap();
        assert_eq!(f("node[01-03,07],gpu5"), "node01");
        assert_eq!(f("rack[2-3]-n[07-09]"), "rack2-n07");
        assert_eq!(f("localhost"), "localhost");
        // Far too many to list, but the first is known.
        assert_eq!(f("n[000000-999999999]"), "n000000");
        assert!(e("n[000000-999999999]").contains("more than"));
        assert!(e("a[1-1024],b[1-1024]x[1-1024]").contains("more than"));
    }

    #[test]
    fn malformed_lists_say_what_is_wrong() {
        for (list, want) in [
            ("", "it is empty"),
            ("   ", "it is empty"),
            ("a,,b", "empty host name"),
            ("a,", "empty host name"),
            (",a", "empty host name"),
            ("node[01-03", "never closed"),
            ("node[", "never closed"),
            ("node01]", "no '[' before it"),
            ("n[1-2]]", "no '[' before it"),
            ("n[[1-2]]", "inside another"),
            ("n[1[2]]", "inside another"),
            ("n[]", "empty '[]'"),
            ("n[1,,2]", "empty range"),
            ("n[1,]", "empty range"),
            ("n[-3]", "not a number"),
            ("n[1-]", "not a number"),
            ("n[1-2-3]", "not a number"),
            ("n[a-c]", "not a number"),
            ("n[1 -2]", "not a number"),
            ("n[+1]", "not a number"),
            ("n[５]", "not a number"),
            ("n[5-3]", "runs backwards (5 > 3)"),
            ("n[1234567890123456789]", "more than 18 digits"),
            ("a b", "whitespace"),
        ] {
            let got = e(list);
            let first = first_host("SLURM_JOB_NODELIST", list).unwrap_err();
            assert_eq!(first.to_string(), Error::invalid(got.clone()).to_string());
            assert!(
                got.starts_with(&format!(
                    "SLURM_JOB_NODELIST={list} is not a Slurm host list"
                )),
                "{list}: {got}"
            );
            assert!(got.contains(want), "{list}: {got}");
        }
    }

    #[test]
    fn odd_bytes_never_panic() {
        // Multi-byte characters around brackets must not split a character.
        for list in [
            "é[1-2]é",
            "[é]",
            "n[1-2]é,ü",
            "€]",
            "[",
            "]",
            "[]",
            ",",
            "-",
            "[-]",
        ] {
            let _ = expand("L", list);
            let _ = first_host("L", list);
        }
        assert_eq!(x("é[1-2]ü"), ["é1ü", "é2ü"]);
    }
}
