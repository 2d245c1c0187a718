//! The queue pair state machine (RESET → INIT → RTR → RTS, and ERROR) and the attributes
//! the transitions take.
//!
//! Source: `ibv_modify_qp(3)` and the InfiniBand Architecture Specification vol. 1, §10.3
//! (queue pair states): a reliable-connected queue pair goes RESET → INIT (port, access
//! flags) → RTR (remote QPN, path, MTU, receive PSN, `min_rnr_timer`) → RTS (send PSN,
//! `timeout`, `retry_cnt`, `rnr_retry`); any state may go to ERROR or back to RESET. The
//! defaults are NCCL's (`NCCL_IB_TIMEOUT` 20, `NCCL_IB_RETRY_CNT` 7, see its `net_ib.cc`).

use dmsc_core::error::{Error, Result};

/// A queue pair's state (`ibv_qp_state`, the ones this transport uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QpState {
    /// Just created, or reset: no work requests accepted.
    Reset,
    /// Initialised: receives may be posted, nothing is processed.
    Init,
    /// Ready to receive: receives are processed.
    Rtr,
    /// Ready to send.
    Rts,
    /// Failed: every outstanding and further work request completes with a flush error.
    Error,
}

impl QpState {
    /// The libibverbs name.
    pub fn name(self) -> &'static str {
        match self {
            QpState::Reset => "RESET",
            QpState::Init => "INIT",
            QpState::Rtr => "RTR",
            QpState::Rts => "RTS",
            QpState::Error => "ERROR",
        }
    }

    /// Whether `ibv_modify_qp` accepts the move from `self` to `to`.
    pub fn can_move_to(self, to: QpState) -> bool {
        matches!(
            (self, to),
            (QpState::Reset, QpState::Init)
                | (QpState::Init, QpState::Rtr)
                | (QpState::Rtr, QpState::Rts)
                | (_, QpState::Error)
                | (_, QpState::Reset)
        )
    }

    /// `Ok` when the move is allowed, else an error naming both states.
    pub fn check_move(self, to: QpState, qpn: u32) -> Result<()> {
        if self.can_move_to(to) {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "queue pair {qpn}: no transition from {} to {}",
                self.name(),
                to.name()
            )))
        }
    }

    /// Whether receives may be posted.
    pub fn accepts_recv(self) -> bool {
        !matches!(self, QpState::Reset)
    }

    /// Whether sends may be posted.
    pub fn accepts_send(self) -> bool {
        matches!(self, QpState::Rts | QpState::Error)
    }
}

/// Transition attributes (`DMSC_IB_TIMEOUT`, `DMSC_IB_RETRY_CNT`, `DMSC_IB_RNR_RETRY`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpAttrs {
    /// Local ACK timeout exponent: 4.096 µs × 2^timeout (20: about 4 s).
    pub timeout: u8,
    /// Transport retries before `IBV_WC_RETRY_EXC_ERR` (at most 7).
    pub retry_cnt: u8,
    /// Receiver-not-ready retries before `IBV_WC_RNR_RETRY_EXC_ERR` (7: forever).
    pub rnr_retry: u8,
    /// Path MTU in bytes (the smaller of both ports').
    pub mtu: u32,
}

impl Default for QpAttrs {
    fn default() -> Self {
        QpAttrs {
            timeout: 20,
            retry_cnt: 7,
            rnr_retry: 7,
            mtu: 4096,
        }
    }
}

impl QpAttrs {
    /// Check the ranges `ibv_modify_qp` enforces.
    pub fn validate(&self) -> Result<()> {
        if self.timeout > 31 {
            return Err(Error::invalid(format!(
                "DMSC_IB_TIMEOUT={} is out of range 0..=31",
                self.timeout
            )));
        }
        if self.retry_cnt > 7 {
            return Err(Error::invalid(format!(
                "DMSC_IB_RETRY_CNT={} is out of range 0..=7",
                self.retry_cnt
            )));
        }
        if self.rnr_retry > 7 {
            return Err(Error::invalid(format!(
                "DMSC_IB_RNR_RETRY={} is out of range 0..=7",
                self.rnr_retry
            )));
        }
        if ![256, 512, 1024, 2048, 4096].contains(&self.mtu) {
            return Err(Error::invalid(format!(
                "MTU {} is not one of 256, 512, 1024, 2048, 4096",
                self.mtu
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_verbs_transitions_are_allowed() {
        use QpState::*;
        assert!(Reset.can_move_to(Init) && Init.can_move_to(Rtr) && Rtr.can_move_to(Rts));
        assert!(!Reset.can_move_to(Rts) && !Init.can_move_to(Rts) && !Rts.can_move_to(Rtr));
        assert!(Rts.can_move_to(Error) && Error.can_move_to(Reset));
        let e = Reset.check_move(Rtr, 9).unwrap_err().to_string();
        assert!(
            e.contains("queue pair 9") && e.contains("RESET to RTR"),
            "{e}"
        );
    }

    #[test]
    fn defaults_are_nccls_and_ranges_are_checked() {
        let a = QpAttrs::default();
        assert_eq!((a.timeout, a.retry_cnt), (20, 7));
        a.validate().unwrap();
        let bad = QpAttrs { retry_cnt: 8, ..a };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("RETRY_CNT=8"));
    }
}
