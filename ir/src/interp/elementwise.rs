//! Element-wise ops: `unary`, `binary`, `compare`, `select`, `cast`.
//!
//! Operands broadcast with numpy rules (right-aligned; each dim equal or 1).
//!
//! **Floats** are computed in f64 from the exact operand values and the result
//! is rounded once to the declared dtype (Declared precision) or kept in f64
//! (F64 precision). For `+ - * /` and `sqrt` one rounding from f64 equals the
//! IEEE f32 (or f16/bf16) operation exactly; for the transcendental functions
//! it is at least as accurate as computing in f32.
//!
//! - `max`/`min` propagate NaN; `max(-0, +0) = +0`, `min(-0, +0) = -0`.
//! - `sigmoid(x) = 1/(1+e^-x)` for `x ≥ 0`, `e^x/(1+e^x)` otherwise (no overflow);
//!   `silu(x) = x·sigmoid(x)`; `softplus(x) = max(x,0) + ln(1+e^-|x|)`.
//! - `gelu(x) = 0.5·x·(1+erf(x/√2))`, evaluated as `0.5·x·erfc(-x/√2)` so the
//!   negative tail keeps its relative accuracy; `gelu_tanh(x) =
//!   0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³)))`.
//! - `rsqrt(x) = 1/√x`, `recip(x) = 1/x`, `log` is the natural logarithm.
//!
//! **Integers** use wrapping (two's complement) arithmetic in their width;
//! `div` truncates toward zero and a zero divisor is
//! [`InterpError::DivisionByZero`]; `abs`/`neg` of the minimum value wrap to
//! itself. **Bools**: `not`, `and`, `or`; comparisons order `false < true`.
//!
//! **Cast**: float→float rounds to nearest even (F64 precision keeps f64);
//! float→int truncates toward zero, saturates at the type's range, NaN → 0;
//! int→int wraps; int→float rounds to nearest even; number→bool is `x != 0`
//! (so NaN → true); bool→number is 0 or 1.

use super::error::InterpError;
use super::index::broadcast_to;
use super::value::{
    dispatch, float_tensor, float_tensor_from_ints, float_to_int, floats, int_tensor, ints, kind,
    view_as, Elem, Kind, Out,
};
use super::Precision;
use crate::op::{BinaryOp, CmpOp, UnaryOp};
use crate::tensor::{Tensor, TensorData};
use crate::types::DType;
use std::borrow::Cow;

/// Two operands broadcast to the result shape.
type Pair<'a, T> = (Cow<'a, [T]>, Cow<'a, [T]>);

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn gelu(x: f64) -> f64 {
    0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

fn gelu_tanh(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

fn softplus(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// IEEE 754-2019 `maximum`: NaN if either is NaN, and +0 above -0.
pub(crate) fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b || (a == b && b.is_sign_negative()) {
        a
    } else {
        b
    }
}

/// IEEE 754-2019 `minimum`: NaN if either is NaN, and -0 below +0.
pub(crate) fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a < b || (a == b && a.is_sign_negative()) {
        a
    } else {
        b
    }
}

fn float_unary(u: UnaryOp) -> Option<fn(f64) -> f64> {
    Some(match u {
        UnaryOp::Neg => |x: f64| -x,
        UnaryOp::Abs => f64::abs,
        UnaryOp::Exp => f64::exp,
        UnaryOp::Log => f64::ln,
        UnaryOp::Sqrt => f64::sqrt,
        UnaryOp::Rsqrt => |x: f64| 1.0 / x.sqrt(),
        UnaryOp::Recip => |x: f64| 1.0 / x,
        UnaryOp::Sin => f64::sin,
        UnaryOp::Cos => f64::cos,
        UnaryOp::Tanh => f64::tanh,
        UnaryOp::Sigmoid => sigmoid,
        UnaryOp::Silu => |x: f64| x * sigmoid(x),
        UnaryOp::Gelu => gelu,
        UnaryOp::GeluTanh => gelu_tanh,
        UnaryOp::Softplus => softplus,
        UnaryOp::Floor => f64::floor,
        UnaryOp::Not => return None,
    })
}

fn not_defined(what: &str, d: &TensorData) -> InterpError {
    InterpError::operands(format!(
        "`{what}` is not defined on {}",
        super::value::storage_name(d)
    ))
}

/// `unary(u)` of `x`.
pub(crate) fn unary(
    u: UnaryOp,
    x: &Tensor,
    out: &Out,
    p: Precision,
) -> Result<Tensor, InterpError> {
    let shape = x.shape.clone();
    match kind(&x.data) {
        Kind::Float => {
            let f = float_unary(u).ok_or_else(|| not_defined(u.name(), &x.data))?;
            let v = floats(x).iter().map(|&a| f(a)).collect();
            Ok(float_tensor(out.dtype, shape, v, p))
        }
        Kind::Int => {
            let f: fn(i64) -> i64 = match u {
                UnaryOp::Neg => i64::wrapping_neg,
                UnaryOp::Abs => i64::wrapping_abs,
                _ => return Err(not_defined(u.name(), &x.data)),
            };
            Ok(int_tensor(
                out.dtype,
                shape,
                ints(x).iter().map(|&a| f(a)).collect(),
            ))
        }
        Kind::Bool => match (u, &x.data) {
            (UnaryOp::Not, TensorData::Bool(v)) => Ok(Tensor {
                shape,
                data: TensorData::Bool(v.iter().map(|b| !b).collect()),
            }),
            _ => Err(not_defined(u.name(), &x.data)),
        },
    }
}

/// Both operands broadcast to `shape`, in a compute representation.
fn pair<'a, T: Copy>(
    a: &'a [T],
    a_shape: &[usize],
    b: &'a [T],
    b_shape: &[usize],
    shape: &[usize],
) -> Result<Pair<'a, T>, InterpError> {
    Ok((
        broadcast_to(a, a_shape, shape)?,
        broadcast_to(b, b_shape, shape)?,
    ))
}

