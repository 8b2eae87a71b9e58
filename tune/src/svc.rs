//! A multi-class support vector classifier with the RBF kernel, as scikit-learn's `SVC`
//! (libsvm) computes it: one binary C-SVC per pair of classes (one-vs-one), each solved
//! by sequential minimal optimization with libsvm's second-order working-set selection
//! (Fan, Chen and Lin, 2005), and prediction by the pairs' votes.
//!
//! Speed comes from computing each kernel value once: the training set's kernel matrix
//! is built in one go from the Gram matrix `X Xᵀ` (a single-precision matrix product,
//! exact for small integer features such as the digits' pixels) and shared by all the
//! pairs' solvers. Up to [`SHARED_KERNEL_MAX`] samples; above that each pair builds its
//! own block, so memory follows the largest pair of classes, not the whole set.

use crate::estimator::Estimator;
use crate::space::Config;
use crate::TuneError;

/// Above this many training samples, each pair of classes computes its own kernel
/// block instead of sharing the whole matrix (which takes `4 n²` bytes).
pub const SHARED_KERNEL_MAX: usize = 6_000;

/// How the penalty `C` is weighted per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassWeight {
    /// The same `C` for every class.
    #[default]
    None,
    /// `C` times `n / (classes × n_class)`: rare classes weigh more (scikit-learn's
    /// `class_weight="balanced"`).
    Balanced,
}

/// The hyperparameters of an [`Svc`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SvcParams {
    /// The penalty of misclassified points (`C > 0`).
    pub c: f64,
    /// The RBF kernel's width: `K(x, y) = exp(-gamma ‖x − y‖²)` (`gamma > 0`).
    pub gamma: f64,
    /// The stopping tolerance of the solver (scikit-learn's default 1e-3).
    pub tol: f64,
    /// Per-class weights of `C`.
    pub class_weight: ClassWeight,
}

impl SvcParams {
    /// The parameters a configuration names: `C` and `gamma` (numbers), and optionally
    /// `tol` (default 1e-3) and `class_weight` (`"none"` or `"balanced"`), as
    /// scikit-learn's `SVC` takes them.
    ///
    /// ```
    /// use prism_tune::svc::{ClassWeight, SvcParams};
    /// let config = prism_tune::Config::from_pairs([
    ///     ("C", 10.0.into()), ("gamma", 0.001.into()), ("class_weight", "balanced".into()),
    /// ]);
    /// let p = SvcParams::from_config(&config).unwrap();
    /// assert_eq!((p.c, p.tol, p.class_weight), (10.0, 1e-3, ClassWeight::Balanced));
    /// ```
    pub fn from_config(config: &Config) -> Result<SvcParams, TuneError> {
        if let Some(unknown) = config
            .0
            .keys()
            .find(|k| !["C", "gamma", "tol", "class_weight"].contains(&k.as_str()))
        {
            return Err(TuneError::Config(format!(
                "the SVC has no parameter {unknown} (it takes C, gamma, tol, class_weight)"
            )));
        }
        let class_weight = match config.get("class_weight").map(|p| p.as_str()) {
            None | Some(Some("none")) => ClassWeight::None,
            Some(Some("balanced")) => ClassWeight::Balanced,
            Some(other) => {
                return Err(TuneError::Config(format!(
                    "class_weight must be \"none\" or \"balanced\", not {other:?}"
                )))
            }
        };
        let params = SvcParams {
            c: config.f64("C")?,
            gamma: config.f64("gamma")?,
            tol: match config.get("tol") {
                Some(_) => config.f64("tol")?,
                None => 1e-3,
            },
            class_weight,
        };
        if !(params.c > 0.0 && params.gamma > 0.0 && params.tol > 0.0) {
            return Err(TuneError::Config(format!(
                "C, gamma and tol must be positive in {config}"
            )));
        }
        Ok(params)
    }
}

