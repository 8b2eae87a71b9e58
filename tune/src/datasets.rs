//! Data sets to search on: the digits of scikit-learn's `load_digits` (1,797 images of
//! 8×8 pixels with values 0–16, ten classes), from the copy smartcore ships; and the
//! views and splits of labelled data that estimators are fitted on.

use crate::TuneError;

/// A labelled data set: rows of features, row-major, and a class per row.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Labelled {
    /// `rows × dims` feature values.
    pub x: Vec<f32>,
    /// Values per row.
    pub dims: usize,
    /// Each row's class.
    pub y: Vec<usize>,
}

impl Labelled {
    /// How many rows.
    pub fn rows(&self) -> usize {
        self.y.len()
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Labelled {
        Labelled {
            x: indices
                .iter()
                .flat_map(|&i| self.x[i * self.dims..(i + 1) * self.dims].iter().copied())
                .collect(),
            dims: self.dims,
            y: indices.iter().map(|&i| self.y[i]).collect(),
        }
    }
}

/// Rows of features, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Features<'a> {
    /// `rows × dims` values.
    pub data: &'a [f32],
    /// Values per row.
    pub dims: usize,
}

impl<'a> Features<'a> {
    /// Rows of `dims` values each.
    pub fn new(data: &'a [f32], dims: usize) -> Result<Features<'a>, TuneError> {
        if dims == 0 || data.len() % dims != 0 {
            return Err(TuneError::Data(format!(
                "{} values do not make rows of {dims}",
                data.len()
            )));
        }
        Ok(Features { data, dims })
    }

    /// How many rows.
    pub fn rows(&self) -> usize {
        self.data.len() / self.dims
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dims..(i + 1) * self.dims]
    }
}

/// The digits data set.
///
/// ```
/// let d = prism_tune::datasets::digits();
/// assert_eq!((d.rows(), d.dims), (1797, 64));
/// assert_eq!(d.y.iter().filter(|c| **c == 8).count(), 174);
/// ```
pub fn digits() -> Labelled {
    let d = smartcore::dataset::digits::load_dataset();
    Labelled {
        x: d.data,
        dims: d.num_features,
        y: d.target.iter().map(|t| *t as usize).collect(),
    }
}

/// The `k` folds of stratified k-fold cross-validation, as `(train, test)` row indices,
/// exactly as scikit-learn's `StratifiedKFold(k)` (without shuffling) makes them: each
/// class's rows, in order, are dealt to the folds in contiguous runs whose lengths come
/// from dealing the sorted labels round-robin, so every fold gets each class in
/// proportion and the folds match scikit-learn's row for row.
///
/// ```
/// let y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1];
/// let folds = prism_tune::datasets::stratified_folds(&y, 2);
/// assert_eq!(folds[0].1, vec![0, 1, 4, 5, 6]);
/// assert_eq!(folds[1].1, vec![2, 3, 7, 8, 9]);
/// ```
pub fn stratified_folds(y: &[usize], k: usize) -> Vec<(Vec<usize>, Vec<usize>)> {
    let k = k.max(2);
    // Classes numbered by first appearance, as scikit-learn encodes them.
    let mut order: Vec<usize> = Vec::new();
    for c in y {
        if !order.contains(c) {
            order.push(*c);
        }
    }
    let encoded: Vec<usize> = y
        .iter()
        .map(|c| order.iter().position(|o| o == c).unwrap_or(0))
        .collect();
    let mut sorted = encoded.clone();
    sorted.sort_unstable();
    // allocation[f][class]: how many of each class fold f takes.
    let mut allocation = vec![vec![0usize; order.len()]; k];
    for (i, c) in sorted.iter().enumerate() {
        allocation[i % k][*c] += 1;
    }
    let mut test_fold = vec![0usize; y.len()];
    for class in 0..order.len() {
        let mut folds = allocation
            .iter()
            .enumerate()
            .flat_map(|(f, per_class)| std::iter::repeat_n(f, per_class[class]));
        for (row, c) in encoded.iter().enumerate() {
            if *c == class {
                test_fold[row] = folds.next().unwrap_or(k - 1);
            }
        }
    }
    (0..k)
        .map(|f| {
            let test: Vec<usize> = (0..y.len()).filter(|r| test_fold[*r] == f).collect();
            let train: Vec<usize> = (0..y.len()).filter(|r| test_fold[*r] != f).collect();
            (train, test)
        })
        .collect()
}
