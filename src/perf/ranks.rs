//! The per-rank lines nccl-tests prints above its table (`#  Rank  0 Group  0 Pid  12345 on
//! host device  0 [0x..] name`, from `run()` in its `src/common.cu`): each rank's process id
//! and host name, gathered to every rank with the library's own all_gather of fixed-size
//! byte records, printed by rank 0 in rank order.
//!
//! A record is [`RECORD`] bytes: the process id (`u32`, little-endian), the host name's
//! length (`u8`), then the host name's bytes (at most `RECORD - 5`, cut at a character
//! boundary), zero-padded.

use super::buf::AlignedBuf;
use super::comm::PerfComm;
use crate::{CollKind, DataType, ReduceOp, Result};

/// Bytes of one rank's record.
pub const RECORD: usize = 128;

/// What one rank tells rank 0 about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankInfo {
    /// Process id.
    pub pid: u32,
    /// Host name (empty when it could not be read).
    pub host: String,
}

impl RankInfo {
    /// This process: its id and the kernel's host name (`/proc/sys/kernel/hostname`).
    pub fn this_process() -> RankInfo {
        let host = dmsc_transports::shm::host_name();
        RankInfo {
            pid: std::process::id(),
            host,
        }
    }

    /// The fixed-size record (see the module documentation).
    pub fn encode(&self) -> [u8; RECORD] {
        let mut rec = [0u8; RECORD];
        rec[..4].copy_from_slice(&self.pid.to_le_bytes());
        let mut len = self.host.len().min(RECORD - 5);
        while !self.host.is_char_boundary(len) {
            len -= 1;
        }
        rec[4] = len as u8;
        rec[5..5 + len].copy_from_slice(&self.host.as_bytes()[..len]);
        rec
    }

    /// Read a record back; bytes that are not UTF-8 are replaced, a length beyond the
    /// record is cut to it.
    pub fn decode(rec: &[u8; RECORD]) -> RankInfo {
        let mut pid = [0u8; 4];
        pid.copy_from_slice(&rec[..4]);
        let len = usize::from(rec[4]).min(RECORD - 5);
        RankInfo {
            pid: u32::from_le_bytes(pid),
            host: String::from_utf8_lossy(&rec[5..5 + len]).into_owned(),
        }
    }

    /// nccl-tests' line for rank `rank`: `#  Rank %2d Group %2d Pid %6d on %10s device %2d
    /// [..] %s`; dmsc's ranks work on host memory, so the device is 0, `[cpu]`, `host memory`.
    pub fn line(&self, rank: usize) -> String {
        let host = if self.host.is_empty() {
            "?"
        } else {
            &self.host
        };
        format!(
            "#  Rank {rank:>2} Group {:>2} Pid {:>6} on {host:>10} device {:>2} [cpu] host memory",
            0, self.pid, 0
        )
    }
}

/// Every rank's [`RankInfo`], in rank order (an all_gather of [`RECORD`] bytes per rank;
/// every rank must call it).
pub fn gather(comm: &dyn PerfComm) -> Result<Vec<RankInfo>> {
    gather_infos(comm, &RankInfo::this_process())
}

/// Every rank's `mine`, in rank order (what [`gather`] does with this process's info).
pub fn gather_infos(comm: &dyn PerfComm, mine: &RankInfo) -> Result<Vec<RankInfo>> {
    let n = comm.size();
    let input = AlignedBuf::from_bytes(&mine.encode());
    let mut out = AlignedBuf::new(RECORD * n);
    let (kind, dt) = (CollKind::AllGather, DataType::Uint8);
    comm.collective_bytes(
        kind,
        Some(input.bytes()),
        out.bytes_mut(),
        RECORD,
        dt,
        ReduceOp::Sum,
        0,
    )?;
    Ok(out
        .bytes()
        .chunks_exact(RECORD)
        .map(|c| {
            let mut rec = [0u8; RECORD];
            rec.copy_from_slice(c);
            RankInfo::decode(&rec)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::fake;
    use std::thread;

    #[test]
    fn records_round_trip_and_cut_long_names() {
        let a = RankInfo {
            pid: 4_000_000_001,
            host: "node-7.example".into(),
        };
        assert_eq!(RankInfo::decode(&a.encode()), a);
        let long = RankInfo {
            pid: 1,
            host: "é".repeat(100), // 200 bytes: cut to 122, a character boundary
        };
        let back = RankInfo::decode(&long.encode());
        assert_eq!(back.host, "é".repeat(61));
        let mut bad = a.encode();
        bad[4] = 255;
        assert_eq!(RankInfo::decode(&bad).host.len(), RECORD - 5);
    }

    #[test]
    fn line_matches_nccl_tests_layout() {
        let r = RankInfo {
            pid: 12345,
            host: "host1".into(),
        };
        assert_eq!(
            r.line(3),
            "#  Rank  3 Group  0 Pid  12345 on      host1 device  0 [cpu] host memory"
        );
    }

    #[test]
    fn gathered_in_rank_order() {
        let info = |r: usize| RankInfo {
            pid: 100 + r as u32,
            host: format!("h{}", "x".repeat(r)),
        };
        let infos: Vec<Vec<RankInfo>> = thread::scope(|s| {
            let hs: Vec<_> = fake::group(3)
                .into_iter()
                .map(|c| s.spawn(move || gather_infos(&c, &info(c.rank())).expect("gather")))
                .collect();
            hs.into_iter().map(|h| h.join().expect("rank")).collect()
        });
        let want: Vec<RankInfo> = (0..3).map(info).collect();
        for v in &infos {
            assert_eq!(v, &want);
        }
        assert!(RankInfo::this_process().pid == std::process::id());
    }
}