/// `binary(op)` of `x` and `y`, broadcast to `out.shape`.
pub(crate) fn binary(
    op: BinaryOp,
    x: &Tensor,
    y: &Tensor,
    out: &Out,
    p: Precision,
) -> Result<Tensor, InterpError> {
    let shape = &out.shape;
    match (kind(&x.data), kind(&y.data)) {
        (Kind::Float, Kind::Float) => {
            let f: fn(f64, f64) -> f64 = match op {
                BinaryOp::Add => |a, b| a + b,
                BinaryOp::Sub => |a, b| a - b,
                BinaryOp::Mul => |a, b| a * b,
                BinaryOp::Div => |a, b| a / b,
                BinaryOp::Max => max_nan,
                BinaryOp::Min => min_nan,
                BinaryOp::Pow => f64::powf,
                BinaryOp::And | BinaryOp::Or => return Err(not_defined(op.name(), &x.data)),
            };
            let (fa, fb) = (floats(x), floats(y));
            let (a, b) = pair(&fa, &x.shape, &fb, &y.shape, shape)?;
            let v = a.iter().zip(b.iter()).map(|(&a, &b)| f(a, b)).collect();
            Ok(float_tensor(out.dtype, shape.clone(), v, p))
        }
        (Kind::Int, Kind::Int) => {
            let (ia, ib) = (ints(x), ints(y));
            let (a, b) = pair(&ia, &x.shape, &ib, &y.shape, shape)?;
            let v: Vec<i64> = match op {
                BinaryOp::Div => {
                    if b.contains(&0) {
                        return Err(InterpError::DivisionByZero {
                            place: String::new(),
                        });
                    }
                    a.iter()
                        .zip(b.iter())
                        .map(|(&a, &b)| a.wrapping_div(b))
                        .collect()
                }
                _ => {
                    let f: fn(i64, i64) -> i64 = match op {
                        BinaryOp::Add => i64::wrapping_add,
                        BinaryOp::Sub => i64::wrapping_sub,
                        BinaryOp::Mul => i64::wrapping_mul,
                        BinaryOp::Max => std::cmp::max,
                        BinaryOp::Min => std::cmp::min,
                        _ => return Err(not_defined(op.name(), &x.data)),
                    };
                    a.iter().zip(b.iter()).map(|(&a, &b)| f(a, b)).collect()
                }
            };
            Ok(int_tensor(out.dtype, shape.clone(), v))
        }
        (Kind::Bool, Kind::Bool) => {
            let f: fn(bool, bool) -> bool = match op {
                BinaryOp::And => |a, b| a && b,
                BinaryOp::Or => |a, b| a || b,
                _ => return Err(not_defined(op.name(), &x.data)),
            };
            let (va, vb) = (
                view_as::<bool>(&x.data, "operand 0")?,
                view_as::<bool>(&y.data, "operand 1")?,
            );
            let (a, b) = pair(va, &x.shape, vb, &y.shape, shape)?;
            let v = a.iter().zip(b.iter()).map(|(&a, &b)| f(a, b)).collect();
            Ok(Tensor {
                shape: shape.clone(),
                data: TensorData::Bool(v),
            })
        }
        _ => Err(InterpError::operands("operand dtypes differ")),
    }
}