impl Default for SvcParams {
    fn default() -> Self {
        SvcParams {
            c: 1.0,
            gamma: 0.001,
            tol: 1e-3,
            class_weight: ClassWeight::None,
        }
    }
}

pub use crate::datasets::Features;

/// One pair's binary classifier: `f(x) = Σ coef_k K(sv_k, x) − rho`, positive for the
/// first class of the pair.
#[derive(Debug, Clone)]
struct PairModel {
    first: usize,
    second: usize,
    /// (index into the support vectors, αᵢ yᵢ).
    coef: Vec<(usize, f64)>,
    rho: f64,
}

/// A fitted classifier.
///
/// ```
/// use prism_tune::svc::{Features, Svc, SvcParams};
/// // Two blobs in the plane.
/// let x = [0.0, 0.0, 0.2, 0.1, 0.1, 0.3, 3.0, 3.0, 3.2, 2.9, 2.8, 3.1_f32];
/// let y = [0, 0, 0, 1, 1, 1];
/// let params = SvcParams { c: 10.0, gamma: 0.5, ..SvcParams::default() };
/// let svc = Svc::fit(&Features::new(&x, 2).unwrap(), &y, &params).unwrap();
/// let test = [0.1_f32, 0.0, 3.0, 3.1];
/// assert_eq!(svc.predict(&Features::new(&test, 2).unwrap()), vec![0, 1]);
/// ```
#[derive(Debug, Clone)]
pub struct Svc {
    params: SvcParams,
    classes: Vec<usize>,
    dims: usize,
    /// The support vectors, row-major, and their squared norms.
    sv: Vec<f32>,
    sv_norms: Vec<f32>,
    pairs: Vec<PairModel>,
}

/// The Gram matrix `A Bᵀ` of `n` rows `a` and `m` rows `b` of `d` values each.
#[allow(unsafe_code)]
fn gram(a: &[f32], n: usize, b: &[f32], m: usize, d: usize) -> Vec<f32> {
    assert!(a.len() == n * d && b.len() == m * d);
    let mut out = vec![0f32; n * m];
    // SAFETY: `a` holds n×d values (row stride d), `b` m×d values read as its d×m
    // transpose (row stride 1, column stride d), `out` n×m values (row stride m) and is
    // a fresh buffer, so nothing aliases.
    unsafe {
        matrixmultiply::sgemm(
            n,
            d,
            m,
            1.0,
            a.as_ptr(),
            d as isize,
            1,
            b.as_ptr(),
            1,
            d as isize,
            0.0,
            out.as_mut_ptr(),
            m as isize,
            1,
        );
    }
    out
}

/// `a · b`, in eight lanes the compiler vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, xi), yi) in lanes.iter_mut().zip(x).zip(y) {
            *l += xi * yi;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The RBF kernel matrix between two sets of rows, from their Gram matrix.
fn rbf_block(a: &Features, b: &Features, gamma: f64) -> Vec<f32> {
    let gram = gram(a.data, a.rows(), b.data, b.rows(), a.dims);
    rbf_from_products(gram, &squared_norms(a), &squared_norms(b), gamma)
}

/// Each row's squared norm.
fn squared_norms(f: &Features) -> Vec<f32> {
    (0..f.rows())
        .map(|i| f.row(i).iter().map(|v| v * v).sum())
        .collect()
}

/// The RBF kernel `exp(-gamma ‖a_i − b_j‖²)` from the products `a_i · b_j` (row by
/// row, in place) and the rows' squared norms.
fn rbf_from_products(mut k: Vec<f32>, na: &[f32], nb: &[f32], gamma: f64) -> Vec<f32> {
    let m = nb.len();
    let g = -(gamma as f32);
    for (row, nai) in k.chunks_exact_mut(m.max(1)).zip(na) {
        for (kij, nbj) in row.iter_mut().zip(nb) {
            *kij = g * (nai + nbj - 2.0 * *kij).max(0.0);
        }
        exp_in_place(row);
    }
    k
}

