//! Property tests of every planner against the simulator.
//!
//! The sweeps in `sweep.rs` are exhaustive over cheap dimensions (world sizes 1 to 16, edge
//! counts, every type and operator, in place and out of place, every algorithm); `props.rs`
//! draws random cases with proptest; `validation.rs` checks argument errors.

mod hier;
mod oracle;
mod props;
mod sweep;
mod validation;
mod vector;