/// `compare(op)` of `x` and `y`, broadcast to `shape`; a bool tensor.
pub(crate) fn compare(
    op: CmpOp,
    x: &Tensor,
    y: &Tensor,
    shape: &[usize],
) -> Result<Tensor, InterpError> {
    fn cmp<T: PartialOrd>(op: CmpOp, a: &[T], b: &[T]) -> Vec<bool> {
        let f: fn(&T, &T) -> bool = match op {
            CmpOp::Eq => |a, b| a == b,
            CmpOp::Ne => |a, b| a != b,
            CmpOp::Lt => |a, b| a < b,
            CmpOp::Le => |a, b| a <= b,
            CmpOp::Gt => |a, b| a > b,
            CmpOp::Ge => |a, b| a >= b,
        };
        a.iter().zip(b).map(|(a, b)| f(a, b)).collect()
    }
    let v = match (kind(&x.data), kind(&y.data)) {
        (Kind::Float, Kind::Float) => {
            let (fa, fb) = (floats(x), floats(y));
            let (a, b) = pair(&fa, &x.shape, &fb, &y.shape, shape)?;
            cmp(op, &a, &b)
        }
        (ka, kb) if ka == kb => {
            let (ia, ib) = (ints(x), ints(y));
            let (a, b) = pair(&ia, &x.shape, &ib, &y.shape, shape)?;
            cmp(op, &a, &b)
        }
        _ => return Err(InterpError::operands("operand dtypes differ")),
    };
    Ok(Tensor {
        shape: shape.to_vec(),
        data: TensorData::Bool(v),
    })
}

/// `select(cond, a, b)`: `a` where `cond`, else `b`; all three broadcast to `shape`.
pub(crate) fn select(
    c: &Tensor,
    a: &Tensor,
    b: &Tensor,
    shape: &[usize],
) -> Result<Tensor, InterpError> {
    fn go<T: Elem>(
        c: &Tensor,
        a: &Tensor,
        b: &Tensor,
        shape: &[usize],
    ) -> Result<TensorData, InterpError> {
        let cv = broadcast_to(view_as::<bool>(&c.data, "the condition")?, &c.shape, shape)?;
        let av = broadcast_to(view_as::<T>(&a.data, "operand 1")?, &a.shape, shape)?;
        let bv = broadcast_to(view_as::<T>(&b.data, "operand 2")?, &b.shape, shape)?;
        let v = cv
            .iter()
            .zip(av.iter().zip(bv.iter()))
            .map(|(&c, (&a, &b))| if c { a } else { b })
            .collect();
        Ok(T::wrap(v))
    }
    Ok(Tensor {
        shape: shape.to_vec(),
        data: dispatch!(&a.data, go(c, a, b, shape))?,
    })
}

/// `cast(to)` of `x`.
pub(crate) fn cast(x: &Tensor, to: DType, p: Precision) -> Result<Tensor, InterpError> {
    let shape = x.shape.clone();
    Ok(match (kind(&x.data), to) {
        (_, DType::Bool) => {
            let v = match kind(&x.data) {
                Kind::Float => floats(x).iter().map(|&a| a != 0.0).collect(),
                _ => ints(x).iter().map(|&a| a != 0).collect(),
            };
            Tensor {
                shape,
                data: TensorData::Bool(v),
            }
        }
        (Kind::Float, to) if to.is_float() => float_tensor(to, shape, floats(x).into_owned(), p),
        (Kind::Float, to) => {
            let v = floats(x).iter().map(|&a| float_to_int(to, a)).collect();
            int_tensor(to, shape, v)
        }
        (_, to) if to.is_float() => float_tensor_from_ints(to, shape, &ints(x), p),
        (_, to) => int_tensor(to, shape, ints(x).into_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_signed_zero_in_max_min() {
        assert!(max_nan(f64::NAN, 1.0).is_nan());
        assert!(min_nan(1.0, f64::NAN).is_nan());
        assert!(max_nan(-0.0, 0.0).is_sign_positive());
        assert!(max_nan(0.0, -0.0).is_sign_positive());
        assert!(min_nan(0.0, -0.0).is_sign_negative());
        assert!(min_nan(-0.0, 0.0).is_sign_negative());
        assert_eq!(max_nan(f64::NEG_INFINITY, -3.0), -3.0);
    }

    #[test]
    fn stable_functions_do_not_overflow() {
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(softplus(1000.0), 1000.0);
        assert_eq!(softplus(-1000.0), 0.0);
        // gelu's negative tail: relative accuracy, not 0.
        let g = gelu(-10.0);
        assert!(
            g < 0.0 && (g / -7.619853024160527e-23 - 1.0).abs() < 1e-12,
            "{g}"
        );
    }
}
