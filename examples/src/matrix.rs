//! Dense square `f64` matrices and the remote functions of the matrix-multiply
//! aggregation workload (W5): random normal matrices made in tasks, products in tasks,
//! sums in tasks, and the tree and chain reductions of many matrices.
//!
//! Products use the `matrixmultiply` crate's `dgemm`: a pure-Rust blocked kernel with
//! runtime AVX2/FMA dispatch, which needs no system BLAS and was measured against the
//! alternatives in `BENCHMARKS.md`.

use prism::ObjectRef;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// A dense square matrix in row-major order.
///
/// ```
/// let a = prism_examples::matrix::Matrix::identity(3);
/// let b = a.matmul(&a);
/// assert_eq!(b, a);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    n: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// An `n`×`n` matrix of independent standard normal samples, seeded.
    pub fn random_normal(n: usize, seed: u64) -> Matrix {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let data = (0..n * n)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        Matrix { n, data }
    }

    /// The identity matrix.
    pub fn identity(n: usize) -> Matrix {
        let mut data = vec![0.0; n * n];
        for i in 0..n {
            data[i * n + i] = 1.0;
        }
        Matrix { n, data }
    }

    /// The side length.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The entry at row `i`, column `j`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.n + j]
    }

    /// The matrix product `self · other`.
    pub fn matmul(&self, other: &Matrix) -> Matrix {
        assert_eq!(self.n, other.n, "matrix sizes differ");
        let n = self.n;
        let mut out = vec![0.0; n * n];
        let stride = n as isize;
        gemm(n, &self.data, &other.data, &mut out, stride);
        Matrix { n, data: out }
    }

    /// The element-wise sum `self + other`.
    pub fn add(&self, other: &Matrix) -> Matrix {
        assert_eq!(self.n, other.n, "matrix sizes differ");
        let data = self
            .data
            .iter()
            .zip(&other.data)
            .map(|(a, b)| a + b)
            .collect();
        Matrix { n: self.n, data }
    }

    /// The sum of all entries.
    pub fn total(&self) -> f64 {
        self.data.iter().sum()
    }
}

#[allow(unsafe_code)]
fn gemm(n: usize, a: &[f64], b: &[f64], c: &mut [f64], stride: isize) {
    assert!(a.len() == n * n && b.len() == n * n && c.len() == n * n);
    // SAFETY: the three buffers hold n*n elements each, row-major with row stride n, and
    // `c` does not alias `a` or `b` (it is a distinct &mut).
    unsafe {
        matrixmultiply::dgemm(
            n,
            n,
            n,
            1.0,
            a.as_ptr(),
            stride,
            1,
            b.as_ptr(),
            stride,
            1,
            0.0,
            c.as_mut_ptr(),
            stride,
            1,
        );
    }
}

/// Makes a random normal matrix in a task.
#[prism::remote]
pub fn random_matrix(n: usize, seed: u64) -> Matrix {
    Matrix::random_normal(n, seed)
}

/// Multiplies two matrices in a task; both are read in place from the store.
#[prism::remote]
pub fn multiply(a: &Matrix, b: &Matrix) -> Matrix {
    a.matmul(b)
}

/// Adds two matrices in a task.
#[prism::remote]
pub fn add(a: &Matrix, b: &Matrix) -> Matrix {
    a.add(b)
}

/// Sums matrices by a pairwise tree of `add` tasks: depth log2(n).
pub fn tree_sum(mut level: Vec<ObjectRef<Matrix>>) -> ObjectRef<Matrix> {
    assert!(!level.is_empty(), "nothing to sum");
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            next.push(match pair {
                [a, b] => add::remote(a, b),
                [a] => a.clone(),
                _ => unreachable!(),
            });
        }
        level = next;
    }
    level.remove(0)
}

/// Sums matrices by a linear chain of `add` tasks: depth n-1.
pub fn chain_sum(refs: Vec<ObjectRef<Matrix>>) -> ObjectRef<Matrix> {
    let mut it = refs.into_iter();
    let first = it.next().expect("nothing to sum");
    it.fold(first, |acc, m| add::remote(&acc, &m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_products_match_naive_entries() {
        // Large enough to go through the kernel's packing and blocking paths.
        let n = 600;
        let a = Matrix::random_normal(n, 3);
        let b = Matrix::random_normal(n, 4);
        let c = a.matmul(&b);
        for (i, j) in [(0, 0), (1, 599), (599, 1), (300, 301), (517, 42)] {
            let naive: f64 = (0..n).map(|k| a.get(i, k) * b.get(k, j)).sum();
            assert!(
                (c.get(i, j) - naive).abs() < 1e-8,
                "({i},{j}): {} vs {naive}",
                c.get(i, j)
            );
        }
    }

    #[test]
    fn products_match_a_naive_product() {
        let a = Matrix::random_normal(17, 1);
        let b = Matrix::random_normal(17, 2);
        let c = a.matmul(&b);
        for i in 0..17 {
            for j in 0..17 {
                let naive: f64 = (0..17).map(|k| a.get(i, k) * b.get(k, j)).sum();
                assert!((c.get(i, j) - naive).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn tree_and_chain_sums_agree() {
        prism::init_with(prism::Config::default().num_cpus(2.0)).unwrap();
        let ms: Vec<_> = (0..5).map(|s| random_matrix::remote(8, s)).collect();
        let t = prism::get(&tree_sum(ms.clone())).unwrap();
        let c = prism::get(&chain_sum(ms)).unwrap();
        assert!((t.total() - c.total()).abs() < 1e-9);
        prism::shutdown();
    }
}
