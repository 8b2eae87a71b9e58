//! A searcher's saved state, read back into a new searcher built the same way, makes it
//! suggest exactly what the original suggests next: for every searcher, after results
//! heard in an order other than the one suggested.

use prism_tune::{choice, grid, loguniform, randint, uniform};
use prism_tune::{Config, GridSearch, RandomSearch, Searcher, Space, Tpe};

fn space() -> Space {
    Space::new()
        .add("lr", loguniform(1e-4, 1e-1))
        .add("layers", randint(1, 6))
        .add("act", choice(["relu", "tanh"]))
        .add("dropout", uniform(0.0, 0.5))
}

fn score(c: &Config) -> f64 {
    -(c.f64("lr").unwrap().log10() + 2.0).powi(2) - c.f64("dropout").unwrap()
}

/// Suggests `n` in pairs and hears each pair's results in reverse order.
fn drive(s: &mut dyn Searcher, n: usize) {
    for _ in 0..n / 2 {
        let a = s.suggest().unwrap();
        let b = s.suggest().unwrap();
        s.observe(&b, score(&b));
        s.observe(&a, score(&a));
    }
}

fn round_trip(mut make: impl FnMut() -> Box<dyn Searcher>) {
    let mut original = make();
    drive(original.as_mut(), 12);
    // Through text, as an experiment directory keeps it.
    let saved = serde_json::to_string(&original.state().expect("a state")).unwrap();
    let mut resumed = make();
    resumed
        .restore(&serde_json::from_str(&saved).unwrap())
        .unwrap();
    for _ in 0..8 {
        let (a, b) = (original.suggest(), resumed.suggest());
        assert_eq!(a, b);
        if let Some(c) = a {
            original.observe(&c, score(&c));
            resumed.observe(&c, score(&c));
        }
    }
    // A fresh searcher does not suggest the same: the state carried something.
    let mut fresh = make();
    drive(fresh.as_mut(), 2);
    let next_fresh = fresh.suggest();
    let mut again = make();
    again
        .restore(&serde_json::from_str(&saved).unwrap())
        .unwrap();
    assert_ne!(again.suggest(), next_fresh);
}

#[test]
fn random_search_resumes_exactly() {
    round_trip(|| Box::new(RandomSearch::new(&space(), 40, 3).unwrap()));
}

#[test]
fn sklearn_draws_resume_exactly() {
    round_trip(|| Box::new(RandomSearch::sklearn(&space(), 40, 3).unwrap()));
}

#[test]
fn tpe_resumes_exactly() {
    round_trip(|| Box::new(Tpe::new(&space(), 40, 3).unwrap().startup(4)));
}

#[test]
fn grid_search_resumes_exactly() {
    let grid_space = space().add("width", grid([16, 32, 64]));
    round_trip(|| Box::new(GridSearch::new(&grid_space, 10, 3).unwrap()));
}

#[test]
fn a_state_of_another_seed_is_refused() {
    let mut a = Tpe::new(&space(), 10, 1).unwrap();
    drive(&mut a, 2);
    let mut b = Tpe::new(&space(), 10, 2).unwrap();
    let err = b.restore(&a.state().unwrap()).unwrap_err();
    assert!(err.to_string().contains("seeded"), "{err}");
    let mut r = RandomSearch::sklearn(&space(), 10, 2).unwrap();
    let err = r
        .restore(
            &RandomSearch::sklearn(&space(), 10, 1)
                .unwrap()
                .state()
                .unwrap(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("seeded"), "{err}");
}
