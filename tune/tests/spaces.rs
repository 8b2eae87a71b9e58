//! Search spaces and searchers: each domain's distribution, reproducibility by seed,
//! the grid's combinations, typed reads of configurations, and bad spaces refused.

use prism_tune::{
    choice, grid, loguniform, quniform, randint, uniform, Config, GridSearch, Param, RandomSearch,
    Searcher, Space, TuneError,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

const N: usize = 20_000;

fn draws(domain: prism_tune::Domain, seed: u64) -> Vec<Param> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..N).map(|_| domain.sample(&mut rng)).collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn var(xs: &[f64]) -> f64 {
    let m = mean(xs);
    xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64
}

#[test]
fn uniform_has_the_mean_and_variance_of_its_interval() {
    let xs: Vec<f64> = draws(uniform(-2.0, 6.0), 1)
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert!(xs.iter().all(|x| (-2.0..6.0).contains(x)));
    // Mean 2, variance 64/12; the standard error of the mean is about 0.016 here.
    assert!((mean(&xs) - 2.0).abs() < 0.08, "{}", mean(&xs));
    assert!((var(&xs) - 64.0 / 12.0).abs() < 0.25, "{}", var(&xs));
}

#[test]
fn loguniform_is_uniform_in_the_exponent() {
    let xs: Vec<f64> = draws(loguniform(1e-6, 1e6), 2)
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert!(xs.iter().all(|x| (1e-6..=1e6).contains(x)));
    let exps: Vec<f64> = xs.iter().map(|x| x.log10()).collect();
    assert!(mean(&exps).abs() < 0.1, "{}", mean(&exps));
    assert!((var(&exps) - 144.0 / 12.0).abs() < 0.5, "{}", var(&exps));
    // Each decade is about as likely as any other.
    let first_decade = exps.iter().filter(|e| **e < -5.0).count() as f64 / N as f64;
    assert!((first_decade - 1.0 / 12.0).abs() < 0.01, "{first_decade}");
}

#[test]
fn quniform_gives_multiples_of_its_step_within_bounds() {
    let xs: Vec<f64> = draws(quniform(0.0, 1.0, 0.25), 3)
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    for x in &xs {
        assert!((0.0..=1.0).contains(x));
        assert!(((x / 0.25) - (x / 0.25).round()).abs() < 1e-9, "{x}");
    }
    // Rounding makes the ends half as likely as the inner steps.
    let ends = xs.iter().filter(|x| **x == 0.0 || **x == 1.0).count() as f64 / N as f64;
    assert!((ends - 0.25).abs() < 0.02, "{ends}");
}

#[test]
fn randint_excludes_its_upper_bound_and_is_flat() {
    let xs: Vec<i64> = draws(randint(3, 8), 4)
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    for v in 3..8 {
        let share = xs.iter().filter(|x| **x == v).count() as f64 / N as f64;
        assert!((share - 0.2).abs() < 0.015, "{v}: {share}");
    }
    assert!(xs.iter().all(|x| (3..8).contains(x)));
}

#[test]
fn choice_picks_each_value_equally_often() {
    let xs = draws(choice(["a", "b", "c", "d"]), 5);
    for v in ["a", "b", "c", "d"] {
        let share = xs.iter().filter(|p| p.as_str() == Some(v)).count() as f64 / N as f64;
        assert!((share - 0.25).abs() < 0.015, "{v}: {share}");
    }
}

fn svm_space() -> Space {
    Space::new()
        .add("C", loguniform(1e-6, 1e6))
        .add("gamma", loguniform(1e-8, 1e8))
        .add("tol", loguniform(1e-4, 1e-1))
        .add("class_weight", choice(["none", "balanced"]))
        .add("cache_mb", 200)
}

#[test]
fn a_seed_gives_the_same_search_and_another_seed_another() {
    let run = |seed| {
        let mut s = RandomSearch::new(&svm_space(), 50, seed).unwrap();
        std::iter::from_fn(move || s.suggest()).collect::<Vec<Config>>()
    };
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a.len(), 50);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.iter().all(|cfg| cfg.i64("cache_mb") == Ok(200)));
}

#[test]
fn a_grid_is_every_combination_repeated_num_samples_times() {
    let space = Space::new()
        .add("depth", grid([2, 4, 8]))
        .add("loss", grid(["l1", "l2"]))
        .add("dropout", uniform(0.0, 0.5));
    let mut search = GridSearch::new(&space, 2, 11).unwrap();
    assert_eq!(search.len(), 12);
    let configs: Vec<Config> = std::iter::from_fn(|| search.suggest()).collect();
    for depth in [2, 4, 8] {
        for loss in ["l1", "l2"] {
            let n = configs
                .iter()
                .filter(|c| c.i64("depth") == Ok(depth) && c.str("loss") == Ok(loss))
                .count();
            assert_eq!(n, 2, "{depth} {loss}");
        }
    }
    // The sampled parameter is drawn afresh for each configuration.
    let dropouts: std::collections::BTreeSet<u64> = configs
        .iter()
        .map(|c| c.f64("dropout").unwrap().to_bits())
        .collect();
    assert_eq!(dropouts.len(), 12);
    // Without grid parameters, a grid search is num_samples random draws.
    assert_eq!(GridSearch::new(&svm_space(), 5, 0).unwrap().len(), 5);
}

#[test]
fn configurations_read_as_typed_values_or_a_struct() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Svm {
        #[serde(rename = "C")]
        c: f64,
        class_weight: String,
        cache_mb: i64,
    }
    let mut rng = StdRng::seed_from_u64(3);
    let config = svm_space().sample(&mut rng).unwrap();
    let svm: Svm = config.to_struct().unwrap();
    assert_eq!(svm.c, config.f64("C").unwrap());
    assert_eq!(svm.cache_mb, 200);
    assert!(matches!(config.str("C"), Err(TuneError::Config(_))));
    let missing = config.f64("nu").unwrap_err().to_string();
    assert!(missing.contains("no parameter nu"), "{missing}");
    // Integers read as reals too.
    assert_eq!(config.f64("cache_mb"), Ok(200.0));
}

#[test]
fn spaces_that_cannot_be_sampled_are_refused_with_the_parameter_named() {
    let bad = [
        ("lr", loguniform(0.0, 1.0)),
        ("x", uniform(2.0, 1.0)),
        ("q", quniform(0.0, 1.0, 0.0)),
        ("n", randint(5, 5)),
        ("k", choice(Vec::<i64>::new())),
        ("y", uniform(0.0, f64::INFINITY)),
    ];
    for (name, domain) in bad {
        let space = Space::new().add("ok", 1).add(name, domain);
        match RandomSearch::new(&space, 1, 0) {
            Err(TuneError::Space(why)) => assert!(why.contains(name), "{why}"),
            other => panic!("{name}: expected a space error, got {:?}", other.is_ok()),
        }
    }
}

#[test]
fn configurations_travel_in_prisms_encoding_and_as_plain_json() {
    let mut rng = StdRng::seed_from_u64(4);
    let config = svm_space().sample(&mut rng).unwrap();
    let bytes = prism::object::encode(&config).unwrap();
    let back: Config = prism::object::decode(&bytes).unwrap();
    assert_eq!(back, config);
    let json = config.to_json();
    assert_eq!(json["cache_mb"], 200);
    assert!(json["C"].is_f64());
    assert!(json["class_weight"].is_string());
}
