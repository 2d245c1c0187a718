//! The RDMA transport's settings and the environment variables that set them.

use super::hca::{parse_gid_index, HcaFilter};
use super::qp_state::QpAttrs;
use dmsc_core::error::{Error, Result};
use dmsc_core::spray::Mode;

/// How the RDMA transport connects and moves data.
#[derive(Clone, Debug, PartialEq)]
pub struct RdmaOptions {
    /// Which devices and ports (`DMSC_IB_HCA`, NCCL syntax; the raw value, for messages).
    pub hca: String,
    /// The parsed filter.
    pub filter: HcaFilter,
    /// GID table index (`DMSC_IB_GID_INDEX`, default 0; RoCE v2 often 3).
    pub gid_index: u8,
    /// Reliable-connected queue pairs per peer, the paths that frames are sprayed over
    /// (`DMSC_IB_QPS_PER_CONNECTION`, default 2, at most 8).
    pub paths: usize,
    /// Queue pair timeout and retries (`DMSC_IB_TIMEOUT`, `DMSC_IB_RETRY_CNT`).
    pub attrs: QpAttrs,
    /// Receives per peer whose clear-to-send may be out at once.
    pub window: usize,
    /// Bytes of each staging slot: the largest frame (the engine's chunk size).
    pub staging_slot: usize,
    /// Staging slots for sends, and as many for receives, used when user memory cannot be
    /// registered (`DMSC_IB_STAGING_SLOTS`, default 8).
    pub staging_slots: usize,
    /// How frames are sprayed over the queue pairs (`DMSC_SPRAY`: adaptive, roundrobin,
    /// single; as over TCP).
    pub spray: Mode,
}

impl Default for RdmaOptions {
    fn default() -> Self {
        RdmaOptions {
            hca: String::new(),
            filter: HcaFilter::default(),
            gid_index: 0,
            paths: 2,
            attrs: QpAttrs::default(),
            window: 16,
            staging_slot: 512 << 10,
            staging_slots: 8,
            spray: Mode::Adaptive,
        }
    }
}

impl RdmaOptions {
    /// Read the `DMSC_IB_*` variables through `get`; frames are at most `chunk_bytes`.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>, chunk_bytes: usize) -> Result<Self> {
        let num = |name: &str, default: u64, max: u64| -> Result<u64> {
            match get(name) {
                None => Ok(default),
                Some(v) if v.trim().is_empty() => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| {
                        Error::invalid(format!("{name}={v} is not a number from 0 to {max}"))
                    }),
            }
        };
        let hca = get("DMSC_IB_HCA").unwrap_or_default();
        let paths = num("DMSC_IB_QPS_PER_CONNECTION", 2, 8)? as usize;
        if paths == 0 {
            return Err(Error::invalid(
                "DMSC_IB_QPS_PER_CONNECTION=0: at least one queue pair per peer is needed",
            ));
        }
        let attrs = QpAttrs {
            timeout: num("DMSC_IB_TIMEOUT", 20, 31)? as u8,
            retry_cnt: num("DMSC_IB_RETRY_CNT", 7, 7)? as u8,
            ..QpAttrs::default()
        };
        Ok(RdmaOptions {
            filter: HcaFilter::parse(&hca)?,
            hca,
            gid_index: parse_gid_index(get("DMSC_IB_GID_INDEX").as_deref())?,
            paths,
            attrs,
            staging_slot: chunk_bytes.max(1),
            staging_slots: (num("DMSC_IB_STAGING_SLOTS", 8, 1024)? as usize).max(1),
            spray: Mode::parse(get("DMSC_SPRAY").as_deref().unwrap_or("").trim())?,
            ..RdmaOptions::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_read_and_bad_ones_named() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let o = RdmaOptions::from_env(
            &env(&[
                ("DMSC_IB_HCA", "=mlx5_0:1"),
                ("DMSC_IB_GID_INDEX", "3"),
                ("DMSC_IB_QPS_PER_CONNECTION", "4"),
                ("DMSC_IB_TIMEOUT", "18"),
            ]),
            1 << 20,
        )
        .unwrap();
        assert_eq!((o.gid_index, o.paths, o.attrs.timeout), (3, 4, 18));
        assert_eq!(o.attrs.retry_cnt, 7);
        assert!(o.filter.exact && o.staging_slot == 1 << 20);
        assert_eq!(o.spray, Mode::Adaptive);
        let o = RdmaOptions::from_env(&env(&[("DMSC_SPRAY", "rr")]), 1).unwrap();
        assert_eq!(o.spray, Mode::RoundRobin);
        let e = RdmaOptions::from_env(&env(&[("DMSC_SPRAY", "fastest")]), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("DMSC_SPRAY=fastest"), "{e}");
        let e = RdmaOptions::from_env(&env(&[("DMSC_IB_RETRY_CNT", "9")]), 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("DMSC_IB_RETRY_CNT=9 is not a number from 0 to 7"),
            "{e}"
        );
        let e = RdmaOptions::from_env(&env(&[("DMSC_IB_QPS_PER_CONNECTION", "0")]), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one queue pair"), "{e}");
    }
}