/// `e^x` in place for each `x ≤ 0`, within a relative 2.5·10⁻⁷ of the exact value (a
/// unit or two in the last place, as `f32::exp`), in straight-line arithmetic the
/// compiler vectorizes: the kernel matrix takes millions of them, and a call to `expf`
/// each was a quarter of a fit. `x = n·ln 2 + r` with `n` the nearest integer to
/// `x / ln 2` and `|r| ≤ ½ ln 2` (Cody and Waite: `ln 2` in two parts, so `r` is exact);
/// `e^r` is its Taylor polynomial of degree 7 (truncation error 5·10⁻⁹), and `2^n` is
/// made in the exponent bits. Below `e^-87` the result is 0, as `f32::exp` nearly is.
fn exp_in_place(xs: &mut [f32]) {
    const LN2_HI: f32 = 0.693_359_4; // 0x3f31_8000: nine bits, so n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const C: [f32; 8] = [
        1.0,
        1.0,
        0.5,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
    ];
    for x in xs.iter_mut() {
        let under = *x < -87.0;
        let v = x.max(-87.0);
        // The nearest integer, by the magic constant 1.5·2²³ (exact for |y| < 2²²).
        let n = (v * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
        let r = (v - n * LN2_HI) - n * LN2_LO;
        let p = C[0]
            + r * (C[1]
                + r * (C[2] + r * (C[3] + r * (C[4] + r * (C[5] + r * (C[6] + r * C[7]))))));
        let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
        *x = if under { 0.0 } else { p * scale };
    }
}

impl Svc {
    /// Fits on rows `x` with class labels `y` (any small integers).
    pub fn fit(x: &Features, y: &[usize], params: &SvcParams) -> Result<Svc, TuneError> {
        let n = x.rows();
        if n != y.len() {
            return Err(TuneError::Data(format!("{n} rows but {} labels", y.len())));
        }
        let bad = |what: &str| Err(TuneError::Data(what.to_string()));
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(params.c) {
            return bad("C must be positive and finite");
        }
        if !positive(params.gamma) {
            return bad("gamma must be positive and finite");
        }
        if !positive(params.tol) {
            return bad("tol must be positive");
        }
        let mut classes: Vec<usize> = y.to_vec();
        classes.sort_unstable();
        classes.dedup();
        if classes.len() < 2 {
            return bad("fitting needs at least two classes");
        }
        let counts: Vec<usize> = classes
            .iter()
            .map(|c| y.iter().filter(|l| *l == c).count())
            .collect();
        let weight = |k: usize| match params.class_weight {
            ClassWeight::None => 1.0,
            ClassWeight::Balanced => n as f64 / (classes.len() * counts[k]) as f64,
        };
        let members: Vec<Vec<usize>> = classes
            .iter()
            .map(|c| (0..n).filter(|i| y[*i] == *c).collect())
            .collect();
        // The shared kernel matrix is over the rows sorted by class, so that a pair's
        // block is, row by row, two contiguous runs of it.
        let start: Vec<usize> = members
            .iter()
            .scan(0, |at, m| {
                let s = *at;
                *at += m.len();
                Some(s)
            })
            .collect();
        let shared = (n <= SHARED_KERNEL_MAX).then(|| {
            let sorted: Vec<f32> = members
                .iter()
                .flatten()
                .flat_map(|&i| x.row(i).iter().copied())
                .collect();
            let f = Features {
                data: &sorted,
                dims: x.dims,
            };
            rbf_block(&f, &f, params.gamma)
        });

        let mut sv_index = vec![usize::MAX; n];
        let mut sv_rows: Vec<usize> = Vec::new();
        let mut pairs = Vec::new();
        for a in 0..classes.len() {
            for b in a + 1..classes.len() {
                let idx: Vec<usize> = members[a].iter().chain(&members[b]).copied().collect();
                let l = idx.len();
                let labels: Vec<f64> = (0..l)
                    .map(|t| if t < members[a].len() { 1.0 } else { -1.0 })
                    .collect();
                let kernel: Vec<f32> = match &shared {
                    Some(k) => {
                        let runs = [
                            start[a]..start[a] + members[a].len(),
                            start[b]..start[b] + members[b].len(),
                        ];
                        let mut block = Vec::with_capacity(l * l);
                        for row in runs.iter().flat_map(|r| r.clone()) {
                            for run in &runs {
                                block.extend_from_slice(&k[row * n + run.start..row * n + run.end]);
                            }
                        }
                        block
                    }
                    None => {
                        let rows: Vec<f32> =
                            idx.iter().flat_map(|&i| x.row(i).iter().copied()).collect();
                        let f = Features {
                            data: &rows,
                            dims: x.dims,
                        };
                        rbf_block(&f, &f, params.gamma)
                    }
                };
                let bounds: Vec<f64> = (0..l)
                    .map(|t| params.c * weight(if labels[t] > 0.0 { a } else { b }))
                    .collect();
                let (alpha, rho) = solve(&kernel, &labels, &bounds, params.tol);
                let mut coef = Vec::new();
                for (t, al) in alpha.iter().enumerate() {
                    if *al > 0.0 {
                        let i = idx[t];
                        if sv_index[i] == usize::MAX {
                            sv_index[i] = sv_rows.len();
                            sv_rows.push(i);
                        }
                        coef.push((sv_index[i], al * labels[t]));
                    }
                }
                pairs.push(PairModel {
                    first: a,
                    second: b,
                    coef,
                    rho,
                });
            }
        }
        let sv: Vec<f32> = sv_rows
            .iter()
            .flat_map(|&i| x.row(i).iter().copied())
            .collect();
        let sv_norms = squared_norms(&Features {
            data: &sv,
            dims: x.dims,
        });
        Ok(Svc {
            params: *params,
            classes,
            dims: x.dims,
            sv,
            sv_norms,
            pairs,
        })
    }

