//! Element data types, reduction operators and the description of a collective call.
//!
//! The set of types and operators follows NCCL's `ncclDataType_t` / `ncclRedOp_t`
//! (nccl.h), so that front ends can map them one to one.

use std::fmt;

/// A rank within a communicator, `0..nranks`.
pub type Rank = usize;

/// Element type of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DataType {
    /// Signed 8-bit integer.
    Int8 = 0,
    /// Unsigned 8-bit integer.
    Uint8 = 1,
    /// Signed 32-bit integer.
    Int32 = 2,
    /// Unsigned 32-bit integer.
    Uint32 = 3,
    /// Signed 64-bit integer.
    Int64 = 4,
    /// Unsigned 64-bit integer.
    Uint64 = 5,
    /// IEEE 754 binary16.
    Float16 = 6,
    /// bfloat16 (the upper half of a binary32).
    Bfloat16 = 7,
    /// IEEE 754 binary32.
    Float32 = 8,
    /// IEEE 754 binary64.
    Float64 = 9,
}

impl DataType {
    /// Every data type, in wire-code order.
    pub const ALL: [DataType; 10] = [
        DataType::Int8,
        DataType::Uint8,
        DataType::Int32,
        DataType::Uint32,
        DataType::Int64,
        DataType::Uint64,
        DataType::Float16,
        DataType::Bfloat16,
        DataType::Float32,
        DataType::Float64,
    ];

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DataType::Int8 | DataType::Uint8 => 1,
            DataType::Float16 | DataType::Bfloat16 => 2,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 4,
            DataType::Int64 | DataType::Uint64 | DataType::Float64 => 8,
        }
    }

    /// True for the floating-point types.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DataType::Float16 | DataType::Bfloat16 | DataType::Float32 | DataType::Float64
        )
    }

    /// The short name used by nccl-tests and by dmsc-perf (`float`, `half`, `int32`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DataType::Int8 => "int8",
            DataType::Uint8 => "uint8",
            DataType::Int32 => "int32",
            DataType::Uint32 => "uint32",
            DataType::Int64 => "int64",
            DataType::Uint64 => "uint64",
            DataType::Float16 => "half",
            DataType::Bfloat16 => "bfloat16",
            DataType::Float32 => "float",
            DataType::Float64 => "double",
        }
    }

    /// Decode a wire code (the `repr(u8)` value).
    pub fn from_code(code: u8) -> Option<DataType> {
        DataType::ALL.get(code as usize).copied()
    }

    /// Parse a name: nccl-tests' names (`float`, `half`, `double`, `bfloat16`, `int8`...) and
    /// the explicit ones (`float32`, `f32`, `float16`, `bf16`, `int64`, ...).
    pub fn parse(s: &str) -> Option<DataType> {
        Some(match s.to_ascii_lowercase().as_str() {
            "int8" | "i8" | "char" => DataType::Int8,
            "uint8" | "u8" => DataType::Uint8,
            "int32" | "i32" | "int" => DataType::Int32,
            "uint32" | "u32" => DataType::Uint32,
            "int64" | "i64" => DataType::Int64,
            "uint64" | "u64" => DataType::Uint64,
            "float16" | "f16" | "half" | "fp16" => DataType::Float16,
            "bfloat16" | "bf16" => DataType::Bfloat16,
            "float32" | "f32" | "float" | "fp32" => DataType::Float32,
            "float64" | "f64" | "double" | "fp64" => DataType::Float64,
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reduction operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReduceOp {
    /// Element-wise sum (wrapping for integers).
    Sum = 0,
    /// Element-wise product (wrapping for integers).
    Prod = 1,
    /// Element-wise minimum.
    Min = 2,
    /// Element-wise maximum.
    Max = 3,
    /// Sum divided by the number of ranks (integer division for integer types).
    Avg = 4,
    /// Bitwise and (integer types only).
    BAnd = 5,
    /// Bitwise or (integer types only).
    BOr = 6,
    /// Bitwise exclusive or (integer types only).
    BXor = 7,
    /// Sum of each rank's input multiplied by that rank's own factor (NCCL's
    /// `ncclRedOpCreatePreMulSum`, torch's `PREMUL_SUM`). The factor is a per-rank argument of
    /// the call, not part of what ranks agree on; ranks may pass different factors.
    PreMulSum = 8,
}

impl ReduceOp {
    /// Every operator, in wire-code order.
    pub const ALL: [ReduceOp; 9] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::Avg,
        ReduceOp::BAnd,
        ReduceOp::BOr,
        ReduceOp::BXor,
        ReduceOp::PreMulSum,
    ];

    /// Lower-case name, as printed by dmsc-perf.
    pub const fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Avg => "avg",
            ReduceOp::BAnd => "band",
            ReduceOp::BOr => "bor",
            ReduceOp::BXor => "bxor",
            ReduceOp::PreMulSum => "premul_sum",
        }
    }

    /// A bitwise operator, defined on integer types only.
    pub const fn is_bitwise(self) -> bool {
        matches!(self, ReduceOp::BAnd | ReduceOp::BOr | ReduceOp::BXor)
    }

    /// Whether this operator applies to `dtype`: bitwise operators need an integer type.
    pub fn check_dtype(self, dtype: DataType) -> crate::Result<()> {
        if self.is_bitwise() && dtype.is_float() {
            return Err(crate::Error::invalid(format!(
                "reduce op {self} applies to integer types only, not {dtype}"
            )));
        }
        Ok(())
    }

    /// Decode a wire code.
    pub fn from_code(code: u8) -> Option<ReduceOp> {
        ReduceOp::ALL.get(code as usize).copied()
    }

    /// Parse a name (`sum`, `prod`, `min`, `max`, `avg`, `band`, `bor`, `bxor`, `premul_sum`;
    /// case-insensitive).
    pub fn parse(s: &str) -> Option<ReduceOp> {
        ReduceOp::ALL
            .into_iter()
            .find(|o| o.name().eq_ignore_ascii_case(s))
    }

    /// The operator applied pairwise while combining partial results: `Avg` combines as `Sum`
    /// and is divided by the rank count once at the end; `PreMulSum` combines as `Sum` of
    /// inputs already multiplied by their factors.
    pub const fn combiner(self) -> ReduceOp {
        match self {
            ReduceOp::Avg | ReduceOp::PreMulSum => ReduceOp::Sum,
            o => o,
        }
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of a collective call. Element counts follow NCCL's conventions (see [`CollKind`]'s
/// variants); `count` in [`CollDesc`] is always the per-rank count NCCL would take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CollKind {
    /// in: `count`, out: `count`.
    AllReduce = 0,
    /// in: `count * nranks`, out: `count` (NCCL's recvcount).
    ReduceScatter = 1,
    /// in: `count`, out: `count * nranks` (NCCL's sendcount).
    AllGather = 2,
    /// in (root): `count`, out: `count`.
    Broadcast = 3,
    /// in: `count`, out (root): `count`.
    Reduce = 4,
    /// in: `count * nranks`, out: `count * nranks`; block `j` of the input goes to rank `j`.
    AllToAll = 5,
    /// Per-peer counts and displacements, given separately.
    AllToAllV = 6,
    /// No data.
    Barrier = 7,
    /// A group of point-to-point sends and receives.
    SendRecv = 8,
}

impl CollKind {
    /// snake_case name, as used by dmsc-perf and in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            CollKind::AllReduce => "all_reduce",
            CollKind::ReduceScatter => "reduce_scatter",
            CollKind::AllGather => "all_gather",
            CollKind::Broadcast => "broadcast",
            CollKind::Reduce => "reduce",
            CollKind::AllToAll => "all_to_all",
            CollKind::AllToAllV => "all_to_all_v",
            CollKind::Barrier => "barrier",
            CollKind::SendRecv => "send_recv",
        }
    }

    /// Decode a wire code.
    pub fn from_code(code: u8) -> Option<CollKind> {
        use CollKind::*;
        [
            AllReduce,
            ReduceScatter,
            AllGather,
            Broadcast,
            Reduce,
            AllToAll,
            AllToAllV,
            Barrier,
            SendRecv,
        ]
        .get(code as usize)
        .copied()
    }
}

