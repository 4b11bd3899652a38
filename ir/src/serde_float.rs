//! Floats in serialized IR: finite values as numbers, non-finite ones as the
//! strings `"inf"`, `"-inf"`, `"nan"` — JSON has no spelling for them, and a
//! `-inf` mask constant must survive a round trip.

use serde::de::{self, Deserializer, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::Deserialize;
use std::fmt;

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Out<'a> {
    Num(f64),
    Text(&'a str),
}

fn out(v: f64) -> Out<'static> {
    if v.is_nan() {
        Out::Text("nan")
    } else if v == f64::INFINITY {
        Out::Text("inf")
    } else if v == f64::NEG_INFINITY {
        Out::Text("-inf")
    } else {
        Out::Num(v)
    }
}

struct FloatVisitor;

impl Visitor<'_> for FloatVisitor {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or one of \"inf\", \"-inf\", \"nan\"")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        match v {
            "inf" => Ok(f64::INFINITY),
            "-inf" => Ok(f64::NEG_INFINITY),
            "nan" => Ok(f64::NAN),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

/// One float (`#[serde(with = "crate::serde_float")]`).
pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&out(*v), s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_any(FloatVisitor)
}

/// A list of floats (`#[serde(with = "crate::serde_float::vec")]`).
pub mod vec {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            seq.serialize_element(&out(*x))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        #[derive(Deserialize)]
        struct One(#[serde(with = "super")] f64);
        Ok(Vec::<One>::deserialize(d)?
            .into_iter()
            .map(|o| o.0)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, Debug)]
    struct S {
        #[serde(with = "crate::serde_float")]
        x: f64,
        #[serde(with = "crate::serde_float::vec")]
        v: Vec<f64>,
    }

    #[test]
    fn non_finite_values_round_trip_through_json() {
        let s = S {
            x: f64::NEG_INFINITY,
            v: vec![1.5, f64::INFINITY, f64::NAN, -0.0],
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"x":"-inf","v":[1.5,"inf","nan",-0.0]}"#);
        let back: S = serde_json::from_str(&json).unwrap();
        assert_eq!(back.x, f64::NEG_INFINITY);
        assert_eq!(back.v[0], 1.5);
        assert_eq!(back.v[1], f64::INFINITY);
        assert!(back.v[2].is_nan());
        assert!(back.v[3] == 0.0 && back.v[3].is_sign_negative());
        assert!(serde_json::from_str::<S>(r#"{"x":"huge","v":[]}"#).is_err());
    }
}