    /// How many distinct support vectors the model keeps.
    pub fn support_vectors(&self) -> usize {
        self.sv_norms.len()
    }

    /// The classes, in increasing order.
    pub fn classes(&self) -> &[usize] {
        &self.classes
    }

    /// The RBF kernel between each row of `x` and each support vector, row by row,
    /// from the support vectors' stored norms. A few rows (a served request, a small
    /// batch) take direct dot products: a matrix product would pack every support
    /// vector for each call, which costs more than the products themselves.
    fn kernel_rows(&self, x: &Features) -> Vec<f32> {
        const DIRECT_ROWS: usize = 16;
        let (n, m, d) = (x.rows(), self.sv_norms.len(), self.dims);
        let k = if n <= DIRECT_ROWS {
            let mut k = Vec::with_capacity(n * m);
            for i in 0..n {
                let row = x.row(i);
                k.extend(self.sv.chunks_exact(d).map(|s| dot(row, s)));
            }
            k
        } else {
            gram(x.data, n, &self.sv, m, d)
        };
        rbf_from_products(k, &squared_norms(x), &self.sv_norms, self.params.gamma)
    }

    /// Each row's decision values, one per pair of classes in the order (0,1), (0,2),
    /// ..., (1,2), ...: positive votes for the first class of the pair (scikit-learn's
    /// `decision_function_shape="ovo"`).
    pub fn decision_function(&self, x: &Features) -> Vec<Vec<f64>> {
        assert_eq!(x.dims, self.dims, "rows of {} values expected", self.dims);
        let k = self.kernel_rows(x);
        let m = self.sv_norms.len();
        (0..x.rows())
            .map(|r| {
                let row = &k[r * m..(r + 1) * m];
                self.pairs
                    .iter()
                    .map(|p| p.coef.iter().map(|(s, c)| c * row[*s] as f64).sum::<f64>() - p.rho)
                    .collect()
            })
            .collect()
    }