impl fmt::Display for CollKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which algorithm implements an all-reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algo {
    /// Ring reduce-scatter followed by ring all-gather (bandwidth-optimal).
    Ring,
    /// Double binary tree (latency-optimal at scale).
    Tree,
    /// Recursive doubling: `⌈log2 p⌉` exchanges of the whole vector (all-reduce of small
    /// messages).
    RecursiveDoubling,
    /// Rabenseifner's: reduce-scatter by recursive halving, all-gather by recursive doubling
    /// (the ring's volume in `2·log2 p` steps).
    Rabenseifner,
    /// Two-level, for ranks spread over hosts: within each host, across hosts among the ranks
    /// of equal local index (or one leader per host), within each host again
    /// ([`crate::plan::plan_hierarchical`]). On one host it is the flat algorithm.
    Hierarchical,
    /// The ring all-reduce ordered host by host, entering and leaving each host once
    /// ([`crate::plan::plan_host_ring_all_reduce`]). On one host it is the ring.
    HostRing,
}

impl Algo {
    /// The names [`Algo::parse`] accepts, for messages.
    pub const NAMES: &'static str =
        "ring, tree, rd (recursive doubling), rabenseifner, hier (hierarchical), hostring";

    /// Every algorithm, in the order of [`Algo::NAMES`].
    pub const ALL: [Algo; 6] = [
        Algo::Ring,
        Algo::Tree,
        Algo::RecursiveDoubling,
        Algo::Rabenseifner,
        Algo::Hierarchical,
        Algo::HostRing,
    ];

