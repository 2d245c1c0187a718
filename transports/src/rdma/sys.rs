//! The system's verbs, found at run time: is libibverbs installed, and which devices and
//! ports are there.
//!
//! # Why run-time loading, and why not a bindings crate
//!
//! One dmsc build must run on hosts with and without rdma-core, as cudarc does for CUDA. The
//! candidates: `rdma-sys` (last release 2023) runs bindgen in its build script and needs
//! `libibverbs-dev`, `librdmacm-dev` and `libclang` on every build host; `ibverbs` vendors
//! rdma-core and builds it with cmake; `sideway` loads libibverbs at run time but is a large
//! dependency this workspace cannot fetch and check offline here. dmsc therefore loads
//! `libibverbs.so.1` with `dlopen(3)` itself (the libc crate, already a dependency): no build
//! dependency at all, and a host without the library gets a clear reason instead of a
//! loader error at start-up. Devices and ports are read from sysfs
//! (`/sys/class/infiniband/<dev>/ports/<n>/{state,link_layer}`, the files `ibv_devinfo`
//! reports from), which needs no library and cannot crash.
//!
//! # What this build does on real verbs
//!
//! [`SysVerbs::devices`] lists devices and ports from sysfs; [`SysVerbs::open`] opens the
//! selected port through libibverbs ([`super::sys_context::SysContext`]: protection domain,
//! completion queue, reliable-connected queue pairs, `ibv_post_send`/`ibv_post_recv`/
//! `ibv_poll_cq` through the context's operations, with the struct layouts of
//! [`super::ibv_abi`], checked against the installed `<infiniband/verbs.h>` by a test). The
//! library's functions are resolved at run time ([`super::ibv_lib`]). Where the library or a
//! device is missing, opening fails with the reason and the connect path falls back to TCP.
//! No machine with an RDMA device (or a kernel allowing Soft-RoCE) was available where this
//! was written: the verbs data path has run only over the fake, never on a real device.

use super::sys_context::SysContext;
use super::verbs::{DeviceInfo, PortInfo, VerbsContext, VerbsProvider};
use dmsc_core::error::{Error, Result};
use std::path::Path;

/// The sysfs directory of RDMA devices.
pub const SYSFS_IB: &str = "/sys/class/infiniband";

pub use super::ibv_lib::LIBIBVERBS;

/// Whether `libibverbs.so.1` can be loaded here with every function dmsc uses (and why not).
pub fn probe_library() -> std::result::Result<(), String> {
    super::ibv_lib::IbvLib::get().map(|_| ())
}

/// The devices and ports listed under `root` (normally [`SYSFS_IB`]); empty when it does
/// not exist.
pub fn devices_in(root: &Path) -> Result<Vec<DeviceInfo>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", root.display()), &e)),
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let name = ent.file_name().to_string_lossy().into_owned();
        let mut ports = Vec::new();
        if let Ok(pd) = std::fs::read_dir(ent.path().join("ports")) {
            for p in pd.flatten() {
                let Ok(port) = p.file_name().to_string_lossy().parse::<u8>() else {
                    continue;
                };
                let read = |f: &str| {
                    std::fs::read_to_string(p.path().join(f))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default()
                };
                // `state` reads like `4: ACTIVE`.
                let state = read("state");
                ports.push(PortInfo {
                    port,
                    active: state.ends_with("ACTIVE"),
                    link_layer: read("link_layer"),
                });
            }
        }
        ports.sort_by_key(|p| p.port);
        out.push(DeviceInfo { name, ports });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The system's verbs.
pub struct SysVerbs;

impl VerbsProvider for SysVerbs {
    fn name(&self) -> &'static str {
        "libibverbs"
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        devices_in(Path::new(SYSFS_IB))
    }

    fn open(
        &self,
        device: &str,
        port: u8,
        gid_index: u8,
        cq_depth: usize,
    ) -> Result<Box<dyn VerbsContext>> {
        Ok(Box::new(SysContext::open(
            device, port, gid_index, cq_depth,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_devices_and_ports_are_read() {
        let root = std::env::temp_dir().join(format!("dmsc-ib-{}", std::process::id()));
        let p = root.join("mlx5_0/ports/1");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("state"), "4: ACTIVE\n").unwrap();
        std::fs::write(p.join("link_layer"), "Ethernet\n").unwrap();
        let q = root.join("mlx5_0/ports/2");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join("state"), "1: DOWN\n").unwrap();
        let d = devices_in(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name, "mlx5_0");
        assert_eq!(
            d[0].ports,
            vec![
                PortInfo {
                    port: 1,
                    active: true,
                    link_layer: "Ethernet".into()
                },
                PortInfo {
                    port: 2,
                    active: false,
                    link_layer: String::new()
                }
            ]
        );
        assert!(
            devices_in(&root).unwrap().is_empty(),
            "absent root: no devices"
        );
    }

    #[test]
    fn opening_a_real_device_says_what_is_missing() {
        let e = match SysVerbs.open("mlx5_0", 1, 0, 64) {
            Ok(_) => {
                eprintln!("an RDMA device mlx5_0 exists here; nothing to check");
                return;
            }
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("libibverbs.so.1 cannot be loaded")
                || e.contains("no RDMA device")
                || e.contains("RDMA device mlx5_0 not found"),
            "{e}"
        );
    }
}
