//! W9's model as a deployment: the RBF SVC of prism-tune fitted on all of the digits
//! (C = 1, gamma = 0.001, as Ray's W9 script fits scikit-learn's), answering
//! `{"features": [64 floats]}` with `{"digit": d}`: one request at a time at the route
//! prefix, and in batches at `prefix/batch`.

use std::time::Duration;

use prism_serve::{BatchOptions, Deployment, Handlers, HttpError};
use prism_tune::datasets;
use prism_tune::svc::{Features, Svc, SvcParams};
use serde::{Deserialize, Serialize};

/// One image's 64 pixel values (0–16).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Query {
    /// The pixels, row by row.
    pub features: Vec<f32>,
}

/// The predicted digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// 0 to 9.
    pub digit: usize,
}

/// The SVC's hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DigitsConfig {
    /// The penalty `C`.
    pub c: f64,
    /// The RBF kernel's `gamma`.
    pub gamma: f64,
}

impl Default for DigitsConfig {
    fn default() -> Self {
        DigitsConfig {
            c: 1.0,
            gamma: 0.001,
        }
    }
}

/// The deployment: a fitted SVC per replica.
pub struct Digits {
    svc: Svc,
}

/// How batches of the `batch` handler form: up to 32 (Ray's W9 `@serve.batch`),
/// waiting at most 2 ms for others.
pub const BATCH: BatchOptions = BatchOptions {
    max_batch_size: 32,
    batch_wait_timeout: Duration::from_millis(2),
};

impl Deployment for Digits {
    type Config = DigitsConfig;

    fn new(config: DigitsConfig) -> Result<Self, String> {
        let data = datasets::digits();
        let x = Features::new(&data.x, data.dims).map_err(|e| e.to_string())?;
        let params = SvcParams {
            c: config.c,
            gamma: config.gamma,
            ..SvcParams::default()
        };
        let svc = Svc::fit(&x, &data.y, &params).map_err(|e| e.to_string())?;
        Ok(Digits { svc })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.call(|d: &Digits, q: Query| Ok(d.predict(&[q])?[0]))
            .batched("batch", BATCH, |d: &Digits, qs: Vec<Query>| d.predict(&qs));
    }
}

impl Digits {
    /// The digits of `queries`, each of 64 values.
    pub fn predict(&self, queries: &[Query]) -> Result<Vec<Answer>, HttpError> {
        let mut rows = Vec::with_capacity(queries.len() * 64);
        for q in queries {
            if q.features.len() != 64 {
                return Err(HttpError::bad_request(format!(
                    "an image has 64 features, not {}",
                    q.features.len()
                )));
            }
            rows.extend_from_slice(&q.features);
        }
        let x = Features::new(&rows, 64).map_err(|e| HttpError::internal(e.to_string()))?;
        Ok(self
            .svc
            .predict(&x)
            .into_iter()
            .map(|digit| Answer { digit })
            .collect())
    }
}

prism_serve::register_deployment!(Digits);

/// The body W9 posts: the first image of the digits, as floats.
pub fn first_image_body() -> (String, usize) {
    let data = datasets::digits();
    let features: Vec<f64> = data.x[..64].iter().map(|v| *v as f64).collect();
    let body = serde_json::json!({ "features": features }).to_string();
    (body, data.y[0])
}
