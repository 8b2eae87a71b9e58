use ndarray::{s, Array2};
use prism_train::model::{sgd_step, Mlp, Model};
use std::time::Instant;
fn main() {
    let n = 50_000;
    let x = Array2::from_shape_fn((n, 256), |(i, j)| {
        (((i * 131 + j * 71) % 97) as f32 / 97.0) - 0.5
    });
    let y: Vec<u32> = (0..n).map(|i| (i % 10) as u32).collect();
    let mut m = Mlp::new(&[256, 512, 10], 2);
    let mut g = vec![0.0; m.params().len()];
    for epoch in 0..3 {
        let t = Instant::now();
        let mut i = 0;
        while i < n {
            let end = (i + 256).min(n);
            m.loss_grad(x.slice(s![i..end, ..]), &y[i..end], &mut g);
            sgd_step(m.params_mut(), &g, 0.05);
            i = end;
        }
        println!(
            "epoch {epoch}: {:.3} s for {n} samples",
            t.elapsed().as_secs_f64()
        );
    }
}