    /// Each row's class, by the pairs' votes (a tie goes to the smaller class, as in
    /// libsvm).
    pub fn predict(&self, x: &Features) -> Vec<usize> {
        self.decision_function(x)
            .into_iter()
            .map(|values| {
                let mut votes = vec![0u32; self.classes.len()];
                for (p, v) in self.pairs.iter().zip(values) {
                    votes[if v > 0.0 { p.first } else { p.second }] += 1;
                }
                let best = (0..votes.len())
                    .max_by(|a, b| votes[*a].cmp(&votes[*b]).then(b.cmp(a)))
                    .unwrap_or(0);
                self.classes[best]
            })
            .collect()
    }

    /// The share of rows predicted right.
    pub fn score(&self, x: &Features, y: &[usize]) -> f64 {
        let predicted = self.predict(x);
        let right = predicted.iter().zip(y).filter(|(p, t)| p == t).count();
        right as f64 / y.len().max(1) as f64
    }
}

/// Solves one binary C-SVC dual: minimize ½ αᵀQα − Σα subject to 0 ≤ αᵢ ≤ Cᵢ and
/// Σ yᵢαᵢ = 0, with `Q_ij = y_i y_j K_ij`. Returns α and the offset ρ. This is libsvm's
/// `Solver` without shrinking: the working pair is chosen by the maximal violation of
/// the optimality conditions and the largest second-order decrease of the objective.
fn solve(kernel: &[f32], y: &[f64], c: &[f64], eps: f64) -> (Vec<f64>, f64) {
    const TAU: f64 = 1e-12;
    let l = y.len();
    let k = |i: usize, j: usize| kernel[i * l + j] as f64;
    let mut alpha = vec![0f64; l];
    let mut grad = vec![-1f64; l];
    let up = |t: usize, a: &[f64]| if y[t] > 0.0 { a[t] < c[t] } else { a[t] > 0.0 };
    let low = |t: usize, a: &[f64]| if y[t] > 0.0 { a[t] > 0.0 } else { a[t] < c[t] };
    let max_iter = (100 * l).max(10_000_000);
    for _ in 0..max_iter {
        // i: the most violating index among those that can move up.
        let (mut gmax, mut i) = (f64::NEG_INFINITY, usize::MAX);
        for t in 0..l {
            if up(t, &alpha) && -y[t] * grad[t] >= gmax {
                gmax = -y[t] * grad[t];
                i = t;
            }
        }
        // j: the largest decrease of the objective with i.
        let (mut gmax2, mut obj_min, mut j) = (f64::NEG_INFINITY, f64::INFINITY, usize::MAX);
        for t in 0..l {
            if !low(t, &alpha) {
                continue;
            }
            let g = y[t] * grad[t];
            if g >= gmax2 {
                gmax2 = g;
            }
            if i == usize::MAX {
                continue;
            }
            let diff = gmax + g;
            if diff > 0.0 {
                let quad = (k(i, i) + k(t, t) - 2.0 * k(i, t)).max(TAU);
                let obj = -(diff * diff) / quad;
                if obj <= obj_min {
                    obj_min = obj;
                    j = t;
                }
            }
        }
        if i == usize::MAX || j == usize::MAX || gmax + gmax2 < eps {
            break;
        }
        // The analytic two-variable update, clipped to the box (libsvm's).
        let (old_i, old_j) = (alpha[i], alpha[j]);
        let qii = k(i, i);
        let qjj = k(j, j);
        let qij = y[i] * y[j] * k(i, j);
        if y[i] != y[j] {
            let quad = (qii + qjj + 2.0 * qij).max(TAU);
            let delta = (-grad[i] - grad[j]) / quad;
            let diff = alpha[i] - alpha[j];
            alpha[i] += delta;
            alpha[j] += delta;
            if diff > 0.0 {
                if alpha[j] < 0.0 {
                    alpha[j] = 0.0;
                    alpha[i] = diff;
                }
            } else if alpha[i] < 0.0 {
                alpha[i] = 0.0;
                alpha[j] = -diff;
            }
            if diff > c[i] - c[j] {
                if alpha[i] > c[i] {
                    alpha[i] = c[i];
                    alpha[j] = c[i] - diff;
                }
            } else if alpha[j] > c[j] {
                alpha[j] = c[j];
                alpha[i] = c[j] + diff;
            }
        } else {
            let quad = (qii + qjj - 2.0 * qij).max(TAU);
            let delta = (grad[i] - grad[j]) / quad;
            let sum = alpha[i] + alpha[j];
            alpha[i] -= delta;
            alpha[j] += delta;
            if sum > c[i] {
                if alpha[i] > c[i] {
                    alpha[i] = c[i];
                    alpha[j] = sum - c[i];
                }
            } else if alpha[j] < 0.0 {
                alpha[j] = 0.0;
                alpha[i] = sum;
            }
            if sum > c[j] {
                if alpha[j] > c[j] {
                    alpha[j] = c[j];
                    alpha[i] = sum - c[j];
                }
            } else if alpha[i] < 0.0 {
                alpha[i] = 0.0;
                alpha[j] = sum;
            }
        }
        let (di, dj) = (alpha[i] - old_i, alpha[j] - old_j);
        let row_i = &kernel[i * l..(i + 1) * l];
        let row_j = &kernel[j * l..(j + 1) * l];
        for t in 0..l {
            grad[t] += y[t] * (y[i] * row_i[t] as f64 * di + y[j] * row_j[t] as f64 * dj);
        }
    }
    // ρ: the mean of yᵢ∇ᵢ over free αᵢ, or the middle of the feasible interval.
    let (mut ub, mut lb, mut sum, mut free) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
    for t in 0..l {
        let yg = y[t] * grad[t];
        if alpha[t] >= c[t] {
            if y[t] < 0.0 {
                ub = ub.min(yg);
            } else {
                lb = lb.max(yg);
            }
        } else if alpha[t] <= 0.0 {
            if y[t] > 0.0 {
                ub = ub.min(yg);
            } else {
                lb = lb.max(yg);
            }
        } else {
            free += 1;
            sum += yg;
        }
    }
    let rho = if free > 0 {
        sum / free as f64
    } else {
        (ub + lb) / 2.0
    };
    (alpha, rho)
}

