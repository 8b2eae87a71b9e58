//! Column expressions, evaluated on a block by Arrow's compute kernels.
//!
//! ```
//! use prism_data::{col, lit};
//! let keep = col("x").gt(lit(0)).and(col("k").lt(lit(50)));
//! assert_eq!(keep.to_string(), "((x > 0) and (k < 50))");
//! ```
//!
//! Numbers of different types meet at the wider one (integers with floats as `Float64`),
//! as in SQL; an expression naming a column the block lacks fails with
//! [`DataError::ColumnNotFound`](crate::DataError::ColumnNotFound).

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Datum, RecordBatch, Scalar, UInt32Array};
use arrow::compute::kernels::{boolean, cast, cmp, numeric};
use arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};

use crate::error::{arrow_err, DataError, Result};

/// A literal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Literal {
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
}

impl From<i64> for Literal {
    fn from(v: i64) -> Self {
        Literal::Int(v)
    }
}
impl From<i32> for Literal {
    fn from(v: i32) -> Self {
        Literal::Int(v.into())
    }
}
impl From<f64> for Literal {
    fn from(v: f64) -> Self {
        Literal::Float(v)
    }
}
impl From<bool> for Literal {
    fn from(v: bool) -> Self {
        Literal::Bool(v)
    }
}
impl From<&str> for Literal {
    fn from(v: &str) -> Self {
        Literal::Str(v.to_string())
    }
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `==`
    Eq,
    /// `!=`
    NotEq,
    /// logical and (SQL's three-valued)
    And,
    /// logical or (SQL's three-valued)
    Or,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Gt => ">",
            BinOp::GtEq => ">=",
            BinOp::Lt => "<",
            BinOp::LtEq => "<=",
            BinOp::Eq => "==",
            BinOp::NotEq => "!=",
            BinOp::And => "and",
            BinOp::Or => "or",
        }
    }
}

/// A type an expression can be cast to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CastTo {
    /// `Int64`
    Int64,
    /// `Float64`
    Float64,
    /// `Boolean`
    Boolean,
    /// `Utf8`
    Utf8,
}

impl CastTo {
    fn data_type(self) -> DataType {
        match self {
            CastTo::Int64 => DataType::Int64,
            CastTo::Float64 => DataType::Float64,
            CastTo::Boolean => DataType::Boolean,
            CastTo::Utf8 => DataType::Utf8,
        }
    }
}

/// An expression over a block's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Expr {
    /// A column by name.
    Col(String),
    /// A literal.
    Lit(Literal),
    /// `left op right`.
    Binary(Box<Expr>, BinOp, Box<Expr>),
    /// Logical not.
    Not(Box<Expr>),
    /// A cast.
    Cast(Box<Expr>, CastTo),
}

/// The column `name`.
pub fn col(name: &str) -> Expr {
    Expr::Col(name.to_string())
}

