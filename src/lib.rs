//! dmsc facade (placeholder)
