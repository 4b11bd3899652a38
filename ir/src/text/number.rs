//! Reading numbers and literals: the inverse of [`super::format_float`] and of
//! the printer's literal lists. Shared by the text parser and the JSON reader.

use crate::literal::{round_to, Literal, LiteralData};
use crate::types::{DType, TensorType};

/// Reads a float written as by [`super::format_float`]: a decimal number
/// (`0.5`, `-1e-30`), `inf`, `-inf`, `nan`, `-nan`, or `0x` and 16 hex digits,
/// the raw bits of an `f64` (how NaNs with a payload print).
///
/// `dtype` is the type the value is stored as: `f32`, `f16` and `bf16` values
/// are rounded to that type (f32 directly from the decimal, so there is no
/// double rounding); any other dtype means a plain `f64`. NaNs keep their bits.
/// A finite number that rounds to infinity is refused.
pub(crate) fn parse_float(text: &str, dtype: DType) -> Result<f64, String> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let target = if dtype.is_float() {
        dtype.name()
    } else {
        "f64"
    };
    let bad = || format!("expected a float for {target} but found '{text}'");
    if let Some(hex) = body.strip_prefix("0x") {
        if neg {
            return Err(format!(
                "'{text}': a hex float is the raw bits of an f64 and takes no sign"
            ));
        }
        if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "'{text}': a hex float needs 1 to 16 hex digits (the bits of an f64)"
            ));
        }
        let v = f64::from_bits(u64::from_str_radix(hex, 16).map_err(|_| bad())?);
        return Ok(if v.is_nan() || !dtype.is_float() {
            v
        } else {
            round_to(dtype, v)
        });
    }
    let magnitude = match body {
        "inf" => {
            return Ok(if neg {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        "nan" => return Ok(if neg { -f64::NAN } else { f64::NAN }),
        _ if body.starts_with(|c: char| c.is_ascii_digit()) => {
            let parsed = if dtype == DType::F32 {
                body.parse::<f32>().map(f64::from).ok()
            } else {
                body.parse::<f64>().ok()
            };
            parsed.ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    let v = if neg { -magnitude } else { magnitude };
    let v = if dtype.is_float() {
        round_to(dtype, v)
    } else {
        v
    };
    if v.is_infinite() {
        return Err(format!(
            "float literal '{text}' is out of range for {target}"
        ));
    }
    Ok(v)
}

/// Reads an integer of `dtype` (its range is checked, nothing wraps).
pub(crate) fn parse_int(text: &str, dtype: DType) -> Result<i64, String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "expected an integer for {dtype} but found '{text}'"
        ));
    }
    let (lo, hi) = match dtype {
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        _ => (i64::MIN, i64::MAX),
    };
    match text.parse::<i64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!(
            "integer literal '{text}' is out of range for {dtype}"
        )),
    }
}

/// Reads a bool (`true` or `false`).
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "expected true or false for bool but found '{text}'"
        )),
    }
}

/// The static shape of a constant of type `ty`, and its element count.
pub(crate) fn static_shape(ty: &TensorType) -> Result<(Vec<usize>, usize), String> {
    let mut shape = Vec::with_capacity(ty.rank());
    let mut numel: usize = 1;
    for d in &ty.shape {
        match d.as_const() {
            Some(n) if n >= 0 => {
                shape.push(n as usize);
                numel = numel
                    .checked_mul(n as usize)
                    .ok_or_else(|| format!("a const of type {ty} is too large"))?;
            }
            _ => {
                return Err(format!(
                    "a const needs a static shape, but its type is {ty}"
                ))
            }
        }
    }
    Ok((shape, numel))
}

/// Builds the literal of type `ty` from the text of its elements (`1.5`,
/// `-inf`, `true`), each with the position errors about it should carry;
/// `whole` is the position of the literal as a whole.
pub(crate) fn build_literal<P: Copy>(
    ty: &TensorType,
    items: &[(&str, P)],
    whole: P,
) -> Result<Literal, (P, String)> {
    let (shape, numel) = static_shape(ty).map_err(|m| (whole, m))?;
    if items.len() != numel {
        return Err((
            whole,
            format!(
                "const has {} value(s) but its type {ty} holds {numel}",
                items.len()
            ),
        ));
    }
    let dtype = ty.dtype;
    let data = if dtype.is_float() {
        let v: Result<Vec<f64>, _> = items
            .iter()
            .map(|(e, p)| parse_float(e, dtype).map_err(|m| (*p, m)))
            .collect();
        LiteralData::Float(v?)
    } else if dtype == DType::Bool {
        let v: Result<Vec<bool>, _> = items
            .iter()
            .map(|(e, p)| parse_bool(e).map_err(|m| (*p, m)))
            .collect();
        LiteralData::Bool(v?)
    } else {
        let v: Result<Vec<i64>, _> = items
            .iter()
            .map(|(e, p)| parse_int(e, dtype).map_err(|m| (*p, m)))
            .collect();
        LiteralData::Int(v?)
    };
    Ok(Literal { dtype, shape, data })
}
