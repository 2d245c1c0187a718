//! `dmsc.ReduceOp` and the parsing of `op=` arguments.

use crate::errors::invalid;
use pyo3::prelude::*;
use pyo3::types::PyString;

/// Reduction operator, named as in `torch.distributed.ReduceOp`.
///
/// `op=` arguments also accept the names as strings (`"sum"`, `"product"`/`"prod"`, `"min"`,
/// `"max"`, `"avg"`, any case) and objects with such a `name` attribute, such as
/// `torch.distributed.ReduceOp.SUM`. AVG divides the sum by the number of ranks (integer
/// division for integer types).
#[pyclass(eq, eq_int, frozen, hash, module = "dmsc")]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ReduceOp {
    /// Element-wise sum (wrapping for integers).
    #[pyo3(name = "SUM")]
    Sum = 0,
    /// Element-wise product (wrapping for integers).
    #[pyo3(name = "PRODUCT")]
    Product = 1,
    /// Element-wise minimum.
    #[pyo3(name = "MIN")]
    Min = 2,
    /// Element-wise maximum.
    #[pyo3(name = "MAX")]
    Max = 3,
    /// Sum divided by the number of ranks.
    #[pyo3(name = "AVG")]
    Avg = 4,
    /// Bitwise and (integer types only).
    #[pyo3(name = "BAND")]
    Band = 5,
    /// Bitwise or (integer types only).
    #[pyo3(name = "BOR")]
    Bor = 6,
    /// Bitwise exclusive or (integer types only).
    #[pyo3(name = "BXOR")]
    Bxor = 7,
    /// Sum of each rank's tensor multiplied by that rank's `factor=` argument.
    #[pyo3(name = "PREMUL_SUM")]
    PremulSum = 8,
}

#[pymethods]
impl ReduceOp {
    /// The operator's name: `"SUM"`, `"PRODUCT"`, `"MIN"`, `"MAX"`, `"AVG"`, `"BAND"`,
    /// `"BOR"`, `"BXOR"` or `"PREMUL_SUM"`.
    #[getter]
    fn name(&self) -> &'static str {
        match self {
            ReduceOp::Sum => "SUM",
            ReduceOp::Product => "PRODUCT",
            ReduceOp::Min => "MIN",
            ReduceOp::Max => "MAX",
            ReduceOp::Avg => "AVG",
            ReduceOp::Band => "BAND",
            ReduceOp::Bor => "BOR",
            ReduceOp::Bxor => "BXOR",
            ReduceOp::PremulSum => "PREMUL_SUM",
        }
    }
}

impl ReduceOp {
    fn core(self) -> dmsc::ReduceOp {
        match self {
            ReduceOp::Sum => dmsc::ReduceOp::Sum,
            ReduceOp::Product => dmsc::ReduceOp::Prod,
            ReduceOp::Min => dmsc::ReduceOp::Min,
            ReduceOp::Max => dmsc::ReduceOp::Max,
            ReduceOp::Avg => dmsc::ReduceOp::Avg,
            ReduceOp::Band => dmsc::ReduceOp::BAnd,
            ReduceOp::Bor => dmsc::ReduceOp::BOr,
            ReduceOp::Bxor => dmsc::ReduceOp::BXor,
            ReduceOp::PremulSum => dmsc::ReduceOp::PreMulSum,
        }
    }
}

fn by_name(s: &str) -> Option<dmsc::ReduceOp> {
    Some(match s.to_ascii_lowercase().as_str() {
        "sum" => dmsc::ReduceOp::Sum,
        "product" | "prod" => dmsc::ReduceOp::Prod,
        "min" => dmsc::ReduceOp::Min,
        "max" => dmsc::ReduceOp::Max,
        "avg" => dmsc::ReduceOp::Avg,
        "band" => dmsc::ReduceOp::BAnd,
        "bor" => dmsc::ReduceOp::BOr,
        "bxor" => dmsc::ReduceOp::BXor,
        "premul_sum" => dmsc::ReduceOp::PreMulSum,
        _ => return None,
    })
}

/// Parse an `op=` argument (`None`: SUM).
pub fn parse(op: Option<&Bound<'_, PyAny>>) -> PyResult<dmsc::ReduceOp> {
    let Some(op) = op else {
        return Ok(dmsc::ReduceOp::Sum);
    };
    if let Ok(o) = op.cast::<ReduceOp>() {
        return Ok(o.get().core());
    }
    let name = if let Ok(s) = op.cast::<PyString>() {
        Some(s.to_string())
    } else {
        match op.getattr(pyo3::intern!(op.py(), "name")) {
            Ok(n) => n.extract::<String>().ok(),
            Err(_) => None,
        }
    };
    if let Some(o) = name.as_deref().and_then(by_name) {
        return Ok(o);
    }
    let shown = op
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "?".into());
    Err(invalid(format!(
        "op {shown} is not a supported reduction: use dmsc.ReduceOp.SUM, PRODUCT, MIN, MAX, \
         AVG, BAND, BOR, BXOR or PREMUL_SUM (or their names as strings)"
    )))
}
