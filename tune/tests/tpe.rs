//! The model-based searcher against random search at a fixed budget: over many seeds,
//! TPE's best score is better on average, on an SVM-like space (C and gamma over many
//! decades, a tolerance, a categorical choice) with a known optimum.

use prism_tune::{choice, loguniform, randint, Config, RandomSearch, Searcher, Space, Tpe};

fn space() -> Space {
    Space::new()
        .add("C", loguniform(1e-6, 1e6))
        .add("gamma", loguniform(1e-8, 1e8))
        .add("tol", loguniform(1e-4, 1e-1))
        .add("layers", randint(1, 9))
        .add("class_weight", choice(["none", "balanced"]))
}

/// A smooth surface shaped like an SVM's cross-validated accuracy: best near C = 10^1.5,
/// gamma = 10^-3, four layers and balanced weights; the tolerance barely matters.
fn score(c: &Config) -> f64 {
    let lc = c.f64("C").unwrap().log10();
    let lg = c.f64("gamma").unwrap().log10();
    let lt = c.f64("tol").unwrap().log10();
    let layers = c.i64("layers").unwrap() as f64;
    let bonus = if c.str("class_weight").unwrap() == "balanced" {
        0.02
    } else {
        0.0
    };
    1.0 - 0.004 * (lc - 1.5).powi(2)
        - 0.01 * (lg + 3.0).powi(2)
        - 0.001 * (lt + 2.0).powi(2)
        - 0.003 * (layers - 4.0).powi(2)
        + bonus
}

fn best_of(search: &mut dyn Searcher) -> f64 {
    let mut best = f64::NEG_INFINITY;
    while let Some(config) = search.suggest() {
        let s = score(&config);
        best = best.max(s);
        search.observe(&config, s);
    }
    best
}

#[test]
fn tpe_beats_random_search_on_average_at_the_same_budget() {
    let (budget, seeds) = (40, 30);
    let mut tpe_total = 0.0;
    let mut random_total = 0.0;
    let mut tpe_wins = 0;
    for seed in 0..seeds {
        let t = best_of(&mut Tpe::new(&space(), budget, seed).unwrap());
        let r = best_of(&mut RandomSearch::new(&space(), budget, seed).unwrap());
        tpe_total += t;
        random_total += r;
        tpe_wins += usize::from(t > r);
    }
    let (t, r) = (tpe_total / seeds as f64, random_total / seeds as f64);
    assert!(t > r, "TPE {t:.4} vs random {r:.4}");
    assert!(
        tpe_wins * 3 >= seeds as usize * 2,
        "TPE won {tpe_wins} of {seeds}"
    );
    println!("mean best over {seeds} seeds, {budget} trials: TPE {t:.4}, random {r:.4}; TPE better in {tpe_wins}");
}

#[test]
fn tpe_is_reproducible_and_stays_inside_the_space() {
    let run = |seed| {
        let mut tpe = Tpe::new(&space(), 30, seed).unwrap();
        let mut out = Vec::new();
        while let Some(c) = tpe.suggest() {
            let s = score(&c);
            tpe.observe(&c, s);
            out.push(c);
        }
        out
    };
    let (a, b) = (run(5), run(5));
    assert_eq!(a, b);
    for c in &a {
        assert!((1e-6..=1e6).contains(&c.f64("C").unwrap()));
        assert!((1e-8..=1e8).contains(&c.f64("gamma").unwrap()));
        assert!((1..9).contains(&c.i64("layers").unwrap()));
        assert!(["none", "balanced"].contains(&c.str("class_weight").unwrap()));
    }
}