    /// Whether this is one of the algorithms that follow the host layout
    /// ([`Algo::Hierarchical`], [`Algo::HostRing`]).
    pub fn is_host_aware(self) -> bool {
        matches!(self, Algo::Hierarchical | Algo::HostRing)
    }

    /// The name [`Algo::parse`] takes for this algorithm.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Ring => "ring",
            Algo::Tree => "tree",
            Algo::RecursiveDoubling => "rd",
            Algo::Rabenseifner => "rabenseifner",
            Algo::Hierarchical => "hier",
            Algo::HostRing => "hostring",
        }
    }

    /// Parse `ring`, `tree`, `rd` (`recursive_doubling`), `rabenseifner`, `hier`
    /// (`hierarchical`) or `hostring` (`host_ring`).
    pub fn parse(s: &str) -> Option<Algo> {
        match s.to_ascii_lowercase().as_str() {
            "ring" => Some(Algo::Ring),
            "tree" => Some(Algo::Tree),
            "rd" | "recursive_doubling" | "recursivedoubling" => Some(Algo::RecursiveDoubling),
            "rabenseifner" => Some(Algo::Rabenseifner),
            "hier" | "hierarchical" => Some(Algo::Hierarchical),
            "hostring" | "host_ring" => Some(Algo::HostRing),
            _ => None,
        }
    }
}

/// What every rank must agree on for one collective call. Compared across ranks through
/// frame headers to detect mismatched calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CollDesc {
    /// The collective.
    pub kind: CollKind,
    /// Per-rank element count (NCCL's convention; 0 for barrier).
    pub count: usize,
    /// Element type.
    pub dtype: DataType,
    /// Reduction operator (`Sum` where none applies).
    pub op: ReduceOp,
    /// Root rank (0 where none applies).
    pub root: Rank,
}

impl fmt::Display for CollDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(count={}, dtype={}",
            self.kind, self.count, self.dtype
        )?;
        if matches!(
            self.kind,
            CollKind::AllReduce | CollKind::ReduceScatter | CollKind::Reduce
        ) {
            write!(f, ", op={}", self.op)?;
        }
        if matches!(self.kind, CollKind::Broadcast | CollKind::Reduce) {
            write!(f, ", root={}", self.root)?;
        }
        f.write_str(")")
    }
}

impl CollDesc {
    /// Describe the first field in which `self` and `other` differ, e.g.
    /// `"count 1000 vs 1001"`; `None` when equal.
    pub fn difference(&self, other: &CollDesc) -> Option<String> {
        if self.kind != other.kind {
            return Some(format!("op {} vs {}", self.kind, other.kind));
        }
        if self.count != other.count {
            return Some(format!("count {} vs {}", self.count, other.count));
        }
        if self.dtype != other.dtype {
            return Some(format!("dtype {} vs {}", self.dtype, other.dtype));
        }
        if self.op != other.op {
            return Some(format!("reduce op {} vs {}", self.op, other.op));
        }
        if self.root != other.root {
            return Some(format!("root {} vs {}", self.root, other.root));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::from_code(d as u8), Some(d));
            assert_eq!(DataType::parse(d.name()), Some(d));
        }
        for o in ReduceOp::ALL {
            assert_eq!(ReduceOp::from_code(o as u8), Some(o));
            assert_eq!(ReduceOp::parse(o.name()), Some(o));
        }
        assert_eq!(DataType::from_code(10), None);
        assert_eq!(CollKind::from_code(8), Some(CollKind::SendRecv));
        assert_eq!(CollKind::from_code(9), None);
    }

    #[test]
    fn difference_names_the_field() {
        let a = CollDesc {
            kind: CollKind::AllReduce,
            count: 10,
            dtype: DataType::Float32,
            op: ReduceOp::Sum,
            root: 0,
        };
        let mut b = a;
        assert_eq!(a.difference(&b), None);
        b.count = 11;
        assert_eq!(a.difference(&b).unwrap(), "count 10 vs 11");
        b = a;
        b.op = ReduceOp::Max;
        assert_eq!(a.difference(&b).unwrap(), "reduce op sum vs max");
    }
}