/// A literal value.
pub fn lit(v: impl Into<Literal>) -> Expr {
    Expr::Lit(v.into())
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {
        impl Expr {
            $(
                $(#[$doc])*
                #[allow(clippy::should_implement_trait)]
                pub fn $name(self, other: Expr) -> Expr {
                    Expr::Binary(Box::new(self), BinOp::$op, Box::new(other))
                }
            )*
        }
    };
}

binary_methods! {
    /// `self + other`
    add => Add,
    /// `self - other`
    sub => Sub,
    /// `self * other`
    mul => Mul,
    /// `self / other`
    div => Div,
    /// `self > other`
    gt => Gt,
    /// `self >= other`
    gt_eq => GtEq,
    /// `self < other`
    lt => Lt,
    /// `self <= other`
    lt_eq => LtEq,
    /// `self == other`
    eq => Eq,
    /// `self != other`
    not_eq => NotEq,
    /// `self and other`
    and => And,
    /// `self or other`
    or => Or,
}

impl Expr {
    /// Logical not.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }

    /// A cast to `to`.
    pub fn cast(self, to: CastTo) -> Expr {
        Expr::Cast(Box::new(self), to)
    }

    /// The columns the expression reads.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_columns(&mut out);
        out
    }

    fn collect_columns(&self, out: &mut Vec<String>) {
        match self {
            Expr::Col(c) if !out.contains(c) => out.push(c.clone()),
            Expr::Col(_) | Expr::Lit(_) => {}
            Expr::Binary(l, _, r) => {
                l.collect_columns(out);
                r.collect_columns(out);
            }
            Expr::Not(e) | Expr::Cast(e, _) => e.collect_columns(out),
        }
    }

    /// Evaluates the expression on `batch`: an array of its length.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        self.eval(batch)?.into_array(batch.num_rows())
    }

    /// Evaluates a predicate on `batch`: a boolean array of its length.
    pub fn evaluate_predicate(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let a = self.evaluate(batch)?;
        a.as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .ok_or_else(|| {
                DataError::Invalid(format!("{self} is a {}, not a predicate", a.data_type()))
            })
    }

    fn eval(&self, batch: &RecordBatch) -> Result<Value> {
        match self {
            Expr::Col(name) => batch
                .column_by_name(name)
                .cloned()
                .map(Value::Array)
                .ok_or_else(|| crate::error::no_column(name, &batch.schema())),
            Expr::Lit(l) => Ok(Value::Scalar(literal_array(l))),
            Expr::Not(e) => {
                let v = e.eval(batch)?.into_array(batch.num_rows())?;
                let b = as_bool(&v, self)?;
                Ok(Value::Array(Arc::new(
                    boolean::not(b).map_err(arrow_err(self.to_string()))?,
                )))
            }
            Expr::Cast(e, to) => {
                let v = e.eval(batch)?;
                let cast_one = |a: &ArrayRef| {
                    cast::cast(a, &to.data_type()).map_err(arrow_err(self.to_string()))
                };
                Ok(match v {
                    Value::Array(a) => Value::Array(cast_one(&a)?),
                    Value::Scalar(a) => Value::Scalar(cast_one(&a)?),
                })
            }
            Expr::Binary(l, op, r) => {
                let (l, r) = coerce(l.eval(batch)?, r.eval(batch)?, self)?;
                let ctx = || arrow_err(self.to_string());
                let out: ArrayRef = match op {
                    BinOp::Add => {
                        numeric::add(l.datum().as_ref(), r.datum().as_ref()).map_err(ctx())?
                    }
                    BinOp::Sub => {
                        numeric::sub(l.datum().as_ref(), r.datum().as_ref()).map_err(ctx())?
                    }
                    BinOp::Mul => {
                        numeric::mul(l.datum().as_ref(), r.datum().as_ref()).map_err(ctx())?
                    }
                    BinOp::Div => {
                        numeric::div(l.datum().as_ref(), r.datum().as_ref()).map_err(ctx())?
                    }
                    BinOp::Gt => {
                        Arc::new(cmp::gt(l.datum().as_ref(), r.datum().as_ref()).map_err(ctx())?)
                    }
                    BinOp::GtEq => {
                        Arc::new(cmp::gt_eq(l.datum().as_ref(), r.datum().as_ref()).map_err(ctx())?)
                    }
                    BinOp::Lt => {
                        Arc::new(cmp::lt(l.datum().as_ref(), r.datum().as_ref()).map_err(ctx())?)
                    }
                    BinOp::LtEq => {
                        Arc::new(cmp::lt_eq(l.datum().as_ref(), r.datum().as_ref()).map_err(ctx())?)
                    }
                    BinOp::Eq => {
                        Arc::new(cmp::eq(l.datum().as_ref(), r.datum().as_ref()).map_err(ctx())?)
                    }
                    BinOp::NotEq => {
                        Arc::new(cmp::neq(l.datum().as_ref(), r.datum().as_ref()).map_err(ctx())?)
                    }
                    BinOp::And | BinOp::Or => {
                        let n = batch.num_rows();
                        let (la, ra) = (l.into_array(n)?, r.into_array(n)?);
                        let (lb, rb) = (as_bool(&la, self)?, as_bool(&ra, self)?);
                        let f = if *op == BinOp::And {
                            boolean::and_kleene
                        } else {
                            boolean::or_kleene
                        };
                        Arc::new(f(lb, rb).map_err(ctx())?)
                    }
                };
                // Scalar op scalar gives one row: it stays a scalar.
                Ok(if out.len() == 1 && batch.num_rows() != 1 {
                    Value::Scalar(out)
                } else {
                    Value::Array(out)
                })
            }
        }
    }
}

