//! Row groups skipped on their statistics: a filter `col op literal` (or a conjunction
//! of them) that no value between a row group's minimum and maximum can pass rules the
//! row group out before any of its pages is read.

use parquet::file::metadata::RowGroupMetaData;
use parquet::file::statistics::Statistics;

use crate::expr::{BinOp, Expr, Literal};
use crate::ops::Op;

/// The filters a source can apply before any other operator changes the columns.
pub(crate) fn leading_filters(ops: &[Op]) -> Vec<Expr> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Filter(e) => out.push(e.clone()),
            Op::Select(_) => {}
            Op::MapBatches(_) | Op::MapBatchesSized(..) | Op::WithColumn(..) => break,
        }
    }
    out
}

/// Whether the statistics of `rg` show that no row passes every one of `filters`.
pub(crate) fn ruled_out(rg: &RowGroupMetaData, filters: &[Expr]) -> bool {
    filters.iter().any(|f| {
        let mut parts = Vec::new();
        conjuncts(f, &mut parts);
        parts.iter().any(|c| impossible(rg, c))
    })
}

fn conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::Binary(l, BinOp::And, r) => {
            conjuncts(l, out);
            conjuncts(r, out);
        }
        other => out.push(other),
    }
}

/// A number as statistics and literals give it.
#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

/// `a` compared with `b`, where the comparison is exact.
fn cmp(a: Num, b: Num) -> Option<std::cmp::Ordering> {
    const EXACT: i64 = 1 << 53;
    match (a, b) {
        (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
        (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
        (Num::Int(a), Num::Float(b)) if a.abs() <= EXACT => (a as f64).partial_cmp(&b),
        (Num::Float(a), Num::Int(b)) if b.abs() <= EXACT => a.partial_cmp(&(b as f64)),
        _ => None,
    }
}

fn min_max(rg: &RowGroupMetaData, column: &str) -> Option<(Num, Num)> {
    let chunk = rg.columns().iter().find(|c| {
        let parts = c.column_path().parts();
        parts.len() == 1 && parts[0] == column
    })?;
    match chunk.statistics()? {
        Statistics::Int32(s) => Some((
            Num::Int((*s.min_opt()?).into()),
            Num::Int((*s.max_opt()?).into()),
        )),
        Statistics::Int64(s) => Some((Num::Int(*s.min_opt()?), Num::Int(*s.max_opt()?))),
        Statistics::Float(s) => Some((
            Num::Float((*s.min_opt()?).into()),
            Num::Float((*s.max_opt()?).into()),
        )),
        Statistics::Double(s) => Some((Num::Float(*s.min_opt()?), Num::Float(*s.max_opt()?))),
        _ => None,
    }
}

fn flip(op: BinOp) -> Option<BinOp> {
    Some(match op {
        BinOp::Gt => BinOp::Lt,
        BinOp::GtEq => BinOp::LtEq,
        BinOp::Lt => BinOp::Gt,
        BinOp::LtEq => BinOp::GtEq,
        BinOp::Eq => BinOp::Eq,
        _ => return None,
    })
}

/// Whether no value of the row group can pass `column op literal`.
fn impossible(rg: &RowGroupMetaData, e: &Expr) -> bool {
    let (column, op, value) = match e {
        Expr::Binary(l, op, r) => match (&**l, &**r) {
            (Expr::Col(c), Expr::Lit(v)) => (c, *op, v),
            (Expr::Lit(v), Expr::Col(c)) => match flip(*op) {
                Some(op) => (c, op, v),
                None => return false,
            },
            _ => return false,
        },
        _ => return false,
    };
    let v = match value {
        Literal::Int(i) => Num::Int(*i),
        Literal::Float(f) => Num::Float(*f),
        _ => return false,
    };
    let Some((min, max)) = min_max(rg, column) else {
        return false;
    };
    use std::cmp::Ordering::{Greater, Less};
    let (lo, hi) = (cmp(min, v), cmp(max, v));
    match op {
        BinOp::Gt => matches!(hi, Some(o) if o != Greater),
        BinOp::GtEq => hi == Some(Less),
        BinOp::Lt => matches!(lo, Some(o) if o != Less),
        BinOp::LtEq => lo == Some(Greater),
        BinOp::Eq => hi == Some(Less) || lo == Some(Greater),
        _ => false,
    }
}