/// The SVC as the cross-validated search fits it, configured by
/// [`SvcParams::from_config`].
impl Estimator for Svc {
    fn fit(x: &Features, y: &[usize], config: &Config) -> Result<Self, TuneError> {
        Svc::fit(x, y, &SvcParams::from_config(config)?)
    }

    fn predict(&self, x: &Features) -> Result<Vec<usize>, TuneError> {
        Ok(Svc::predict(self, x))
    }

    fn check(config: &Config) -> Result<(), TuneError> {
        SvcParams::from_config(config).map(|_| ())
    }
}

crate::register_estimator!(Svc);

#[cfg(test)]
mod tests {
    use super::exp_in_place;

    #[test]
    fn the_vectorized_exp_is_within_a_unit_or_two_of_the_last_place() {
        let xs: Vec<f32> = (0..200_000)
            .map(|i| -(i as f32) * 90.0 / 200_000.0)
            .collect();
        let mut ys = xs.clone();
        exp_in_place(&mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            let want = (*x as f64).exp();
            if *x < -87.0 {
                assert_eq!(*y, 0.0, "e^{x}");
            } else {
                let rel = ((*y as f64) - want).abs() / want;
                assert!(rel < 2.5e-7, "e^{x}: {y} vs {want} ({rel:e})");
            }
        }
        let mut one = [0.0_f32, -0.0];
        exp_in_place(&mut one);
        assert_eq!(one, [1.0, 1.0]);
    }
}
