//! Combining redundant results: majority vote, or weighted average.

use crate::error::{Error, Result};
use crate::task::Aggregate;
use serde_json::Value;

/// Combine `results` (value, weight of the worker that computed it) by `how`.
pub fn combine(how: Aggregate, results: &[(Value, f64)]) -> Result<Value> {
    if results.is_empty() {
        return Err(Error::invalid("results", "nothing to aggregate"));
    }
    match how {
        Aggregate::Vote => vote(results),
        Aggregate::WeightedAverage => weighted_average(results),
    }
}

fn vote(results: &[(Value, f64)]) -> Result<Value> {
    let mut counts: Vec<(&Value, usize)> = Vec::new();
    for (v, _) in results {
        match counts.iter_mut().find(|(c, _)| *c == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    let (v, n) = counts.iter().max_by_key(|(_, n)| *n).expect("non-empty");
    if 2 * n > results.len() {
        Ok((*v).clone())
    } else {
        Err(Error::invalid(
            "results",
            format!(
                "no majority: the most common of {} results was returned {n} times",
                results.len()
            ),
        ))
    }
}

fn numbers(v: &Value) -> Option<Vec<f64>> {
    match v {
        Value::Number(x) => Some(vec![x.as_f64()?]),
        Value::Array(a) => a.iter().map(Value::as_f64).collect(),
        _ => None,
    }
}

fn weighted_average(results: &[(Value, f64)]) -> Result<Value> {
    let mut sum: Option<Vec<f64>> = None;
    let mut total = 0.0;
    let scalar = matches!(results[0].0, Value::Number(_));
    for (i, (v, w)) in results.iter().enumerate() {
        let xs = numbers(v).ok_or_else(|| {
            Error::invalid(
                format!("results[{i}]"),
                "is not a number or an array of numbers",
            )
        })?;
        let acc = sum.get_or_insert_with(|| vec![0.0; xs.len()]);
        if acc.len() != xs.len() || scalar != matches!(v, Value::Number(_)) {
            return Err(Error::invalid(
                format!("results[{i}]"),
                "has a different shape from results[0]",
            ));
        }
        for (a, x) in acc.iter_mut().zip(&xs) {
            *a += w * x;
        }
        total += w;
    }
    if total <= 0.0 {
        return Err(Error::invalid(
            "results",
            "the workers' weights sum to zero",
        ));
    }
    let avg: Vec<f64> = sum
        .unwrap_or_default()
        .into_iter()
        .map(|s| s / total)
        .collect();
    Ok(if scalar {
        Value::from(avg[0])
    } else {
        Value::from(avg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn vote_needs_a_strict_majority() {
        let r = [(json!("a"), 1.0), (json!("b"), 1.0), (json!("a"), 1.0)];
        assert_eq!(combine(Aggregate::Vote, &r).unwrap(), json!("a"));
        let r = [(json!("a"), 1.0), (json!("b"), 1.0)];
        assert!(combine(Aggregate::Vote, &r)
            .unwrap_err()
            .to_string()
            .contains("no majority"));
    }

    #[test]
    fn weighted_average_of_scalars_and_arrays() {
        let r = [(json!(1.0), 1.0), (json!(4.0), 2.0)];
        assert_eq!(combine(Aggregate::WeightedAverage, &r).unwrap(), json!(3.0));
        let r = [(json!([1.0, 0.0]), 3.0), (json!([5.0, 4.0]), 1.0)];
        assert_eq!(
            combine(Aggregate::WeightedAverage, &r).unwrap(),
            json!([2.0, 1.0])
        );
        let r = [(json!([1.0]), 1.0), (json!([1.0, 2.0]), 1.0)];
        assert!(combine(Aggregate::WeightedAverage, &r)
            .unwrap_err()
            .to_string()
            .contains("results[1]"));
    }
}
