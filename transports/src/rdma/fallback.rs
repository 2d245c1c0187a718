//! Whether RDMA can serve this rank, and the one log line when it cannot.
//!
//! A build runs on hosts with and without verbs. [`probe`] answers, without side effects,
//! whether a selected active port exists and its provider can open it; when not, the caller
//! serves the peers over TCP and [`log_fallback_once`] says why, once per process.

use super::options::RdmaOptions;
use super::verbs::VerbsProvider;
use std::sync::atomic::{AtomicBool, Ordering};

static LOGGED: AtomicBool = AtomicBool::new(false);

/// `Ok` with `device:port` when RDMA can serve this rank through `provider`, else why not.
pub fn probe(provider: &dyn VerbsProvider, opts: &RdmaOptions) -> Result<String, String> {
    let devices = provider
        .devices()
        .map_err(|e| format!("listing RDMA devices failed: {e}"))?;
    if devices.is_empty() {
        return Err(format!(
            "no RDMA device found ({} lists none)",
            provider_source(provider)
        ));
    }
    let sel = opts
        .filter
        .select(&devices, &opts.hca)
        .map_err(|e| e.to_string())?;
    let first = &sel[0];
    provider
        .open(&first.device, first.port, opts.gid_index, 64)
        .map_err(|e| e.to_string())?;
    Ok(format!("{}:{}", first.device, first.port))
}

fn provider_source(provider: &dyn VerbsProvider) -> &'static str {
    match provider.name() {
        "libibverbs" => super::sys::SYSFS_IB,
        _ => "the provider",
    }
}

/// Log, once per process, that RDMA is not used and why; returns whether this call logged.
pub fn log_fallback_once(reason: &str) -> bool {
    if LOGGED.swap(true, Ordering::AcqRel) {
        return false;
    }
    log::info!(target: dmsc_core::subsys::NET, "RDMA not used, falling back to TCP: {reason}");
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rdma::fake::FakeFabric;
    use crate::rdma::hca::HcaFilter;

    #[test]
    fn no_device_gives_a_reason_and_the_log_comes_once() {
        let f = FakeFabric::new(1);
        let none = f.provider(&[]);
        let why = probe(&none, &RdmaOptions::default()).unwrap_err();
        assert!(why.contains("no RDMA device found"), "{why}");
        let first = log_fallback_once(&why);
        assert!(!log_fallback_once(&why), "logged twice");
        let _ = first; // another test may have logged first; the second call never logs
        assert_eq!(
            probe(&f.provider(&[0]), &RdmaOptions::default()).unwrap(),
            "fake0:1"
        );
        let opts = RdmaOptions {
            hca: "mlx5".into(),
            filter: HcaFilter::parse("mlx5").unwrap(),
            ..RdmaOptions::default()
        };
        let why = probe(&f.provider(&[0]), &opts).unwrap_err();
        assert!(
            why.contains("DMSC_IB_HCA=mlx5 matches no active RDMA port; found: fake0:1"),
            "{why}"
        );
    }

    #[test]
    fn this_host_without_verbs_falls_back_with_a_reason() {
        // This host has no RDMA device (its kernel has no RDMA support); rdma-core may or
        // may not be installed. Either way the reason says what is missing, and the TCP
        // fallback is logged once.
        let why = match probe(&crate::rdma::sys::SysVerbs, &RdmaOptions::default()) {
            Ok(port) => {
                eprintln!("an RDMA port {port} opens here; nothing to check");
                return;
            }
            Err(why) => why,
        };
        assert!(
            why.contains("no RDMA device") || why.contains("cannot be loaded"),
            "{why}"
        );
        let _ = log_fallback_once(&why);
        assert!(!log_fallback_once(&why), "logged twice");
        // Opening a named device directly goes through libibverbs and says the same.
        if crate::rdma::sys::probe_library().is_ok() {
            let e = match crate::rdma::sys::SysVerbs.open("mlx5_0", 1, 0, 64) {
                Ok(_) => panic!("no device is listed, yet mlx5_0 opened"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains("no RDMA device"), "{e}");
        }
    }
}