fn as_bool<'a>(a: &'a ArrayRef, e: &Expr) -> Result<&'a BooleanArray> {
    a.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
        DataError::Invalid(format!(
            "{e}: a {} where a boolean was needed",
            a.data_type()
        ))
    })
}

fn literal_array(l: &Literal) -> ArrayRef {
    use arrow::array::{Float64Array, Int64Array, StringArray};
    match l {
        Literal::Int(v) => Arc::new(Int64Array::from(vec![*v])),
        Literal::Float(v) => Arc::new(Float64Array::from(vec![*v])),
        Literal::Bool(v) => Arc::new(BooleanArray::from(vec![*v])),
        Literal::Str(v) => Arc::new(StringArray::from(vec![v.as_str()])),
    }
}

/// An evaluated expression: a column, or a literal standing for every row.
enum Value {
    Array(ArrayRef),
    Scalar(ArrayRef),
}

impl Value {
    fn array(&self) -> &ArrayRef {
        match self {
            Value::Array(a) | Value::Scalar(a) => a,
        }
    }

    fn datum(&self) -> Box<dyn Datum + '_> {
        match self {
            Value::Array(a) => Box::new(a),
            Value::Scalar(a) => Box::new(Scalar::new(a)),
        }
    }

    fn into_array(self, rows: usize) -> Result<ArrayRef> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Scalar(a) => {
                let zeros = UInt32Array::from(vec![0u32; rows]);
                arrow::compute::take(&a, &zeros, None).map_err(DataError::from)
            }
        }
    }

    fn cast(self, to: &DataType, e: &Expr) -> Result<Value> {
        if self.array().data_type() == to {
            return Ok(self);
        }
        let c = |a: &ArrayRef| cast::cast(a, to).map_err(arrow_err(e.to_string()));
        Ok(match self {
            Value::Array(a) => Value::Array(c(&a)?),
            Value::Scalar(a) => Value::Scalar(c(&a)?),
        })
    }
}

/// Brings two numbers of different types to the wider one.
fn coerce(l: Value, r: Value, e: &Expr) -> Result<(Value, Value)> {
    let (lt, rt) = (l.array().data_type().clone(), r.array().data_type().clone());
    if lt == rt || !lt.is_numeric() || !rt.is_numeric() {
        return Ok((l, r));
    }
    let to = if lt.is_floating() || rt.is_floating() {
        DataType::Float64
    } else {
        DataType::Int64
    };
    Ok((l.cast(&to, e)?, r.cast(&to, e)?))
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Col(c) => write!(f, "{c}"),
            Expr::Lit(Literal::Int(v)) => write!(f, "{v}"),
            Expr::Lit(Literal::Float(v)) => write!(f, "{v:?}"),
            Expr::Lit(Literal::Bool(v)) => write!(f, "{v}"),
            Expr::Lit(Literal::Str(v)) => write!(f, "{v:?}"),
            Expr::Binary(l, op, r) => write!(f, "({l} {} {r})", op.symbol()),
            Expr::Not(e) => write!(f, "(not {e})"),
            Expr::Cast(e, to) => write!(f, "cast({e} as {to:?})"),
        }
    }
}
