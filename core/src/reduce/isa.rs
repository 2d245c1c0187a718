//! The widest vector instruction set this CPU offers the reduction kernels, detected once
//! at run time.
//!
//! The crate is built for the baseline of its target (x86-64: SSE2, 128-bit vectors), so
//! that one binary runs everywhere; the kernels are compiled again with AVX2 enabled and
//! called through this choice, as Open MPI's `op/avx` component and glibc's `memcpy` choose
//! theirs.

use std::sync::atomic::{AtomicU8, Ordering};

/// A vector instruction set the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// The target's baseline.
    Base,
    /// x86-64 AVX2 (256-bit vectors).
    Avx2,
}

/// 0: not detected yet; otherwise 1 + the `Isa` discriminant.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// The instruction set to use, detected on first call (`DMSC_ISA=base` keeps to the
/// baseline, for measurements and for tests of both variants).
pub(crate) fn chosen() -> Isa {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => Isa::Base,
        2 => Isa::Avx2,
        _ => {
            let isa = cap(detect(), std::env::var("DMSC_ISA").ok().as_deref());
            CHOSEN.store(isa as u8 + 1, Ordering::Relaxed);
            isa
        }
    }
}

/// `found`, lowered to the baseline when `limit` (`DMSC_ISA`, case-insensitive) says so.
fn cap(found: Isa, limit: Option<&str>) -> Isa {
    match limit {
        Some(v) if v.trim().eq_ignore_ascii_case("base") => Isa::Base,
        _ => found,
    }
}

/// Whether `v` is a value of `DMSC_ISA` the kernels understand: `base` or `auto`
/// (case-insensitive). The facade checks the variable with this when it reads the
/// configuration, since the kernels, which read it lazily, cannot report an error.
pub fn isa_setting_is_valid(v: &str) -> bool {
    ["base", "auto"]
        .iter()
        .any(|a| v.trim().eq_ignore_ascii_case(a))
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return Isa::Avx2;
        }
    }
    Isa::Base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_only_lowers_the_choice() {
        assert_eq!(cap(Isa::Avx2, Some("base")), Isa::Base);
        assert_eq!(cap(Isa::Base, Some("avx2")), Isa::Base);
        assert_eq!(cap(Isa::Avx2, Some("other")), Isa::Avx2);
        assert_eq!(cap(Isa::Avx2, None), Isa::Avx2);
        assert_eq!(cap(Isa::Avx2, Some(" BASE ")), Isa::Base);
    }

    #[test]
    fn only_base_and_auto_are_settings() {
        for v in ["base", "Base", "auto", "AUTO "] {
            assert!(isa_setting_is_valid(v), "{v}");
        }
        for v in ["", "avx2", "sse2", "basic"] {
            assert!(!isa_setting_is_valid(v), "{v}");
        }
    }
}
